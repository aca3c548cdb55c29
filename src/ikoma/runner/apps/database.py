"""Per-app PostgreSQL databases on the admin connection `IKOMA_APPS_DATABASE_URL` (asyncpg).

An app `my-app` gets the role and the database `my_app`, both tagged with a comment
`ikoma-app:my-app`: IKOMA never alters or drops a role or database it did not create.

The generated password goes to the app's `.env` and nowhere else: the server only ever sees a
SCRAM-SHA-256 verifier computed here (so not even PostgreSQL's statement log holds it), and it is
added to the order's masker in case anything would print it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from ikoma.runner.apps import envfile, names
from ikoma.runner.apps.errors import (
    DATABASE_CONFLICT,
    DATABASE_NOT_FOUND,
    DATABASE_UNAVAILABLE,
    MIGRATION_CHANGED,
    MIGRATION_FAILED,
    AppError,
)
from ikoma.runner.apps.settings import ENV_APPS_DATABASE_URL, AppsSettings
from ikoma.runner.logs import Masker

CONNECT_TIMEOUT = 10.0
MIGRATIONS_TABLE = "ikoma_schema_migrations"
MIGRATIONS_DIR = "migrations"
SCRAM_ITERATIONS = 4096


@dataclass(frozen=True)
class ConnInfo:
    host: str | None
    port: int
    user: str | None
    password: str | None
    database: str | None

    def pg_args(self, database: str) -> list[str]:
        """libpq connection flags for pg_dump/pg_restore: everything except the password."""
        args = ["--no-password", "--dbname", database]
        if self.host:
            args += ["--host", self.host]
        args += ["--port", str(self.port)]
        if self.user:
            args += ["--username", self.user]
        return args

    def child_env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.password} if self.password else {}


def conn_info(url: str) -> ConnInfo:
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    if parts.scheme not in ("postgresql", "postgres"):
        raise AppError(DATABASE_UNAVAILABLE, f"{ENV_APPS_DATABASE_URL} must be a postgresql:// URL")
    return ConnInfo(
        host=unquote(parts.hostname) if parts.hostname else None,
        port=parts.port or 5432,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        database=parts.path.lstrip("/") or None,
    )


def admin_url(settings: AppsSettings) -> str:
    if not settings.database_url:
        raise AppError(
            DATABASE_UNAVAILABLE,
            f"{ENV_APPS_DATABASE_URL} is not set on this runner: it has no PostgreSQL for apps",
        )
    return settings.database_url


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


async def connect(url: str, database: str | None = None) -> asyncpg.Connection:
    target = _with_database(url, database) if database else url
    try:
        return await asyncpg.connect(target, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        where = f"database {database}" if database else "the admin database"
        # the exception text never contains the URL's password (asyncpg does not echo it)
        raise AppError(
            DATABASE_UNAVAILABLE, f"cannot connect to {where}: {type(exc).__name__}: {exc}"
        ) from None


async def ping(settings: AppsSettings) -> tuple[bool, str]:
    if not settings.database_url:
        return False, f"{ENV_APPS_DATABASE_URL} is not set"
    try:
        conn = await connect(settings.database_url)
    except AppError as exc:
        return False, exc.message
    try:
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return True, f"PostgreSQL {version}"


def _ident(name: str) -> str:
    # names come from names.database_name ([a-z][a-z0-9_]*); quoted anyway, as any identifier should be
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def marker(app: str) -> str:
    return f"ikoma-app:{app}"


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677 format)."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def _owned(conn: asyncpg.Connection, app: str) -> tuple[bool | None, bool | None]:
    """(database is ours, role is ours): None when absent, False when it exists but is not IKOMA's."""
    name = names.database_name(app)
    db_comment = await conn.fetchrow(
        "SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = $1", name
    )
    role_comment = await conn.fetchrow(
        "SELECT shobj_description(oid, 'pg_authid') AS c FROM pg_roles WHERE rolname = $1", name
    )
    db = None if db_comment is None else db_comment["c"] == marker(app)
    role = None if role_comment is None else role_comment["c"] == marker(app)
    return db, role


async def create(app: str, app_dir: Path, settings: AppsSettings, masker: Masker) -> dict[str, Any]:
    url = admin_url(settings)
    info = conn_info(url)
    name = names.database_name(app)
    conn = await connect(url)
    try:
        db_ours, role_ours = await _owned(conn, app)
        if db_ours is False or role_ours is False:
            what = "database" if db_ours is False else "role"
            raise AppError(
                DATABASE_CONFLICT, f"a {what} named {name} exists and was not created by IKOMA for {app}"
            )
        base = {"database": name, "role": name, "host": info.host, "port": info.port}
        if db_ours:
            return {
                **base,
                "created": False,
                "envUpdated": False,
                "message": f"database {name} already exists: nothing changed, no new password",
            }
        password = secrets.token_urlsafe(32)
        masker.add(password)
        # .env first: if the role creation then fails, the next db.create simply writes a new one;
        # the other way round, a crash would leave a role whose password nobody knows.
        envfile.update(
            app_dir / envfile.ENV_FILE,
            {
                "POSTGRES_DB": name,
                "POSTGRES_USER": name,
                "POSTGRES_PASSWORD": password,
                "POSTGRES_HOST": info.host or "localhost",
                "POSTGRES_PORT": str(info.port),
            },
        )
        verifier = _literal(scram_verifier(password))
        try:
            if role_ours:
                await conn.execute(f"ALTER ROLE {_ident(name)} WITH LOGIN PASSWORD {verifier}")
            else:
                await conn.execute(f"CREATE ROLE {_ident(name)} WITH LOGIN PASSWORD {verifier}")
                await conn.execute(f"COMMENT ON ROLE {_ident(name)} IS {_literal(marker(app))}")
            await conn.execute(f"CREATE DATABASE {_ident(name)} OWNER {_ident(name)}")
            await conn.execute(f"COMMENT ON DATABASE {_ident(name)} IS {_literal(marker(app))}")
            # other apps' roles must not even connect to this one
            await conn.execute(f"REVOKE ALL ON DATABASE {_ident(name)} FROM PUBLIC")
        except asyncpg.PostgresError as exc:
            raise AppError(DATABASE_UNAVAILABLE, f"creating {name} failed: {exc}") from None
        return {**base, "created": True, "envUpdated": True, "message": f"database and role {name} created"}
    finally:
        await conn.close()


async def status(app: str, settings: AppsSettings) -> dict[str, Any]:
    url = admin_url(settings)
    name = names.database_name(app)
    conn = await connect(url)
    try:
        db_ours, _ = await _owned(conn, app)
        if db_ours is None:
            return {
                "exists": False,
                "database": name,
                "sizeBytes": None,
                "appliedMigrations": [],
                "connections": 0,
            }
        size = await conn.fetchval("SELECT pg_database_size($1)", name)
        connections = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await conn.close()
    app_conn = await connect(url, name)
    try:
        applied = await _applied(app_conn)
    finally:
        await app_conn.close()
    return {
        "exists": True,
        "database": name,
        "managed": db_ours,
        "sizeBytes": int(size),
        "appliedMigrations": [
            {"name": row["name"], "checksum": row["checksum"], "appliedAt": row["applied_at"].isoformat()}
            for row in applied
        ],
        "connections": int(connections),
    }


async def _applied(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{MIGRATIONS_TABLE}")
    if not exists:
        return []
    query = f"SELECT name, checksum, applied_at FROM public.{MIGRATIONS_TABLE} ORDER BY applied_at, name"  # noqa: S608 - a constant
    return list(await conn.fetch(query))


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def migration_files(app_dir: Path) -> list[tuple[str, str]]:
    directory = app_dir / MIGRATIONS_DIR
    if not directory.is_dir():
        return []
    files = sorted(
        p for p in directory.iterdir() if p.suffix == ".sql" and p.is_file() and not p.is_symlink()
    )
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


async def migrate(app: str, app_dir: Path, settings: AppsSettings, sql: str | None) -> dict[str, Any]:
    """Apply pending migrations, each in its own transaction, as the app's role.

    Refuses the whole run (nothing applied) when an applied migration's content changed. A migration
    whose content was already applied under another name (the runbook sends a file's text as
    `sql`, then the file is found in migrations/) is skipped, not run twice.
    """
    candidates = [(f"inline-{checksum(sql)[:12]}", sql)] if sql is not None else migration_files(app_dir)
    url = admin_url(settings)
    name = names.database_name(app)
    admin = await connect(url)
    try:
        db_ours, _ = await _owned(admin, app)
    finally:
        await admin.close()
    if not db_ours:
        raise AppError(DATABASE_NOT_FOUND, f"app {app} has no database yet: run db.create first")
    conn = await connect(url, name)
    applied_now: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    try:
        # objects belong to the app's role, not to the admin: the app must be able to use them
        await conn.execute(f"SET ROLE {_ident(name)}")
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", MIGRATIONS_TABLE)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS public.{MIGRATIONS_TABLE} ("
            "name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row["name"]: row["checksum"] for row in await _applied(conn)}
        by_checksum = {value: key for key, value in applied.items()}
        changed = [n for n, text in candidates if n in applied and applied[n] != checksum(text)]
        if changed:
            raise AppError(
                MIGRATION_CHANGED,
                f"already applied migrations changed since: {', '.join(changed)}; "
                "add a new migration instead of editing an applied one",
                migrations=changed,
            )
        already = 0
        for migration, text in candidates:
            digest = checksum(text)
            if migration in applied:
                already += 1
                continue
            if digest in by_checksum:
                skipped.append({"name": migration, "sameAs": by_checksum[digest]})
                continue
            try:
                async with conn.transaction():
                    await conn.execute(text)
                    await conn.execute(
                        f"INSERT INTO public.{MIGRATIONS_TABLE} (name, checksum) VALUES ($1, $2)",  # noqa: S608
                        migration,
                        digest,
                    )
            except asyncpg.PostgresError as exc:
                raise AppError(
                    MIGRATION_FAILED,
                    f"migration {migration} failed and was rolled back: {exc}",
                    migration=migration,
                    applied=applied_now,
                ) from None
            applied_now.append({"name": migration, "checksum": digest})
            by_checksum[digest] = migration
    finally:
        await conn.close()
    return {"database": name, "applied": applied_now, "skipped": skipped, "alreadyApplied": already}


async def drop(app: str, settings: AppsSettings) -> dict[str, Any]:
    url = admin_url(settings)
    name = names.database_name(app)
    conn = await connect(url)
    try:
        db_ours, role_ours = await _owned(conn, app)
        if db_ours is False or role_ours is False:
            raise AppError(
                DATABASE_CONFLICT, f"{name} exists but was not created by IKOMA for {app}: not dropped"
            )
        if db_ours:
            await conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
        if role_ours:
            await conn.execute(f"DROP ROLE IF EXISTS {_ident(name)}")
    except asyncpg.PostgresError as exc:
        raise AppError(DATABASE_UNAVAILABLE, f"dropping {name} failed: {exc}") from None
    finally:
        await conn.close()
    return {"database": name, "dropped": bool(db_ours), "roleDropped": bool(role_ours)}


async def exists(app: str, settings: AppsSettings) -> bool:
    if not settings.database_url:
        return False
    conn = await connect(settings.database_url)
    try:
        db_ours, _ = await _owned(conn, app)
    finally:
        await conn.close()
    return db_ours is not None
