"""The completion spool: atomic files, kept across restarts, deleted on delivery or a final 409."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from ikoma.runner.agent import Agent
from ikoma.runner.client import ApiUnreachable, Conflict, ServerError, Unauthorized
from ikoma.runner.config import AgentSettings, Credentials
from ikoma.runner.spool import Completion, Spool

REPORT = {"version": "v2", "summary": "ok", "durationMs": 1, "steps": [], "errors": []}


def _completion(order_id: str = "11111111-1111-1111-1111-111111111111") -> Completion:
    return Completion(order_id=order_id, lease_token="lease-1", status="SUCCEEDED", report=REPORT)


def test_write_is_atomic_and_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.write(_completion())
    assert json.loads(path.read_text())["report"] == REPORT
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(spool.directory.glob(".*.tmp"))  # the temporary file was renamed, not left behind


def test_pending_survives_a_restart_and_ignores_leftover_tmp_files(tmp_path: Path) -> None:
    Spool(tmp_path).write(_completion())
    (tmp_path / "spool" / ".half.json.tmp").write_text("{not json")  # a crash before the rename
    again = Spool(tmp_path)  # a new process: only the directory is shared
    assert again.pending() == [_completion()]


def test_corrupt_file_is_set_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.directory.mkdir(parents=True)
    (spool.directory / "bad.json").write_text("{")
    assert spool.pending() == []
    assert (spool.rejected / "bad.json").exists()


class FakeClient:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls: list[tuple[str, str, str]] = []

    async def complete(
        self, order_id: str, lease: str, status: str, report: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append((order_id, lease, status))
        if self.error is not None:
            raise self.error
        return {"id": order_id, "status": status}

    async def aclose(self) -> None:
        return None


def _agent(tmp_path: Path, client: FakeClient) -> Agent:
    creds = Credentials(api_url="http://127.0.0.1:9", runner_id="r", token="t")
    return Agent(creds, AgentSettings(state_dir=tmp_path), client=client)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kept"),
    [
        (None, False),
        (Conflict(409, "stale_lease", "lease moved on"), False),
        (Conflict(409, "invalid_status", "already ended"), False),
        (ApiUnreachable("connection refused"), True),
        (ServerError(503, "database_unavailable", "down"), True),
        (Unauthorized(401, "unauthorized", "bad token"), True),
    ],
)
async def test_delivery_outcome_decides_whether_the_file_stays(
    tmp_path: Path, error: Exception | None, kept: bool
) -> None:
    agent = _agent(tmp_path, FakeClient(error))
    await agent.deliver(_completion())
    assert (agent.spool.pending() != []) is kept


async def test_spooled_completion_is_delivered_after_a_restart(tmp_path: Path) -> None:
    down = _agent(tmp_path, FakeClient(ApiUnreachable("refused")))
    await down.deliver(_completion())
    assert len(down.spool.pending()) == 1
    client = FakeClient(None)
    restarted = _agent(tmp_path, client)  # what `run()` does first at start-up
    await restarted.deliver_spooled()
    assert client.calls == [("11111111-1111-1111-1111-111111111111", "lease-1", "SUCCEEDED")]
    assert restarted.spool.pending() == []
