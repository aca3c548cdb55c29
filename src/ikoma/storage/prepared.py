"""Prepared statements: the hot path's Core statements run on the driver, past SQLAlchemy's execute path.

SQLAlchemy's per-execute machinery (cache key, execution context, parameter and result set-up) cost
several times the SQLite statement itself on the runner calls (docs/performance.md, issue 11). A
`Prepared` keeps the statement written once in Core, compiles it once per dialect and parameter-key set,
and then runs it on the `sqlite3` cursor: bind values converted by the same type processors SQLAlchemy
would use, result values likewise, rows handed back as a SQLAlchemy `Result` so callers cannot tell.
Driver errors are wrapped as SQLAlchemy would wrap them (`DBAPIError.instance`), so outage handling
(api/errors.py) sees the same exceptions.

Only what the plan can do exactly is taken: a statement needing Python-side column defaults or an
executemany with RETURNING goes through SQLAlchemy as before. On PostgreSQL a `Prepared` runs on the
asyncpg connection under SQLAlchemy's adapter, in the adapter's transaction (asyncpg caches the prepared
statement per connection), skipping the adapter's greenlet hop and execution context per statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Dialect, IteratorResult, Result
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.sql import Executable

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
_MISSING = object()


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    # per positional parameter: the caller's key (None: a value fixed in the statement), the fixed
    # value (already converted), and the bind processor to apply to the caller's value
    sources: tuple[tuple[str | None, Any, Callable[[Any], Any] | None], ...]
    metadata: SimpleResultMetaData  # the result columns' keys, shared by every result of the plan
    # (index, processor) of the result columns whose driver value SQLAlchemy would convert
    result_processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    returns_rows: bool
    result_types: tuple[Any, ...]  # PostgreSQL: converters depend on the column's OID too (see _typed)


class Prepared:
    """One Core statement, compiled once per (dialect, parameter keys) and run on the driver."""

    __slots__ = ("_plans", "_typed", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._plans: dict[tuple[type[Dialect], tuple[str, ...], bool], _Plan | None] = {}
        self._typed: dict[int, tuple[tuple[int, Callable[[Any], Any]], ...]] = {}

    def plan(self, dialect: Dialect, keys: tuple[str, ...], many: bool) -> _Plan | None:
        """The compiled plan, or None when this statement must go through SQLAlchemy's own path."""
        # per dialect class: every engine of a process is built alike (database.py, same JSON functions)
        cache_key = (type(dialect), keys, many)
        try:
            return self._plans[cache_key]
        except KeyError:
            plan = self._plans[cache_key] = _compile(self.statement, dialect, keys, many)
            return plan

    def run_sqlite(self, dbapi: sqlite3.Connection, dialect: Dialect, params: Params) -> Result[Any] | None:
        """Execute on the sqlite3 connection; None when the statement needs SQLAlchemy's path."""
        many = isinstance(params, list | tuple)
        if many:
            rows: Sequence[Mapping[str, Any]] = params  # type: ignore[assignment]
            if not rows:
                return None
            first = rows[0]
        else:
            first = params or {}  # type: ignore[assignment]
        plan = self.plan(dialect, tuple(sorted(first)), many and len(rows) > 1)
        if plan is None:
            return None
        try:
            cursor = dbapi.cursor()
            try:
                if many and len(rows) > 1:
                    cursor.executemany(plan.sql, [_bind(plan, one) for one in rows])
                    return _empty(plan)
                cursor.execute(plan.sql, _bind(plan, first))
                fetched = cursor.fetchall() if plan.returns_rows else []
            finally:
                cursor.close()
        except sqlite3.Error as error:
            raise exc.DBAPIError.instance(plan.sql, None, error, sqlite3.Error, dialect=dialect) from error
        if plan.result_processors and fetched:
            fetched = [_convert(plan.result_processors, row) for row in fetched]
        return IteratorResult(plan.metadata, iter(fetched))

    async def run_asyncpg(self, adapter: Any, dialect: Dialect, params: Params) -> Result[Any] | None:
        """Execute on the asyncpg connection under SQLAlchemy's adapter `adapter`, in its transaction
        (begun here when this is the transaction's first statement, as the adapter itself would)."""
        many = isinstance(params, list | tuple)
        rows: Sequence[Mapping[str, Any]] = params if many else [params or {}]  # type: ignore[list-item,assignment]
        if not rows:
            return None
        plan = self.plan(dialect, tuple(sorted(rows[0])), len(rows) > 1)
        if plan is None:
            return None
        async with adapter._execute_mutex:
            if adapter._transaction is None:
                await adapter._start_transaction()
            try:
                if len(rows) > 1:
                    await adapter._connection.executemany(plan.sql, [_bind(plan, one) for one in rows])
                    return _empty(plan)
                processors = self._typed.get(id(plan))
                if processors is None and plan.returns_rows:
                    processors = await self._type(adapter._connection, dialect, plan)
                records = await adapter._connection.fetch(plan.sql, *_bind(plan, rows[0]))
            except Exception as error:
                raise _translated(adapter, dialect, plan, error) from error
        fetched = [_convert(processors, record) for record in records] if processors else records
        return IteratorResult(plan.metadata, iter(fetched))

    async def _type(self, connection: Any, dialect: Dialect, plan: _Plan) -> Any:
        """The result converters, given the columns' OIDs as the server describes them (once per plan)."""
        described = (await connection.prepare(plan.sql)).get_attributes()
        processors = tuple(
            (index, process)
            for index, (type_, attribute) in enumerate(zip(plan.result_types, described, strict=True))
            if (process := type_._cached_result_processor(dialect, attribute.type.oid)) is not None
        )
        self._typed[id(plan)] = processors
        return processors


def _translated(adapter: Any, dialect: Dialect, plan: _Plan, error: Exception) -> Exception:
    """The error as SQLAlchemy raises it: asyncpg's, translated by the adapter, wrapped as a DBAPIError."""
    try:
        adapter._handle_exception(error)  # raises the DBAPI-style error (and notes a closed connection)
    except Exception as dbapi_error:
        base = dialect.loaded_dbapi.Error
        return exc.DBAPIError.instance(plan.sql, None, dbapi_error, base, dialect=dialect)
    return error


def _convert(processors: tuple[tuple[int, Callable[[Any], Any]], ...], row: Sequence[Any]) -> list[Any]:
    values = list(row)
    for index, process in processors:
        value = values[index]
        if value is not None:
            values[index] = process(value)
    return values


def _bind(plan: _Plan, params: Mapping[str, Any]) -> list[Any]:
    values = []
    for key, fixed, process in plan.sources:
        if key is None:
            values.append(fixed)
            continue
        value = params.get(key, _MISSING)
        if value is _MISSING:
            raise exc.InvalidRequestError(f"A value is required for bind parameter {key!r}")
        values.append(value if process is None else process(value))
    return values


def _empty(plan: _Plan) -> Result[Any]:
    return IteratorResult(plan.metadata, iter(()))


def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...], many: bool) -> _Plan | None:
    compiled: Any = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=list(keys), for_executemany=many
    )
    if compiled.insert_prefetch or compiled.update_prefetch or compiled.literal_execute_params:
        return None  # Python-side defaults or literal rendering: SQLAlchemy's execution context does it
    if many and compiled.effective_returning:
        return None
    # every bind: which caller key feeds it; a bind no caller key names is fixed in the statement
    names = {name: bind for bind, name in compiled.bind_names.items()}
    given = set(keys)
    constant = compiled.construct_params(dict.fromkeys(keys), escape_names=False, _check=False)
    processors = dict(compiled._bind_processors)
    sql, positions = compiled.string, list(compiled.positiontup or ())
    if compiled.post_compile_params:
        if any(bind.key in given for bind in compiled.post_compile_params):
            return None  # an IN list the caller passes: its expansion changes per call
        expanded = compiled._process_parameters_for_postcompile(constant)
        sql, positions = expanded.statement, list(expanded.positiontup)
        processors.update(expanded.processors)
        constant = expanded.parameters
    sources: list[tuple[str | None, Any, Callable[[Any], Any] | None]] = []
    for name in positions:
        bind = names.get(name)
        process = processors.get(name)
        if bind is not None and (bind.key in given or name in given):
            sources.append((bind.key if bind.key in given else name, None, process))
        elif bind is not None and bind.required:
            sources.append((bind.key, None, process))  # missing: refused at run time, as SQLAlchemy does
        else:
            value = constant[name]
            sources.append((None, value if process is None else process(value), None))
    columns = compiled._result_columns
    metadata = SimpleResultMetaData([column[0] for column in columns])
    types = tuple(column[3] for column in columns)
    result_processors: tuple[tuple[int, Callable[[Any], Any]], ...] = ()
    if dialect.name == "sqlite":  # PostgreSQL's converters are chosen once the server described the columns
        result_processors = tuple(
            (index, process)
            for index, type_ in enumerate(types)
            if (process := type_._cached_result_processor(dialect, None)) is not None
        )
    return _Plan(sql, tuple(sources), metadata, result_processors, bool(columns), types)
