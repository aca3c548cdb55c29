"""What an exception no route answered becomes (issue 10 items 8 and 10): PostgreSQL's "cannot connect
now" states are 503 `database_unavailable` like a lost connection; anything else is 500; each is ONE
log line carrying the request id, never a traceback (except at debug) nor the SQL and its parameters;
every answer carries `X-Request-Id` (the caller's when valid, else a new one).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg.exceptions as pg
import httpx
import pytest
import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router

from ikoma.api.errors import is_database_outage
from ikoma.api.request_context import RequestContext

SECRET = "hunter2-parameter"


def _wrapped(orig: BaseException) -> DBAPIError:
    """As SQLAlchemy raises it: the statement and its parameters in its text, the driver's error in .orig."""
    return DBAPIError("INSERT INTO audit_log VALUES ($1)", {"p": SECRET}, orig)


OUTAGES = [
    pg.CannotConnectNowError("the database system is starting up"),  # 57P03, also "in recovery mode"
    pg.AdminShutdownError("terminating connection due to administrator command"),  # 57P01
    pg.CrashShutdownError("terminating connection because of crash of another server process"),  # 57P02
    pg.TooManyConnectionsError("sorry, too many clients already"),  # 53300
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),  # 08003
    pg.InterfaceError("cannot perform operation: another operation is in progress"),
    ConnectionRefusedError(111, "Connection refused"),
]


@pytest.mark.parametrize("orig", OUTAGES, ids=lambda e: type(e).__name__)
def test_postgresql_cannot_serve_now_states_are_outages_raw_and_wrapped(orig: BaseException) -> None:
    assert is_database_outage(orig)
    assert is_database_outage(_wrapped(orig))


def test_an_outage_sqlstate_on_the_drivers_adapted_error_is_an_outage() -> None:
    class Adapted(Exception):  # SQLAlchemy's asyncpg adapter error: the SQLSTATE as pgcode
        pgcode = "57P03"

    adapted = Adapted("cannot connect now")
    assert is_database_outage(DBAPIError("SELECT 1", None, adapted))


@pytest.mark.parametrize(
    "refused",
    [
        IntegrityError("INSERT", None, pg.UniqueViolationError("duplicate key")),
        ProgrammingError("INSERT", None, pg.InsufficientPrivilegeError("permission denied")),
        pg.QueryCanceledError("canceling statement due to statement timeout"),  # 57014: not 57P
        RuntimeError("a bug"),
    ],
    ids=["unique", "privilege", "query_canceled", "bug"],
)
def test_a_refused_query_or_a_bug_is_not_an_outage(refused: BaseException) -> None:
    assert not is_database_outage(refused)


def _app(exc: BaseException) -> RequestContext:
    async def fails(_: Request) -> Response:
        raise exc

    async def fine(_: Request) -> Response:
        return PlainTextResponse("ok")

    # a bare router: in the app, RequestContext sits outside every middleware but Starlette's outermost
    return RequestContext(Router(routes=[Route("/fails", fails), Route("/fine", fine)]))


async def _call(app: RequestContext, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


async def test_cannot_connect_now_answers_503_with_one_log_line_naming_the_request() -> None:
    app = _app(_wrapped(pg.CannotConnectNowError("the database system is in recovery mode")))
    with structlog.testing.capture_logs() as logged:
        answer = await _call(app, "/fails", {"X-Request-Id": "req-57P03.a_b"})
    assert answer.status_code == 503
    assert answer.json()["reason"] == "database_unavailable"
    assert answer.headers["x-request-id"] == "req-57P03.a_b"
    assert SECRET not in answer.text
    assert "INSERT" not in answer.text
    [line] = logged
    assert line["event"] == "request_failed"
    assert (line["reason"], line["status"], line["path"], line["method"]) == (
        "database_unavailable",
        503,
        "/fails",
        "GET",
    )
    assert (line["request_id"], line["error"], line["log_level"]) == (
        "req-57P03.a_b",
        "DBAPIError",
        "warning",
    )
    assert "exc_info" not in line
    assert "exception" not in line


async def test_an_unexpected_error_answers_500_logged_once_without_sql_or_parameters() -> None:
    app = _app(IntegrityError("INSERT INTO x VALUES ($1)", {"p": SECRET}, pg.UniqueViolationError("dup key")))
    with structlog.testing.capture_logs() as logged:
        answer = await _call(app, "/fails")
    assert (answer.status_code, answer.json()["reason"]) == (500, "internal_error")
    assert SECRET not in answer.text
    errors = [line for line in logged if line["log_level"] != "debug"]
    [line] = errors
    assert (line["event"], line["status"], line["error"]) == ("request_failed", 500, "IntegrityError")
    assert line["detail"] == "dup key"  # the driver's sentence; not the statement, not its parameters
    assert SECRET not in str(logged[0])
    assert "exc_info" not in line
    assert line["request_id"] == answer.headers["x-request-id"]
    # the traceback exists only at debug level
    assert [d["event"] for d in logged if d["log_level"] == "debug"] == ["request_failed_traceback"]


@pytest.mark.parametrize("sent", ["", "a" * 65, "spaces not allowed", "semi;colon", "%C3%BC"])
async def test_an_invalid_request_id_is_replaced_never_echoed(sent: str) -> None:
    answer = await _call(_app(RuntimeError()), "/fine", {"X-Request-Id": sent})
    assert answer.status_code == 200
    made = answer.headers["x-request-id"]
    assert made != sent
    assert len(made) == 32
    assert made.isalnum()


async def test_a_valid_request_id_is_returned_on_a_regular_answer() -> None:
    answer = await _call(_app(RuntimeError()), "/fine", {"X-Request-Id": "A" * 64})
    assert answer.headers.get_list("x-request-id") == ["A" * 64]


async def test_a_caller_gone_before_its_body_was_read_is_no_server_error() -> None:
    async def reads(request: Request) -> Response:
        await request.body()
        return PlainTextResponse("never")

    app = RequestContext(Router(routes=[Route("/reads", reads, methods=["POST"])]))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/reads", "headers": [], "query_string": b""}
    with structlog.testing.capture_logs() as logged:
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent == []
    assert [(line["event"], line["log_level"]) for line in logged] == [("client_disconnected", "info")]


def _sqlite_error(sql: str) -> sqlite3.Error:
    db = sqlite3.connect(":memory:")
    try:
        db.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        db.close()
    raise AssertionError(f"{sql!r} did not fail")


def test_a_missing_table_or_bad_sql_on_sqlite_is_no_outage_but_a_locked_file_is(tmp_path: Path) -> None:
    for sql in ("SELECT * FROM audit_log", "SELEC 1"):  # OperationalError too, yet a bug: 500
        error = _sqlite_error(sql)
        assert not is_database_outage(OperationalError(sql, None, error))
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError) as locked:
            other.execute("BEGIN EXCLUSIVE")
    finally:
        holder.close()
        other.close()
    assert is_database_outage(OperationalError("BEGIN", None, locked.value))
