"""Database backups: `pg_dump --format=custom` into `<backups dir>/<app>/<name>`, with a sha256 record.

Each backup has a sidecar `<name>.json` (app, database, sha256, bytes, createdAt); a restore
checks the file against it first, so a truncated or altered dump is refused before it touches
the database. The admin password reaches pg_dump/pg_restore through PGPASSWORD in the child's
environment only (argv is readable by every local user in /proc).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ikoma.runner.apps import database, names
from ikoma.runner.apps.errors import (
    BACKUP_EXISTS,
    BACKUP_FAILED,
    BACKUP_NOT_FOUND,
    CHECKSUM_MISMATCH,
    DATABASE_NOT_FOUND,
    RESTORE_FAILED,
    TOOL_MISSING,
    AppError,
)
from ikoma.runner.apps.tool import ToolContext
from ikoma.runner.builtins import _common

DUMP_TIME_LIMIT = 3600.0
RECORD_SUFFIX = ".json"


def app_backups_dir(backups_dir: Path, app: str) -> Path:
    return names.child_path(backups_dir, names.app_name(app))


def default_name(app: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{app}-{now.strftime('%Y%m%dT%H%M%SZ')}.dump"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _program(name: str) -> str:
    path = _common.which(name)
    if path is None:
        raise AppError(TOOL_MISSING, f"{name} is not installed on this machine (package postgresql-client)")
    return path


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


async def backup(tc: ToolContext, app: str, name: str | None) -> dict[str, Any]:
    name = names.backup_name(name) if name is not None else default_name(app)
    if name.endswith(RECORD_SUFFIX):
        raise AppError(
            "invalid_backup_name", f"backupName must not end with {RECORD_SUFFIX} (the record's suffix)"
        )
    url = database.admin_url(tc.settings)
    info = database.conn_info(url)
    if not await database.exists(app, tc.settings):
        raise AppError(DATABASE_NOT_FOUND, f"app {app} has no database to back up")
    directory = app_backups_dir(tc.settings.backups_dir, app)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / name
    record = directory / (name + RECORD_SUFFIX)
    if path.exists() or record.exists():
        raise AppError(BACKUP_EXISTS, f"a backup named {name} already exists for {app}; choose another name")
    partial = directory / f".{name}.partial"
    pg_dump = _program("pg_dump")
    argv = [pg_dump, "--format=custom", "--file", str(partial), *info.pg_args(names.database_name(app))]
    step = await tc.run("pg_dump", argv, env=info.child_env(), time_limit=DUMP_TIME_LIMIT)
    if step.status != "SUCCEEDED":
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise AppError(BACKUP_FAILED, f"pg_dump {step.status.lower()}: {_last_line(step.output)}")
    os.chmod(partial, 0o600)  # a dump holds the app's data
    digest = sha256_file(partial)
    size = partial.stat().st_size
    os.replace(partial, path)
    created = datetime.now(UTC).isoformat()
    meta = {
        "app": app,
        "database": names.database_name(app),
        "backupName": name,
        "format": "custom",
        "sha256": digest,
        "bytes": size,
        "createdAt": created,
    }
    record.write_text(json.dumps(meta, indent=2) + "\n")
    os.chmod(record, 0o600)
    return {"path": str(path), **meta}


async def restore(tc: ToolContext, app: str, name: str) -> dict[str, Any]:
    name = names.backup_name(name)
    directory = app_backups_dir(tc.settings.backups_dir, app)
    path = directory / name
    if not path.is_file() or path.is_symlink():
        raise AppError(BACKUP_NOT_FOUND, f"no backup named {name} for {app} in {directory}")
    try:
        meta = json.loads((directory / (name + RECORD_SUFFIX)).read_text())
    except (OSError, ValueError):
        raise AppError(
            BACKUP_NOT_FOUND, f"{name} has no IKOMA record ({name}{RECORD_SUFFIX}): its checksum is unknown"
        ) from None
    actual = sha256_file(path)
    if actual != meta.get("sha256"):
        raise AppError(
            CHECKSUM_MISMATCH,
            f"{name} does not match its recorded sha256 "
            f"(expected {meta.get('sha256')}, got {actual}): not restored",
            expected=meta.get("sha256"),
            actual=actual,
        )
    url = database.admin_url(tc.settings)
    info = database.conn_info(url)
    if not await database.exists(app, tc.settings):
        raise AppError(DATABASE_NOT_FOUND, f"app {app} has no database: run db.create first")
    pg_restore = _program("pg_restore")
    argv = [
        pg_restore, "--clean", "--if-exists", "--single-transaction", "--exit-on-error",
        *info.pg_args(names.database_name(app)), str(path),
    ]  # fmt: skip
    step = await tc.run("pg_restore", argv, env=info.child_env(), time_limit=DUMP_TIME_LIMIT)
    if step.status != "SUCCEEDED":
        raise AppError(
            RESTORE_FAILED,
            f"pg_restore {step.status.lower()} (its single transaction was rolled back): "
            + _last_line(step.output),
        )
    return {
        "restored": True,
        "backupName": name,
        "path": str(path),
        "sha256": actual,
        "database": names.database_name(app),
        "backupCreatedAt": meta.get("createdAt"),
    }


def list_backups(backups_dir: Path, app: str) -> list[dict[str, Any]]:
    directory = app_backups_dir(backups_dir, app)
    out = []
    for record in sorted(directory.glob(f"*{RECORD_SUFFIX}")):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(record.read_text()))
    return out
