"""Browser tests: the console driven in Debian's Chromium against a real `ikoma up`.

One `ikoma up` (API + its local runner) per test module, on the backend the module names in
`CONSOLE_BACKEND` ("sqlite" unless it says "postgresql"), with its data dir in a temporary directory
and a free port (so xdist workers never collide); one headless Chromium per module, one browser
context per user. No browser is ever downloaded: Debian's /usr/bin/chromium (.ci/run installs it) is
launched directly. Where it is missing these tests are skipped, except on CI, where that fails.

A failing test leaves a screenshot of every page it had open in `test-results/` (IKOMA_TEST_RESULTS).
The helpers the tests call (sign in, screenshots) are in tests/browser/harness.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright, expect, sync_playwright

from tests import support
from tests.browser import harness
from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, DESKTOP, WAIT_MS, Console, ContextFactory

_FAILED = pytest.StashKey[bool]()
expect.set_options(timeout=WAIT_MS)  # Playwright's 5 s default is short for a loaded machine


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember a failed setup or call, so the contexts' teardown knows to keep screenshots."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        item.stash[_FAILED] = True
    return report


@pytest.fixture(scope="module")
def console(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """One real `ikoma up` for the module, on the module's CONSOLE_BACKEND; stopped (and its PostgreSQL
    database dropped) on every path."""
    backend = getattr(request.module, "CONSOLE_BACKEND", "sqlite")
    directory = tmp_path_factory.mktemp(f"console-{backend}")
    admin_key = "ika_console_" + secrets.token_urlsafe(24)
    with support.server_database(backend, directory) as database_url:
        extra = {} if backend == "sqlite" else {"DATABASE_URL": database_url}
        port = support.free_port()
        process = support.start_up(directory, port, admin_key, extra_env=extra)
        try:
            yield Console(
                url=f"http://127.0.0.1:{port}",
                data_dir=directory / "data",
                admin_key=admin_key,
                process=process,
                log_path=directory / "up.log",
                backend=backend,
            )
        finally:
            support.stop_up(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium for the module (skipped where it is missing, failed on CI)."""
    if not CHROMIUM.exists():
        if support.ON_CI:
            pytest.fail(f"{CHROMIUM} is missing on CI: .ci/run installs Debian's chromium package")
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        yield _launch(playwright)


def _launch(playwright: Playwright) -> Browser:
    # Playwright gives a launch 30 s; Chromium's start on a saturated 2-core machine can take longer
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=2 * WAIT_MS
    )


@pytest.fixture
def new_context(
    request: pytest.FixtureRequest, browser: Browser, console: Console
) -> Iterator[ContextFactory]:
    """Open browser contexts (one per user) on the console; closed after the test. When the test
    failed, every page still open is saved as `test-results/<test id>-<n>.png` first."""
    opened: list[BrowserContext] = []

    def open_context(**options: Any) -> BrowserContext:
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(base_url=console.url, **options)
        context.set_default_timeout(WAIT_MS)
        opened.append(context)
        return context

    yield open_context
    try:
        if request.node.stash.get(_FAILED, False):
            harness.keep_failure_screenshots(request.node.nodeid, opened)
            print(f"last lines of the console's `ikoma up` log:\n{console.log_tail()}")
    finally:
        for context in opened:
            context.close()


@pytest.fixture
def admin(console: Console, new_context: ContextFactory) -> BrowserContext:
    """A browser context signed in as the bootstrap admin."""
    context = new_context()
    harness.sign_in(context, "admin", console.admin_password)
    return context
