"""The run form, the orders pages, the action log page and the admin pages, rendered by the real app
(ASGI, in process) on SQLite and PostgreSQL: each shows what the services hold, offers only the
controls the caller's role may use (their URLs are the API's own routes, which work when called), and
carries the security headers."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from ikoma.api.app import create_app
from ikoma.bootstrap import Context
from ikoma.console.rendering import CONTENT_SECURITY_POLICY
from ikoma.domain.roles import Role
from ikoma.runner.agent import build_report, order_status
from ikoma.runner.execution import ExecutionContext
from ikoma.runner.playbooks import REGISTRY
from ikoma.services import api_clients, audit, playbooks, sessions, users
from ikoma.settings import Settings
from tests.integration.console_html import Element, parse
from tests.integration.helpers import make_order, make_pair, make_server
from tests.integration.state_helpers import ingesting_dispatcher, run_order
from tests.state_reports import Produced

ADMIN_KEY = "console-orders-test-admin-key-0123456789"
PASSWORD = "a long enough test passphrase"
ADMIN_PAGES = ("/action-log", "/users/manage", "/api-clients/manage", "/runners/manage")


@dataclass
class Console:
    app: FastAPI
    http: httpx.AsyncClient
    settings: Settings

    @property
    def ctx(self) -> Context:
        ctx: Context = self.app.state.ctx
        return ctx

    @property
    def admin(self) -> dict[str, str]:
        return {"X-Api-Key": ADMIN_KEY}

    async def signed_in(self, role: Role) -> dict[str, str]:
        """The cookie of a new user of `role` signed in (a session, as the browser holds it)."""
        name = f"u{uuid.uuid4().hex[:10]}"
        user = await users.create_user(
            self.ctx.db, username=name, email=f"{name}@example.net", password=PASSWORD, role=role, actor=None
        )
        async with self.ctx.db.write() as tx:
            issued = await sessions.issue(tx, str(user["id"]), ttl_s=3600, address=None)
        return {"Cookie": f"{sessions.COOKIE_NAME}={issued.raw_id}"}

    async def client(self, role: Role) -> dict[str, str]:
        created = await api_clients.create_api_client(
            self.ctx.db, name=f"c-{uuid.uuid4().hex[:8]}", role=role, created_by="admin"
        )
        return {"X-Api-Key": str(created["token"])}

    async def page(self, path: str, headers: dict[str, str], *, status: int = 200) -> Element:
        answer = await self.http.get(path, headers=headers)
        assert answer.status_code == status, answer.text[:2000]
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert not re.search(r"<script(?![^>]*\b(src=|type=\"application/json\"))", answer.text), (
            "inline script"
        )
        assert " on" + "click=" not in answer.text
        return parse(answer.text)

    async def submit(
        self, form: Element, page: Element, headers: dict[str, str], body: dict[str, Any] | None = None
    ) -> httpx.Response:
        """What ikoma.js does with a `data-api-url` form: its method and URL, JSON, the CSRF token."""
        token = page.find_all("meta", name="csrf-token")[0].get("content") or ""
        return await self.http.request(
            str(form.get("data-api-method")),
            str(form.get("data-api-url")),
            json=body,
            headers={**headers, "X-CSRF-Token": token, "Accept": "application/json"},
        )


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


def fieldset(page: Element, key: str) -> Element:
    found = page.by_id("run-form").find_all("fieldset", data_playbook=key)
    assert len(found) == 1, key
    return found[0]


def field_names(element: Element) -> list[str]:
    return [
        str(e.get("name"))
        for e in element.walk()
        if e.tag in ("input", "select", "textarea") and e.get("name") and e.get("type") != "hidden"
    ] + [str(e.get("name")) for e in element.find_all("input", type="hidden")]


def labelled(page: Element, element: Element) -> bool:
    return bool(page.find_all("label", for_=str(element.get("id"))))


# --- the run form ----------------------------------------------------------------------------------------


async def test_run_form_has_one_labelled_field_per_schema_property_of_every_playbook(
    console: Console,
) -> None:
    server = await make_server(console.ctx.db, "web-1")
    page = await console.page(f"/run?server={server['id']}&playbook=apps.logs", console.admin)

    form = page.by_id("run-form")
    assert (form.get("data-api-method"), form.get("data-api-url")) == ("POST", "/v1/orders")
    chosen_server = [
        o for o in form.find_all("select", name="serverId")[0].find_all("option") if "selected" in o.attrs
    ]
    assert [o.get("value") for o in chosen_server] == [str(server["id"])]
    catalog = {p["key"]: p for p in await playbooks.list_playbooks(console.ctx.db)}
    offered = [o.get("value") for o in form.find_all("select", name="playbookKey")[0].find_all("option")]
    assert sorted(offered) == sorted(catalog)  # the admin may run every playbook
    for key, playbook in catalog.items():
        properties = list((playbook["params_schema"] or {}).get("properties") or {})
        part = fieldset(page, key)
        assert sorted(field_names(part)) == sorted(f"params.{p}" for p in properties), key
        for control in part.walk():
            if control.tag in ("input", "select", "textarea") and control.get("type") != "hidden":
                assert labelled(page, control), f"{key}: {control.attrs}"
        # only the chosen playbook's inputs are enabled: the others are neither sent nor validated
        enabled = [c for c in part.walk() if c.get("name") and "disabled" not in c.attrs]
        assert bool(enabled) == (key == "apps.logs" and bool(properties)), key
    logs = fieldset(page, "apps.logs")
    app_name = logs.find_all("input", name="params.appName")[0]
    assert ("required" in app_name.attrs, app_name.get("pattern")) == (True, "^[a-z][a-z0-9\\-]{0,62}$")
    lines = logs.find_all("input", name="params.lines")[0]
    assert (
        lines.get("type"),
        lines.get("data-type"),
        lines.get("min"),
        lines.get("max"),
        lines.get("value"),
    ) == (
        "number",
        "integer",
        "1",
        "5000",
        "100",
    )
    assert "(required)" in page.find_all("label", for_=str(app_name.get("id")))[0].text
    assert fieldset(page, "apt.analyze").find_all("input", name="params.refresh", type="checkbox")
    init_runtime = fieldset(page, "apps.init").find_all("select", name="params.runtime")[0]
    assert [o.get("value") for o in init_runtime.find_all("option")] == ["", "auto", "process", "compose"]
    argv = fieldset(page, "shell.exec")
    assert argv.find_all("textarea", data_lines_for=True)
    assert argv.find_all("input", type="hidden", name="params.argv", data_type="json")
    assert page.by_id("run-form").buttons() == ["Run"]


async def test_destructive_playbooks_ask_for_the_confirmation_before_running(console: Console) -> None:
    await make_server(console.ctx.db, "web-1")
    page = await console.page("/run", console.admin)
    for key in ("apps.remove", "db.restore", "deploy.rollback"):
        confirm = fieldset(page, key).find_all("input", name="params.confirm")[0]
        assert (confirm.get("data-must-equal"), "required" in confirm.attrs) == ("params.appName", True), key
        assert not fieldset(page, key).find_all("input", data_acknowledge=True)
    for key in ("apt.upgrade", "docker.prune", "shell.exec"):
        box = fieldset(page, key).find_all("input", data_acknowledge=True)
        assert len(box) == 1, key
        assert ("required" in box[0].attrs, box[0].get("name")) == (
            True,
            None,
        )  # not sent: the API takes none
        assert "destructive" in fieldset(page, key).text
    assert not fieldset(page, "system.test_ping").find_all("input", data_acknowledge=True)


async def test_the_run_form_posts_what_the_orders_route_accepts(console: Console) -> None:
    server = await make_server(console.ctx.db, "web-1")
    operator = await console.signed_in(Role.OPERATOR)
    page = await console.page(f"/run?server={server['id']}", operator)
    body = {"serverId": str(server["id"]), "playbookKey": "system.test_ping", "params": {"message": "hi"}}
    created = await console.submit(page.by_id("run-form"), page, operator, body)
    assert created.status_code == 201, created.text
    order_id = created.json()["order"]["id"]
    order_page = await console.page(f"/orders/{order_id}", operator)
    assert order_page.by_id("order-status").get("data-status") == "QUEUED"


async def test_each_role_is_offered_only_the_playbooks_it_may_run_and_an_observer_none(
    console: Console,
) -> None:
    await make_server(console.ctx.db, "web-1")
    catalog = await playbooks.list_playbooks(console.ctx.db)
    builder = await console.page("/run", await console.signed_in(Role.BUILDER))
    offered = {o.get("value") for o in builder.by_id("run-playbook").find_all("option")}
    assert offered == {p["key"] for p in catalog if Role.parse(p["min_role"]) <= Role.BUILDER}
    assert "apps.init" in offered
    assert "deploy.up" not in offered

    for observer in (await console.signed_in(Role.OBSERVER), await console.client(Role.OBSERVER)):
        page = await console.page("/run", observer)
        assert not page.find_all("form", id="run-form")
        assert "Run" not in page.by_id("main").buttons()
        assert "may not run playbooks" in page.by_id("run-unavailable").text
        # nowhere else either
        for path in ("/orders", "/"):
            assert not [
                b for b in (await console.page(path, observer)).find_all("a") if b.text == "Run a playbook"
            ]


# --- orders ----------------------------------------------------------------------------------------------


async def test_orders_list_filters_by_status_server_and_playbook_and_pages_older(console: Console) -> None:
    db = console.ctx.db
    first = await make_server(db, "web-1")
    second = await make_server(db, "web-2")
    made = [await make_order(db, str(first["id"])) for _ in range(3)]
    other = await make_order(db, str(second["id"]), "system.facts")
    observer = await console.signed_in(Role.OBSERVER)

    page = await console.page("/orders", observer)
    rows = page.by_id("orders-table").find_all("tr", data_order_id=True)
    listed = await console.http.get("/v1/orders", headers=console.admin)
    assert [r.get("data-order-id") for r in rows] == [o["id"] for o in listed.json()["items"]]
    assert sorted(r.get("data-order-id") or "" for r in rows) == sorted(str(o["id"]) for o in [other, *made])
    row = page.by_id("orders-table").find_all("tr", data_order_id=str(other["id"]))[0]
    assert row.find_all("a", href=f"/orders/{other['id']}")
    assert "web-2" in row.text

    by_server = await console.page(f"/orders?server={second['id']}", observer)
    assert [r.get("data-order-id") for r in by_server.find_all("tr", data_order_id=True)] == [
        str(other["id"])
    ]
    by_playbook = await console.page("/orders?playbook=system.test_ping", observer)
    assert len(by_playbook.find_all("tr", data_order_id=True)) == 3
    none_done = await console.page("/orders?status=SUCCEEDED", observer)
    assert not none_done.find_all("tr", data_order_id=True)
    assert "No order matches" in none_done.by_id("orders-empty").text

    console_page_size = 50
    assert len(rows) < console_page_size
    assert not page.find_all("a", id="orders-older")
    unknown = await console.page(f"/orders?server={uuid.uuid4()}", observer)
    assert unknown.find_all("p", role="alert")


async def test_orders_list_pages_with_older_links_without_gaps(console: Console) -> None:
    db = console.ctx.db
    server = await make_server(db, "web-1")
    made = [str((await make_order(db, str(server["id"])))["id"]) for _ in range(55)]
    admin = console.admin
    seen: list[str] = []
    path: str | None = "/orders"
    while path:
        page = await console.page(path, admin)
        seen += [str(r.get("data-order-id")) for r in page.find_all("tr", data_order_id=True)]
        older = page.find_all("a", id="orders-older")
        path = str(older[0].get("href")) if older else None
    # newest first by (created_at, id), as GET /v1/orders lists them: orders made within the same
    # millisecond follow their ids, not their creation
    listed = await console.http.get("/v1/orders", params={"limit": 500}, headers=admin)
    assert seen == [o["id"] for o in listed.json()["items"]]
    assert sorted(seen) == sorted(made)


async def test_order_page_shows_status_events_attempts_and_the_report_with_raw_html_escaped(
    console: Console,
) -> None:
    db = console.ctx.db
    pair = await make_pair(db, "web-1")
    dispatcher = ingesting_dispatcher(db, console.settings.data_dir)
    message = "<script>alert('x')</script> **bold**"
    ctx = ExecutionContext("console-order-test", {"message": message})
    result = await REGISTRY["system.test_ping"](ctx, {"message": message})
    produced = Produced("system.test_ping", order_status(result, ctx), build_report(result, 12, ctx.masker))
    done = await run_order(db, dispatcher, pair, produced, log_lines=["hello from the runner\n"])
    assert done["status"] == "SUCCEEDED"
    observer = await console.signed_in(Role.OBSERVER)

    answer = await console.http.get(f"/orders/{done['id']}", headers=observer)
    page = parse(answer.text)
    status = page.by_id("order-status")
    assert (status.text, status.get("data-status")) == ("SUCCEEDED", "SUCCEEDED")
    changes = [
        r.get("data-event-status") for r in page.by_id("order-events").find_all("tr", data_event_status=True)
    ]
    assert changes == ["QUEUED", "CLAIMED", "RUNNING", "SUCCEEDED"]
    attempts = page.by_id("order-attempts").find_all("tbody")[0].find_all("tr")
    assert len(attempts) == 1
    assert "SUCCEEDED" in attempts[0].text
    report = page.by_id("order-report")
    assert report.find_all("div", class_="report-body")
    assert "<script>alert" not in answer.text  # the report's raw HTML is text, never markup
    assert not report.find_all("script")
    assert page.by_id("order-log").tag == "pre"
    live = page.by_id("order-live")
    assert live.get("data-log-url") == f"/v1/orders/{done['id']}/logs/stream"
    assert re.fullmatch(
        rf"/v1/events/stream\?orderId={done['id']}&kind=order\.&after=\d+", str(live.get("data-events-url"))
    )
    kinds = json.loads(page.by_id("order-kinds").text)
    assert "order.succeeded" in kinds
    assert not page.find_all("form", id="order-cancel")  # ended: nothing to cancel


async def test_order_page_resumes_the_event_stream_after_what_it_rendered(console: Console) -> None:
    db = console.ctx.db
    server = await make_server(db, "web-1")
    order = await make_order(db, str(server["id"]))
    page = await console.page(f"/orders/{order['id']}", console.admin)
    assert page.by_id("order-waiting").get("data-reason") == "no_runner_attached"
    after = int(str(page.by_id("order-live").get("data-events-url")).rsplit("=", 1)[1])
    listed = await console.http.get("/v1/events", params={"orderId": order["id"]}, headers=console.admin)
    assert [e["id"] for e in listed.json()["events"] if e["id"] > after] == []  # rendered already
    await console.http.post(f"/v1/orders/{order['id']}/cancel", headers=console.admin)
    later = await console.http.get(
        "/v1/events", params={"orderId": order["id"], "after": after}, headers=console.admin
    )
    assert [e["kind"] for e in later.json()["events"]] == ["order.cancelled"]


async def test_cancel_is_offered_to_operators_while_the_order_runs_and_works(console: Console) -> None:
    db = console.ctx.db
    server = await make_server(db, "web-1")
    order = await make_order(db, str(server["id"]))
    observer_page = await console.page(f"/orders/{order['id']}", await console.signed_in(Role.OBSERVER))
    assert not observer_page.find_all("form", id="order-cancel")
    assert "Cancel" not in observer_page.by_id("main").buttons()
    assert not [a for a in observer_page.find_all("a") if a.text == "Run again"]

    operator = await console.signed_in(Role.OPERATOR)
    page = await console.page(f"/orders/{order['id']}", operator)
    form = page.by_id("order-cancel")
    assert form.buttons() == ["Cancel"]
    cancelled = await console.submit(form, page, operator)
    assert cancelled.status_code == 200, cancelled.text
    after = await console.page(f"/orders/{order['id']}", operator)
    assert after.by_id("order-status").get("data-status") == "CANCELLED"
    assert not after.find_all("form", id="order-cancel")


async def test_secret_params_are_shown_as_the_placeholder(console: Console) -> None:
    server = await make_server(console.ctx.db, "web-1")
    schema = {
        "type": "object",
        "properties": {"user": {"type": "string"}, "dsn": {"type": "string", "writeOnly": True}},
    }
    made = await console.http.post(
        "/v1/playbooks", json={"key": "db.rotate", "paramsSchema": schema}, headers=console.admin
    )
    assert made.status_code == 201, made.text
    params = {"user": "app", "dsn": "postgresql://app:hunter2@db/app"}
    created = await console.http.post(
        "/v1/orders",
        json={"serverId": str(server["id"]), "playbookKey": "db.rotate", "params": params},
        headers=console.admin,
    )
    assert created.status_code == 201, created.text
    answer = await console.http.get(f"/orders/{created.json()['order']['id']}", headers=console.admin)
    assert answer.status_code == 200
    assert "hunter2" not in answer.text
    shown = json.loads(parse(answer.text).by_id("order-params").text)
    assert shown == {"user": "app", "dsn": "********"}
    run_form = await console.page("/run?playbook=db.rotate", console.admin)
    assert fieldset(run_form, "db.rotate").find_all("input", name="params.dsn", type="password")


async def test_an_order_outside_the_callers_scope_or_unknown_is_not_found(console: Console) -> None:
    db = console.ctx.db
    mine = await make_server(db, "mine")
    theirs = await make_server(db, "theirs")
    order = await make_order(db, str(theirs["id"]))
    created = await api_clients.create_api_client(
        db, name="scoped", role=Role.OPERATOR, created_by="admin", server_ids=[str(mine["id"])]
    )
    scoped = {"X-Api-Key": str(created["token"])}
    await console.page(f"/orders/{order['id']}", scoped, status=404)
    await console.page(f"/orders/{uuid.uuid4()}", console.admin, status=404)
    listed = await console.page(f"/orders?server={mine['id']}", scoped)
    assert not listed.find_all("tr", data_order_id=True)
    own = await make_order(db, str(mine["id"]))
    only_mine = await console.page("/orders", scoped)  # scoped to one server: its orders, as the API lists
    assert [r.get("data-order-id") for r in only_mine.find_all("tr", data_order_id=True)] == [str(own["id"])]


# --- the action log --------------------------------------------------------------------------------------


async def test_action_log_page_searches_pages_older_and_counts_by_outcome(console: Console) -> None:
    db = console.ctx.db
    entry = audit.AuditEntry(
        channel="rest",
        actor_kind="api_client",
        actor_id="client-1",
        token_prefix="ikoma_abc",
        role="operator",
        action="DELETE /v1/servers/{server_id}",
        target="/v1/servers/x",
        params=None,
        outcome="denied",
        status_code=403,
        reason="forbidden",
    )
    for _ in range(60):
        await audit.record(db, entry)
    await audit.record(
        db, audit.AuditEntry(**{**entry.__dict__, "outcome": "allowed", "actor_id": "client-2"})
    )

    page = await console.page("/action-log?actor=client-1", console.admin)
    rows = page.by_id("action-log-table").find_all("tr", data_entry_id=True)
    assert len(rows) == 50
    assert {r.get("data-outcome") for r in rows} == {"denied"}
    stats = page.by_id("action-log-stats")
    assert stats.find_all("li", data_outcome="denied")[0].text.startswith("60 ")
    assert stats.find_all("li", data_outcome="allowed")[0].text.startswith("0 ")
    older = page.by_id("action-log-older").get("href")
    assert older is not None
    assert "actor=client-1" in older
    second = await console.page(older, console.admin)
    second_rows = second.by_id("action-log-table").find_all("tr", data_entry_id=True)
    ids = [int(str(r.get("data-entry-id"))) for r in rows + second_rows]
    assert ids == sorted(set(ids), reverse=True)
    assert len(ids) == 60
    assert not second.find_all("a", id="action-log-older")

    for bad_time in ("yesterday", "9999-12-31T23:00:00-02:00"):
        bad = await console.page(f"/action-log?{urlencode({'from': bad_time})}", console.admin)
        assert "not a date and time" in bad.by_id("action-log-error").text
    ranged = await console.page("/action-log?from=2030-01-01T00:00&to=2020-01-01T00:00", console.admin)
    assert "before" in ranged.by_id("action-log-error").text


async def test_a_refused_forged_request_shows_in_the_action_log(console: Console) -> None:
    observer = await console.signed_in(Role.OBSERVER)
    fleet = await console.page("/", observer)
    token = fleet.find_all("meta", name="csrf-token")[0].get("content") or ""
    forged = await console.http.post(
        "/v1/servers", json={"name": "x", "hostname": "x"}, headers={**observer, "X-CSRF-Token": token}
    )
    assert forged.status_code == 403
    page = await console.page(
        "/action-log?outcome=denied&action=POST%20/v1/servers", await console.signed_in(Role.ADMIN)
    )
    rows = page.by_id("action-log-table").find_all("tr", data_entry_id=True)
    assert len(rows) == 1
    assert "user:" in rows[0].text
    assert "observer" in rows[0].text


# --- admin pages -----------------------------------------------------------------------------------------


async def test_admin_pages_are_refused_below_admin_and_absent_from_their_nav(console: Console) -> None:
    for role in (Role.OBSERVER, Role.BUILDER, Role.OPERATOR):
        headers = await console.signed_in(role)
        for path in ADMIN_PAGES:
            answer = await console.http.get(path, headers=headers)
            assert answer.status_code == 403, (role, path)
        nav = (await console.page("/orders", headers)).find_all("nav", aria_label="Main")[0]
        hrefs = {a.get("href") for a in nav.find_all("a")}
        assert hrefs.isdisjoint(ADMIN_PAGES), role
    admin = await console.signed_in(Role.ADMIN)
    nav = (await console.page("/orders", admin)).find_all("nav", aria_label="Main")[0]
    assert set(ADMIN_PAGES) <= {a.get("href") for a in nav.find_all("a")}


async def test_users_page_lists_users_and_its_forms_call_the_user_routes(console: Console) -> None:
    admin = await console.signed_in(Role.ADMIN)
    page = await console.page("/users/manage", admin)
    create = page.by_id("user-create")
    assert (create.get("data-api-method"), create.get("data-api-url")) == ("POST", "/users")
    assert sorted(field_names(create)) == sorted(
        ["username", "email", "firstName", "lastName", "role", "password"]
    )
    body = {"username": "olivia", "email": "olivia@example.net", "password": PASSWORD, "role": "observer"}
    created = await console.submit(create, page, admin, body)
    assert created.status_code == 201, created.text

    page = await console.page("/users/manage", admin)
    row = page.by_id("users-table").find_all("tr", data_username="olivia")[0]
    assert row.get("data-role") == "observer"
    disable = next(f for f in row.find_all("form") if f.find_all("input", name="disabled"))
    assert disable.get("data-api-url") == f"/users/{row.get('data-user-id')}"
    answer = await console.submit(disable, page, admin, {"disabled": True})
    assert answer.status_code == 200, answer.text
    again = await console.page("/users/manage", admin)
    assert again.by_id("users-table").find_all("tr", data_username="olivia")[0].get("data-disabled") == "true"


async def test_api_clients_page_creates_a_client_whose_token_the_server_never_renders(
    console: Console,
) -> None:
    await make_server(console.ctx.db, "web-1")
    admin = await console.signed_in(Role.ADMIN)
    page = await console.page("/api-clients/manage", admin)
    create = page.by_id("api-client-create")
    assert create.get("data-token-target") == "new-token-box"
    assert page.by_id("new-token").text == ""
    assert "hidden" in page.by_id("new-token-box").attrs
    created = await console.submit(create, page, admin, {"name": "ci", "role": "builder"})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    listed = await console.http.get("/api-clients/manage", headers=admin)
    assert token not in listed.text
    row = parse(listed.text).by_id("api-clients-table").find_all("tr", data_client_id=created.json()["id"])[0]
    revoke = row.find_all("form")[0]
    assert (revoke.get("data-api-method"), revoke.get("data-api-url")) == (
        "DELETE",
        f"/v1/api-clients/{created.json()['id']}",
    )
    assert (await console.submit(revoke, parse(listed.text), admin)).status_code == 200


async def test_runners_page_issues_a_bootstrap_token_with_the_enrol_command(console: Console) -> None:
    pair = await make_pair(console.ctx.db, "web-1")
    free = await make_server(console.ctx.db, "web-2")
    admin = await console.signed_in(Role.ADMIN)
    page = await console.page("/runners/manage", admin)
    assert page.by_id("runners-table").find_all("tr", data_runner_id=pair.runner_id)
    servers_offered = [o.get("value") for o in page.by_id("enrol-server").find_all("option")]
    assert servers_offered == ["", str(free["id"])]  # web-1 has its runner already
    command = page.by_id("enrol-command")
    assert command.get("data-enrol-prefix") == (
        "ikoma runner register --api-url http://console.test --bootstrap-token "
    )
    assert command.text == ""
    form = page.by_id("bootstrap-token-create")
    issued = await console.submit(form, page, admin, {"serverId": str(free["id"]), "expiresInSeconds": 3600})
    assert issued.status_code == 201, issued.text
    assert issued.json()["token"].startswith("ikb_")
    revoke = page.by_id("runners-table").find_all("tr", data_runner_id=pair.runner_id)[0].find_all("form")[0]
    assert (await console.submit(revoke, page, admin)).status_code == 200
