"""A step that prints NUL: the API refuses NUL in JSON text, so the runner must never send one."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ikoma.runner.client import without_nul
from tests import support
from tests.e2e.fleet import Fleet, attach_fleet, kill, unique

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def fleet(shared_server: support.LiveServer, tmp_path: Path) -> Fleet:
    return attach_fleet(shared_server, tmp_path, unique("nul"))


@pytest.fixture
def runner(fleet: Fleet) -> Iterator[subprocess.Popen[bytes]]:
    proc = fleet.start_runner()
    yield proc
    kill(proc)


def test_output_with_nul_is_delivered_with_a_replacement_character(
    fleet: Fleet, runner: subprocess.Popen[bytes]
) -> None:
    script = "import sys; sys.stdout.write('before\\x00after\\n'); sys.stdout.flush()"
    order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", script]})

    done = fleet.wait_done(order_id)

    assert done["status"] == "SUCCEEDED", fleet.runner_log()
    chunks, _ = fleet.read_logs(order_id)
    text = "".join(chunk["data"] for chunk in chunks)
    assert "before\ufffdafter" in text
    assert not _complaints(fleet.runner_log())


def _complaints(runner_log: str) -> list[str]:
    """The runner's warning and error lines: a refused chunk or report would show up here."""
    found = []
    for line in runner_log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in {"warning", "error"}:
            found.append(line)
    return found


def test_without_nul_cleans_keys_values_and_nested_lists() -> None:
    assert without_nul({"a\x00": ["x\x00y", {"k": "\x00"}], "n": 1}) == {
        "a\ufffd": ["x\ufffdy", {"k": "\ufffd"}],
        "n": 1,
    }
