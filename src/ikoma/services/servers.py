"""Servers: the machines orders run on. A server owns its runner relation (`servers.runner_id`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from ikoma.domain.errors import Conflict, Invalid, NotFound
from ikoma.domain.lifecycle import TERMINAL
from ikoma.services import events, timeline
from ikoma.services.runners import insert_runner
from ikoma.services.vault import Vault
from ikoma.ssh import credentials
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import orders, runners, server_credentials, servers

_WITH_RUNNER = (
    select(
        *[c for c in servers.c if c.name != "deleted_at"],
        runners.c.name.label("runner_name"),
        # whether a secret is set, never the secret (issue 14)
        server_credentials.c.password.is_not(None).label("has_password"),
        server_credentials.c.private_key.is_not(None).label("has_private_key"),
        server_credentials.c.sudo_password.is_not(None).label("has_sudo_password"),
    )
    .select_from(
        servers.outerjoin(runners, runners.c.id == servers.c.runner_id).outerjoin(
            server_credentials, server_credentials.c.server_id == servers.c.id
        )
    )
    .where(servers.c.deleted_at.is_(None))
)
SSH_ONLY = ("ssh_username",)


def _split_secrets(fields: dict[str, Any]) -> dict[str, str | None]:
    """Take the credential fields out of `fields` (they go to server_credentials, sealed)."""
    return {column: fields.pop(name) for name, column in credentials.FIELDS.items() if name in fields}


def _check_ssh(merged: dict[str, Any], secrets: dict[str, str | None], has: dict[str, bool]) -> None:
    """An ssh server needs a user and a password or a key; an apt proxy needs its URL."""
    if merged.get("apt_proxy_mode") == "proxy" and not merged.get("apt_proxy_url"):
        raise Invalid(
            "aptProxyMode `proxy` needs aptProxyUrl", reason="apt_proxy_url_missing", field="aptProxyUrl"
        )
    if merged.get("connection_mode") != "ssh":
        return
    if not merged.get("ssh_username"):
        raise Invalid("an ssh server needs sshUsername", reason="ssh_username_missing", field="sshUsername")
    password = secrets["password"] if "password" in secrets else has.get("password")
    key = secrets["private_key"] if "private_key" in secrets else has.get("private_key")
    if not password and not key:
        raise Invalid(
            "an ssh server needs sshPassword or sshPrivateKey",
            reason="ssh_credentials_missing",
            field="sshPassword",
        )


async def _ssh_runner(tx: Tx, server_id: str, name: str, *, stale_after: float) -> str:
    """The runner row the SSH executor acts as for this server (its token is never shown nor needed)."""
    runner = await insert_runner(tx, name=f"ssh-{name}-{server_id[:8]}"[:200], stale_after=stale_after)
    return str(runner["id"])


async def _store_secrets(
    tx: Tx, vault: Vault | None, server_id: str, secrets: dict[str, str | None], fields: dict[str, Any]
) -> None:
    if not secrets:
        return
    if vault is None:
        raise RuntimeError("SSH credentials need the vault; none was given")  # a wiring bug, not input
    if "private_key" in secrets or "key_passphrase" in secrets:
        key = secrets.get("private_key")
        if key is None and "private_key" not in secrets:
            key = (await credentials.load(tx, vault, server_id)).private_key
        passphrase = secrets.get("key_passphrase")
        fields["ssh_key_fingerprint"] = credentials.key_fingerprint(key, passphrase) if key else None
    await credentials.store(tx, vault, server_id, secrets)


async def _get(tx: Tx, server_id: str) -> dict[str, Any]:
    row = (await tx.execute(_WITH_RUNNER.where(servers.c.id == server_id))).mappings().first()
    if row is None:
        raise NotFound("no server with this id", reason="server_not_found", serverId=server_id)
    return dict(row)


async def _check_runner_free(tx: Tx, runner_id: str, server_id: str) -> None:
    exists = (await tx.execute(select(runners.c.id).where(runners.c.id == runner_id))).first()
    if exists is None:
        raise Invalid("no runner with this id", reason="unknown_runner", field="runnerId", runnerId=runner_id)
    holder = (
        await tx.execute(
            select(servers.c.id, servers.c.name).where(
                servers.c.runner_id == runner_id, servers.c.id != server_id, servers.c.deleted_at.is_(None)
            )
        )
    ).first()
    if holder is not None:
        raise Conflict(
            f"runner is already attached to server {holder.name!r}; detach it there first",
            runnerId=runner_id,
            serverId=holder.id,
        )


async def _runner_changed(tx: Tx, server_id: str, before: str | None, after: str | None, actor: str) -> None:
    """Attach and detach go on the server's timeline (issue 4) and in the event log."""
    if before == after:
        return
    events.publish(
        tx,
        "server.attached",
        server_id=server_id,
        runner_id=after,
        actor=actor,
        data={"runnerId": after, "previousRunnerId": before},
    )
    names = {
        str(r.id): r.name
        for r in await tx.execute(
            select(runners.c.id, runners.c.name).where(runners.c.id.in_([r for r in (before, after) if r]))
        )
    }
    if before:
        await timeline.add_event(
            tx,
            server_id=server_id,
            type="runner.detached",
            severity="info",
            message=f"runner {names.get(str(before), before)} detached",
            actor=actor,
            details={"runnerId": str(before)},
        )
    if after:
        await timeline.add_event(
            tx,
            server_id=server_id,
            type="runner.attached",
            severity="info",
            message=f"runner {names.get(str(after), after)} attached",
            actor=actor,
            details={"runnerId": str(after)},
        )


async def create_server(
    db: Database,
    fields: dict[str, Any],
    *,
    actor: str = "admin",
    vault: Vault | None = None,
    stale_after: float = 120.0,
) -> dict[str, Any]:
    server_id = str(uuid.uuid4())
    fields = dict(fields)
    secrets = _split_secrets(fields)
    _check_ssh(fields, secrets, {})
    try:
        async with db.write() as tx:
            if fields.get("connection_mode") == "ssh":
                if fields.get("runner_id"):
                    raise Invalid(
                        "an ssh server is run by the SSH executor; it takes no runner",
                        reason="ssh_server_runner",
                        field="runnerId",
                    )
                fields["runner_id"] = await _ssh_runner(
                    tx, server_id, fields["name"], stale_after=stale_after
                )
            elif fields.get("runner_id"):
                await _check_runner_free(tx, fields["runner_id"], server_id)
            if secrets:
                fingerprint: dict[str, Any] = {}
                await tx.execute(insert(servers).values(id=server_id, **fields))
                await _store_secrets(tx, vault, server_id, secrets, fingerprint)
                if fingerprint:
                    await tx.execute(update(servers).where(servers.c.id == server_id).values(**fingerprint))
            else:
                await tx.execute(insert(servers).values(id=server_id, **fields))
            events.publish(
                tx,
                "server.created",
                server_id=server_id,
                actor=actor,
                data={"name": fields.get("name"), "hostname": fields.get("hostname")},
            )
            await _runner_changed(tx, server_id, None, fields.get("runner_id"), actor)
            return await _get(tx, server_id)
    except IntegrityError:
        raise Conflict(f"a server named {fields.get('name')!r} already exists", field="name") from None


def parse_label_filters(filters: list[str]) -> list[tuple[str, str | None]]:
    """`env=prod` (the label has this value) or `env` (the label is set) → (key, value or None)."""
    parsed: list[tuple[str, str | None]] = []
    for index, text in enumerate(filters):
        key, has_value, value = text.partition("=")
        if not key:
            raise Invalid(
                "a label filter is `key=value` or `key`",
                errors=[{"path": f"label.{index}", "message": "the key is empty", "type": "label_filter"}],
            )
        parsed.append((key, value if has_value else None))
    return parsed


def has_labels(labels: dict[str, str] | None, wanted: list[tuple[str, str | None]]) -> bool:
    """Every filter holds (AND): the key is set, and to the value when one is given."""
    found = labels or {}
    return all(key in found and (value is None or found[key] == value) for key, value in wanted)


async def list_servers(db: Database, *, labels: list[str] | None = None) -> list[dict[str, Any]]:
    """Every server, or those whose labels match every `key=value` / `key` filter."""
    wanted = parse_label_filters(labels or [])
    async with db.read() as tx:
        rows = (await tx.execute(_WITH_RUNNER.order_by(servers.c.created_at, servers.c.id))).mappings()
        return [dict(r) for r in rows if has_labels(r["labels"], wanted)]


async def get_server(db: Database, server_id: str) -> dict[str, Any]:
    async with db.read() as tx:
        return await _get(tx, server_id)


async def update_server(
    db: Database,
    server_id: str,
    changes: dict[str, Any],
    *,
    actor: str = "admin",
    vault: Vault | None = None,
    stale_after: float = 120.0,
) -> dict[str, Any]:
    """Apply a partial update; `runner_id: None` detaches the runner."""
    changes = dict(changes)
    secrets = _split_secrets(changes)
    try:
        async with db.write() as tx:
            current = await _get(tx, server_id)
            merged = {**current, **changes}
            has = {"password": bool(current["has_password"]), "private_key": bool(current["has_private_key"])}
            _check_ssh(merged, secrets, has)
            if "runner_id" in changes and merged["connection_mode"] == "ssh":
                raise Invalid(
                    "an ssh server is run by the SSH executor; it takes no runner",
                    reason="ssh_server_runner",
                    field="runnerId",
                )
            if current["connection_mode"] != merged["connection_mode"]:
                if merged["connection_mode"] == "ssh":
                    if current["runner_id"]:
                        raise Conflict(
                            "detach this server's runner before switching it to ssh", serverId=server_id
                        )
                    changes["runner_id"] = await _ssh_runner(
                        tx, server_id, merged["name"], stale_after=stale_after
                    )
                else:  # back to agent: its ssh runner retires with the mode
                    changes["runner_id"] = None
                    await tx.execute(
                        update(runners)
                        .where(runners.c.id == current["runner_id"])
                        .values(revoked_at=db_now(), revoked_by=actor)
                    )
            if merged["connection_mode"] == "ssh" and (
                changes.get("hostname", current["hostname"]) != current["hostname"]
                or changes.get("port", current["port"]) != current["port"]
            ):
                # another address may be another machine: its key is trusted on first use again
                changes["host_key_fingerprint"] = None
                changes["host_key_pinned_at"] = None
            await _store_secrets(tx, vault, server_id, secrets, changes)
            if changes.get("runner_id") and merged["connection_mode"] != "ssh":
                await _check_runner_free(tx, changes["runner_id"], server_id)
            if changes:
                await tx.execute(
                    update(servers).where(servers.c.id == server_id).values(**changes, updated_at=db_now())
                )
            changed = sorted(events.camel(k) for k in changes if k != "runner_id")
            if changed:  # names only: a value may be a credential's fingerprint, or a secret one day
                events.publish(
                    tx, "server.changed", server_id=server_id, actor=actor, data={"fields": changed}
                )
            if "runner_id" in changes:
                await _runner_changed(tx, server_id, current["runner_id"], changes["runner_id"], actor)
            return await _get(tx, server_id)
    except IntegrityError:
        if "name" not in changes:  # only the name is unique; anything else is a bug to see, not a 409
            raise
        raise Conflict(f"a server named {changes['name']!r} already exists", field="name") from None


async def delete_server(db: Database, server_id: str, *, actor: str = "admin") -> None:
    """Retire a server. Its orders stay as history; refused while some of them have not ended."""
    async with db.write() as tx:
        current = await _get(tx, server_id)
        active = (
            await tx.execute(
                select(orders.c.id)
                .where(orders.c.server_id == server_id, orders.c.status.not_in([s.value for s in TERMINAL]))
                .limit(1)
            )
        ).first()
        if active is not None:
            raise Conflict("server has orders that have not ended; cancel them first", serverId=server_id)
        await tx.execute(
            update(servers)
            .where(servers.c.id == server_id)
            .values(deleted_at=db_now(), runner_id=None, updated_at=db_now())
        )
        if current["connection_mode"] == "ssh" and current["runner_id"]:
            # the server's ssh runner exists for it alone: it retires with it
            await tx.execute(
                update(runners)
                .where(runners.c.id == current["runner_id"], runners.c.revoked_at.is_(None))
                .values(revoked_at=db_now(), revoked_by=actor)
            )
        await _runner_changed(tx, server_id, current["runner_id"], None, actor)
        events.publish(tx, "server.deleted", server_id=server_id, actor=actor, data={"name": current["name"]})
