"""Runners: registration (the token is shown once) and the list with attachment and liveness."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, case, func, insert, select
from sqlalchemy.exc import IntegrityError

from ikoma.domain import tokens
from ikoma.domain.errors import Conflict
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
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


async def create_runner(db: Database, *, name: str, stale_after: float) -> dict[str, Any]:
    token = tokens.issue(RUNNER_TOKEN_KIND)
    runner_id = str(uuid.uuid4())
    try:
        async with db.write() as tx:
            await tx.execute(
                insert(runners).values(
                    id=runner_id, name=name, token_hash=token.hash, token_prefix=token.prefix, capabilities=[]
                )
            )
            row = (await tx.execute(_listing(stale_after).where(runners.c.id == runner_id))).mappings().one()
    except IntegrityError:
        raise Conflict(f"a runner named {name!r} already exists", field="name") from None
    return {**row, "token": token.secret}


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
