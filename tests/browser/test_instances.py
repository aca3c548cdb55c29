"""The instances page in a real browser against a real `ikoma up` (SQLite): an operator deploys a Mock
instance from the "New instance" form (provider → zone → type → model), and its row reaches `ready`
live — a real runner process enrolled with the instance's token — without a reload; Terminate (with
its confirmation) then takes it to `terminated`, live too, and Archive is offered."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Dialog, expect

from tests import support
from tests.browser.harness import PHONE, Console, ContextFactory, page_errors, shoot, sign_in

pytestmark = pytest.mark.e2e

CONSOLE_BACKEND = "sqlite"
# a Mock machine boots in 3 s (the page shows it booting first) and the loops look every half second
MOCK_ENV = {
    "IKOMA_MOCK_BOOT_SECONDS": "3",
    "IKOMA_MOCK_TICK_INTERVAL": "0.2",
    "IKOMA_INSTANCE_LOOP_INTERVAL": "0.5",
    "IKOMA_INSTANCE_LEASE": "3",
}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """This module's `ikoma up`, as tests/browser/conftest.py starts it, with quick Mock timings."""
    directory = tmp_path_factory.mktemp("console-instances")
    admin_key = "ika_console_" + secrets.token_urlsafe(24)
    port = support.free_port()
    process = support.start_up(directory, port, admin_key, extra_env=MOCK_ENV)
    try:
        yield Console(
            url=f"http://127.0.0.1:{port}",
            data_dir=directory / "data",
            admin_key=admin_key,
            process=process,
            log_path=directory / "up.log",
            backend="sqlite",
        )
    finally:
        support.stop_up(process)


def test_a_mock_instance_deployed_from_the_console_becomes_ready_live_and_is_terminated(
    admin: BrowserContext,
) -> None:
    page = admin.new_page()
    errors = page_errors(page)
    page.goto("/instances/manage")
    form = page.locator("#new-instance-form")
    form.get_by_label("Provider").select_option("mock")
    form.get_by_label("Zone").select_option(label="Mock Paris 1 (mock-par-1)")
    # MOCK-GPU-M is not sold in mock-par-1: the type select does not offer it there
    expect(form.locator("#ni-type option[data-zones='mock-par-2']")).to_be_disabled()
    cpu_s = form.locator("#ni-type option", has_text="MOCK-CPU-S").get_attribute("value") or ""
    form.get_by_label("Instance type").select_option(value=cpu_s)
    # every seeded model needs a GPU: none is offered with a CPU type
    expect(form.locator("#ni-model option:enabled")).to_have_count(0)
    gpu_s = form.locator("#ni-type option", has_text="MOCK-GPU-S").get_attribute("value") or ""
    form.get_by_label("Instance type").select_option(value=gpu_s)
    qwen = (
        form.locator("#ni-model option", has_text="Qwen/Qwen2.5-0.5B-Instruct").get_attribute("value") or ""
    )
    form.get_by_label("Model").select_option(value=qwen)
    form.get_by_label("Name (optional)").fill("browser-made")
    form.get_by_role("button", name="Create instance").click()

    # the page reloads once, with the new row; from then on only the event stream changes it
    row = page.locator("#instances-table tr[data-instance-id]", has_text="browser-made")
    expect(row).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("[data-live-status]")).to_have_text("Live")
    expect(row).to_have_attribute("data-state", "ready")
    expect(row.locator("[data-instance-state]")).to_have_text("ready")
    expect(row).to_have_attribute("data-live-at", re.compile(r"^\d{4}-"))  # ready came by the stream
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    expect(row.locator("a", has_text="machine")).to_have_attribute(
        "href", re.compile(r"^/machines/[0-9a-f-]{36}$")
    )
    shoot(page, "instances-ready")

    def accept(dialog: Dialog) -> None:
        dialog.accept()

    page.once("dialog", accept)
    row.get_by_role("button", name="Terminate browser-made").click()
    expect(row).to_have_attribute("data-state", "terminated")
    expect(row.get_by_role("button", name="Archive browser-made")).to_be_visible()
    expect(row.get_by_role("button", name="Terminate browser-made")).to_be_hidden()
    assert errors == []


@pytest.mark.parametrize("path", ["/instances/manage", "/catalog/manage"])
def test_the_cloud_pages_fit_a_phone_without_errors(
    console: Console, new_context: ContextFactory, path: str
) -> None:
    context = new_context(viewport=PHONE)
    sign_in(context, "admin", console.admin_password)
    page = context.new_page()
    errors = page_errors(page)
    page.goto(path)
    expect(page.locator("main h1")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1, "scrolls sideways"
    shoot(page, "cloud-" + path.strip("/").replace("/", "-") + "-390")
    assert errors == []
