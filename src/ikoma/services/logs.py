"""Order logs: chunks streamed by the runner, stored once per sequence number, capped per order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from ikoma.domain.errors import NotFound
from ikoma.domain.lifecycle import TERMINAL, OrderStatus
from ikoma.services.wakeups import Wakeups
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import order_logs, orders

TRUNCATION_MARKER = "[log truncated: limit of {limit} bytes reached]"
MAX_WAIT_SECONDS = 30.0
LOG_WAIT_POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: int
    stream: str
    data: str


def _log_key(order_id: str) -> str:
    return f"logs:{order_id}"


async def append_chunks(
    tx: Tx, wakeups: Wakeups, *, order_id: str, chunks: list[Chunk], limit_bytes: int
) -> dict[str, Any]:
    """Store new chunks (a seq already stored is a retry and is ignored) within the order's byte cap.

    The caller has already checked that the order is the runner's and active (see dispatch.guard_logs).
    """
    row = (
        await tx.execute(select(orders.c.log_bytes, orders.c.log_truncated).where(orders.c.id == order_id))
    ).one()
    stored_bytes, truncated = int(row.log_bytes), bool(row.log_truncated)
    wanted = sorted({c.seq: c for c in chunks}.values(), key=lambda c: c.seq)
    known = set(
        (
            await tx.execute(
                select(order_logs.c.seq).where(
                    order_logs.c.order_id == order_id, order_logs.c.seq.in_([c.seq for c in wanted])
                )
            )
        ).scalars()
    )
    rows: list[dict[str, Any]] = []
    for chunk in wanted:
        if chunk.seq in known or truncated:
            continue
        size = len(chunk.data.encode())
        if stored_bytes + size > limit_bytes:
            # one marker where the first chunk that does not fit would have been; the rest is dropped
            rows.append(
                {
                    "order_id": order_id,
                    "seq": chunk.seq,
                    "stream": "system",
                    "data": TRUNCATION_MARKER.format(limit=limit_bytes),
                }
            )
            truncated = True
            continue
        stored_bytes += size
        rows.append({"order_id": order_id, "seq": chunk.seq, "stream": chunk.stream, "data": chunk.data})
    if rows:
        await tx.execute(insert(order_logs), rows)
        await tx.execute(
            update(orders)
            .where(orders.c.id == bindparam("p_id"))
            .values(log_bytes=bindparam("p_bytes"), log_truncated=bindparam("p_truncated")),
            {"p_id": order_id, "p_bytes": stored_bytes, "p_truncated": truncated},
        )
        tx.after_commit(lambda: wakeups.notify(_log_key(order_id)))
    duplicates = sum(1 for c in wanted if c.seq in known) + (len(chunks) - len(wanted))
    return {
        "accepted": len(rows),
        "duplicates": duplicates,
        "truncated": truncated,
        "storedBytes": stored_bytes,
    }


async def _read(
    db: Database, order_id: str, after_seq: int, limit: int
) -> tuple[list[dict[str, Any]], bool, bool]:
    async with db.read() as tx:
        order = (
            await tx.execute(select(orders.c.status, orders.c.log_truncated).where(orders.c.id == order_id))
        ).first()
        if order is None:
            raise NotFound("no order with this id", reason="order_not_found", orderId=order_id)
        items = [
            dict(r)
            for r in (
                await tx.execute(
                    select(order_logs.c.seq, order_logs.c.stream, order_logs.c.data, order_logs.c.at)
                    .where(order_logs.c.order_id == order_id, order_logs.c.seq > after_seq)
                    .order_by(order_logs.c.seq)
                    .limit(limit + 1)
                )
            ).mappings()
        ]
    ended = OrderStatus(order.status) in TERMINAL
    return items, ended, bool(order.log_truncated)


def _contiguous(items: list[dict[str, Any]], after_seq: int) -> list[dict[str, Any]]:
    """The chunks that follow `after_seq` without a gap.

    While the order runs, a missing seq is a chunk still in flight (a retry, a reordered request): a
    reader that skipped past it would never see it. Once the order has ended, gaps are final.
    """
    expected = after_seq + 1
    run: list[dict[str, Any]] = []
    for item in items:
        if item["seq"] != expected:
            break
        run.append(item)
        expected += 1
    return run


async def read_logs(
    db: Database, wakeups: Wakeups, *, order_id: str, after_seq: int, limit: int, wait: float
) -> dict[str, Any]:
    """Chunks after `after_seq`, in order; waits up to `wait` seconds for new ones while the order runs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, min(wait, MAX_WAIT_SECONDS))
    with wakeups.listen(_log_key(order_id)) as waiter:
        while True:
            waiter.clear()
            items, ended, truncated = await _read(db, order_id, after_seq, limit)
            if not ended:
                items = _contiguous(items, after_seq)
            remaining = deadline - loop.time()
            if items or ended or remaining <= 0:
                break
            try:
                await asyncio.wait_for(waiter.wait(), timeout=min(remaining, LOG_WAIT_POLL_SECONDS))
            except TimeoutError:
                continue
    more = len(items) > limit
    items = items[:limit]
    next_seq = items[-1]["seq"] + 1 if items else after_seq + 1
    return {"items": items, "nextSeq": next_seq, "done": ended and not more, "truncated": truncated}
