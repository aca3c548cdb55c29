"""Roles in a real browser (PostgreSQL): an observer the admin creates on the users page sees no
control it may not use, and the requests it may not make, forged with its own cookie and CSRF token,
are refused and land in the action log."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser import seeding
from tests.browser.harness import Console, ContextFactory, csrf_token, shoot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CONSOLE_BACKEND = "postgresql"


def _create_observer_on_the_users_page(admin: BrowserContext) -> tuple[str, str]:
    """(username, password) of an observer the admin created through the console's users page."""
    username = f"watcher-{secrets.token_hex(3)}"
    password = "observer-" + secrets.token_urlsafe(12)
    page = admin.new_page()
    page.goto("/users/manage")
    form = page.locator("#user-create")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Email").fill(f"{username}@example.net")
    form.get_by_label("Password").fill(password)
    form.get_by_label("Role").select_option("observer")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator(f'#users-table tr[data-username="{username}"]')).to_have_attribute(
        "data-role", "observer"
    )
    shoot(page, "users")
    page.close()
    return username, password


def test_an_observer_sees_no_run_button_and_a_forged_request_is_refused_and_in_the_action_log(
    console: Console, new_context: ContextFactory
) -> None:
    with console.api() as api:
        local_id = seeding.local_server_id(api)
        server_id, message_id = seeding.server_with_an_important_message(api)
    admin = new_context()
    sign_in(admin, "admin", console.admin_password)
    username, password = _create_observer_on_the_users_page(admin)

    observer = new_context()  # a second browser: the observer's own cookie jar
    page = observer.new_page()
    page.goto("/login")
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{console.url}/")
    expect(page.locator("#fleet-table")).to_be_visible()
    for path in ("/", f"/machines/{server_id}", f"/run?server={local_id}", "/orders"):
        page.goto(path)
        expect(page.locator("#main")).to_be_visible()
        expect(page.get_by_role("button", name="Run", exact=True)).to_have_count(0)
        expect(page.get_by_role("link", name=re.compile(r"^Run a playbook"))).to_have_count(0)
        expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
        expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    page.goto(f"/machines/{server_id}")
    message = page.locator(f'#messages li[data-message-id="{message_id}"]')
    expect(message).to_be_visible()  # an observer reads the messages, without the button
    expect(message.get_by_role("button")).to_have_count(0)
    shoot(page, "machine-observer")

    token = csrf_token(page)
    forged_order = observer.request.post(
        "/v1/orders",
        data={"serverId": local_id, "playbookKey": "shell.exec", "params": {"argv": ["true"]}},
        headers={"X-CSRF-Token": token},
    )
    assert forged_order.status == 403, forged_order.text()
    forged_ack = observer.request.post(
        f"/v1/servers/{server_id}/important-messages/{message_id}/ack", headers={"X-CSRF-Token": token}
    )
    assert forged_ack.status == 403, forged_ack.text()
    me = observer.request.get("/auth/me")
    assert me.ok, me.text()
    observer_actor = f"user:{me.json()['id']}"

    log = admin.new_page()
    log.goto("/action-log")
    search = log.get_by_role("search")
    search.get_by_label("Actor").fill(observer_actor)
    search.get_by_role("button", name="Search").click()
    expect(log).to_have_url(re.compile(r"actor=user%3A"))
    entries = log.locator("tr[data-entry-id]")
    # the ack is refused by the policy table (denied); the order by its playbook's role, a 403 the
    # route answers after the policy let the call in (audited `allowed`, then `error` with its status)
    ack = entries.filter(has_text=f"/important-messages/{message_id}/ack")
    expect(ack).to_have_attribute("data-outcome", "denied")
    expect(ack).to_contain_text("403")
    order = log.locator('tr[data-entry-id][data-outcome="error"]', has_text="POST /v1/orders")
    expect(order).to_have_count(1)
    expect(order).to_contain_text("403")
    shoot(log, "action-log")

    found = admin.request.get("/action_logs/search", params={"actor": observer_actor})
    assert found.ok, found.text()
    refused = {entry["action"]: entry for entry in found.json()["items"] if entry.get("statusCode") == 403}
    assert set(refused) >= {"POST /v1/orders"}, found.json()
    assert found.json()["stats"]["byOutcome"]["denied"] >= 1, found.json()["stats"]
