"""Signing in and out of the console in a real browser: the bootstrap admin, the keyboard alone, the
end of a session, and the rate limit on wrong passwords (SQLite)."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest
from playwright.sync_api import Page, expect

from ikoma.services.local_runner import local_names
from tests.browser.harness import PHONE, WAIT_MS, Console, ContextFactory, shoot, sign_in

pytestmark = pytest.mark.e2e

CONSOLE_BACKEND = "sqlite"
MAX_WRONG_PASSWORDS = 50  # far above any sane per-account limit: a limiter that never trips fails


def _tab_to(page: Page, name: str) -> None:
    """Press Tab until the input named `name` has the focus (the skip link and the form come first)."""
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.name") == name:
            return
    raise AssertionError(f"Tab never reached the input named {name!r}")


def test_the_bootstrap_admin_signs_in_with_the_keyboard_alone_and_sees_the_local_server(
    console: Console, new_context: ContextFactory
) -> None:
    page = new_context().new_page()
    page.goto("/")  # no session: the policy middleware sends the browser to the sign-in page
    expect(page).to_have_url(re.compile(r"/login(\?next=(%2F|/))?$"))  # `/` is where it leads anyway
    expect(page.get_by_label("Username or email")).to_be_visible()
    expect(page.get_by_label("Password", exact=True)).to_be_visible()
    shoot(page, "login")

    _tab_to(page, "username")
    page.keyboard.type("admin")
    _tab_to(page, "password")
    page.keyboard.type(console.admin_password)
    page.keyboard.press("Enter")

    expect(page).to_have_url(f"{console.url}/")
    server_name, _ = local_names()
    expect(page.locator(f'#fleet-table tr[data-server-name="{server_name}"]')).to_be_visible()
    expect(page.locator("#logout-form")).to_contain_text("Sign out")


def test_the_sign_in_page_fits_a_phone(console: Console, new_context: ContextFactory) -> None:
    page = new_context(viewport=PHONE).new_page()
    page.goto("/login")
    form = page.locator("#login-form")
    expect(form).to_be_visible()
    # nothing wider than the phone: no sideways scrolling to reach a field or the button
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(page, "login-390")


def test_signing_out_ends_the_session_and_its_old_cookie_is_refused(
    console: Console, new_context: ContextFactory
) -> None:
    context = new_context()
    sign_in(context, "admin", console.admin_password)
    old_cookies = {cookie["name"]: cookie["value"] for cookie in context.cookies()}
    with httpx.Client(base_url=console.url, cookies=old_cookies, timeout=30, trust_env=False) as before:
        assert before.get("/auth/me").status_code == 200
    page = context.new_page()
    page.goto("/")

    page.locator("#logout-form").get_by_role("button", name="Sign out").click()

    expect(page).to_have_url(re.compile(r"/login"))
    with httpx.Client(base_url=console.url, cookies=old_cookies, timeout=30, trust_env=False) as after:
        me = after.get("/auth/me")
        assert me.status_code == 401, me.text
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login(\?next=(%2F|/))?$"))
    expect(page.locator("#login-form")).to_be_visible()


# Last in this module on purpose: it fills this server's failure counters for the client address
# (127.0.0.1), and a test after it on the same server could find its own sign-in refused.
def test_wrong_passwords_are_rate_limited_on_the_sign_in_page_and_the_route(
    console: Console, new_context: ContextFactory
) -> None:
    account = f"nobody-{secrets.token_hex(4)}"  # the limiter counts names tried, users or not
    page = new_context().new_page()
    page.goto("/login")
    for attempt in range(MAX_WRONG_PASSWORDS):
        page.get_by_label("Username or email").fill(account)
        page.get_by_label("Password", exact=True).fill(f"wrong-{attempt}")
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"error="), timeout=WAIT_MS)
        if "error=too_many_attempts" in page.url:
            break
        assert "error=invalid_credentials" in page.url, page.url
        expect(page.get_by_role("alert")).not_to_be_empty()
    else:
        raise AssertionError(f"{MAX_WRONG_PASSWORDS} wrong passwords in a row were never rate-limited")
    expect(page.get_by_role("alert")).not_to_be_empty()
    shoot(page, "login-rate-limited")

    answer = page.context.request.post("/auth/login", data={"username": account, "password": "wrong"})
    assert answer.status == 429, answer.text()
    assert answer.json()["reason"] == "too_many_attempts"
