"""The fleet and machine pages in a real browser, signed in as the bootstrap admin (SQLite): the fleet
at desktop and phone widths with the server needing attention first, and an important message
acknowledged with one click on the machine page, its event appearing on the live timeline."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, expect

from ikoma.services.local_runner import local_names
from tests.browser import harness, seeding
from tests.browser.harness import DESKTOP, PHONE, Console, ContextFactory, page_errors, shoot, sign_in

pytestmark = pytest.mark.e2e

CONSOLE_BACKEND = "sqlite"


@pytest.fixture(scope="module")
def failing_server(console: Console) -> str:
    """A server whose last apt.analyze failed (an error and an important message): needs attention."""
    with console.api() as api:
        server_id, _ = seeding.server_with_an_important_message(api)
    return server_id


@pytest.mark.parametrize(("viewport", "width"), [(DESKTOP, "1280"), (PHONE, "390")])
def test_the_fleet_page_lists_the_local_server_after_the_one_needing_attention_at_both_widths(
    console: Console, new_context: ContextFactory, failing_server: str, viewport: dict[str, int], width: str
) -> None:
    context = new_context(viewport=viewport)
    sign_in(context, "admin", console.admin_password)
    page = context.new_page()
    errors = page_errors(page)
    page.goto("/")
    server_name, _ = local_names()
    row = page.locator(f'#fleet-table tr[data-server-name="{server_name}"]')
    expect(row).to_be_visible()
    expect(row.locator(f"a[href='/machines/{row.get_attribute('data-server-id')}']")).to_be_visible()
    order = page.locator("#fleet-table tr[data-server-id]").evaluate_all(
        "rows => rows.map(row => row.dataset.serverId)"
    )
    local_id = row.get_attribute("data-server-id")
    assert order.index(failing_server) < order.index(local_id), order  # needs attention first
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1, (
        "the page scrolls sideways"
    )
    shoot(page, f"fleet-{width}")
    assert errors == []


def test_an_important_message_is_acknowledged_with_one_click_on_the_machine_page(
    console: Console, admin: BrowserContext
) -> None:
    with console.api() as api:
        server_id, message_id = seeding.server_with_an_important_message(api)
    page = admin.new_page()
    errors = page_errors(page)
    page.goto(f"/machines/{server_id}")
    for section in ("state", "hardware", "metrics", "timeline", "messages", "reports", "logs", "orders"):
        expect(page.locator(f"#{section}")).to_be_attached()
    acknowledge = page.locator(f'#messages button[data-message-id="{message_id}"]')
    expect(acknowledge).to_have_text(re.compile("Acknowledge"))
    shoot(page, "machine")

    page.evaluate(f"{harness.NO_RELOAD_MARK} = true")
    acknowledge.click()

    expect(acknowledge).to_be_disabled()
    expect(acknowledge).to_have_text("Acknowledged")
    # the timeline is live: the acknowledgement's event is prepended without a reload
    expect(page.locator("#timeline").get_by_text("message.acknowledged").first).to_be_visible()
    assert page.evaluate(harness.NO_RELOAD_MARK) is True, "the machine page was reloaded"
    with console.api() as api:
        messages = {m["id"]: m for m in api.get(f"/v1/servers/{server_id}/important-messages").json()}
    assert messages[message_id]["acknowledged"] is True
    assert messages[message_id]["acknowledgedBy"].startswith("user:"), messages[message_id]
    assert errors == []
