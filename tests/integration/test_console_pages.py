"""Console pages rendered by the real app (ASGI, in process) on SQLite and PostgreSQL: the fleet
overview and the machine page show what the services hold, offer only the controls the caller's role
may use (their URLs are the API's own routes, which work when called), stay within the caller's server
scope, and carry the security headers; the sign-in page and static files are public."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from ikoma.api.app import create_app
from ikoma.bootstrap import Context
from ikoma.console.rendering import CONTENT_SECURITY_POLICY
from ikoma.domain.lifecycle import OrderStatus
from ikoma.domain.roles import Role
from ikoma.services import api_clients, schedules, servers, sessions, users
from ikoma.settings import Settings
from ikoma.storage.clock import db_now
from ikoma.storage.tables import runners
from tests.integration.console_html import Element, parse
from tests.integration.helpers import Pair, claim_and_start, make_order, make_pair, make_server, server_fields
from tests.integration.state_helpers import ingesting_dispatcher, run_order
from tests.state_reports import ReportMaker

ADMIN_KEY = "console-pages-test-admin-key-0123456789"
PASSWORD = "a long enough test passphrase"
MACHINE_SECTIONS = (
    "state",
    "hardware",
    "metrics",
    "timeline",
    "messages",
    "reports",
    "logs",
    "schedules",
    "orders",
)


@dataclass
class Console:
    app: FastAPI
    http: httpx.AsyncClient
    settings: Settings

    @property
    def ctx(self) -> Context:
        ctx: Context = self.app.state.ctx
        return ctx

    async def signed_in(self, role: Role) -> dict[str, str]:
        """The cookie of a new user of `role` signed in (a session, as the browser holds it)."""
        name = f"u{uuid.uuid4().hex[:10]}"
        user = await users.create_user(
            self.ctx.db, username=name, email=f"{name}@example.net", password=PASSWORD, role=role, actor=None
        )
        async with self.ctx.db.write() as tx:
            issued = await sessions.issue(tx, str(user["id"]), ttl_s=3600, address=None)
        return {"Cookie": f"{sessions.COOKIE_NAME}={issued.raw_id}"}

    async def scoped_client(self, role: Role, server_ids: list[str]) -> dict[str, str]:
        """An API client limited to `server_ids` (users see every server; clients may be scoped)."""
        client = await api_clients.create_api_client(
            self.ctx.db,
            name=f"c-{uuid.uuid4().hex[:8]}",
            role=role,
            created_by="admin",
            server_ids=server_ids,
        )
        return {"X-Api-Key": str(client["token"])}

    async def submit(self, form: Element, page: Element, headers: dict[str, str]) -> httpx.Response:
        """What ikoma.js does with a `data-api-url` form: its method and URL, the page's CSRF token."""
        token = page.find_all("meta", name="csrf-token")[0].get("content") or ""
        return await self.http.request(
            str(form.get("data-api-method")),
            str(form.get("data-api-url")),
            headers={**headers, "X-CSRF-Token": token, "Accept": "application/json"},
        )

    async def page(self, path: str, headers: dict[str, str] | None = None, *, status: int = 200) -> Element:
        answer = await self.http.get(path, headers=headers or {})
        assert answer.status_code == status, answer.text[:2000]
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
        assert not re.search(r"<script(?![^>]*\b(src=|type=\"application/json\"))", answer.text), (
            "inline script"
        )
        assert " on" + "click=" not in answer.text
        return parse(answer.text)


@pytest.fixture
async def console(database_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    settings = Settings(
        DATABASE_URL=database_url,
        IKOMA_ADMIN_KEY=ADMIN_KEY,
        IKOMA_DATA_DIR=str(tmp_path / "data"),
        IKOMA_SSH_EXECUTOR=False,
    )
    app = create_app(settings, run_migrations=False, run_reconciler=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as http:
            yield Console(app, http, settings)


@pytest.fixture
def maker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReportMaker:
    (tmp_path / "fakes").mkdir()
    return ReportMaker(tmp_path / "fakes", monkeypatch)


def fleet_rows(page: Element) -> list[Element]:
    return page.by_id("fleet-table").find_all("tr", data_server_id=True)


async def busy_machine(
    console: Console, maker: ReportMaker, name: str = "web-1"
) -> tuple[Pair, dict[str, Any]]:
    """A server with real reports (facts, metrics with full disks, apt needing a reboot, docker down), a
    failed order with a raw log, and an order queued: every section of the machine page has something."""
    db = console.ctx.db
    pair = await make_pair(db, name)
    dispatcher = ingesting_dispatcher(db, console.settings.data_dir)
    await run_order(db, dispatcher, pair, await maker.facts())
    await run_order(db, dispatcher, pair, await maker.metrics(df="system/df_full_disks_composed.txt"))
    await run_order(db, dispatcher, pair, await maker.apt_analyze())
    await run_order(db, dispatcher, pair, await maker.docker(state="down"))
    await run_order(
        db, dispatcher, pair, await maker.apt_failing(), log_lines=["E: Unable to locate package\n"]
    )
    await schedules.replace_schedules(
        db, pair.server_id, [{"playbook_key": "system.metrics", "interval_s": 300, "enabled": True}]
    )
    queued = await make_order(db, pair.server_id)
    return pair, queued


async def beat(console: Console, pair: Pair) -> None:
    """The runner's heartbeat, now by the database clock: its server is online."""
    async with console.ctx.db.write() as tx:
        await tx.execute(
            update(runners).where(runners.c.id == pair.runner_id).values(last_heartbeat_at=db_now())
        )


# --- fleet -----------------------------------------------------------------------------------------------


async def test_fleet_lists_servers_needing_attention_first_with_counts_and_links(
    console: Console, maker: ReportMaker
) -> None:
    db = console.ctx.db
    calm = await make_pair(db, "a-calm")
    dispatcher = ingesting_dispatcher(db, console.settings.data_dir)
    await run_order(db, dispatcher, calm, await maker.apt_up_to_date())
    await beat(console, calm)
    lonely = await make_server(db, "z-no-runner")
    observer = await console.signed_in(Role.OBSERVER)

    page = await console.page("/", observer)

    rows = fleet_rows(page)
    assert [r.get("data-server-name") for r in rows] == ["z-no-runner", "a-calm"]  # attention first
    assert rows[0].get("data-server-id") == str(lonely["id"])
    assert "no runner attached" in rows[0].text
    assert rows[1].find_all("a", href=f"/machines/{calm.server_id}")
    counts = page.find_all("ul", class_="counts")[0].text
    assert "1 needing attention" in counts
    assert page.by_id("main").find_all("h1")[0].text == "Fleet"


async def test_fleet_search_filter_and_sort_narrow_and_order_the_table(console: Console) -> None:
    db = console.ctx.db
    for name in ("db-1", "web-2", "web-1"):
        await make_server(db, name)
    observer = await console.signed_in(Role.OBSERVER)

    searched = await console.page("/?q=WEB", observer)
    assert [r.get("data-server-name") for r in fleet_rows(searched)] == ["web-1", "web-2"]
    assert searched.by_id("fleet-q").get("value") == "WEB"
    healthy = await console.page("/?state=ok", observer)
    assert fleet_rows(healthy) == []
    assert "No server matches" in healthy.by_id("fleet-empty").text
    by_name = await console.page("/?sort=name&state=attention", observer)
    assert [r.get("data-server-name") for r in fleet_rows(by_name)] == ["db-1", "web-1", "web-2"]
    refused = await console.http.get("/?sort=nonsense", headers=observer)
    assert refused.status_code == 422


async def test_a_scoped_caller_sees_only_its_servers_and_no_other_machine_page(console: Console) -> None:
    db = console.ctx.db
    mine = await make_server(db, "mine")
    other = await make_server(db, "other")
    scoped = await console.scoped_client(Role.OPERATOR, [str(mine["id"])])

    page = await console.page("/", scoped)
    assert [r.get("data-server-name") for r in fleet_rows(page)] == ["mine"]
    await console.page(f"/machines/{mine['id']}", scoped)
    hidden = await console.page(f"/machines/{other['id']}", scoped, status=404)
    assert "No such server" in hidden.text
    assert "other" not in hidden.by_id("main").text


async def test_what_a_server_is_named_is_shown_as_text_never_as_markup(console: Console) -> None:
    evil = await servers.create_server(console.ctx.db, server_fields("x<script>alert(1)</script>&"))
    page_html = (await console.http.get("/", headers={"X-Api-Key": ADMIN_KEY})).text
    assert "<script>alert(1)</script>" not in page_html
    assert "x&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page_html
    machine = await console.page(f"/machines/{evil['id']}", {"X-Api-Key": ADMIN_KEY})
    assert machine.find_all("h1")[0].text == "x<script>alert(1)</script>&"


async def test_a_browser_without_a_session_is_sent_to_sign_in_and_an_api_caller_gets_401(
    console: Console,
) -> None:
    for path in ("/", f"/machines/{uuid.uuid4()}"):
        browser = await console.http.get(path, headers={"Accept": "text/html,application/xhtml+xml"})
        assert browser.status_code == 303, (path, browser.status_code)
        location = browser.headers["location"]
        assert location.partition("?")[0] == "/login"
        assert path == "/" or "next=%2Fmachines%2F" in location, location
        caller = await console.http.get(path)
        assert caller.status_code == 401, (path, caller.status_code)


# --- machine page --------------------------------------------------------------------------------------


async def test_machine_page_shows_every_section_from_the_services(
    console: Console, maker: ReportMaker
) -> None:
    pair, queued = await busy_machine(console, maker)
    page = await console.page(f"/machines/{pair.server_id}", await console.signed_in(Role.OBSERVER))

    for section in MACHINE_SECTIONS:
        page.by_id(section)
    assert page.find_all("h1")[0].text == "web-1"
    assert "reboot required" in page.by_id("attention").text
    assert "docker down" in page.by_id("attention").text
    assert "92 %" in page.by_id("state").text  # root disk of df_full_disks_composed
    hardware = page.by_id("hardware").text
    assert "kvm" in hardware
    assert "GPUs" in hardware
    # the charts' data: a JSON block (CSP: no inline script) the script hands to uPlot
    data = page.by_id("metrics-data")
    assert data.get("type") == "application/json"
    assert '"root_used_percent":[92.0]' in data.text
    assert len(page.by_id("metrics").find_all("div", data_chart=True)) == 3
    timeline = page.by_id("timeline")
    assert timeline.get(
        "data-stream-url",
    ).startswith(f"/v1/events/stream?serverId={pair.server_id}&after=")
    assert "state.reboot_required" in timeline.text
    assert page.by_id("messages").find_all("li", data_message_id=True)
    reports_section = page.by_id("reports")
    assert reports_section.find_all("details", data_report_id=True)
    newest = reports_section.find_all("details", data_report_id=True)[0]
    assert newest.find_all("h2")[0].text == "Summary"  # the report's Markdown, rendered
    downloads = [a.get("href") for a in page.by_id("logs").find_all("a") if a.text == "Download"]
    assert downloads
    assert all(str(href).startswith("/v1/artifacts/") for href in downloads)
    assert page.by_id("orders").find_all("tr", data_order_id=str(queued["id"]))
    schedule = page.by_id("schedules").find_all("tr")[1].text
    assert "system.metrics" in schedule
    assert "5 min" in schedule


async def test_an_observer_is_offered_no_acknowledge_cancel_pin_or_run(
    console: Console, maker: ReportMaker
) -> None:
    pair, _ = await busy_machine(console, maker)
    page = await console.page(f"/machines/{pair.server_id}", await console.signed_in(Role.OBSERVER))

    buttons = page.buttons()
    for control in ("Acknowledge", "Cancel", "Pin", "Unpin"):
        assert control not in buttons, control
    assert not page.find_all("form", data_api_url=True)
    assert "Run a playbook" not in page.text
    assert page.by_id("logout-form").find_all("button")[0].text == "Sign out"  # only the sign-out form


async def test_an_operators_controls_call_the_api_routes_that_do_the_work(
    console: Console, maker: ReportMaker
) -> None:
    pair, queued = await busy_machine(console, maker)
    operator = await console.signed_in(Role.OPERATOR)
    page = await console.page(f"/machines/{pair.server_id}", operator)
    run = [a for a in page.find_all("a") if a.text == "Run a playbook"]
    assert [a.get("href") for a in run] == [f"/run?server={pair.server_id}"]

    # acknowledge: the button's form posts the existing ack route
    first = page.by_id("messages").find_all("li", data_message_id=True, data_new="true")[0]
    ack = first.find_all("form", data_api_url=True)[0]
    assert ack.buttons() == ["Acknowledge"]
    assert ack.get("data-api-method") == "POST"
    forged = await console.http.post(str(ack.get("data-api-url")), headers=operator)  # no CSRF token
    assert (forged.status_code, forged.json()["reason"]) == (403, "csrf_failed")
    observer = await console.signed_in(Role.OBSERVER)
    observer_page = await console.page(f"/machines/{pair.server_id}", observer)
    refused = await console.submit(ack, observer_page, observer)  # a control not offered, posted anyway
    assert (refused.status_code, refused.json()["reason"]) == (403, "forbidden")
    done = await console.submit(ack, page, operator)
    assert done.status_code == 200, done.text
    after = await console.page(f"/machines/{pair.server_id}", operator)
    acked = after.by_id("messages").find_all("li", data_message_id=first.get("data-message-id"))[0]
    assert acked.get("data-new") == "false"
    assert "Acknowledge" not in acked.buttons()

    # pin the raw log, then its button becomes Unpin
    log_row = page.by_id("logs").find_all("tr", data_artifact_id=True)[0]
    pin = log_row.find_all("form", data_api_url=True)[0]
    assert pin.buttons() == ["Pin"]
    pinned = await console.submit(pin, page, operator)
    assert pinned.status_code == 200, pinned.text
    after = await console.page(f"/machines/{pair.server_id}", operator)
    row = after.by_id("logs").find_all("tr", data_artifact_id=log_row.get("data-artifact-id"))[0]
    assert row.buttons() == ["Unpin"]
    download = await console.http.get(f"/v1/artifacts/{log_row.get('data-artifact-id')}", headers=operator)
    assert "Unable to locate package" in download.text

    # cancel the queued order
    order_row = page.by_id("orders").find_all("tr", data_order_id=str(queued["id"]))[0]
    cancel = order_row.find_all("form", data_api_url=True)[0]
    assert cancel.buttons() == ["Cancel"]
    cancelled = await console.submit(cancel, page, operator)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == OrderStatus.CANCELLED.value
    after = await console.page(f"/machines/{pair.server_id}", operator)
    assert not after.by_id("orders").find_all("tr", data_order_id=str(queued["id"]))


async def test_a_running_order_is_listed_until_it_ends(console: Console) -> None:
    db = console.ctx.db
    pair = await make_pair(db, "runs")
    dispatcher = ingesting_dispatcher(db, console.settings.data_dir)
    await make_order(db, pair.server_id)
    running = await claim_and_start(dispatcher, pair.identity)
    page = await console.page(f"/machines/{pair.server_id}", await console.signed_in(Role.ADMIN))
    row = page.by_id("orders").find_all("tr", data_order_id=str(running["id"]))[0]
    assert "RUNNING" in row.text


async def test_an_unknown_server_is_a_not_found_page(console: Console) -> None:
    page = await console.page(f"/machines/{uuid.uuid4()}", await console.signed_in(Role.ADMIN), status=404)
    assert page.find_all("h1")[0].text == "No such server"


# --- public: sign-in page and static files ---------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # reads nothing from the database
async def test_sign_in_page_is_public_and_explains_why_sign_in_failed(console: Console) -> None:
    page = await console.page("/login?next=/machines/abc")
    form = page.by_id("login-form")
    assert (form.get("method"), form.get("action")) == ("post", "/auth/login")
    assert {i.get("name") for i in form.find_all("input")} == {"username", "password", "next"}
    assert form.find_all("input", name="next")[0].get("value") == "/machines/abc"
    labels = {label.text for label in form.find_all("label")}
    assert labels == {"Username or email", "Password"}
    assert form.buttons() == ["Sign in"]
    assert not page.find_all(role="alert")

    for reason in ("invalid_credentials", "too_many_attempts", "user_disabled", "session_expired"):
        alert = (await console.page(f"/login?error={reason}")).find_all(role="alert")
        assert len(alert) == 1
        assert alert[0].get("data-reason") == reason
    totp = await console.page("/login?error=totp_required&next=//evil.example")
    assert totp.find_all("input", name="totp")
    assert totp.find_all("input", name="next")[0].get("value") == "/"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_static_files_are_public_cached_by_digest_and_never_outside_their_folder(
    console: Console,
) -> None:
    page = await console.page("/login")
    script = next(s.get("src") for s in page.find_all("script") if "ikoma.js" in str(s.get("src")))
    answer = await console.http.get(str(script))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/javascript")
    assert "immutable" in answer.headers["cache-control"]
    assert "X-CSRF-Token" in answer.text
    again = await console.http.get("/static/ikoma.js", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304
    assert (await console.http.get("/static/ikoma.js?v=old")).headers["cache-control"] == "no-cache"
    for path in ("/static/%2e%2e/rendering.py", "/static/nope.js", "/static/vendor/..%2f..%2fpages.py"):
        refused = await console.http.get(path)
        assert refused.status_code == 404, path
