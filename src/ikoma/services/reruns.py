"""Re-run an order: a new order with the same playbook, server, action, params, timeout and attempts.

Secret params are carried over sealed, as stored: they are opened in memory only to check the params
against the playbook's schema as it is now (a schema changed since refuses the re-run with the same 422
as a create), never into an answer. A param the schema now marks secret but that was stored in clear
is sealed. The new order names the original (`rerun_of`) and runs on the server's current runner (the
original's last runner when the server has none now), with the playbook's current steps, as a new order
of that playbook would.

`Idempotency-Key` works as for POST /v1/orders: per caller, the same key and the same original give the
same re-run back; the same key for anything else is 409 `idempotency_conflict`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from ikoma.domain.errors import Conflict, NotFound
from ikoma.domain.lifecycle import OrderStatus, Reason
from ikoma.domain.secret_params import is_sealed, seal_params, secret_names, unseal_params
from ikoma.services import history
from ikoma.services.orders import request_hash, validate_params
from ikoma.services.vault import Vault
from ikoma.services.wakeups import Wakeups
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import orders, playbooks, servers

# copied from the original as they are
_SAME = ("server_id", "playbook_key", "action", "max_attempts", "timeout_s")


def _not_found(order_id: str) -> NotFound:
    return NotFound("no order with this id", reason="order_not_found", orderId=order_id)


async def _by_key(tx: Tx, scope: str, key: str) -> dict[str, Any] | None:
    row = (
        (
            await tx.execute(
                select(orders).where(orders.c.idempotency_scope == scope, orders.c.idempotency_key == key)
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else dict(row)


def _replay(existing: dict[str, Any], fingerprint: str, key: str) -> tuple[dict[str, Any], bool]:
    if existing["request_hash"] != fingerprint:
        raise Conflict(
            "this Idempotency-Key was used with a different request",
            reason="idempotency_conflict",
            idempotencyKey=key,
            orderId=existing["id"],
        )
    return existing, True


async def _row(tx: Tx, table: Any, column: Any, value: str) -> dict[str, Any] | None:
    row = (await tx.execute(select(table).where(column == value))).mappings().first()
    return None if row is None else dict(row)


def _params(original: dict[str, Any], playbook: dict[str, Any], vault: Vault | None) -> dict[str, Any]:
    """The original's params, checked against the playbook's schema now; sealed values stay sealed."""
    params: dict[str, Any] = dict(original["params"] or {})
    sealed = any(is_sealed(value) for value in params.values())
    if sealed and vault is None:
        raise RuntimeError("sealed params need the vault; none was given")  # a wiring bug, not input
    opened = unseal_params(params, vault.unseal) if sealed and vault is not None else params
    validate_params(playbook["params_schema"], opened or {})
    newly_secret = frozenset(
        name
        for name in secret_names(playbook["params_schema"], params)
        if not is_sealed(params[name]) and params[name] is not None
    )
    if newly_secret:
        if vault is None:
            raise RuntimeError("secret params need the vault; none was given")
        params = seal_params(params, newly_secret, vault.seal)
    return params


async def rerun_order(
    db: Database,
    wakeups: Wakeups,
    order_id: str,
    *,
    idempotency_key: str | None,
    actor: str = "admin",
    vault: Vault | None = None,
    can_see: Callable[[str], bool] = lambda _server_id: True,
    authorize: Callable[[dict[str, Any]], None] | None = None,
    joined: Callable[[Tx], None] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Queue a re-run of `order_id`; returns (order, replayed).

    An order on a server `can_see` refuses is not found (404), as when reading it; `authorize(playbook)`
    applies the playbook's own role before anything is replayed or written; `joined(tx)` joins the
    write transaction (the REST audit entry, api/policy.py).
    """
    fingerprint = request_hash({"rerun_of": order_id}, vault)
    if idempotency_key is not None:
        async with db.read() as tx:
            existing = await _by_key(tx, actor, idempotency_key)
            original = await _row(tx, orders, orders.c.id, order_id) if existing is not None else None
            playbook = (
                await _row(tx, playbooks, playbooks.c.key, original["playbook_key"]) if original else None
            )
        if existing is not None:
            if original is None or not can_see(str(original["server_id"])):
                raise _not_found(order_id)
            if playbook is not None and authorize is not None:
                authorize(playbook)
            return _replay(existing, fingerprint, idempotency_key)
    try:
        async with db.write() as tx:
            original = await _row(tx, orders, orders.c.id, order_id)
            if original is None or not can_see(str(original["server_id"])):
                raise _not_found(order_id)
            playbook = await _row(tx, playbooks, playbooks.c.key, original["playbook_key"])
            assert playbook is not None  # orders.playbook_key references playbooks.key
            if authorize is not None:
                authorize(playbook)
            if joined is not None:
                joined(tx)
            if idempotency_key is not None:
                existing = await _by_key(tx, actor, idempotency_key)
                if existing is not None:
                    return _replay(existing, fingerprint, idempotency_key)
            row = await insert_rerun(
                tx,
                wakeups,
                original,
                playbook,
                vault=vault,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                actor=actor,
            )
    except IntegrityError:
        if idempotency_key is None:
            raise
        async with db.read() as tx:
            existing = await _by_key(tx, actor, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, fingerprint, idempotency_key)
    return row, False


async def insert_rerun(
    tx: Tx,
    wakeups: Wakeups,
    original: dict[str, Any],
    playbook: dict[str, Any],
    *,
    vault: Vault | None,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    actor: str = "admin",
) -> dict[str, Any]:
    """Queue the re-run of the `original` order row in the caller's transaction (a run re-running its
    failed machines will call it once per machine, in one transaction); `playbook` is its row."""
    server = (
        await tx.execute(
            select(servers.c.id, servers.c.runner_id).where(
                servers.c.id == original["server_id"], servers.c.deleted_at.is_(None)
            )
        )
    ).first()
    if server is None:
        raise Conflict(
            "the order's server was deleted: there is nothing to re-run it on",
            reason="server_deleted",
            serverId=str(original["server_id"]),
        )
    params = _params(original, playbook, vault)
    new_id = str(uuid.uuid4())
    values = {
        **{name: original[name] for name in _SAME},
        "id": new_id,
        "status": OrderStatus.QUEUED.value,
        "runner_id": server.runner_id or original["runner_id"],
        "params": params,
        "attempt": 0,
        "executions": 0,
        "cancel_requested": False,
        "status_reason": Reason.CREATED.value,
        "idempotency_key": idempotency_key,
        "idempotency_scope": actor if idempotency_key is not None else None,
        "request_hash": fingerprint or request_hash({"rerun_of": str(original["id"])}, vault),
        "steps": playbook["steps"],
        "rerun_of": original["id"],
    }
    row = dict((await tx.execute(insert(orders).values(values).returning(*orders.c))).mappings().one())
    await history.record_events(
        tx,
        [
            history.event(
                new_id,
                None,
                OrderStatus.QUEUED,
                Reason.CREATED,
                attempt=0,
                actor=actor,
                details={"rerunOf": str(original["id"])},
            )
        ],
    )
    tx.after_commit(lambda: wakeups.notify(row["runner_id"], row["server_id"]))
    return row


async def reruns_of(db: Database, order_id: str) -> list[str]:
    """The ids of the re-runs of `order_id`, oldest first."""
    async with db.read() as tx:
        rows = await tx.execute(
            select(orders.c.id)
            .where(orders.c.rerun_of == order_id)
            .order_by(orders.c.created_at, orders.c.id)
        )
        return [str(r.id) for r in rows]
