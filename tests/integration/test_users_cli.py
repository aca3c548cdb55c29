"""`ikoma users create|list|disable|reset-password` on the database directly, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import select
from typer.testing import CliRunner

from ikoma.cli.main import app
from ikoma.domain.errors import Unauthorized
from ikoma.services import sign_in
from ikoma.services.login_limits import Limits
from ikoma.services.vault import Vault, new_key
from ikoma.storage.database import Database
from ikoma.storage.tables import user_sessions

LIMITS = Limits(per_account=5, per_address=20, window_s=900)


def ikoma(url: str, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["users", *args], env={"DATABASE_URL": url}, input=stdin)
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def signed_in(url: str, username: str, password: str) -> bool:
    async def run() -> bool:
        db = Database(url)
        try:
            await sign_in.sign_in(
                db,
                Vault([new_key().encode()]),
                login=username,
                password=password,
                totp=None,
                address="cli",
                limits=LIMITS,
                ttl_s=60,
            )
            return True
        except Unauthorized:
            return False
        finally:
            await db.dispose()

    return asyncio.run(run())


def live_sessions(url: str) -> int:
    async def run() -> int:
        db = Database(url)
        try:
            async with db.read() as tx:
                return len(
                    (await tx.execute(select(user_sessions).where(user_sessions.c.ended_at.is_(None)))).all()
                )
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_create_prints_a_generated_password_once_that_signs_in(database_url: str) -> None:
    code, out = ikoma(
        database_url, "create", "vera", "--email", "vera@example.net", "--role", "operator", "--json"
    )
    assert code == 0, out
    created = json.loads(out)
    assert created["role"] == "operator"
    assert signed_in(database_url, "vera", created["password"])
    code, listed = ikoma(database_url, "list", "--json")
    assert code == 0
    assert [u["username"] for u in json.loads(listed)] == ["vera"]
    assert created["password"] not in listed


def test_create_with_password_from_stdin_and_refusals_name_their_reason(database_url: str) -> None:
    code, out = ikoma(
        database_url,
        "create",
        "walt",
        "--email",
        "w@example.net",
        "--password-stdin",
        stdin="a long stdin password\n",
    )
    assert code == 0, out
    assert "a long stdin password" not in out
    assert signed_in(database_url, "walt", "a long stdin password")
    code, out = ikoma(database_url, "create", "walt", "--email", "w2@example.net")
    assert code == 1
    assert "username_taken" in out


def test_reset_password_prints_the_new_one_and_ends_the_sessions(database_url: str) -> None:
    code, out = ikoma(database_url, "create", "xena", "--email", "x@example.net", "--json")
    old = json.loads(out)["password"]
    assert signed_in(database_url, "xena", old)
    assert live_sessions(database_url) == 1
    code, out = ikoma(database_url, "reset-password", "XENA", "--json")
    assert code == 0, out
    new = json.loads(out)["password"]
    assert new != old
    assert live_sessions(database_url) == 0
    assert not signed_in(database_url, "xena", old)
    assert signed_in(database_url, "xena", new)


def test_disable_ends_the_sessions_and_keeps_the_last_admin(database_url: str) -> None:
    ikoma(database_url, "create", "yuri", "--email", "y@example.net", "--role", "admin")
    code, out = ikoma(database_url, "create", "zoe", "--email", "z@example.net", "--json")
    password = json.loads(out)["password"]
    assert signed_in(database_url, "zoe", password)
    code, out = ikoma(database_url, "disable", "z@example.net")
    assert code == 0, out
    assert live_sessions(database_url) == 0
    code, out = ikoma(database_url, "disable", "yuri")
    assert code == 1
    assert "last_admin" in out
    code, out = ikoma(database_url, "disable", "nobody")
    assert (code, "user_not_found" in out) == (1, True)
