"""Running a playbook from the console in a real browser (SQLite): the run form generated from the
playbook's schema, then the order page following the order live to SUCCEEDED with its log."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser import harness, seeding
from tests.browser.harness import Console, page_errors, shoot

pytestmark = pytest.mark.e2e

CONSOLE_BACKEND = "sqlite"


def test_a_ping_run_from_the_console_reaches_succeeded_and_shows_its_log_without_a_reload(
    console: Console, admin: BrowserContext
) -> None:
    with console.api() as api:
        server_id = seeding.local_server_id(api)
    page = admin.new_page()
    errors = page_errors(page)
    page.goto(f"/run?server={server_id}")
    expect(page.locator('select[name="serverId"]')).to_have_value(server_id)
    page.locator('[name="playbookKey"]').select_option("system.test_ping")
    message = page.get_by_label("message")
    expect(message).to_be_visible()  # the form generated from the playbook's parameter schema
    message.fill("hello from the browser")
    shoot(page, "run")
    page.get_by_role("button", name="Run", exact=True).click()

    expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    page.evaluate(f"{harness.NO_RELOAD_MARK} = true")
    status = page.locator("#order-status")
    expect(status).to_have_attribute("data-status", "SUCCEEDED")
    expect(status).to_have_text("SUCCEEDED")
    expect(page.locator("#order-log")).to_contain_text("hello from the browser")
    assert page.evaluate(harness.NO_RELOAD_MARK) is True, "the order page was reloaded"
    shoot(page, "order")
    assert errors == []
