"""`python -m ikoma` refuses malformed settings at start: non-zero exit, a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ikoma import __version__
from tests import processes, support

pytestmark = pytest.mark.e2e


def run_ikoma(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL", "PORT", "HOST"))
    }
    clean.update(
        {
            "IKOMA_DATA_DIR": str(tmp_path / "data"),
            "IKOMA_ADMIN_KEY": "ika_settings_test_key_0123456789",
            "PORT": str(support.free_port()),
            **env,
        }
    )
    # A timeout, so that a server that wrongly starts fails the test instead of hanging it.
    return processes.run([sys.executable, "-m", "ikoma", *args], env=clean, text=True, timeout=60)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("IKOMA_RECONCILE_INTERVAL", "-1"),
        ("IKOMA_CLAIM_LEASE", "soon"),
        ("DATABASE_URL", "mysql://x"),
    ],
)
def test_serve_with_a_malformed_setting_exits_nonzero_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    result = run_ikoma(tmp_path, "serve", **{name: value})
    assert result.returncode == 2, result.stdout + result.stderr  # docs/configuration.md: exit code 2
    assert name in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_with_an_unreachable_database_exits_nonzero(tmp_path: Path) -> None:
    # Port 1 is never a PostgreSQL server: the start-up migration fails and the process must stop.
    result = run_ikoma(tmp_path, "serve", DATABASE_URL="postgresql://postgres@127.0.0.1:1/ikoma")
    assert result.returncode != 0, result.stdout + result.stderr


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = run_ikoma(tmp_path, "version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__


def test_db_migrate_creates_a_missing_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}
    env["IKOMA_DATA_DIR"] = str(data_dir)
    result = processes.run([sys.executable, "-m", "ikoma", "db", "migrate"], env=env, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (data_dir / "ikoma.db").is_file()
