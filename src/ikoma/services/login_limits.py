"""The sign-in rate limiter: failed attempts per account and per client address, in the database.

The state is a table of failures (`login_failures`) so that every replica counts the same ones. An
account or an address with too many failures inside the window is refused (429 `too_many_attempts`,
with the seconds until its oldest failure leaves the window) before any password is checked. The
account is the name tried (lower-cased), whether or not such a user exists: the limiter must not tell.
A successful sign-in clears its account's failures, not its address's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select

from ikoma.domain.errors import DomainError
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import login_failures


class TooManyAttempts(DomainError):
    status_code = 429
    reason = "too_many_attempts"


@dataclass(frozen=True)
class Limits:
    per_account: int
    per_address: int
    window_s: float


def _as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


async def check(db: Database, limits: Limits, *, account: str, address: str) -> None:
    """429 `too_many_attempts` (with `retryAfter` seconds) when either limit is reached."""
    since = db_now(-limits.window_s)
    async with db.read() as tx:
        row = (
            await tx.execute(
                select(
                    db_now().label("now"),
                    select(func.count())
                    .where(login_failures.c.account == account[:254], login_failures.c.at > since)
                    .scalar_subquery()
                    .label("by_account"),
                    select(func.count())
                    .where(login_failures.c.address == address[:64], login_failures.c.at > since)
                    .scalar_subquery()
                    .label("by_address"),
                )
            )
        ).one()
        if row.by_account < limits.per_account and row.by_address < limits.per_address:
            return
        # the oldest failure that keeps the limit reached: when it leaves the window, one more try
        column, key, limit = (
            (login_failures.c.account, account[:254], limits.per_account)
            if row.by_account >= limits.per_account
            else (login_failures.c.address, address[:64], limits.per_address)
        )
        oldest = (
            await tx.execute(
                select(login_failures.c.at)
                .where(column == key, login_failures.c.at > since)
                .order_by(login_failures.c.at.desc())
                .offset(limit - 1)
                .limit(1)
            )
        ).scalar_one_or_none()
    now = _as_datetime(row.now)
    retry = limits.window_s
    if oldest is not None:
        retry = limits.window_s - (now - _as_datetime(oldest)).total_seconds()
    raise TooManyAttempts(
        "too many failed sign-ins; wait before trying again",
        retryAfter=max(1, math.ceil(retry)),
    )


async def record_failure(db: Database, limits: Limits, *, account: str, address: str) -> None:
    """Count one failure; failures older than the window are deleted on the way (the table stays small)."""
    async with db.write() as tx:
        await tx.execute(delete(login_failures).where(login_failures.c.at < db_now(-limits.window_s)))
        await tx.execute(insert(login_failures).values(account=account[:254], address=address[:64]))


async def clear_account(db: Database, *, account: str) -> None:
    async with db.write() as tx:
        await tx.execute(delete(login_failures).where(login_failures.c.account == account[:254]))
