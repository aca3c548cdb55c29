"""Sign-in over real HTTP against real server processes: `ikoma up` names the bootstrap admin's
password file (never the password), form and JSON sign-in, the cookie's attributes, sign-out (the old
cookie then gets 401), and a browser's page request without a session sent to /login."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import support

pytestmark = pytest.mark.e2e

ADMIN_KEY = "ika_auth_test_0123456789abcdefghij"


def _cookie_attributes(response: httpx.Response) -> list[str]:
    header = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "ikoma_session=" in v)
    return [part.strip() for part in header.split(";")]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp_path = tmp_path_factory.mktemp("up")
    port = support.free_port()
    process = support.start_up(tmp_path, port, ADMIN_KEY)
    try:
        yield f"http://127.0.0.1:{port}", tmp_path
    finally:
        support.stop_up(process)


def test_up_names_the_admin_password_file_never_the_password(up: tuple[str, Path]) -> None:
    _, tmp_path = up
    path = tmp_path / "data" / "secrets" / "default_admin_password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    log = (tmp_path / "up.log").read_text()
    assert str(path) in log
    assert "/login" in log
    assert password not in log


def test_form_sign_in_sets_an_httponly_lax_cookie_and_sign_out_kills_it(up: tuple[str, Path]) -> None:
    url, tmp_path = up
    password = (tmp_path / "data" / "secrets" / "default_admin_password").read_text().strip()
    with httpx.Client(base_url=url) as browser:
        signed = browser.post(
            "/auth/login",
            data={"username": "admin", "password": password, "next": "/v1/servers"},
            headers={"accept": "text/html", "origin": url},
        )
        assert signed.status_code == 303, signed.text
        assert signed.headers["location"] == "/v1/servers"
        attributes = _cookie_attributes(signed)
        assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)
        assert "Secure" not in attributes
        cookie = browser.cookies["ikoma_session"]
        me = browser.get("/auth/me")
        assert me.status_code == 200
        assert me.json()["username"] == "admin"
        # the CSRF token of this session comes with a JSON sign-in; a form sign-out carries it as a field
        with httpx.Client(base_url=url) as second:
            token = second.post("/auth/login", json={"username": "admin", "password": password}).json()[
                "csrfToken"
            ]
            out = second.post("/auth/logout", data={"csrf_token": token}, headers={"accept": "text/html"})
            assert out.status_code == 303
            assert out.headers["location"] == "/login"
        assert browser.get("/auth/me").status_code == 200  # another session: still alive
        refused = browser.post("/auth/logout")
        assert refused.status_code == 403
        assert refused.json()["reason"] == "csrf_failed"
    with httpx.Client(base_url=url, cookies={"ikoma_session": cookie}) as replay:
        assert replay.get("/auth/me").status_code == 200


def test_page_request_without_a_session_is_sent_to_login(up: tuple[str, Path]) -> None:
    url, _ = up
    with httpx.Client(base_url=url) as browser:
        page = browser.get("/v1/orders", headers={"accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fv1%2Forders"
        api = browser.get("/v1/orders", headers={"accept": "application/json"})
        assert api.status_code == 401
        assert api.json()["reason"] == "unauthorized"


@pytest.fixture
def secure_server(server_database_url: str, tmp_path: Path) -> Iterator[support.LiveServer]:
    with support.LiveServer(
        database_url=server_database_url, data_dir=tmp_path / "data", extra_env={"IKOMA_COOKIE_SECURE": "1"}
    ) as server:
        yield server


def test_json_sign_in_with_secure_cookies_and_sign_out_then_old_cookie_gets_401(
    secure_server: support.LiveServer,
) -> None:
    password = (secure_server.data_dir / "secrets" / "default_admin_password").read_text().strip()
    with httpx.Client(base_url=secure_server.url) as browser:
        signed = browser.post("/auth/login", json={"username": "admin@ikoma.local", "password": password})
        assert signed.status_code == 200, signed.text
        body = signed.json()
        assert body["user"]["role"] == "admin"
        assert "passwordHash" not in body["user"]
        assert {"HttpOnly", "SameSite=Lax", "Path=/", "Secure"} <= set(_cookie_attributes(signed))
        cookie = signed.cookies["ikoma_session"]
    # a Secure cookie is not sent back over plain HTTP by a browser: send it by hand, as a test may
    with httpx.Client(base_url=secure_server.url, cookies={"ikoma_session": cookie}) as browser:
        assert browser.get("/auth/me").status_code == 200
        out = browser.post("/auth/logout", headers={"x-csrf-token": body["csrfToken"]})
        assert out.status_code == 204
        assert "Max-Age=0" in out.headers["set-cookie"]
    with httpx.Client(base_url=secure_server.url, cookies={"ikoma_session": cookie}) as replay:
        after = replay.get("/auth/me")
        assert after.status_code == 401
        assert after.json()["reason"] == "session_expired"


@pytest.fixture
def quick_recheck_server(tmp_path: Path) -> Iterator[support.LiveServer]:
    """A server that checks an open stream's credential every second (the SSE heartbeat)."""
    with (
        support.server_database("sqlite", tmp_path) as url,
        support.LiveServer(
            database_url=url, data_dir=tmp_path / "data", extra_env={"IKOMA_SSE_HEARTBEAT_SECONDS": "1"}
        ) as server,
    ):
        yield server


def test_an_event_stream_opened_by_a_session_ends_once_the_session_is_logged_out(
    quick_recheck_server: support.LiveServer,
) -> None:
    server = quick_recheck_server
    password = (server.data_dir / "secrets" / "default_admin_password").read_text().strip()
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        token = browser.post("/auth/login", json={"username": "admin", "password": password}).json()[
            "csrfToken"
        ]
        with browser.stream("GET", "/v1/events/stream", headers={"accept": "text/event-stream"}) as watched:
            assert watched.status_code == 200
            lines = watched.iter_lines()
            # alive across several credential checks (one a second) while the session is
            alive_until = time.monotonic() + 3.5
            while time.monotonic() < alive_until:
                next(lines)
            with httpx.Client(base_url=server.url, cookies=dict(browser.cookies)) as same_session:
                out = same_session.post("/auth/logout", headers={"x-csrf-token": token})
                assert out.status_code == 204
            deadline = time.monotonic() + 30
            for _ in lines:  # heartbeats until the next credential check, then the end of the stream
                assert time.monotonic() < deadline, "the stream outlived its session"
