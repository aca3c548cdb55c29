"""Commands that read the database directly refuse a SQLite file that is not there instead of creating it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ikoma.cli.main import app

COMMANDS = [["db", "check"], ["audit", "verify"], ["state", "rebuild"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_run_from_a_folder_without_data_it_exits_2_naming_the_file_and_creates_nothing(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, command, env={"DATABASE_URL": None, "IKOMA_DATA_DIR": None})
    assert result.exit_code == 2, result.output
    expected = tmp_path / "data" / "ikoma.db"
    assert f"no database at {expected}" in result.output
    assert "DATABASE_URL is not set" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_database_url_naming_a_missing_file_exits_2_and_creates_nothing(
    command: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "elsewhere.db"
    result = CliRunner().invoke(app, command, env={"DATABASE_URL": f"sqlite:///{missing}"})
    assert result.exit_code == 2, result.output
    assert f"no database at {missing}" in result.output
    assert not missing.exists()
