"""Secret order params (scenario 14): sealed at rest, opened only for the runner holding the lease."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from ikoma.api.schemas import OrderPublic
from ikoma.domain.report_markdown import render
from ikoma.domain.secret_params import PLACEHOLDER
from ikoma.services import orders, playbooks
from ikoma.services.vault import Vault, new_key
from ikoma.services.wakeups import Wakeups
from ikoma.storage.database import Database
from ikoma.storage.tables import orders as orders_table
from tests.integration import helpers as h

PLAYBOOK = {
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
    },
    "min_role": "operator",
    "destructive": False,
    "default_timeout_s": 60,
    "max_attempts": 1,
}
PARAMS = {"user": "app", "password": "hunter2-Pa55", "dsn": "postgresql://app:s3cr3t-dsn@db/app"}


async def _order(database: Database, vault: Vault | None) -> tuple[h.Pair, dict[str, object]]:
    pair = await h.make_pair(database)
    await playbooks.create_playbook(database, PLAYBOOK)
    order, _ = await orders.create_order(
        database,
        Wakeups(),
        h.order_body(pair.server_id, "db.rotate", params=PARAMS),
        idempotency_key="rotate-1",
        default_timeout=60,
        vault=vault,
    )
    return pair, order


async def test_secret_params_are_stored_sealed_and_shown_as_a_placeholder(database: Database) -> None:
    vault = Vault([new_key().encode()])
    _, order = await _order(database, vault)

    async with database.read() as tx:
        raw = (await tx.execute(select(orders_table.c.params, orders_table.c.request_hash))).one()
    stored = str(raw.params)
    assert "hunter2" not in stored
    assert "s3cr3t-dsn" not in stored
    assert raw.params["user"] == "app"
    public = OrderPublic.model_validate(order).params
    assert public == {"user": "app", "password": PLACEHOLDER, "dsn": PLACEHOLDER}


async def test_only_the_claim_of_the_lease_holder_carries_the_secrets_in_clear(database: Database) -> None:
    vault = Vault([new_key().encode()])
    pair, order = await _order(database, vault)
    dispatcher = h.make_dispatcher(database)
    dispatcher.vault = vault

    claimed = await dispatcher.claim_once(pair.identity)

    assert claimed is not None
    assert claimed["params"] == PARAMS
    # what the runner's later calls (and everyone else) read back is sealed again
    started = await dispatcher.start(pair.identity, str(order["id"]), claimed["lease_token"])
    assert OrderPublic.model_validate(started).params["password"] == PLACEHOLDER
    done = await h.complete(dispatcher, pair.identity, str(order["id"]), lease_token=claimed["lease_token"])
    shown = render(done, server_name="web-1", important=[], artifact=None)
    assert "hunter2" not in str(shown)
    assert PLACEHOLDER in str(shown)


async def test_an_idempotent_replay_matches_without_storing_a_plain_hash_of_the_secret(
    database: Database,
) -> None:
    vault = Vault([new_key().encode()])
    pair, first = await _order(database, vault)
    again, replayed = await orders.create_order(
        database,
        Wakeups(),
        h.order_body(pair.server_id, "db.rotate", params=PARAMS),
        idempotency_key="rotate-1",
        default_timeout=60,
        vault=vault,
    )
    assert replayed
    assert again["id"] == first["id"]
    assert again["request_hash"] != orders.request_hash(
        h.order_body(pair.server_id, "db.rotate", params=PARAMS)
    )


async def test_a_secret_param_without_a_vault_is_never_stored(database: Database) -> None:
    with pytest.raises(RuntimeError, match="vault"):
        await _order(database, None)
    async with database.read() as tx:
        assert (await tx.execute(select(orders_table.c.id))).first() is None
