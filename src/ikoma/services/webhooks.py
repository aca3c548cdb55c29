"""Webhooks: an HTTP endpoint that receives the fleet's events, signed, one at a time in id order.

A webhook follows the event log from the moment it is created (`last_event_id`, its cursor) and gets
the events matching its kinds (or prefixes) and optional server and label filters. Its signing secret is
shown once, at creation; it is kept sealed by the vault (HMAC needs it in clear, so it is encrypted,
not hashed). Deliveries go out from `services/webhook_delivery.py`; here: registration, changes, the
delivery log, redelivery. Every change publishes a `webhook.*` event (the audit entry is written by the
policy middleware, as for every mutating request).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, insert, select, update

from ikoma.domain.errors import Conflict, Invalid, NotFound
from ikoma.domain.event_kinds import KINDS
from ikoma.services import events
from ikoma.services.vault import Vault
from ikoma.services.webhook_targets import resolve
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import servers, webhook_deliveries, webhooks

SECRET_PREFIX = "whsec_"  # noqa: S105  (a prefix, not a secret)
WEBHOOK_KINDS = ("webhook.created", "webhook.changed", "webhook.deleted", "webhook.disabled")
ALL_KINDS = "*"
MAX_KINDS = 50

_PUBLIC = tuple(c for c in webhooks.c if c.name not in ("secret", "lease_until"))
# a change event names the fields changed as the API does
_WIRE_NAMES = {"kinds": "events", "server_ids": "serverIds", "last_event_id": "lastEventId"}


def new_secret() -> str:
    """256 random bits, URL-safe; the prefix says what it is when it turns up in a config file."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def normalize_kinds(kinds: Iterable[str]) -> list[str]:
    """The kinds as stored: each an event kind or a prefix of some (`order`, `order.`, `order.failed`),
    or `*` for every event. A prefix that matches no kind is refused: a typo would silently get nothing.
    """
    known = (*KINDS, *WEBHOOK_KINDS)
    found: list[str] = []
    for kind in kinds:
        kind = kind.strip()
        if kind == ALL_KINDS:
            return [ALL_KINDS]
        stem = kind.removesuffix(".*").rstrip(".")
        if not stem or not any(k == stem or k.startswith(stem + ".") for k in known):
            raise Invalid(
                f"{kind!r} is no event kind nor a prefix of one (see GET /v1/events, docs/api.md)",
                reason="unknown_event_kind",
                field="events",
                kind=kind,
            )
        if stem not in found:
            found.append(stem)
    if not found:
        raise Invalid("name at least one event kind or prefix, or *", reason="unknown_event_kind")
    return found


def read_kinds(stored: list[str]) -> list[str] | None:
    """What `events.read` takes: None for every kind."""
    return None if ALL_KINDS in stored else list(stored)


async def create_webhook(
    db: Database,
    vault: Vault,
    *,
    url: str,
    kinds: list[str],
    server_ids: list[str] | None,
    labels: dict[str, str] | None,
    description: str | None,
    created_by: str,
    allow_private: bool,
) -> dict[str, Any]:
    """The new webhook with its `secret`: the only time the secret is ever shown."""
    stored_kinds = normalize_kinds(kinds)
    await resolve(url, allow_private=allow_private)  # no transaction is held across the DNS lookup
    secret = new_secret()
    webhook_id = str(uuid.uuid4())
    scope = sorted(set(server_ids)) if server_ids is not None else None
    async with db.write() as tx:
        if scope is not None:
            await _require_servers(tx, scope)
        await tx.execute(
            insert(webhooks).values(
                id=webhook_id,
                url=url,
                description=description,
                kinds=stored_kinds,
                server_ids=scope,
                labels=labels or None,
                secret=vault.seal(secret),
                enabled=True,
                last_event_id=await events.last_id(tx),  # from now on: no backlog of past events
                consecutive_failures=0,
                created_by=created_by,
            )
        )
        events.publish(
            tx, "webhook.created", actor=created_by, data={"webhookId": webhook_id, "events": stored_kinds}
        )
        row = await _public(tx, webhook_id)
    return {**row, "secret": secret}


async def list_webhooks(db: Database) -> list[dict[str, Any]]:
    async with db.read() as tx:
        rows = (await tx.execute(select(*_PUBLIC).order_by(webhooks.c.created_at))).mappings().all()
    return [dict(r) for r in rows]


async def get_webhook(db: Database, webhook_id: str) -> dict[str, Any]:
    async with db.read() as tx:
        return await _public(tx, webhook_id)


async def update_webhook(
    db: Database, webhook_id: str, changes: dict[str, Any], *, actor: str, allow_private: bool
) -> dict[str, Any]:
    """Change url, events (kinds), serverIds, labels or description; the cursor and secret stay."""
    values: dict[str, Any] = {}
    if "url" in changes:
        await resolve(changes["url"], allow_private=allow_private)
        values["url"] = changes["url"]
    if "kinds" in changes:
        values["kinds"] = normalize_kinds(changes["kinds"])
    if "server_ids" in changes:
        ids = changes["server_ids"]
        values["server_ids"] = sorted(set(ids)) if ids is not None else None
    if "labels" in changes:
        values["labels"] = changes["labels"] or None
    if "description" in changes:
        values["description"] = changes["description"]
    async with db.write() as tx:
        await _public(tx, webhook_id)
        if values.get("server_ids") is not None:
            await _require_servers(tx, values["server_ids"])
        if values:
            await tx.execute(
                update(webhooks).where(webhooks.c.id == webhook_id).values(**values, updated_at=db_now())
            )
            events.publish(
                tx, "webhook.changed", actor=actor, data={"webhookId": webhook_id, "changed": _wire(values)}
            )
        return await _public(tx, webhook_id)


async def delete_webhook(db: Database, webhook_id: str, *, actor: str) -> None:
    """Gone with its delivery log; a delivery in flight finishes, its outcome is then recorded nowhere."""
    async with db.write() as tx:
        await _public(tx, webhook_id)
        await tx.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id))
        await tx.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
        events.publish(tx, "webhook.deleted", actor=actor, data={"webhookId": webhook_id})


async def disable_webhook(db: Database, webhook_id: str, *, actor: str) -> dict[str, Any]:
    """Nothing is sent until it is enabled again; a pending delivery waits (disabling twice is no error)."""
    async with db.write() as tx:
        current = await _public(tx, webhook_id)
        if current["enabled"]:
            await tx.execute(
                update(webhooks)
                .where(webhooks.c.id == webhook_id)
                .values(enabled=False, disabled_reason="manual", disabled_at=db_now(), updated_at=db_now())
            )
            events.publish(
                tx, "webhook.disabled", actor=actor, data={"webhookId": webhook_id, "reason": "manual"}
            )
        return await _public(tx, webhook_id)


async def enable_webhook(
    db: Database, webhook_id: str, *, actor: str, skip_backlog: bool = False
) -> dict[str, Any]:
    """Deliveries resume where they stopped (a pending one first, at once), or, with `skip_backlog`,
    with the next new event: what happened while it was disabled is then not sent."""
    async with db.write() as tx:
        current = await _public(tx, webhook_id)
        values: dict[str, Any] = {}
        if not current["enabled"]:
            values = {
                "enabled": True,
                "disabled_reason": None,
                "disabled_at": None,
                "consecutive_failures": 0,
            }
        if skip_backlog:
            values["last_event_id"] = await events.last_id(tx)
            await tx.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.webhook_id == webhook_id, webhook_deliveries.c.status == "pending"
                )
                .values(status="failed", failed_at=db_now(), next_attempt_at=None, error="skipped on enable")
            )
        if values:
            await tx.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.webhook_id == webhook_id, webhook_deliveries.c.status == "pending"
                )
                .values(next_attempt_at=db_now())
            )
            await tx.execute(
                update(webhooks).where(webhooks.c.id == webhook_id).values(**values, updated_at=db_now())
            )
            events.publish(
                tx,
                "webhook.changed",
                actor=actor,
                data={"webhookId": webhook_id, "changed": _wire(values, keep=("enabled", "last_event_id"))},
            )
        return await _public(tx, webhook_id)


async def list_deliveries(
    db: Database, webhook_id: str, *, limit: int = 50, status: str | None = None
) -> list[dict[str, Any]]:
    """The newest deliveries first: status, attempts, last status code, duration and error."""
    query = select(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
    if status is not None:
        query = query.where(webhook_deliveries.c.status == status)
    async with db.read() as tx:
        await _public(tx, webhook_id)
        rows = await tx.execute(
            query.order_by(
                webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.event_id.desc()
            ).limit(limit)
        )
        return [dict(r) for r in rows.mappings()]


async def redeliver(db: Database, webhook_id: str, delivery_id: str) -> dict[str, Any]:
    """A new delivery (a new `X-Ikoma-Delivery` id) of the same event, queued behind any pending one."""
    async with db.write() as tx:
        webhook = await _public(tx, webhook_id)
        original = (
            (
                await tx.execute(
                    select(webhook_deliveries).where(
                        webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.webhook_id == webhook_id
                    )
                )
            )
            .mappings()
            .first()
        )
        if original is None:
            raise NotFound(
                "this webhook has no delivery with this id",
                reason="delivery_not_found",
                deliveryId=delivery_id,
            )
        if not webhook["enabled"]:
            raise Conflict(
                "the webhook is disabled: enable it first", reason="webhook_disabled", webhookId=webhook_id
            )
        kept = await events.read(tx, after=int(original["event_id"]) - 1, limit=1)
        if not kept or kept[0].id != original["event_id"]:
            raise Conflict(
                "the event of this delivery is no longer kept (event retention)",
                reason="event_expired",
                eventId=original["event_id"],
            )
        new_id = str(uuid.uuid4())
        await tx.execute(
            insert(webhook_deliveries).values(
                id=new_id,
                webhook_id=webhook_id,
                event_id=original["event_id"],
                kind=original["kind"],
                status="pending",
                attempts=0,
                next_attempt_at=db_now(),
                redelivery_of=delivery_id,
            )
        )
        row = (
            (await tx.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == new_id)))
            .mappings()
            .one()
        )
        return dict(row)


async def _public(tx: Tx, webhook_id: str) -> dict[str, Any]:
    row = (await tx.execute(select(*_PUBLIC).where(webhooks.c.id == webhook_id))).mappings().first()
    if row is None:
        raise NotFound("no webhook with this id", reason="webhook_not_found", webhookId=webhook_id)
    return dict(row)


async def _require_servers(tx: Tx, server_ids: list[str]) -> None:
    found = set(
        (
            await tx.execute(
                select(servers.c.id).where(servers.c.id.in_(server_ids), servers.c.deleted_at.is_(None))
            )
        ).scalars()
    )
    unknown = [s for s in server_ids if s not in found]
    if unknown:
        raise Invalid(
            "serverIds names servers that do not exist",
            reason="unknown_server",
            field="serverIds",
            serverIds=unknown,
        )


def _wire(values: dict[str, Any], keep: tuple[str, ...] | None = None) -> list[str]:
    return sorted(_WIRE_NAMES.get(name, name) for name in values if keep is None or name in keep)
