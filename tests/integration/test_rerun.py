"""Re-running an order (services/reruns.py, POST /v1/orders/{id}/rerun) on SQLite and PostgreSQL: the same
order again, secret params carried sealed and never shown, the link both ways, idempotency, the
playbook's role, server scope, and the audit."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ikoma.api.schemas import OrderPublic
from ikoma.cli.main import app
from ikoma.domain.errors import Conflict, Invalid, NotFound
from ikoma.domain.secret_params import PLACEHOLDER
from ikoma.services import orders, playbooks, reruns, servers
from ikoma.services.vault import Vault, new_key
from ikoma.services.wakeups import Wakeups
from ikoma.storage.database import Database
from ikoma.storage.tables import order_events
from ikoma.storage.tables import orders as orders_table
from tests.integration import helpers as h
from tests.integration.inprocess_api import as_client, running_app

SECRET_PLAYBOOK = {
    "key": "db.rotate",
    "name": "Rotate a database password",
    "description": "",
    "params_schema": {
        "type": "object",
        "properties": {
            "user": {"type": "string"},
            "password": {"type": "string"},
            "dsn": {"type": "string", "writeOnly": True},
        },
        "required": ["user"],
    },
    "min_role": "operator",
    "destructive": False,
    "default_timeout_s": 60,
    "max_attempts": 1,
}
PARAMS = {"user": "app", "password": "hunter2-Pa55", "dsn": "postgresql://app:s3cr3t-dsn@db/app"}


async def _stored(db: Database, order_id: str) -> dict[str, Any]:
    async with db.read() as tx:
        row = (await tx.execute(select(orders_table).where(orders_table.c.id == order_id))).mappings().one()
    return dict(row)


async def _secret_order(db: Database, vault: Vault) -> tuple[h.Pair, dict[str, Any]]:
    pair = await h.make_pair(db)
    await playbooks.create_playbook(db, SECRET_PLAYBOOK)
    order, _ = await orders.create_order(
        db,
        Wakeups(),
        h.order_body(pair.server_id, "db.rotate", params=PARAMS, timeout_seconds=77, max_attempts=2),
        idempotency_key=None,
        default_timeout=60,
        vault=vault,
    )
    return pair, order


async def test_a_rerun_is_the_same_order_again_linked_to_the_original(database: Database) -> None:
    pair = await h.make_pair(database)
    original = await h.make_order(database, pair.server_id, params={"message": "hi"}, timeout_seconds=42)

    rerun, replayed = await reruns.rerun_order(database, Wakeups(), original["id"], idempotency_key=None)

    assert not replayed
    assert rerun["id"] != original["id"]
    assert rerun["rerun_of"] == original["id"]
    assert rerun["status"] == "QUEUED"
    for same in ("server_id", "runner_id", "playbook_key", "action", "params", "timeout_s", "max_attempts"):
        assert rerun[same] == original[same], same
    assert (rerun["attempt"], rerun["executions"]) == (0, 0)
    assert await reruns.reruns_of(database, original["id"]) == [rerun["id"]]
    async with database.read() as tx:
        created = (
            (await tx.execute(select(order_events).where(order_events.c.order_id == rerun["id"])))
            .mappings()
            .one()
        )
    assert (created["to_status"], created["details"]) == ("QUEUED", {"rerunOf": original["id"]})


async def test_secret_params_are_carried_sealed_and_opened_only_for_the_runner(database: Database) -> None:
    vault = Vault([new_key().encode()])
    pair, original = await _secret_order(database, vault)

    rerun, _ = await reruns.rerun_order(
        database, Wakeups(), original["id"], idempotency_key=None, vault=vault
    )

    stored_original = await _stored(database, original["id"])
    stored = await _stored(database, rerun["id"])
    assert stored["params"] == stored_original["params"]  # the very same sealed values
    assert "hunter2" not in str(stored["params"])
    assert "s3cr3t-dsn" not in str(stored["params"])
    assert OrderPublic.model_validate(rerun).params == {
        "user": "app",
        "password": PLACEHOLDER,
        "dsn": PLACEHOLDER,
    }
    assert (stored["timeout_s"], stored["max_attempts"]) == (77, 2)
    dispatcher = h.make_dispatcher(database)
    dispatcher.vault = vault
    await h.claim_and_start(dispatcher, pair.identity)  # the original goes first
    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None
    assert claimed["id"] == rerun["id"]
    assert claimed["params"] == PARAMS


async def test_a_rerun_is_checked_against_the_playbooks_schema_as_it_is_now(database: Database) -> None:
    vault = Vault([new_key().encode()])
    _, original = await _secret_order(database, vault)
    changed = {**SECRET_PLAYBOOK, "params_schema": {**SECRET_PLAYBOOK["params_schema"], "required": ["host"]}}
    await playbooks.apply_playbook(database, changed)

    with pytest.raises(Invalid) as refused:
        await reruns.rerun_order(database, Wakeups(), original["id"], idempotency_key=None, vault=vault)
    assert refused.value.details["errors"][0]["path"] == "params"
    assert "hunter2" not in str(refused.value.details)


async def test_an_unknown_order_or_one_on_a_deleted_server_cannot_be_rerun(database: Database) -> None:
    with pytest.raises(NotFound) as refused:
        await reruns.rerun_order(
            database, Wakeups(), "00000000-0000-0000-0000-000000000000", idempotency_key=None
        )
    assert refused.value.reason == "order_not_found"
    pair = await h.make_pair(database)
    original = await h.make_order(database, pair.server_id)
    await orders.cancel_order(database, original["id"], reason=None)
    await servers.delete_server(database, pair.server_id)
    with pytest.raises(Conflict) as refused:
        await reruns.rerun_order(database, Wakeups(), original["id"], idempotency_key=None)
    assert refused.value.reason == "server_deleted"


async def test_the_same_key_gives_the_same_rerun_and_another_request_a_conflict(database: Database) -> None:
    pair = await h.make_pair(database)
    first = await h.make_order(database, pair.server_id)
    second = await h.make_order(database, pair.server_id)

    made, replayed = await reruns.rerun_order(database, Wakeups(), first["id"], idempotency_key="again")
    again, replayed_again = await reruns.rerun_order(
        database, Wakeups(), first["id"], idempotency_key="again"
    )

    assert (replayed, replayed_again) == (False, True)
    assert again["id"] == made["id"]
    assert await reruns.reruns_of(database, first["id"]) == [made["id"]]
    with pytest.raises(Conflict) as refused:
        await reruns.rerun_order(database, Wakeups(), second["id"], idempotency_key="again")
    assert refused.value.reason == "idempotency_conflict"
    # keys are per caller: another caller's same key is another key
    other, other_replayed = await reruns.rerun_order(
        database, Wakeups(), first["id"], idempotency_key="again", actor="api_client:x"
    )
    assert not other_replayed
    assert other["id"] != made["id"]


# --- over HTTP -------------------------------------------------------------------------------------


async def _client(client: Any, role: str, server_ids: list[str] | None = None) -> str:
    body: dict[str, Any] = {"name": f"{role}-{len(server_ids or [])}", "role": role}
    if server_ids is not None:
        body["serverIds"] = server_ids
    issued = await client.post("/v1/api-clients", json=body)
    assert issued.status_code == 201, issued.text
    return str(issued.json()["token"])


async def test_rerun_route_links_both_orders_and_hides_secrets(database_url: str, tmp_path: Path) -> None:
    async with running_app(database_url, tmp_path) as (client, ctx):
        _, original = await _secret_order(ctx.db, ctx.vault)

        made = await client.post(f"/v1/orders/{original['id']}/rerun", headers={"Idempotency-Key": "r-1"})
        replay = await client.post(f"/v1/orders/{original['id']}/rerun", headers={"Idempotency-Key": "r-1"})
        shown = (await client.get(f"/v1/orders/{original['id']}")).json()
        audit = (await client.get("/v1/audit", params={"action": "POST /v1/orders/{order_id}/rerun"})).json()

    assert made.status_code == 201, made.text
    order = made.json()["order"]
    assert order["rerunOf"] == original["id"]
    assert order["params"] == {"user": "app", "password": PLACEHOLDER, "dsn": PLACEHOLDER}
    assert "hunter2" not in made.text
    assert "s3cr3t" not in made.text
    assert order["waitingFor"]["reason"] == "runner_offline"  # its runner was never seen
    assert made.json()["reportContract"]["version"]
    assert (replay.status_code, replay.json()["order"]["id"]) == (200, order["id"])
    assert shown["reruns"] == [order["id"]]
    assert shown["rerunOf"] is None
    entries = audit["items"] if isinstance(audit, dict) else audit
    assert [e["outcome"] for e in entries] == ["allowed", "allowed"]
    assert {e["target"] for e in entries} == {f"/v1/orders/{original['id']}/rerun"}


async def test_rerun_route_applies_the_playbooks_role_and_the_callers_scope(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(database_url, tmp_path) as (client, ctx):
        _, secret = await _secret_order(ctx.db, ctx.vault)  # min_role operator
        elsewhere = await h.make_pair(ctx.db, "db-1")
        hidden = await h.make_order(ctx.db, elsewhere.server_id)  # system.test_ping: observer
        observer = await _client(client, "observer")
        operator = await _client(client, "operator", [str(secret["server_id"])])

        async with as_client(client, observer) as as_observer:
            refused = await as_observer.post(f"/v1/orders/{secret['id']}/rerun")
            allowed = await as_observer.post(f"/v1/orders/{hidden['id']}/rerun")
        async with as_client(client, operator) as as_operator:
            in_scope = await as_operator.post(f"/v1/orders/{secret['id']}/rerun")
            out_of_scope = await as_operator.post(f"/v1/orders/{hidden['id']}/rerun")
            unknown = await as_operator.post("/v1/orders/00000000-0000-0000-0000-000000000000/rerun")

    assert (refused.status_code, refused.json()["reason"]) == (403, "forbidden")
    assert allowed.status_code == 201
    assert in_scope.status_code == 201
    assert (out_of_scope.status_code, out_of_scope.json()["reason"]) == (404, "order_not_found")
    assert out_of_scope.json() == {**unknown.json(), "details": out_of_scope.json()["details"]}


# --- the CLI, against a real server process ---------------------------------------------------------


@pytest.mark.e2e
def test_cli_selects_servers_shows_why_an_order_waits_and_reruns_it(shared_server: Any) -> None:
    """`ikoma servers list --where`, `ikoma orders show` (waitingFor) and `ikoma orders rerun`."""
    env = {
        "IKOMA_API_URL": shared_server.url,
        "IKOMA_ADMIN_KEY": shared_server.admin_key,
        "COLUMNS": "250",
        "NO_COLOR": "1",
    }

    def ikoma(*args: str) -> Any:
        result = CliRunner().invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result

    tag = uuid.uuid4().hex[:8]
    ikoma("servers", "create", f"cli-web-{tag}", "--hostname", "w.example", "--label", f"batch={tag}")
    ikoma("servers", "create", f"cli-db-{tag}", "--hostname", "d.example", "--label", f"batch={tag}")
    listed = json.loads(ikoma("servers", "list", "--where", f"batch={tag},name=cli-web-*", "--json").stdout)
    assert [s["name"] for s in listed] == [f"cli-web-{tag}"]
    refused = CliRunner().invoke(app, ["servers", "list", "--where", "batch in (x", "--json"], env=env)
    assert refused.exit_code != 0
    assert "invalid_selector" in refused.output

    created = json.loads(
        ikoma(
            "orders", "create", "--server", f"cli-web-{tag}", "--playbook", "system.test_ping", "--json"
        ).stdout
    )
    order_id = created["order"]["id"]
    shown = ikoma("orders", "show", order_id).stdout
    assert "no_runner_attached" in shown

    rerun = json.loads(ikoma("orders", "rerun", order_id, "--json").stdout)
    assert rerun["order"]["rerunOf"] == order_id
    assert rerun["order"]["waitingFor"]["reason"] == "no_runner_attached"
    assert "no_runner_attached" in ikoma("orders", "rerun", order_id).stdout
