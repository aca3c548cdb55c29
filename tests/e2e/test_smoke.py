"""scripts/smoke.sh, the seed's smoke script, against a real server on SQLite and on PostgreSQL."""

import os
import shutil
from pathlib import Path

import pytest

from tests import processes, support

SMOKE = Path(__file__).resolve().parents[2] / "scripts" / "smoke.sh"

pytestmark = [
    pytest.mark.e2e,
]


def test_smoke_script_passes_every_check(live_server: support.LiveServer) -> None:
    assert shutil.which("curl"), "scripts/smoke.sh needs curl"
    result = processes.run(
        ["bash", str(SMOKE)],
        env={
            "PATH": os.environ["PATH"],
            "API_URL": f"{live_server.url}/v1",
            "IKOMA_ADMIN_KEY": live_server.admin_key,
        },
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "smoke: all" in result.stdout
