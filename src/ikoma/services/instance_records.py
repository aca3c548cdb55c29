"""Instance rows: how one is read, moved from state to state (with its history row and its
`instance.<state>` event, in the caller's transaction), and how a provider action is written to the
action log (the audit log, channel `system`). Used by services/instances.py and instance_loops.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update

from ikoma.domain.errors import NotFound
from ikoma.domain.ids import is_uuid
from ikoma.domain.instances import State, check_move
from ikoma.providers.base import ProviderError, ProviderInstance
from ikoma.services import audit, events
from ikoma.storage.clock import db_now
from ikoma.storage.database import Tx
from ikoma.storage.tables_instances import installation, instance_state_changes, instances

ERROR_MESSAGE_CHARS = 500
# the timestamp column each state stamps when it is reached
_STAMPS = {
    State.BOOTING: "booting_at",
    State.READY: "ready_at",
    State.TERMINATING: "terminating_at",
    State.TERMINATED: "terminated_at",
    State.FAILED: "failed_at",
}


def as_utc(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite answers naive times or text)."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    """An instance as answered: no lease internals, the price as the row holds it (a Decimal)."""
    hidden = {"lease_owner", "lease_until", "bootstrap_token_id", "tags"}
    return {k: v for k, v in row.items() if k not in hidden}


async def installation_id(tx: Tx) -> str:
    """This IKOMA's id, the OWNER_TAG value of every machine it creates (one row, made by 0018)."""
    return str((await tx.execute(select(installation.c.id).order_by(installation.c.created_at))).scalar_one())


async def get_row(tx: Tx, instance_id: str) -> dict[str, Any]:
    if not is_uuid(instance_id):
        raise NotFound("no instance with this id", reason="instance_not_found", instanceId=instance_id[:100])
    row = (await tx.execute(select(instances).where(instances.c.id == instance_id))).mappings().first()
    if row is None:
        raise NotFound("no instance with this id", reason="instance_not_found", instanceId=instance_id)
    return dict(row)


async def transition(
    tx: Tx,
    row: Mapping[str, Any],
    to: State,
    *,
    reason: str,
    actor: str = "system",
    values: Mapping[str, Any] | None = None,
) -> bool:
    """Move one instance from the state `row` says to `to`, only if it still is in that state (a
    concurrent move wins, this one answers False); history row and `instance.<to>` event with it."""
    current = State(row["state"])
    check_move(current, to)
    changes: dict[str, Any] = {
        "state": to.value,
        "updated_at": db_now(),
        "state_changed_at": db_now(),
        **(values or {}),
    }
    if to in _STAMPS:
        changes[_STAMPS[to]] = db_now()
    moved = (
        await tx.execute(
            update(instances)
            .where(instances.c.id == row["id"], instances.c.state == current.value)
            .values(**changes)
            .returning(instances.c.id)
        )
    ).first()
    if moved is None:
        return False
    await tx.execute(
        insert(instance_state_changes).values(
            instance_id=row["id"], from_state=current.value, to_state=to.value, reason=reason[:200]
        )
    )
    events.publish(
        tx,
        f"instance.{to.value}",
        server_id=None if row.get("server_id") is None else str(row["server_id"]),
        actor=actor,
        data={
            "instanceId": str(row["id"]),
            "name": row["name"],
            "provider": row["provider"],
            "from": current.value,
            "to": to.value,
            "reason": reason,
        },
    )
    await record_move(tx, str(row["id"]), row["provider"], current.value, to.value, reason, actor=actor)
    return True


async def record_move(
    tx: Tx, instance_id: str, provider: str, from_state: str | None, to_state: str, reason: str, *, actor: str
) -> None:
    """An instance's move in the action log (channel `system`, action `instance.<state>`), beside its
    `instance_state_changes` row and its event: every transition is on the stream and in the log."""
    await audit.append(
        tx,
        audit.AuditEntry(
            channel="system",
            actor_kind="system",
            actor_id=actor[:100],
            token_prefix=None,
            role=None,
            action=f"instance.{to_state}",
            target=f"/instances/{instance_id}",
            params={"provider": provider, "from": from_state, "to": to_state, "reason": reason[:200]},
            outcome="allowed",
            reason=None,
        ),
    )


async def record_action(
    tx: Tx,
    action: str,
    row: Mapping[str, Any],
    *,
    outcome: audit.Outcome = "allowed",
    reason: str | None = None,
    actor: str = "system",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """One provider action in the action log (audit_log, channel `system`): `provider.create`,
    `provider.adopt`, `provider.terminate`, `provider.orphan_found`. Never user data nor a token."""
    await audit.append(
        tx,
        audit.AuditEntry(
            channel="system",
            actor_kind="system",
            actor_id=actor,
            token_prefix=None,
            role=None,
            action=action,
            target=f"/instances/{row['id']}",
            params={
                "provider": row["provider"],
                "zone": row["zone"],
                "instanceType": row["instance_type"],
                "providerId": row.get("provider_id"),
                **(extra or {}),
            },
            outcome=outcome,
            reason=reason,
        ),
    )


def machine_values(machine: ProviderInstance) -> dict[str, Any]:
    return {
        "provider_id": machine.provider_id,
        "provider_state": machine.state.value,
        "public_ip": machine.public_ip,
        "private_ip": machine.private_ip,
    }


def error_values(exc: ProviderError) -> dict[str, Any]:
    return {"last_error": exc.reason[:64], "last_error_message": str(exc)[:ERROR_MESSAGE_CHARS]}
