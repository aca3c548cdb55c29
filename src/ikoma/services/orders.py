"""Orders from the operator's side: create (idempotently), read, list, cancel, and their events."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jsonschema
import orjson
from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ikoma.domain.errors import Conflict, Invalid, NotFound
from ikoma.domain.lifecycle import OrderStatus, Reason, check_transition
from ikoma.domain.secret_params import seal_params, secret_names
from ikoma.services import history
from ikoma.services.vault import Vault
from ikoma.services.wakeups import Wakeups
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import order_attempts, order_events, orders, playbooks, runners, servers

# the create path's statements, on the driver (storage/prepared.py)
_LIVE_SERVER = Prepared(
    select(servers.c.id, servers.c.runner_id).where(
        servers.c.id == bindparam("p_server_id"), servers.c.deleted_at.is_(None)
    )
)
_RUNNER = Prepared(select(runners.c.id).where(runners.c.id == bindparam("p_runner_id")))
_PLAYBOOK = Prepared(select(playbooks).where(playbooks.c.key == bindparam("p_key")))
_INSERT_ORDER = Prepared(insert(orders).returning(*orders.c))


async def _playbook(tx: Tx, key: str) -> dict[str, Any] | None:
    """`playbooks.find_playbook`, on the driver: one read per create."""
    row = (await tx.execute(_PLAYBOOK, {"p_key": key})).mappings().first()
    return None if row is None else dict(row)


def request_hash(body: dict[str, Any], vault: Vault | None = None) -> str:
    """A stable fingerprint of a create request, to tell a replay from a different request.

    Keyed by the vault when there is one: the body may hold a secret param, and a plain hash of it
    stored in the database could be brute-forced.
    """
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return vault.fingerprint(canonical) if vault is not None else hashlib.sha256(canonical).hexdigest()


async def _by_idempotency_key(tx: Tx, scope: str, key: str) -> dict[str, Any] | None:
    """The caller's own order with this key: keys are per caller, another client's are invisible."""
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


def _replay(existing: dict[str, Any], fingerprint: str, key: str) -> dict[str, Any]:
    if existing["request_hash"] != fingerprint:
        raise Conflict(
            "this Idempotency-Key was used with a different request",
            reason="idempotency_conflict",
            idempotencyKey=key,
            orderId=existing["id"],
        )
    return existing


# compiled params validators by schema text: a playbook's schema changes rarely, and building the
# validator costs as much as running it (a replaced schema has other text, so it gets its own validator)
_VALIDATORS: dict[bytes, jsonschema.Draft202012Validator] = {}
_VALIDATORS_KEPT = 256


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    validator = _VALIDATORS.get(key)
    if validator is None:
        if len(_VALIDATORS) >= _VALIDATORS_KEPT:
            _VALIDATORS.clear()
        validator = _VALIDATORS[key] = jsonschema.Draft202012Validator(schema)
    return validator


def validate_params(schema: dict[str, Any], params: dict[str, Any]) -> None:
    errors = sorted(_validator(schema).iter_errors(params), key=lambda e: list(e.path))
    if errors:
        raise Invalid(
            "params do not match the playbook's schema",
            errors=[
                {
                    "path": ".".join(["params", *(str(p) for p in e.path)]),
                    "message": e.message,
                    "type": str(e.validator),
                }
                for e in errors
            ],
        )


def with_defaults(schema: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The params as they will run: top-level schema defaults filled in, so the order shows them."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return params
    defaults = {
        name: spec["default"]
        for name, spec in properties.items()
        if isinstance(spec, dict) and "default" in spec and name not in params
    }
    return {**defaults, **params}


async def create_order(
    db: Database,
    wakeups: Wakeups,
    body: dict[str, Any],
    *,
    idempotency_key: str | None,
    default_timeout: float,
    actor: str = "admin",
    vault: Vault | None = None,
    authorize: Callable[[dict[str, Any]], None] | None = None,
    joined: Callable[[Tx], None] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Queue an order; returns (order, replayed). The same key and body gives back the same order.

    `authorize(playbook)` refuses a caller the playbook's own role does not allow, before anything is
    replayed or written; `joined(tx)` is called with the write transaction (the REST audit entry joins
    it: api/policy.py). The playbook is read once, in that transaction.
    """
    fingerprint = request_hash(body, vault)
    if idempotency_key is not None:
        async with db.read() as tx:
            existing = await _by_idempotency_key(tx, actor, idempotency_key)
            playbook = await _playbook(tx, body["playbook_key"]) if existing is not None else None
        if existing is not None:
            if playbook is not None and authorize is not None:
                authorize(playbook)
            return _replay(existing, fingerprint, idempotency_key), True
    try:
        async with db.write() as tx:
            if joined is not None:
                joined(tx)
            playbook = await _playbook(tx, body["playbook_key"])
            if playbook is not None and authorize is not None:
                authorize(playbook)  # an unknown key is refused by insert_order with its own reason
            if idempotency_key is not None:
                # Re-read inside the write transaction: on SQLite writers are serialized, so this
                # closes the race; on PostgreSQL the unique index catches it (handled below).
                existing = await _by_idempotency_key(tx, actor, idempotency_key)
                if existing is not None:
                    return _replay(existing, fingerprint, idempotency_key), True
            row = await insert_order(
                tx,
                wakeups,
                body,
                default_timeout=default_timeout,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                actor=actor,
                vault=vault,
                playbook=playbook,
            )
    except IntegrityError:
        if idempotency_key is None:
            raise
        async with db.read() as tx:
            existing = await _by_idempotency_key(tx, actor, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, fingerprint, idempotency_key), True
    return row, False


async def insert_order(
    tx: Tx,
    wakeups: Wakeups,
    body: dict[str, Any],
    *,
    default_timeout: float,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    actor: str = "admin",
    vault: Vault | None = None,
    playbook: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Queue an order inside the caller's transaction (so it commits, or not, with what goes with it).

    `playbook`: the playbook of `body["playbook_key"]` when the caller has read it in `tx` already.

    Secret params (by name, or `writeOnly`/`x-secret` in the playbook's schema) are stored sealed by
    `vault`; without one, an order with a secret param is refused rather than stored in plaintext.
    The eligible runners are woken once the transaction has committed.
    """
    order_id = str(uuid.uuid4())
    server = (await tx.execute(_LIVE_SERVER, {"p_server_id": body["server_id"]})).first()
    if server is None:
        raise Invalid(
            "no server with this id",
            reason="unknown_server",
            field="serverId",
            serverId=body["server_id"],
        )
    if playbook is None:
        playbook = await _playbook(tx, body["playbook_key"])
    if playbook is None:
        raise Invalid(
            "no playbook with this key",
            reason="unknown_playbook",
            field="playbookKey",
            playbookKey=body["playbook_key"],
        )
    runner_id = body.get("runner_id")
    if runner_id is not None:
        known = (await tx.execute(_RUNNER, {"p_runner_id": runner_id})).first()
        if known is None:
            raise Invalid(
                "no runner with this id",
                reason="unknown_runner",
                field="runnerId",
                runnerId=runner_id,
            )
    else:
        runner_id = server.runner_id
    params = with_defaults(playbook["params_schema"], body.get("params") or {})
    validate_params(playbook["params_schema"], params)
    secrets = secret_names(playbook["params_schema"], params)
    if secrets:
        if vault is None:
            raise RuntimeError("secret params need the vault; none was given")  # a wiring bug, not input
        params = seal_params(params, secrets, vault.seal)
    timeout = body.get("timeout_seconds") or playbook["default_timeout_s"] or default_timeout
    values = {
        "id": order_id,
        "status": OrderStatus.QUEUED.value,
        "server_id": server.id,
        "runner_id": runner_id,
        "playbook_key": playbook["key"],
        "action": body.get("action") or "run",
        "params": params,
        "attempt": 0,
        "executions": 0,
        "max_attempts": body.get("max_attempts") or playbook["max_attempts"],
        "timeout_s": int(timeout),
        "cancel_requested": False,
        "status_reason": Reason.CREATED.value,
        "idempotency_key": idempotency_key,
        "idempotency_scope": actor if idempotency_key is not None else None,
        "request_hash": fingerprint or request_hash(body, vault),
        "steps": playbook["steps"],
    }
    row = (await tx.execute(_INSERT_ORDER, values)).mappings().one()
    await history.record_events(
        tx,
        [history.event(order_id, None, OrderStatus.QUEUED, Reason.CREATED, attempt=0, actor=actor)],
    )
    tx.after_commit(lambda: wakeups.notify(row["runner_id"], row["server_id"]))
    return dict(row)


async def get_order(db: Database, order_id: str) -> dict[str, Any]:
    async with db.read() as tx:
        row = (await tx.execute(select(orders).where(orders.c.id == order_id))).mappings().first()
        if row is None:
            raise NotFound("no order with this id", reason="order_not_found", orderId=order_id)
        attempts = (
            await tx.execute(
                select(order_attempts)
                .where(order_attempts.c.order_id == order_id)
                .order_by(order_attempts.c.attempt)
            )
        ).mappings()
        return {**row, "attempts": [dict(a) for a in attempts]}


def encode_cursor(created_at: datetime, order_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{order_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, order_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), str(uuid.UUID(order_id))
    except (ValueError, UnicodeDecodeError):
        raise Invalid("cursor is not one this API issued", field="cursor") from None


async def newest_first_page(
    db: Database, query: Any, table: Any, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `query` over `table` newest first by (created_at, id), and the cursor to the next."""
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                table.c.created_at < created_at,
                and_(table.c.created_at == created_at, table.c.id < last_id),
            )
        )
    query = query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)
    async with db.read() as tx:
        rows = [dict(r) for r in (await tx.execute(query)).mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
    return rows, next_cursor


async def list_orders(
    db: Database,
    *,
    status: OrderStatus | None = None,
    server_id: str | None = None,
    runner_id: str | None = None,
    playbook_key: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, `limit` at a time; the cursor continues after the last order returned."""
    query = select(orders)
    if status is not None:
        query = query.where(orders.c.status == status.value)
    if server_id is not None:
        query = query.where(orders.c.server_id == server_id)
    if runner_id is not None:
        query = query.where(orders.c.runner_id == runner_id)
    if playbook_key is not None:
        query = query.where(orders.c.playbook_key == playbook_key)
    return await newest_first_page(db, query, orders, limit=limit, cursor=cursor)


async def cancel_order(
    db: Database, order_id: str, *, reason: str | None, actor: str = "admin"
) -> dict[str, Any]:
    """QUEUED or CLAIMED → CANCELLED at once; RUNNING → cancel requested (the runner stops the work)."""
    async with db.write() as tx:
        row = (
            (await tx.execute(select(orders).where(orders.c.id == order_id).with_for_update()))
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound("no order with this id", reason="order_not_found", orderId=order_id)
        current = OrderStatus(row["status"])
        details = {"reason": reason} if reason else None
        if current == OrderStatus.RUNNING:
            changed = (
                (
                    await tx.execute(
                        update(orders)
                        .where(orders.c.id == order_id, orders.c.status == current.value)
                        .values(cancel_requested=True, updated_at=db_now())
                        .returning(*orders.c)
                    )
                )
                .mappings()
                .one()
            )
            await history.record_events(
                tx,
                [
                    history.event(
                        order_id,
                        current,
                        current,
                        "cancel_requested",
                        attempt=row["attempt"],
                        actor=actor,
                        details=details,
                    )
                ],
            )
            return dict(changed)
        check_transition(current, OrderStatus.CANCELLED, order_id=order_id)
        changed = (
            (
                await tx.execute(
                    update(orders)
                    .where(orders.c.id == order_id, orders.c.status == current.value)
                    .values(
                        status=OrderStatus.CANCELLED.value,
                        cancel_requested=True,
                        finished_at=db_now(),
                        status_reason=Reason.CANCELLED_BY_USER.value,
                        updated_at=db_now(),
                    )
                    .returning(*orders.c)
                )
            )
            .mappings()
            .one()
        )
        if current == OrderStatus.CLAIMED:
            await history.close_attempts(
                tx, [(order_id, row["attempt"], OrderStatus.CANCELLED.value, Reason.CANCELLED_BY_USER.value)]
            )
        await history.record_events(
            tx,
            [
                history.event(
                    order_id,
                    current,
                    OrderStatus.CANCELLED,
                    Reason.CANCELLED_BY_USER,
                    attempt=row["attempt"],
                    actor=actor,
                    details=details,
                )
            ],
        )
        return dict(changed)


async def list_events(db: Database, order_id: str) -> list[dict[str, Any]]:
    async with db.read() as tx:
        exists = (await tx.execute(select(orders.c.id).where(orders.c.id == order_id))).first()
        if exists is None:
            raise NotFound("no order with this id", reason="order_not_found", orderId=order_id)
        rows = await tx.execute(
            select(order_events).where(order_events.c.order_id == order_id).order_by(order_events.c.id)
        )
        return [dict(r) for r in rows.mappings()]


async def count_by_status(db: Database) -> dict[str, int]:
    async with db.read() as tx:
        rows = await tx.execute(select(orders.c.status, func.count().label("n")).group_by(orders.c.status))
        return {row["status"]: int(row["n"]) for row in rows.mappings()}
