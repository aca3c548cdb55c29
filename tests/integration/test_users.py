"""Users through the real app on SQLite and PostgreSQL: the bootstrap admin, password hashing, the
routes x roles through the real policy, last-admin protection, revocation by the admin, the login rate
limiter, TOTP, and sign-in by form."""

from __future__ import annotations

import asyncio
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select, text

from ikoma.domain.roles import Role
from ikoma.services import admin_user, users
from ikoma.settings import Settings
from ikoma.storage.database import Database
from ikoma.storage.tables import audit_log, events
from ikoma.storage.tables import users as users_table
from tests.integration.auth_helpers import USER_PASSWORD, Console, console_app, create_user, sign_in


@pytest.fixture
async def console(database_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    async with console_app(database_url, tmp_path / "data") as app:
        yield app


# --- bootstrap admin ----------------------------------------------------------------------------------


def _settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(DATABASE_URL=database_url, IKOMA_DATA_DIR=data_dir)


async def test_bootstrap_admin_gets_a_generated_password_in_a_0600_file_named_never_shown(
    database: Database, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(database_url, tmp_path / "data")
    caplog.set_level(logging.DEBUG)
    setup = await admin_user.ensure_admin_user(database, settings)
    path = tmp_path / "data" / "secrets" / "default_admin_password"
    assert setup.created
    assert setup.password_file == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    password = path.read_text().strip()
    assert len(password) >= 20
    assert str(path) in setup.announcement
    assert password not in setup.announcement
    assert password not in caplog.text
    [admin] = await users.list_users(database)
    assert (admin["username"], admin["email"], admin["role"]) == ("admin", "admin@ikoma.local", "admin")
    assert password not in str(admin)


async def test_bootstrap_admin_is_created_once_even_by_concurrent_starts(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    settings = _settings(database_url, tmp_path / "data")
    other = Database(database_url)
    try:
        first, second = await asyncio.gather(
            admin_user.ensure_admin_user(database, settings), admin_user.ensure_admin_user(other, settings)
        )
    finally:
        await other.dispose()
    assert [first.created, second.created].count(True) == 1
    again = await admin_user.ensure_admin_user(database, settings)
    assert not again.created
    assert len(await users.list_users(database)) == 1
    # the file left behind is the password of the admin that was created
    async with database.read() as tx:
        stored = (await tx.execute(select(users_table.c.password_hash))).scalar_one()
    assert PasswordHasher().verify(stored, again.password_file.read_text().strip())


async def test_bootstrap_admin_takes_the_names_and_password_file_from_the_settings(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "elsewhere" / "pw"
    path.parent.mkdir()
    path.write_text("an operator chosen password\n")
    settings = Settings(
        DATABASE_URL=database_url,
        IKOMA_DATA_DIR=tmp_path / "data",
        IKOMA_DEFAULT_ADMIN_USERNAME="root-admin",
        IKOMA_DEFAULT_ADMIN_EMAIL="Ops@Example.NET",
        IKOMA_DEFAULT_ADMIN_PASSWORD_FILE=path,
    )
    setup = await admin_user.ensure_admin_user(database, settings)
    assert "read from the file" in setup.announcement
    [admin] = await users.list_users(database)
    assert (admin["username"], admin["email"]) == ("root-admin", "ops@example.net")
    assert path.read_text() == "an operator chosen password\n"


# --- password hashing ---------------------------------------------------------------------------------


async def test_password_is_stored_as_an_argon2id_hash_and_verified(console: Console) -> None:
    await create_user(console, "hana", "builder")
    async with console.ctx.db.read() as tx:
        stored = (
            await tx.execute(select(users_table.c.password_hash).where(users_table.c.username == "hana"))
        ).scalar_one()
    assert stored.startswith("$argon2id$")
    assert USER_PASSWORD not in stored
    async with console.client() as browser:
        wrong = await browser.post("/auth/login", json={"username": "hana", "password": USER_PASSWORD + "x"})
        assert wrong.status_code == 401
        assert wrong.json()["reason"] == "invalid_credentials"
        assert "set-cookie" not in wrong.headers
        await sign_in(browser, "hana", USER_PASSWORD)


async def test_answers_and_events_never_carry_password_hash_or_totp_secret(console: Console) -> None:
    user_id = await create_user(console, "ines", "operator")
    async with console.keyed() as admin:
        listed = (await admin.get("/users")).text
        shown = (await admin.get(f"/users/{user_id}")).text
    for answer in (listed, shown):
        assert "argon2" not in answer
        assert "password_hash" not in answer
        assert "passwordHash" not in answer
        assert "totp_secret" not in answer
        assert "totpSecret" not in answer
    async with console.ctx.db.read() as tx:
        data = [
            str(r)
            for r in (await tx.execute(select(events.c.data).where(events.c.kind.like("user.%")))).scalars()
        ]
    assert data
    assert all("argon2" not in d and USER_PASSWORD not in d for d in data)


async def test_email_and_username_are_unique_whatever_the_case(console: Console) -> None:
    await create_user(console, "jo", "observer")
    async with console.keyed() as admin:
        same_name = await admin.post(
            "/users",
            json={"username": "JO", "email": "x@example.net", "password": USER_PASSWORD, "role": "observer"},
        )
        same_mail = await admin.post(
            "/users",
            json={
                "username": "jo2",
                "email": "JO@EXAMPLE.NET",
                "password": USER_PASSWORD,
                "role": "observer",
            },
        )
        bad_name = await admin.post(
            "/users",
            json={
                "username": "a b",
                "email": "ab@example.net",
                "password": USER_PASSWORD,
                "role": "observer",
            },
        )
        weak = await admin.post(
            "/users",
            json={"username": "kim", "email": "kim@example.net", "password": "short", "role": "observer"},
        )
    assert (same_name.status_code, same_name.json()["reason"]) == (409, "username_taken")
    assert (same_mail.status_code, same_mail.json()["reason"]) == (409, "email_taken")
    assert (bad_name.status_code, bad_name.json()["reason"]) == (422, "invalid_username")
    assert (weak.status_code, weak.json()["reason"]) == (422, "weak_password")


async def test_sign_in_accepts_the_email_in_either_field(console: Console) -> None:
    await create_user(console, "lea", "observer")
    async with console.client() as browser:
        by_mail = await browser.post(
            "/auth/login", json={"email": "LEA@example.net", "password": USER_PASSWORD}
        )
        assert by_mail.status_code == 200, by_mail.text
        in_username = await browser.post(
            "/auth/login", json={"username": "lea@example.net", "password": USER_PASSWORD}
        )
        assert in_username.status_code == 200, in_username.text


# --- routes x roles through the real policy -----------------------------------------------------------


@pytest.mark.parametrize("role", ["observer", "builder", "operator"])
async def test_only_admins_reach_the_user_routes(console: Console, role: str) -> None:
    await create_user(console, f"u-{role}", role)
    async with console.client() as browser:
        csrf = await sign_in(browser, f"u-{role}", USER_PASSWORD)
        headers = {"x-csrf-token": csrf}
        assert (await browser.get("/users")).status_code == 403
        created = await browser.post(
            "/users",
            json={
                "username": "mallory",
                "email": "m@example.net",
                "password": USER_PASSWORD,
                "role": "admin",
            },
            headers=headers,
        )
        assert created.status_code == 403
        assert created.json()["reason"] == "forbidden"
        me = await browser.get("/auth/me")
        assert me.json()["role"] == role
        assert (await browser.get(f"/users/{me.json()['id']}")).status_code == 403
        assert (
            await browser.put(f"/users/{me.json()['id']}", json={"role": "admin"}, headers=headers)
        ).status_code == 403
        assert (await browser.delete(f"/users/{me.json()['id']}", headers=headers)).status_code == 403
    async with console.ctx.db.read() as tx:
        denied = (
            await tx.execute(
                select(func.count()).where(
                    audit_log.c.actor_kind == "user",
                    audit_log.c.outcome == "denied",
                    audit_log.c.action.like("% /users%"),
                )
            )
        ).scalar_one()
    assert denied == 3


async def test_admin_session_manages_users_with_its_csrf_token(console: Console) -> None:
    async with console.client() as browser:
        csrf = await sign_in(browser, "admin", console.admin_password)
        headers = {"x-csrf-token": csrf}
        created = await browser.post(
            "/users",
            json={
                "username": "nora",
                "email": "nora@example.net",
                "password": USER_PASSWORD,
                "role": "builder",
                "firstName": "Nora",
            },
            headers=headers,
        )
        assert created.status_code == 201, created.text
        user_id = created.json()["id"]
        updated = await browser.put(
            f"/users/{user_id}", json={"role": "operator", "lastName": "K"}, headers=headers
        )
        assert updated.status_code == 200, updated.text
        assert (updated.json()["role"], updated.json()["lastName"]) == ("operator", "K")
        assert (await browser.delete(f"/users/{user_id}", headers=headers)).status_code == 204
        assert (await browser.get(f"/users/{user_id}")).status_code == 404
    async with console.ctx.db.read() as tx:
        kinds = (
            (
                await tx.execute(
                    select(events.c.kind).where(events.c.kind.like("user.%")).order_by(events.c.id)
                )
            )
            .scalars()
            .all()
        )
    assert kinds[-3:] == ["user.created", "user.updated", "user.deleted"]


async def test_api_key_on_auth_me_is_not_a_user(console: Console) -> None:
    async with console.keyed() as admin:
        answer = await admin.get("/auth/me")
    assert answer.status_code == 400
    assert answer.json()["reason"] == "not_a_user"


# --- last admin ---------------------------------------------------------------------------------------


async def test_last_enabled_admin_cannot_be_disabled_demoted_or_deleted(console: Console) -> None:
    async with console.keyed() as admin:
        me = (await admin.get("/users")).json()[0]
        for method, body in (("put", {"disabled": True}), ("put", {"role": "operator"}), ("delete", None)):
            answer = await admin.request(method.upper(), f"/users/{me['id']}", json=body)
            assert answer.status_code == 409, answer.text
            assert answer.json()["reason"] == "last_admin"
        second = await create_user(console, "backup", "admin")
        demoted = await admin.put(f"/users/{me['id']}", json={"role": "operator"})
        assert demoted.status_code == 200
        refused = await admin.delete(f"/users/{second}")
        assert refused.json()["reason"] == "last_admin"


# --- revocation by the admin --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"disabled": True}, "user_disabled"), ({"password": "a brand new password"}, "password_reset")],
)
async def test_disabling_or_resetting_a_user_ends_their_sessions(
    console: Console, change: dict[str, object], reason: str
) -> None:
    user_id = await create_user(console, "otto", "operator")
    async with console.client() as browser:
        await sign_in(browser, "otto", USER_PASSWORD)
        assert (await browser.get("/auth/me")).status_code == 200
        async with console.keyed() as admin:
            assert (await admin.put(f"/users/{user_id}", json=change)).status_code == 200
        assert (await browser.get("/auth/me")).status_code == 401
    async with console.ctx.db.read() as tx:
        ended = (await tx.execute(text("SELECT end_reason FROM user_sessions"))).scalar_one()
    assert ended == reason


async def test_deleting_a_user_ends_their_sessions(console: Console) -> None:
    user_id = await create_user(console, "pia", "observer")
    async with console.client() as browser:
        await sign_in(browser, "pia", USER_PASSWORD)
        async with console.keyed() as admin:
            assert (await admin.delete(f"/users/{user_id}")).status_code == 204
        assert (await browser.get("/auth/me")).status_code == 401


async def test_disabled_user_cannot_sign_in(console: Console) -> None:
    user_id = await create_user(console, "quinn", "observer")
    async with console.keyed() as admin:
        await admin.put(f"/users/{user_id}", json={"disabled": True})
    async with console.client() as browser:
        refused = await browser.post("/auth/login", json={"username": "quinn", "password": USER_PASSWORD})
    assert (refused.status_code, refused.json()["reason"]) == (403, "user_disabled")


async def test_changing_ones_password_ends_every_session_and_hands_a_fresh_one(console: Console) -> None:
    await create_user(console, "rosa", "observer")
    async with console.client() as other_device, console.client() as browser:
        await sign_in(other_device, "rosa", USER_PASSWORD)
        csrf = await sign_in(browser, "rosa", USER_PASSWORD)
        old_cookie = browser.cookies["ikoma_session"]
        wrong = await browser.put(
            "/auth/me/password",
            json={"currentPassword": "not it at all", "newPassword": "another long password"},
            headers={"x-csrf-token": csrf},
        )
        assert (wrong.status_code, wrong.json()["reason"]) == (403, "invalid_credentials")
        changed = await browser.put(
            "/auth/me/password",
            json={"currentPassword": USER_PASSWORD, "newPassword": "another long password"},
            headers={"x-csrf-token": csrf},
        )
        assert changed.status_code == 200, changed.text
        assert browser.cookies["ikoma_session"] != old_cookie
        assert changed.json()["csrfToken"] != csrf
        assert (await browser.get("/auth/me")).status_code == 200
        assert (await other_device.get("/auth/me")).status_code == 401
    async with console.client() as again:
        await sign_in(again, "rosa", "another long password")


# --- rate limiting ------------------------------------------------------------------------------------


async def test_failed_sign_ins_are_limited_per_account_with_retry_after(console: Console) -> None:
    await create_user(console, "sam", "observer")
    limit = console.ctx.settings.login_max_failures_account
    async with console.client() as browser:
        for _ in range(limit):
            wrong = await browser.post(
                "/auth/login", json={"username": "sam", "password": "wrong wrong wrong"}
            )
            assert wrong.status_code == 401
        limited = await browser.post("/auth/login", json={"username": "sam", "password": USER_PASSWORD})
        assert limited.status_code == 429
        assert limited.json()["reason"] == "too_many_attempts"
        assert 1 <= int(limited.headers["retry-after"]) <= console.ctx.settings.login_failure_window
        # another account from the same address is not limited by sam's failures
        await sign_in(browser, "admin", console.admin_password)
    async with console.ctx.db.read() as tx:
        rows = (
            await tx.execute(
                select(audit_log.c.action, audit_log.c.reason, audit_log.c.params)
                .where(audit_log.c.action.like("auth.%"))
                .order_by(audit_log.c.id)
            )
        ).all()
    assert [r.reason for r in rows[: limit + 1]] == ["invalid_credentials"] * limit + ["too_many_attempts"]
    assert rows[0].params["username"] == "sam"
    assert all("wrong wrong" not in str(r.params) and USER_PASSWORD not in str(r.params) for r in rows)
    assert rows[-1].action == "auth.login"


async def test_failed_sign_ins_are_limited_per_address_across_accounts(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        console_app(database_url, tmp_path / "data", IKOMA_LOGIN_MAX_FAILURES_ADDRESS=3) as console,
        console.client() as browser,
    ):
        for name in ("ghost-1", "ghost-2", "ghost-3"):
            wrong = await browser.post("/auth/login", json={"username": name, "password": "whatever it is"})
            assert wrong.json()["reason"] == "invalid_credentials"  # unknown users look like wrong passwords
        limited = await browser.post(
            "/auth/login", json={"username": "admin", "password": console.admin_password}
        )
        assert limited.status_code == 429


# --- TOTP ---------------------------------------------------------------------------------------------


async def test_totp_enrolment_then_sign_in_needs_the_code(console: Console) -> None:
    await create_user(console, "tess", "observer")
    async with console.client() as browser:
        csrf = await sign_in(browser, "tess", USER_PASSWORD)
        started = await browser.post("/auth/me/totp", headers={"x-csrf-token": csrf})
        assert started.status_code == 201, started.text
        secret = pyotp.parse_uri(started.json()["otpauthUri"]).secret
        bad = await browser.post(
            "/auth/me/totp/confirm", json={"code": "000000"}, headers={"x-csrf-token": csrf}
        )
        assert bad.json()["reason"] == "invalid_totp"
        confirmed = await browser.post(
            "/auth/me/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers={"x-csrf-token": csrf}
        )
        assert confirmed.json()["totpEnabled"] is True
    async with console.ctx.db.read() as tx:
        sealed = (
            await tx.execute(select(users_table.c.totp_secret).where(users_table.c.username == "tess"))
        ).scalar_one()
    assert secret not in sealed
    async with console.client() as browser:
        needs = await browser.post("/auth/login", json={"username": "tess", "password": USER_PASSWORD})
        assert (needs.status_code, needs.json()["reason"]) == (401, "totp_required")
        wrong = await browser.post(
            "/auth/login", json={"username": "tess", "password": USER_PASSWORD, "totp": "123456"}
        )
        assert wrong.json()["reason"] == "invalid_credentials"
        right = await browser.post(
            "/auth/login",
            json={"username": "tess", "password": USER_PASSWORD, "totp": pyotp.TOTP(secret).now()},
        )
        assert right.status_code == 200, right.text


# --- sign-in by form, and cross-site refusal ----------------------------------------------------------


async def test_form_sign_in_redirects_to_a_local_next_only(console: Console) -> None:
    async with console.client() as browser:
        ok = await browser.post(
            "/auth/login",
            data={"username": "admin", "password": console.admin_password, "next": "/machines/abc?x=1"},
        )
        assert ok.status_code == 303
        assert ok.headers["location"] == "/machines/abc?x=1"
        assert "ikoma_session" in browser.cookies
    async with console.client() as browser:
        for unsafe in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
            moved = await browser.post(
                "/auth/login", data={"username": "admin", "password": console.admin_password, "next": unsafe}
            )
            assert moved.headers["location"] == "/"


async def test_form_sign_in_failure_goes_back_to_login_with_the_reason(console: Console) -> None:
    async with console.client() as browser:
        failed = await browser.post(
            "/auth/login", data={"username": "admin", "password": "nope", "next": "/orders"}
        )
    assert failed.status_code == 303
    assert failed.headers["location"] == "/login?error=invalid_credentials&next=%2Forders"


@pytest.mark.parametrize(
    "headers",
    [{"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": "null"}],
)
async def test_cross_site_sign_in_is_refused(console: Console, headers: dict[str, str]) -> None:
    async with console.client(**headers) as browser:
        refused = await browser.post(
            "/auth/login", json={"username": "admin", "password": console.admin_password}
        )
    assert (refused.status_code, refused.json()["reason"]) == (403, "cross_site_request")


async def test_same_origin_sign_in_is_accepted(console: Console) -> None:
    async with console.client(origin="http://console.test", **{"sec-fetch-site": "same-origin"}) as browser:
        await sign_in(browser, "admin", console.admin_password)


async def test_user_service_refuses_an_unknown_role() -> None:
    with pytest.raises(Exception, match="unknown role"):
        Role.parse("root")


async def test_an_explicit_null_in_an_update_is_refused_not_stored(console: Console) -> None:
    user_id = await create_user(console, "umar", "observer")
    async with console.keyed() as admin, console.client() as browser:
        for field in ("email", "firstName", "lastName", "role", "disabled", "password"):
            refused = await admin.put(f"/users/{user_id}", json={field: None})
            assert refused.status_code == 422, refused.text
            assert refused.json()["errors"][0]["type"] == "null_not_allowed"
        csrf = await sign_in(browser, "umar", USER_PASSWORD)
        mine = await browser.put("/auth/me", json={"email": None}, headers={"x-csrf-token": csrf})
        assert mine.status_code == 422


async def test_a_weak_password_in_the_admin_file_stops_start_up_naming_the_file(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "pw"
    path.write_text("admin\n")
    settings = Settings(
        DATABASE_URL=database_url, IKOMA_DATA_DIR=tmp_path, IKOMA_DEFAULT_ADMIN_PASSWORD_FILE=path
    )
    with pytest.raises(admin_user.AdminPasswordRefused, match=str(path)):
        await admin_user.ensure_admin_user(database, settings)
    assert await users.list_users(database) == []
