"""API clients: automation's own tokens, each with a role, an optional expiry and server scope.

The token is shown once at creation; only its SHA-256 and prefix are kept. A revoked or expired token
is refused at its next request (the lookup filters on both), so revocation needs no cache to expire.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select, update

from ikoma.domain import tokens
from ikoma.domain.errors import Invalid, NotFound, Unauthorized
from ikoma.domain.roles import Role
from ikoma.services import events
from ikoma.services.identity import Principal
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import api_clients, servers

# lastUsedAt is refreshed at most this often: a write per request would serialise every caller
LAST_USED_RESOLUTION_S = 60.0
MAX_LIFETIME_S = 10 * 365 * 86400

_PUBLIC = (
    api_clients.c.id,
    api_clients.c.name,
    api_clients.c.role,
    api_clients.c.token_prefix,
    api_clients.c.server_ids,
    api_clients.c.expires_at,
    api_clients.c.created_by,
    api_clients.c.created_at,
    api_clients.c.last_used_at,
    api_clients.c.revoked_at,
)


async def create_api_client(
    db: Database,
    *,
    name: str,
    role: Role,
    created_by: str,
    expires_in_s: float | None = None,
    expires_at: datetime | None = None,
    server_ids: list[str] | None = None,
) -> dict[str, Any]:
    """Returns the client with its `token`: the only time the secret is ever seen."""
    if expires_in_s is not None and expires_at is not None:
        raise Invalid("give expiresAt or expiresInSeconds, not both", reason="ambiguous_expiry")
    if expires_in_s is not None and not 0 < expires_in_s <= MAX_LIFETIME_S:
        raise Invalid("expiresInSeconds must be between 1 and 10 years", reason="invalid_expiry")
    issued = tokens.issue_api_client_token()
    client_id = str(uuid.uuid4())
    scope = sorted(set(server_ids)) if server_ids is not None else None
    async with db.write() as tx:
        if scope is not None:
            found = set(
                (
                    await tx.execute(
                        select(servers.c.id).where(servers.c.id.in_(scope), servers.c.deleted_at.is_(None))
                    )
                ).scalars()
            )
            unknown = [s for s in scope if s not in found]
            if unknown:
                raise Invalid(
                    "serverIds names servers that do not exist",
                    reason="unknown_server",
                    field="serverIds",
                    serverIds=unknown,
                )
        if expires_at is not None:
            in_future = (await tx.execute(select(db_now() < expires_at))).scalar_one()
            if not in_future:
                raise Invalid("expiresAt is in the past", reason="invalid_expiry", field="expiresAt")
        expiry: Any = expires_at if expires_at is not None else None
        if expires_in_s is not None:
            expiry = db_now(expires_in_s)
        await tx.execute(
            insert(api_clients).values(
                id=client_id,
                name=name,
                role=role.label,
                token_prefix=issued.prefix,
                token_hash=issued.hash,
                server_ids=scope,
                expires_at=expiry,
                created_by=created_by,
            )
        )
        row = (await tx.execute(select(*_PUBLIC).where(api_clients.c.id == client_id))).mappings().one()
        events.publish(
            tx,
            "api_client.created",
            actor=created_by,
            data={"clientId": client_id, "name": name, "role": role.label, "serverIds": scope},
        )
    return {**dict(row), "token": issued.secret}


async def list_api_clients(db: Database) -> list[dict[str, Any]]:
    async with db.read() as tx:
        rows = (await tx.execute(select(*_PUBLIC).order_by(api_clients.c.created_at))).mappings().all()
    return [dict(r) for r in rows]


async def get_api_client(db: Database, client_id: str) -> dict[str, Any]:
    async with db.read() as tx:
        row = (await tx.execute(select(*_PUBLIC).where(api_clients.c.id == client_id))).mappings().first()
    if row is None:
        raise NotFound("no API client with this id", reason="api_client_not_found", id=client_id)
    return dict(row)


async def revoke_api_client(db: Database, client_id: str, *, actor: str | None = None) -> dict[str, Any]:
    """Revoking twice is not an error: the first revocation time is kept (and logged once)."""
    async with db.write() as tx:
        revoked = (
            await tx.execute(
                update(api_clients)
                .where(api_clients.c.id == client_id, api_clients.c.revoked_at.is_(None))
                .values(revoked_at=db_now())
                .returning(api_clients.c.name)
            )
        ).first()
        if revoked is not None:
            events.publish(
                tx, "api_client.revoked", actor=actor, data={"clientId": client_id, "name": revoked.name}
            )
        row = (await tx.execute(select(*_PUBLIC).where(api_clients.c.id == client_id))).mappings().first()
    if row is None:
        raise NotFound("no API client with this id", reason="api_client_not_found", id=client_id)
    return dict(row)


async def authenticate(db: Database, secret: str) -> Principal:
    """The principal behind an API client token, or 401 (unknown, revoked and expired look alike)."""
    if not tokens.is_api_client_token(secret):
        raise Unauthorized("credential is missing or invalid")
    digest = tokens.hash_token(secret)
    live = (
        api_clients.c.token_hash == digest,
        api_clients.c.revoked_at.is_(None),
        or_(api_clients.c.expires_at.is_(None), api_clients.c.expires_at > db_now()),
    )
    async with db.read() as tx:
        row = (
            await tx.execute(
                select(
                    api_clients.c.id,
                    api_clients.c.name,
                    api_clients.c.role,
                    api_clients.c.token_prefix,
                    api_clients.c.server_ids,
                    or_(
                        api_clients.c.last_used_at.is_(None),
                        api_clients.c.last_used_at < db_now(-LAST_USED_RESOLUTION_S),
                    ).label("touch"),
                ).where(*live)
            )
        ).first()
    if row is None:
        raise Unauthorized("credential is missing or invalid")
    if row.touch:
        async with db.write() as tx:
            await tx.execute(
                update(api_clients).where(api_clients.c.id == row.id).values(last_used_at=db_now())
            )
    role = Role.parse(row.role)
    scope = frozenset(row.server_ids) if row.server_ids is not None else None
    return Principal(
        kind="api_client",
        id=str(row.id),
        name=row.name,
        role=role,
        granted_role=role,
        token_prefix=row.token_prefix,
        server_ids=scope,
    )
