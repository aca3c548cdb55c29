"""apt's proxy on an agent machine, end to end: a real server, a real runner process, a fake apt-get.

The runner finds programs on its own PATH (runner/builtins/_common.which), so the runner is started
with a directory holding a fake apt-get (and apt-mark) first on it: each call logs its argv and prints
a captured simulation. Nothing on this machine is changed and nothing is fetched.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.e2e.fleet import Fleet, attach_fleet, unique

pytestmark = [pytest.mark.e2e]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "apt"
PROXY = "http://apt-cacher.example.net:3142"
PROXY_OPTIONS = ["-o", f"Acquire::http::Proxy={PROXY}", "-o", f"Acquire::https::Proxy={PROXY}"]


def fake_program(directory: Path, name: str, fixture: str, calls: Path) -> None:
    path = directory / name
    python = shlex.quote(sys.executable)
    path.write_text(
        "#!/bin/sh\n"
        f'printf \'%s\\n\' "$0" "$@" | {python} -I -c '
        f"'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))' >> {shlex.quote(str(calls))}\n"
        f"cat {shlex.quote(str(FIXTURES / fixture))}\n"
    )
    path.chmod(0o755)


@pytest.fixture
def fleet(
    shared_server: support.LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Fleet, Path]]:
    """A server of the test's own and its runner, whose PATH starts with the fake apt programs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls.jsonl"
    fake_program(bin_dir, "apt-get", "debian12_dist_upgrade_captured.txt", calls)
    fake_program(bin_dir, "apt-mark", "debian12_showhold_empty_captured.txt", calls)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
    fleet = attach_fleet(shared_server, tmp_path, name=unique("apt"))
    fleet.start_runner()
    yield fleet, calls
    fleet.stop_runners()


def apt_get_calls(calls: Path) -> list[list[str]]:
    rows = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return [row[1:] for row in rows if Path(row[0]).name == "apt-get"]


def set_proxy_mode(fleet: Fleet, mode: str) -> None:
    with fleet.server.admin() as admin:
        body = {"aptProxyMode": mode, "aptProxyUrl": PROXY} if mode == "proxy" else {"aptProxyMode": mode}
        response = admin.patch(f"/v1/servers/{fleet.server_id}", json=body)
    assert response.status_code == 200, response.text


def test_the_runners_apt_playbook_runs_apt_get_with_the_servers_proxy_only_in_proxy_mode(
    fleet: tuple[Fleet, Path],
) -> None:
    machine, calls = fleet
    set_proxy_mode(machine, "proxy")

    proxied = machine.wait_done(machine.order("apt.analyze", {"refresh": True}))

    assert proxied["status"] == "SUCCEEDED", (proxied.get("report"), machine.runner_log()[-3000:])
    update, simulate = apt_get_calls(calls)
    assert update == [*PROXY_OPTIONS, "update"]
    assert simulate == ["-s", "-o", "Debug::NoLocking=1", *PROXY_OPTIONS, "dist-upgrade"]

    set_proxy_mode(machine, "direct")
    calls.unlink()

    direct = machine.wait_done(machine.order("apt.upgrade", {"dryRun": True}))

    assert direct["status"] == "SUCCEEDED", (direct.get("report"), machine.runner_log()[-3000:])
    assert apt_get_calls(calls) == [["-s", "-o", "Debug::NoLocking=1", "upgrade"]]
