"""What the CLI prints and where it connects, without a server: tables at 100 columns, the API address."""

from __future__ import annotations

import uuid

import pytest

from ikoma.cli import output
from ikoma.cli.client import resolve_api_url

ORDER_COLUMNS: list[output.Column] = [
    ("id", "ID"),
    ("status", "STATUS"),
    ("playbookKey", "PLAYBOOK"),
    ("serverName", "SERVER"),
    ("attempt", "ATTEMPT"),
    ("createdAt", "CREATED"),
    ("statusReason", "REASON"),
]
LONG_REASON = "the step exited with status 2 after printing a long explanation that takes many words " * 2


def order_row(server_name: str, reason: str | None = LONG_REASON) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "status": "SUCCEEDED",
        "playbookKey": "system.test_ping",
        "serverName": server_name,
        "attempt": 1,
        "createdAt": "2025-03-04T05:06:07.123456Z",
        "statusReason": reason,
    }


@pytest.fixture
def columns_100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")


def printed(capsys: pytest.CaptureFixture[str], rows: list[dict[str, object]], wide: bool = False) -> str:
    output.show_list(rows, ORDER_COLUMNS, as_json=False, empty="none", wide=wide)
    return capsys.readouterr().out


@pytest.mark.usefixtures("columns_100")
def test_an_order_table_at_100_columns_keeps_names_ids_and_times_whole_and_folds_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [order_row("local-build-host-17"), order_row("web-1", reason=None)]
    text = printed(capsys, rows)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, text
    assert "…" not in text
    for row in rows:
        line = next(line for line in lines if str(row["id"])[:8] in line)
        assert str(row["id"]) not in text  # cut to 8 characters
        assert str(row["serverName"]) in line
        assert "system.test_ping" in line
        assert "2025-03-04 05:06:07" in line
    assert len(lines) > len(rows) + 1  # the long reason went on several lines instead


def test_wide_prints_whole_ids_and_timestamps(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    row = order_row("web-1", reason=None)
    line = printed(capsys, [row], wide=True).splitlines()[1]
    assert str(row["id"]) in line
    assert "2025-03-04T05:06:07.123456Z" in line


@pytest.mark.usefixtures("columns_100")
def test_a_table_too_narrow_for_its_names_folds_them_rather_than_cutting_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = "local-" + "a-very-long-host-name-" * 3
    text = printed(capsys, [order_row(name)])
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert "…" not in text
    # every character of the name is printed, in order, down its column
    header, *body = text.splitlines()
    start, end = header.index("SERVER"), header.index("ATTEMPT")
    assert "".join(line[start:end].strip() for line in body) == name


def test_values_that_only_look_like_ids_or_times_are_printed_as_they_are() -> None:
    assert output.table_cell("not-a-uuid-at-all") == "not-a-uuid-at-all"
    assert output.table_cell("2025-03-04") == "2025-03-04"
    assert output.table_cell(12345678) == "12345678"
    assert output.table_cell(None) == "-"


def test_the_api_address_is_the_given_url_then_ikoma_api_url_then_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IKOMA_API_URL", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    assert resolve_api_url("") == "http://127.0.0.1:3000"
    monkeypatch.setenv("PORT", "3100")
    assert resolve_api_url("") == "http://127.0.0.1:3100"
    monkeypatch.setenv("IKOMA_API_URL", "https://ikoma.example.net/")
    assert resolve_api_url("") == "https://ikoma.example.net"
    assert resolve_api_url("http://10.0.0.2:3000") == "http://10.0.0.2:3000"
