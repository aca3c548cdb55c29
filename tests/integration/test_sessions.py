"""Console sessions through the real app on SQLite and PostgreSQL: cookie, expiry by the database
clock, idle timeout, revocation, CSRF, the browser redirect, X-Role, and the audit's `user:<id>`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from ikoma.domain import tokens
from ikoma.services import sessions
from ikoma.storage.clock import db_now
from ikoma.storage.tables import audit_log, user_sessions
from tests.integration.auth_helpers import USER_PASSWORD, Console, console_app, create_user, sign_in


@pytest.fixture
async def console(database_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    async with console_app(database_url, tmp_path / "data") as app:
        yield app


async def _backdate(console: Console, **values: object) -> None:
    async with console.ctx.db.write() as tx:
        await tx.execute(update(user_sessions).values(**values))


async def test_signed_in_admin_reaches_a_guarded_route_with_the_cookie_alone(console: Console) -> None:
    async with console.client() as browser:
        await sign_in(browser, "admin", console.admin_password)
        me = await browser.get("/auth/me")
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "admin"
        assert "passwordHash" not in me.json()
        assert "totpSecret" not in me.json()
        assert (await browser.get("/v1/servers")).status_code == 200


async def test_session_id_is_stored_only_as_its_sha256(console: Console) -> None:
    async with console.client() as browser:
        await sign_in(browser, "admin", console.admin_password)
        raw = browser.cookies[sessions.COOKIE_NAME]
    async with console.ctx.db.read() as tx:
        stored = (await tx.execute(select(user_sessions.c.token_hash))).scalars().all()
    assert stored == [tokens.hash_token(raw)]
    assert len(raw) >= 43  # 32 random bytes, base64url


async def test_session_past_its_absolute_expiry_by_the_database_clock_is_refused(console: Console) -> None:
    async with console.client() as browser:
        await sign_in(browser, "admin", console.admin_password)
        assert (await browser.get("/auth/me")).status_code == 200
        await _backdate(console, expires_at=db_now(-1))
        refused = await browser.get("/auth/me")
        assert refused.status_code == 401
        assert refused.json()["reason"] == "session_expired"
        assert "Max-Age=0" in refused.headers["set-cookie"]


async def test_session_idle_past_the_timeout_is_refused(console: Console) -> None:
    async with console.client() as browser:
        await sign_in(browser, "admin", console.admin_password)
        await _backdate(console, last_seen_at=db_now(-console.ctx.settings.session_idle_timeout - 5))
        assert (await browser.get("/auth/me")).status_code == 401


async def test_use_refreshes_last_seen_at_most_once_a_minute(console: Console) -> None:
    async with console.client() as browser:
        await sign_in(browser, "admin", console.admin_password)
        await _backdate(console, last_seen_at=db_now(-30))
        async with console.ctx.db.read() as tx:
            before = (await tx.execute(select(user_sessions.c.last_seen_at))).scalar_one()
        assert (await browser.get("/auth/me")).status_code == 200
        async with console.ctx.db.read() as tx:
            assert (await tx.execute(select(user_sessions.c.last_seen_at))).scalar_one() == before
        await _backdate(console, last_seen_at=db_now(-90))
        assert (await browser.get("/auth/me")).status_code == 200
        async with console.ctx.db.read() as tx:
            fresh = (await tx.execute(select(user_sessions.c.last_seen_at > db_now(-10)))).scalar_one()
        assert fresh


async def test_logout_ends_the_session_and_the_old_cookie_gets_401(console: Console) -> None:
    async with console.client() as browser:
        csrf = await sign_in(browser, "admin", console.admin_password)
        raw = browser.cookies[sessions.COOKIE_NAME]
        out = await browser.post("/auth/logout", headers={"x-csrf-token": csrf})
        assert out.status_code == 204
        assert "Max-Age=0" in out.headers["set-cookie"]
    async with console.client(cookie=f"{sessions.COOKIE_NAME}={raw}") as replay:
        assert (await replay.get("/auth/me")).status_code == 401
    async with console.ctx.db.read() as tx:
        reason = (await tx.execute(select(user_sessions.c.end_reason))).scalar_one()
    assert reason == "logout"


async def test_cookie_mutation_without_csrf_token_is_refused_and_audited_denied(console: Console) -> None:
    async with console.client() as browser:
        csrf = await sign_in(browser, "admin", console.admin_password)
        body = {"name": "web-1", "hostname": "web-1.example.net"}
        for headers in ({}, {"x-csrf-token": "forged"}):
            refused = await browser.post("/v1/servers", json=body, headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["reason"] == "csrf_failed"
        tool = await browser.post("/execute/apps.list", json={}, headers={})
        assert tool.json()["reason"] == "csrf_failed"
        allowed = await browser.post("/v1/servers", json=body, headers={"x-csrf-token": csrf})
        assert allowed.status_code == 201, allowed.text
        me = (await browser.get("/auth/me")).json()
    async with console.ctx.db.read() as tx:
        rows = (
            await tx.execute(
                select(audit_log.c.actor_kind, audit_log.c.actor_id, audit_log.c.outcome, audit_log.c.reason)
                .where(audit_log.c.action == "POST /v1/servers")
                .order_by(audit_log.c.id)
            )
        ).all()
    assert [(r.actor_kind, r.actor_id, r.outcome, r.reason) for r in rows] == [
        ("user", me["id"], "denied", "csrf_failed"),
        ("user", me["id"], "denied", "csrf_failed"),
        ("user", me["id"], "allowed", None),
    ]


async def test_api_key_requests_need_no_csrf_token_even_with_a_cookie(console: Console) -> None:
    async with console.client() as browser:
        await sign_in(browser, "admin", console.admin_password)
        created = await browser.post(
            "/v1/servers",
            json={"name": "web-2", "hostname": "web-2.example.net"},
            headers={"x-ikoma-admin-key": console.admin_key},
        )
        assert created.status_code == 201, created.text


async def test_browser_page_without_session_is_sent_to_login_and_api_clients_get_401(
    console: Console,
) -> None:
    async with console.client() as anonymous:
        page = await anonymous.get("/v1/servers?limit=5", headers={"accept": "text/html,*/*"})
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fv1%2Fservers%3Flimit%3D5"
        api = await anonymous.get("/v1/servers", headers={"accept": "application/json"})
        assert api.status_code == 401
        assert api.json()["reason"] == "unauthorized"


async def test_expired_session_page_request_is_redirected_and_the_cookie_cleared(console: Console) -> None:
    async with console.client() as browser:
        await sign_in(browser, "admin", console.admin_password)
        await _backdate(console, expires_at=db_now(-1))
        page = await browser.get("/v1/servers", headers={"accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"].startswith("/login?error=session_expired&next=")
        assert "Max-Age=0" in page.headers["set-cookie"]


async def test_x_role_lowers_a_session_and_never_raises_it(console: Console) -> None:
    await create_user(console, "olga", "observer")
    async with console.client() as admin_browser:
        await sign_in(admin_browser, "admin", console.admin_password)
        lowered = await admin_browser.get("/users", headers={"x-role": "operator"})
        assert lowered.status_code == 403
        assert lowered.json()["reason"] == "forbidden"
    async with console.client() as observer:
        await sign_in(observer, "olga", USER_PASSWORD)
        raised = await observer.get("/v1/servers", headers={"x-role": "admin"})
        assert raised.status_code == 403
        assert raised.json()["reason"] == "role_escalation"


async def test_logout_form_with_the_csrf_field_ends_the_session_and_goes_to_login(console: Console) -> None:
    async with console.client() as browser:
        csrf = await sign_in(browser, "admin", console.admin_password)
        forged = await browser.post("/auth/logout", data={"csrf_token": "nope"})
        assert forged.status_code == 403
        assert forged.json()["reason"] == "csrf_failed"
        out = await browser.post("/auth/logout", data={"csrf_token": csrf}, headers={"accept": "text/html"})
        assert out.status_code == 303
        assert out.headers["location"] == "/login"
        assert (await browser.get("/auth/me")).status_code == 401


async def test_sessions_over_for_a_month_are_deleted_at_the_users_next_sign_in(console: Console) -> None:
    async with console.client() as browser:
        await sign_in(browser, "admin", console.admin_password)
    await _backdate(console, expires_at=db_now(-sessions.KEEP_ENDED_S - 60))
    async with console.client() as browser:
        await sign_in(browser, "admin", console.admin_password)
        await sign_in(browser, "admin", console.admin_password)
    async with console.ctx.db.read() as tx:
        kept = (await tx.execute(select(user_sessions.c.expires_at > db_now()))).scalars().all()
    assert kept == [True, True]
