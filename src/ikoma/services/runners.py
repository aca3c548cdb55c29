"""Runners: registration (the token is shown once), the list, and their lifecycle.

A runner is found by its id or its name. Revoking one refuses its token at once (every runner call that
acts and every claim reads `revoked_at` in its own transaction; the idle long-polls' token cache of
every API process is told in the revocation's transaction, services/runner_credentials.py) and hands
the orders it holds back to the queue, or ends them as the order lifecycle says, through the
reconciler's own paths.
Rotating replaces the token (shown once); deleting is for runners that never touched an order.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ikoma.domain import tokens
from ikoma.domain.errors import Conflict, NotFound
from ikoma.domain.ids import is_uuid
from ikoma.services import events, timeline
from ikoma.services.broadcast import CREDENTIALS, Broadcast
from ikoma.services.reconciler import Reconciler, TickSummary
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import order_attempts, orders, runners, servers

RUNNER_TOKEN_KIND = "ikr"  # noqa: S105 - a token prefix, not a secret


def _listing(stale_after: float) -> Any:
    online = case(
        (
            and_(
                runners.c.revoked_at.is_(None),
                runners.c.last_heartbeat_at.is_not(None),
                runners.c.last_heartbeat_at >= db_now(-stale_after),
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


def _public(row: Any) -> dict[str, Any]:
    """A runner as read; a value no write should leave (capabilities not a list) reads as empty."""
    runner = dict(row)
    if not isinstance(runner.get("capabilities"), list):
        runner["capabilities"] = []
    return runner


async def _find(tx: Tx, ref: str, stale_after: float) -> dict[str, Any]:
    """The runner whose id, else whose name, is `ref`; 404 runner_not_found."""
    listing = _listing(stale_after)
    row = None
    if is_uuid(ref):
        row = (await tx.execute(listing.where(runners.c.id == ref))).mappings().first()
    if row is None:
        row = (await tx.execute(listing.where(runners.c.name == ref))).mappings().first()
    if row is None:
        raise NotFound("no runner with this id or name", reason="runner_not_found", runner=ref[:200])
    return _public(row)


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
    events.publish(tx, "runner.registered", runner_id=runner_id, data={"name": name})
    return {**_public(row), "token": token.secret}


async def create_runner(db: Database, *, name: str, stale_after: float) -> dict[str, Any]:
    try:
        async with db.write() as tx:
            return await insert_runner(tx, name=name, stale_after=stale_after)
    except IntegrityError:  # a concurrent registration took the name between check and insert
        raise Conflict(f"a runner named {name!r} already exists", field="name") from None


async def list_runners(db: Database, *, stale_after: float) -> list[dict[str, Any]]:
    async with db.read() as tx:
        return [_public(r) for r in (await tx.execute(_listing(stale_after))).mappings()]


async def get_runner(db: Database, ref: str, *, stale_after: float) -> dict[str, Any]:
    async with db.read() as tx:
        return await _find(tx, ref, stale_after)


async def revoke_runner(
    db: Database,
    reconciler: Reconciler,
    ref: str,
    *,
    actor: str,
    stale_after: float,
    broadcast: Broadcast | None = None,
) -> dict[str, Any]:
    """Refuse the runner's token from now on and release the orders it holds.

    Its CLAIMED orders go back to the queue (a new attempt); its RUNNING ones end STALE (CANCELLED if a
    cancel was asked) and are requeued while attempts remain. Revoking again changes nothing.
    """
    async with db.write() as tx:
        runner = await _find(tx, ref, stale_after)
        runner_id = str(runner["id"])
        # the row lock taken here orders this revocation against in-flight claims (see dispatch)
        newly = (
            await tx.execute(
                update(runners)
                .where(runners.c.id == runner_id, runners.c.revoked_at.is_(None))
                .values(revoked_at=db_now(), revoked_by=actor)
                .returning(runners.c.id)
            )
        ).first()
        released = await reconciler.release_runner(tx, runner_id, actor=actor)
        await _forget_credentials(tx, broadcast, runner_id)
        if newly is not None:
            await _on_timeline(tx, runner, "revoked", actor, severity="warning", **_released(released))
        runner = await _find(tx, runner_id, stale_after)
    await reconciler.publish(released)
    return {**runner, **_released(released)}


def _released(summary: TickSummary) -> dict[str, list[str]]:
    requeued = summary.requeued + summary.retried
    ended = [o for o in summary.stale + summary.cancelled if o not in summary.retried]
    return {"requeued_order_ids": [str(o) for o in requeued], "ended_order_ids": [str(o) for o in ended]}


async def rotate_token(
    db: Database, ref: str, *, actor: str, stale_after: float, broadcast: Broadcast | None = None
) -> dict[str, Any]:
    """A new token, shown this once; the old one is refused from the commit on. 409 if revoked."""
    token = tokens.issue(RUNNER_TOKEN_KIND)
    async with db.write() as tx:
        runner = await _find(tx, ref, stale_after)
        runner_id = str(runner["id"])
        rotated = (
            await tx.execute(
                update(runners)
                .where(runners.c.id == runner_id, runners.c.revoked_at.is_(None))
                .values(token_hash=token.hash, token_prefix=token.prefix, token_rotated_at=db_now())
                .returning(runners.c.id)
            )
        ).first()
        if rotated is None:
            raise Conflict(
                "this runner is revoked: register a new runner instead",
                reason="runner_revoked",
                runnerId=runner_id,
            )
        await _on_timeline(tx, runner, "token_rotated", actor)
        await _forget_credentials(tx, broadcast, runner_id)
        runner = await _find(tx, runner_id, stale_after)
    return {**runner, "token": token.secret}


async def _on_timeline(
    tx: Tx, runner: dict[str, Any], what: str, actor: str, *, severity: str = "info", **details: Any
) -> None:
    """`runner.<what>` in the event log, and on the timeline of the server the runner serves (if any)."""
    events.publish(
        tx,
        f"runner.{what}",
        server_id=None if runner["server_id"] is None else str(runner["server_id"]),
        runner_id=str(runner["id"]),
        actor=actor,
        data={"name": runner["name"], **{events.camel(k): v for k, v in details.items()}},
    )
    if runner["server_id"] is None:
        return
    await timeline.add_event(
        tx,
        server_id=str(runner["server_id"]),
        type=f"runner.{what}",
        severity=severity,
        message=f"runner {runner['name']} {what.replace('_', ' ')}",
        actor=actor,
        details={"runnerId": str(runner["id"]), **details},
    )


async def delete_runner(
    db: Database, ref: str, *, actor: str, stale_after: float, broadcast: Broadcast | None = None
) -> None:
    """Delete a runner no order ever referred to; 409 runner_in_use otherwise (revoke it instead)."""
    async with db.write() as tx:
        runner = await _find(tx, ref, stale_after)
        runner_id = str(runner["id"])
        claimed = (
            await tx.execute(select(func.count()).where(order_attempts.c.runner_id == runner_id))
        ).scalar_one()
        addressed = (
            await tx.execute(select(func.count()).where(orders.c.runner_id == runner_id))
        ).scalar_one()
        if claimed or addressed:
            raise Conflict(
                f"runner {runner['name']} has claimed or been sent orders, and their history refers to"
                " it: revoke it instead",
                reason="runner_in_use",
                runnerId=runner_id,
                attempts=int(claimed),
                orders=int(addressed),
            )
        await _on_timeline(tx, runner, "deleted", actor)
        # the server it served is detached by the foreign key (ON DELETE SET NULL)
        await tx.execute(delete(runners).where(runners.c.id == runner_id))
        await _forget_credentials(tx, broadcast, runner_id)


async def _forget_credentials(tx: Tx, broadcast: Broadcast | None, runner_id: str) -> None:
    """Every API process drops its cached verification of this runner's token when `tx` commits."""
    if broadcast is not None:
        await broadcast.notify(tx, CREDENTIALS, runner_id)


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
