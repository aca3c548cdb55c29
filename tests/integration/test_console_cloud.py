"""The instances and catalog pages (issue 16), rendered by the real app (ASGI, in process) on SQLite and
PostgreSQL: they show what the catalog and the instances hold (the seeded Mock zones, types with EUR
prices, models), offer each control only to the roles the API lets use it, and those controls call
the API's own routes, which work when called as ikoma.js calls them. The leader's loops do not run
here (`run_reconciler=False`): a Mock deployment stays `booting` unless a test moves the Mock clock and
calls `POST /reconcile` itself.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ikoma.api.app import create_app
from ikoma.bootstrap import Context
from ikoma.console.rendering import CONTENT_SECURITY_POLICY
from ikoma.domain.roles import Role
from ikoma.providers.mock.adapter import MockProvider
from ikoma.services import audit, sessions, users
from ikoma.services.catalog_seed import MOCK_OFFERS, MOCK_ZONES, MODELS
from ikoma.settings import Settings
from tests.integration.console_html import Element, parse

ADMIN_KEY = "console-cloud-test-admin-key-0123456789"
PASSWORD = "a long enough test passphrase"


@dataclass
class Console:
    app: FastAPI
    http: httpx.AsyncClient

    @property
    def ctx(self) -> Context:
        ctx: Context = self.app.state.ctx
        return ctx

    async def signed_in(self, role: Role) -> dict[str, str]:
        """The cookie of a new user of `role` signed in, as the browser holds it."""
        name = f"u{uuid.uuid4().hex[:10]}"
        user = await users.create_user(
            self.ctx.db, username=name, email=f"{name}@example.net", password=PASSWORD, role=role, actor=None
        )
        async with self.ctx.db.write() as tx:
            issued = await sessions.issue(tx, str(user["id"]), ttl_s=3600, address=None)
        return {"Cookie": f"{sessions.COOKIE_NAME}={issued.raw_id}"}

    async def page(self, path: str, headers: dict[str, str], *, status: int = 200) -> Element:
        answer = await self.http.get(path, headers=headers)
        assert answer.status_code == status, answer.text[:2000]
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert not re.search(r"<script(?![^>]*\b(src=|type=\"application/json\"))", answer.text)
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
            yield Console(app, http)


def options(select: Element) -> dict[str, Element]:
    """A select's options by their text's first word (a zone's name, a type's or model's code)."""
    return {o.text: o for o in select.find_all("option")}


def csrf(page: Element) -> str:
    return page.find_all("meta", name="csrf-token")[0].get("content") or ""


def option_texts(page: Element, select_id: str) -> list[str]:
    return [o.text for o in page.by_id(select_id).find_all("option")]


def nav_links(page: Element) -> list[str]:
    return [str(a.get("href")) for a in page.find_all("nav", aria_label="Main")[0].find_all("a")]


def row_of(page: Element, table_id: str, **attrs: str) -> Element:
    found = page.by_id(table_id).find_all("tr", **attrs)
    assert len(found) == 1, attrs
    return found[0]


async def test_the_new_instance_form_offers_the_seeded_mock_zones_types_with_prices_and_models(
    console: Console,
) -> None:
    page = await console.page("/instances/manage", await console.signed_in(Role.OPERATOR))
    form = page.by_id("new-instance-form")
    assert form.get("data-api-method") == "POST"
    assert form.get("data-api-url") == "/deployments"
    assert option_texts(page, "ni-provider") == ["Mock"]  # Scaleway is seeded disabled: not configured
    zones = page.by_id("ni-zone").find_all("option")
    assert sorted(str(z.get("data-code")) for z in zones) == sorted(MOCK_ZONES)
    assert {z.get("data-provider") for z in zones} == {"mock"}
    types = {t.text.split(" ")[0]: t for t in page.by_id("ni-type").find_all("option")}
    assert set(types) == {offer.instance_type for offer in MOCK_OFFERS}
    gpu_s = types["MOCK-GPU-S"].text
    assert "8 vCPU" in gpu_s
    assert "32 GiB RAM" in gpu_s
    assert "1x Mock L4 (24 GiB)" in gpu_s
    assert "0.25 EUR/hour" in gpu_s
    # sold in mock-par-2 only: the zone filter (cloud.js) offers it there and nowhere else
    assert types["MOCK-GPU-M"].get("data-zones") == "mock-par-2"
    assert types["MOCK-CPU-S"].get("data-zones") == "mock-par-1 mock-par-2"
    assert sorted(o.text.split(" ")[0] for o in page.by_id("ni-model").find_all("option")) == sorted(
        m.name for m in MODELS
    )
    for field in ("zone_id", "instance_type_id", "model_id", "name"):
        assert len(form.find_all(name=field)) == 1, field
    for control in form.find_all("select") + form.find_all("input"):
        assert page.find_all("label", for_=str(control.get("id"))), control.attrs


async def test_an_operator_deploys_from_the_form_and_the_row_offers_terminate_then_archive(
    console: Console,
) -> None:
    operator = await console.signed_in(Role.OPERATOR)
    page = await console.page("/instances/manage", operator)
    assert page.by_id("instances-empty")
    zone = next(z for z in page.by_id("ni-zone").find_all("option") if z.get("data-code") == "mock-par-1")
    kind = next(t for t in page.by_id("ni-type").find_all("option") if t.text.startswith("MOCK-GPU-S"))
    model = page.by_id("ni-model").find_all("option")[0]
    answer = await console.submit(
        page.by_id("new-instance-form"),
        page,
        operator,
        {
            "zone_id": zone.get("value"),
            "instance_type_id": kind.get("value"),
            "model_id": model.get("value"),
            "name": "console-made",
        },
    )
    assert answer.status_code == 201, answer.text
    instance = answer.json()

    page = await console.page("/instances/manage", operator)
    row = row_of(page, "instances-table", data_instance_id=instance["id"])
    assert row.get("data-state") == instance["state"] == "booting"
    assert "console-made" in row.text
    assert "MOCK-GPU-S" in row.text
    assert "0.25" in row.text
    assert row.find_all("a", href=f"/machines/{instance['serverId']}")
    terminate = row.find_all("form", data_instance_terminate=True)[0]
    archive = row.find_all("form", data_instance_archive=True)[0]
    assert "hidden" not in terminate.attrs
    assert "hidden" in archive.attrs
    assert terminate.get("data-api-url") == f"/instances/{instance['id']}"
    assert terminate.get("data-confirm")
    # the live table listens to the instance events after what the page read
    live = page.by_id("instances")
    assert re.fullmatch(r"/v1/events/stream\?kind=instance&after=\d+", str(live.get("data-stream-url")))

    answer = await console.submit(terminate, page, operator)
    assert answer.status_code == 202, answer.text
    assert answer.json()["state"] == "terminating"
    row = row_of(
        await console.page("/instances/manage", operator), "instances-table", data_instance_id=instance["id"]
    )
    assert row.get("data-state") == "terminating"
    assert "hidden" in row.find_all("form", data_instance_terminate=True)[0].attrs
    # archive is offered once terminated; asked before, the API refuses with its reason
    answer = await console.submit(row.find_all("form", data_instance_archive=True)[0], page, operator)
    assert answer.status_code == 409
    assert answer.json()["reason"] == "instance_not_terminated"

    # the Mock cloud's clock and the terminator (the leader's loops; here called) confirm it gone (a
    # Mock machine takes a second to terminate): Archive is offered then
    mock = console.ctx.providers["mock"]
    assert isinstance(mock, MockProvider)
    for _ in range(120):
        await mock.cloud.tick()
        reconciled = await console.http.post(
            "/reconcile", headers={**operator, "X-CSRF-Token": csrf(page), "Accept": "application/json"}
        )
        assert reconciled.status_code == 200, reconciled.text
        page = await console.page("/instances/manage", operator)
        row = row_of(page, "instances-table", data_instance_id=instance["id"])
        if row.get("data-state") == "terminated":
            break
        await asyncio.sleep(0.25)
    assert row.get("data-state") == "terminated"
    archive = row.find_all("form", data_instance_archive=True)[0]
    assert "hidden" not in archive.attrs
    answer = await console.submit(archive, page, operator)
    assert answer.status_code == 200, answer.text
    assert not (await console.page("/instances/manage", operator)).find_all(
        "tr", data_instance_id=instance["id"]
    )
    archived = await console.page("/instances/manage?archived=true", operator)
    row = row_of(archived, "instances-table", data_instance_id=instance["id"])
    assert not row.find_all("form", data_instance_archive=True)


async def test_an_observer_sees_instances_and_catalog_without_any_control(console: Console) -> None:
    observer = await console.signed_in(Role.OBSERVER)
    page = await console.page("/instances/manage", observer)
    assert not page.find_all(id="new-instance-form")
    assert not page.find_all(id="new-instance")
    assert not page.find_all("form", data_api_url=True)
    assert "/instances/manage" in nav_links(page)
    assert "/catalog/manage" in nav_links(page)
    catalog = await console.page("/catalog/manage", observer)
    assert not catalog.find_all("form", data_api_url=True)
    assert not catalog.find_all(id="catalog-sync")
    assert (
        row_of(catalog, "instance-types-table", data_type_code="MOCK-GPU-S")
        .find_all("td", data_price=True)[0]
        .text
        == "0.25"
    )


async def test_an_operator_may_deploy_but_not_change_the_catalog(console: Console) -> None:
    operator = await console.signed_in(Role.OPERATOR)
    catalog = await console.page("/catalog/manage", operator)
    assert not catalog.find_all("form", data_api_url=True)
    assert catalog.buttons() == ["Sign out"]


async def test_the_catalog_page_lists_providers_zones_types_with_prices_and_availability(
    console: Console,
) -> None:
    admin = await console.signed_in(Role.ADMIN)
    page = await console.page("/catalog/manage", admin)
    mock = row_of(page, "providers-table", data_provider_code="mock")
    scaleway = row_of(page, "providers-table", data_provider_code="scaleway")
    assert mock.get("data-enabled") == "true"
    assert scaleway.get("data-enabled") == "false"
    assert {
        str(r.get("data-zone-code")) for r in page.by_id("zones-table").find_all("tr", data_zone_code=True)
    } >= set(MOCK_ZONES)
    gpu_m = row_of(page, "instance-types-table", data_type_code="MOCK-GPU-M")
    listed = {str(li.get("data-zone-code")): li.text for li in gpu_m.find_all("li", data_zone_code=True)}
    assert "not sold" in listed["mock-par-1"]
    assert "deployable" in listed["mock-par-2"]
    assert gpu_m.find_all("td", data_price=True)[0].text == "1.20"
    # Scaleway's seeded types are shown, not deployable while it is off
    assert row_of(page, "instance-types-table", data_type_code="L4-1-24G").get("data-deployable") == "false"
    assert {m.text for m in page.by_id("models-table").find_all("th", scope="row")} == {
        m.name for m in MODELS
    }


async def test_an_admin_disables_a_type_and_a_zone_from_the_page_and_syncs_the_mock(console: Console) -> None:
    admin = await console.signed_in(Role.ADMIN)
    page = await console.page("/catalog/manage", admin)
    row = row_of(page, "instance-types-table", data_type_code="MOCK-CPU-S")
    toggle = row.find_all("form", data_api_method="PUT")[0]
    assert toggle.buttons() == ["Disable"]
    body = {str(i.get("name")): i.get("value") == "true" for i in toggle.find_all("input", type="hidden")}
    assert body == {"enabled": False}  # what ikoma.js sends for a data-type="boolean" field
    answer = await console.submit(toggle, page, admin, body)
    assert answer.status_code == 200, answer.text
    page = await console.page("/catalog/manage", admin)
    row = row_of(page, "instance-types-table", data_type_code="MOCK-CPU-S")
    assert row.get("data-enabled") == "false"
    assert row.find_all("form")[0].buttons() == ["Enable"]
    # no longer offered by the new-instance form
    form_types = option_texts(await console.page("/instances/manage", admin), "ni-type")
    assert not any(t.startswith("MOCK-CPU-S") for t in form_types)
    assert form_types

    zone = row_of(page, "zones-table", data_zone_code="mock-par-2")
    answer = await console.submit(zone.find_all("form")[0], page, admin, {"enabled": False})
    assert answer.status_code == 200, answer.text
    form_zones = [
        o.get("data-code")
        for o in (await console.page("/instances/manage", admin)).by_id("ni-zone").find_all("option")
    ]
    assert form_zones == ["mock-par-1"]

    sync = page.by_id("catalog-sync-form")
    assert option_texts(page, "sync-provider") == ["Every configured provider", "mock"]
    answer = await console.submit(sync, page, admin, {"provider": "mock"})
    assert answer.status_code == 200, answer.text
    assert [p["provider"] for p in answer.json()["providers"]] == ["mock"]


async def test_the_action_log_shows_each_entrys_action_type_label(console: Console) -> None:
    admin = await console.signed_in(Role.ADMIN)
    async with console.ctx.db.write() as tx:
        await audit.append(
            tx,
            audit.AuditEntry(
                channel="system",
                actor_kind="system",
                actor_id="system",
                token_prefix=None,
                role=None,
                action="provider.terminate",
                target=f"/instances/{uuid.uuid4()}",
                params={},
                outcome="allowed",
                reason=None,
            ),
        )
    page = await console.page("/action-log?channel=system", admin)
    rows = page.by_id("action-log-table").find_all("tr", data_entry_id=True)
    assert rows, "the system entry is listed"
    badge = rows[0].find_all("span", data_action_type=True)[0]
    assert badge.text == "Terminate instance"
    assert badge.get("data-color") == "red"
    assert "badge-error" in str(badge.get("class"))
