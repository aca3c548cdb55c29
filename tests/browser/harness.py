"""What the browser tests share: the running console, screenshots, signing a browser context in.

`shoot` saves the named screenshots docs/console.md shows into `test-results/screens/`
(IKOMA_TEST_RESULTS), and also into the directory IKOMA_SCREENSHOTS names:
`IKOMA_SCREENSHOTS=docs/console .venv/bin/pytest tests/browser` refreshes the docs' images.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import httpx
from playwright.sync_api import BrowserContext, ConsoleMessage, Page

from tests import processes

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("IKOMA_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root in a container, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
RESULTS = Path(os.environ.get("IKOMA_TEST_RESULTS", str(ROOT / "test-results")))
SCREENSHOTS = os.environ.get("IKOMA_SCREENSHOTS", "")
# a loaded 2-core machine is slow, not broken: every wait in the browser is generous
WAIT_MS = 60_000
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

# set on a page's window by a test: a reload (or any navigation) would wipe it
NO_RELOAD_MARK = "window.__ikomaStillThisPage"

# new_context(**options) -> a browser context on the console (tests/browser/conftest.py)
ContextFactory = Callable[..., BrowserContext]


@dataclass
class Console:
    """A running `ikoma up`: its URL, its data dir, its admin key (for setting up data over the API)."""

    url: str
    data_dir: Path
    admin_key: str
    process: Popen[bytes]
    log_path: Path
    backend: str

    @property
    def admin_password(self) -> str:
        """The bootstrap admin's password, from the file `ikoma up` wrote at its first start."""
        return (self.data_dir / "secrets" / "default_admin_password").read_text().strip()

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"x-ikoma-admin-key": self.admin_key}, timeout=30, trust_env=False
        )

    def log_tail(self) -> str:
        return processes.read_tail(self.log_path)


def keep_failure_screenshots(nodeid: str, contexts: list[BrowserContext]) -> None:
    """Save every page still open in `contexts` as `test-results/<test id>-<n>.png`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)
    pages = [page for context in contexts for page in context.pages]
    for number, page in enumerate(pages, start=1):
        target = RESULTS / f"{name}-{number}.png"
        try:
            page.screenshot(path=str(target), full_page=True)
        except Exception as error:  # a crashed page must not hide the test's own failure
            print(f"could not save {target}: {error}")
        else:
            print(f"screenshot of the failure: {target}")


def shoot(page: Page, name: str) -> None:
    """Save a named full-page screenshot into test-results/screens/ and IKOMA_SCREENSHOTS (if set)."""
    targets = [RESULTS / "screens"]
    if SCREENSHOTS:
        targets.append(Path(SCREENSHOTS) if Path(SCREENSHOTS).is_absolute() else ROOT / SCREENSHOTS)
    picture = page.screenshot(full_page=True, animations="disabled")
    for folder in targets:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.png").write_bytes(picture)


def sign_in(context: BrowserContext, username: str, password: str) -> None:
    """Sign the context in through the sign-in form's route (its cookie lands in the context's jar)."""
    answer = context.request.post(
        "/auth/login", form={"username": username, "password": password, "next": "/"}
    )
    assert answer.ok, f"sign-in of {username} answered {answer.status}: {answer.text()[:500]}"
    assert any(cookie["httpOnly"] for cookie in context.cookies()), context.cookies()


def csrf_token(page: Page) -> str:
    """The CSRF token the page layout carries in <meta name="csrf-token">."""
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token, "the page has no csrf-token meta element"
    return token


def page_errors(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of `page` from now on (a CSP refusal shows up here)."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        source = message.location.get("url", "")
        # the browser's own favicon request is not the page's doing (the layout names no icon)
        if message.type == "error" and not source.endswith("/favicon.ico"):
            errors.append(f"{message.text} ({source})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "response",
        lambda answer: errors.append(f"{answer.status} {answer.url}") if answer.status >= 400 else None,
    )
    return errors
