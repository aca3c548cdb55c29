"""Runner registration with a one-time bootstrap token issued by an admin (`ikoma runner register`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select, update

from ikoma.domain import tokens
from ikoma.domain.errors import Conflict, Invalid, Unauthorized
from ikoma.services.runners import insert_runner
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import runner_bootstrap_tokens, servers

BOOTSTRAP_TOKEN_KIND = "ikb"  # noqa: S105 - a token prefix, not a secret


async def issue_bootstrap_token(
    db: Database, *, name: str | None, server_id: str | None, expires_in: float
) -> dict[str, Any]:
    token = tokens.issue(BOOTSTRAP_TOKEN_KIND)
    async with db.write() as tx:
        if server_id is not None:
            server = (
                await tx.execute(
                    select(servers.c.id, servers.c.runner_id).where(
                        servers.c.id == server_id, servers.c.deleted_at.is_(None)
                    )
                )
            ).first()
            if server is None:
                raise Invalid(
                    "no server with this id", reason="unknown_server", field="serverId", serverId=server_id
                )
            if server.runner_id is not None:
                raise Conflict("server already has a runner; detach it first", serverId=server_id)
        row = (
            await tx.execute(
                insert(runner_bootstrap_tokens)
                .values(
                    id=str(uuid.uuid4()),
                    token_hash=token.hash,
                    token_prefix=token.prefix,
                    name=name,
                    server_id=server_id,
                    expires_at=db_now(expires_in),
                )
                .returning(runner_bootstrap_tokens.c.expires_at)
            )
        ).one()
    return {"token": token.secret, "expiresAt": row.expires_at, "serverId": server_id}


async def register_runner(
    db: Database, *, bootstrap_token: str | None, name: str | None, hostname: str | None, stale_after: float
) -> dict[str, Any]:
    """Consume the bootstrap token and create the runner (attached to the token's server, if any)."""
    if not bootstrap_token:
        raise Unauthorized("bootstrap token is missing or invalid")
    digest = tokens.hash_token(bootstrap_token)
    async with db.write() as tx:
        # one UPDATE marks the token used: two concurrent registrations cannot both consume it, and a
        # failure below (e.g. the name is taken) rolls the whole registration back, token included
        claimed = (
            await tx.execute(
                update(runner_bootstrap_tokens)
                .where(
                    runner_bootstrap_tokens.c.token_hash == digest,
                    runner_bootstrap_tokens.c.used_at.is_(None),
                    runner_bootstrap_tokens.c.expires_at > db_now(),
                )
                .values(used_at=db_now())
                .returning(
                    runner_bootstrap_tokens.c.id,
                    runner_bootstrap_tokens.c.name,
                    runner_bootstrap_tokens.c.server_id,
                )
            )
        ).first()
        if claimed is None:
            raise Unauthorized("bootstrap token is missing, invalid, expired or already used")
        runner_name = name or claimed.name or hostname or f"runner-{uuid.uuid4().hex[:8]}"
        runner = await insert_runner(tx, name=runner_name, stale_after=stale_after)
        await tx.execute(
            update(runner_bootstrap_tokens)
            .where(runner_bootstrap_tokens.c.id == claimed.id)
            .values(runner_id=runner["id"])
        )
        if claimed.server_id is not None:
            await tx.execute(
                update(servers)
                .where(servers.c.id == claimed.server_id, servers.c.runner_id.is_(None))
                .values(runner_id=runner["id"], updated_at=db_now())
            )
    return {
        "runnerId": runner["id"],
        "token": runner["token"],
        "serverId": claimed.server_id,
        "name": runner_name,
    }
