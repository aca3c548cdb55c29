"""Runners: registration (the token is shown once) and the list with attachment and liveness."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, case, func, insert, select
from sqlalchemy.exc import IntegrityError

from ikoma.domain import tokens
from ikoma.domain.errors import Conflict
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import runners, servers

RUNNER_TOKEN_KIND = "ikr"  # noqa: S105 - a token prefix, not a secret


def _listing(stale_after: float) -> Any:
    online = case(
        (
            and_(
                runners.c.last_heartbeat_at.is_not(None), runners.c.last_heartbeat_at >= db_now(-stale_after)
            ),
            True,
        ),
        else_=False,
    )
    return (
        select(
            *[c for c in runners.c if c.name != "token_hash"],
            servers.c.id.label("server_id"),
            servers.c.name.label("server_name"),
            online.label("online"),
        )
        .select_from(
            runners.outerjoin(
                servers, and_(servers.c.runner_id == runners.c.id, servers.c.deleted_at.is_(None))
            )
        )
        .order_by(runners.c.created_at, runners.c.id)
    )


async def insert_runner(tx: Tx, *, name: str, stale_after: float) -> dict[str, Any]:
    """Create a runner inside the caller's transaction; the answer carries the token, shown this once."""
    token = tokens.issue(RUNNER_TOKEN_KIND)
    runner_id = str(uuid.uuid4())
    taken = (await tx.execute(select(runners.c.id).where(runners.c.name == name))).first()
    if taken is not None:
        raise Conflict(f"a runner named {name!r} already exists", field="name")
    await tx.execute(
        insert(runners).values(
            id=runner_id, name=name, token_hash=token.hash, token_prefix=token.prefix, capabilities=[]
        )
    )
    row = (await tx.execute(_listing(stale_after).where(runners.c.id == runner_id))).mappings().one()
    return {**row, "token": token.secret}


async def create_runner(db: Database, *, name: str, stale_after: float) -> dict[str, Any]:
    try:
        async with db.write() as tx:
            return await insert_runner(tx, name=name, stale_after=stale_after)
    except IntegrityError:  # a concurrent registration took the name between check and insert
        raise Conflict(f"a runner named {name!r} already exists", field="name") from None


async def list_runners(db: Database, *, stale_after: float) -> list[dict[str, Any]]:
    async with db.read() as tx:
        return [dict(r) for r in (await tx.execute(_listing(stale_after))).mappings()]


async def count_online(db: Database, *, stale_after: float) -> int:
    async with db.read() as tx:
        return int(
            (
                await tx.execute(
                    select(func.count())
                    .select_from(runners)
                    .where(
                        runners.c.revoked_at.is_(None), runners.c.last_heartbeat_at >= db_now(-stale_after)
                    )
                )
            ).scalar_one()
        )
