"""`db_now()`: the database clock, the only clock that decides lease expiry and timeouts.

Runner clocks may be minutes off (RELIABILITY scenario 8), so no timestamp from a client or from this
process is ever compared with a lease: every `now` is rendered as SQL and evaluated by the database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime, Float, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement


class db_now(FunctionElement[Any]):
    """The database's current UTC time, optionally shifted by a number of seconds (an expression)."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_now"

    def __init__(self, offset_seconds: float | ColumnElement[Any] | None = None) -> None:
        if offset_seconds is None:
            super().__init__()
        elif isinstance(offset_seconds, ColumnElement):
            super().__init__(offset_seconds)
        else:
            super().__init__(literal(float(offset_seconds), Float()))


# SQLite keeps DateTime as text 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's format); strftime('%f') has
# milliseconds, so three zeros keep every stored value the same width and text order equal to time order.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now'{shift}) || '000'"


@compiles(db_now, "sqlite")
def _sqlite_now(element: db_now, compiler: Any, **kw: Any) -> str:
    args = list(element.clauses)
    if not args:
        return _SQLITE_NOW.format(shift="")
    offset = compiler.process(args[0], **kw)
    return _SQLITE_NOW.format(shift=f", printf('%+.3f seconds', {offset})")


@compiles(db_now, "postgresql")
def _postgres_now(element: db_now, compiler: Any, **kw: Any) -> str:
    args = list(element.clauses)
    if not args:
        return "now()"
    offset = compiler.process(args[0], **kw)
    return f"(now() + make_interval(secs => CAST({offset} AS double precision)))"
