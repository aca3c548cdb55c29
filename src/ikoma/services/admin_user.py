"""The bootstrap admin: at start, when no user exists, one admin is created so the console can be used.

Its password comes from a file (`IKOMA_DEFAULT_ADMIN_PASSWORD_FILE`, default
`<data dir>/secrets/default_admin_password`). When the file is missing, a random password is written
to it (mode 0600, its directory 0700) and start-up names the FILE, never the password: logs are read
by more people than the admin. Several replicas starting at once create one admin: the unique username
decides, the others find it taken (and remove the password file they wrote, which would be wrong).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import select

from ikoma.domain import passwords
from ikoma.domain.errors import Conflict, Invalid
from ikoma.domain.roles import Role
from ikoma.services import users
from ikoma.settings import Settings
from ikoma.storage.database import Database
from ikoma.storage.tables import users as users_table

log = structlog.get_logger("ikoma.users")

SECRETS_DIR = "secrets"
PASSWORD_FILE = "default_admin_password"  # noqa: S105 - a file name, not a password


class AdminPasswordRefused(Exception):
    """Start-up stops: the password file holds a password the policy refuses."""


@dataclass(frozen=True)
class AdminUserSetup:
    created: bool
    password_file: Path
    announcement: str  # what start-up prints: the file's path, never the password


def password_file(settings: Settings) -> Path:
    return settings.default_admin_password_file or settings.data_dir / SECRETS_DIR / PASSWORD_FILE


def _read_or_write(path: Path) -> tuple[str, bool]:
    """The password in `path`, or a new one written there with mode 0600; (password, written now)."""
    try:
        text = path.read_text(encoding="utf-8")
        return text.strip("\r\n"), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    generated = passwords.generate()
    try:
        # O_EXCL: a replica writing at the same moment keeps its file; we read it instead
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip("\r\n"), False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(generated + "\n")
    return generated, True


async def _is_password_of(db: Database, username: str, password: str) -> bool:
    async with db.read() as tx:
        stored = (
            await tx.execute(select(users_table.c.password_hash).where(users_table.c.username == username))
        ).scalar_one_or_none()
    return await asyncio.to_thread(passwords.verify_password, stored, password)


async def ensure_admin_user(db: Database, settings: Settings) -> AdminUserSetup:
    path = password_file(settings)
    login_hint = f"sign in at http://{settings.host}:{settings.port}/login"
    if await users.count_users(db) > 0:
        return AdminUserSetup(False, path, f"console: {login_hint}")
    password, written = _read_or_write(path)
    username = settings.default_admin_username
    try:
        await users.create_user(
            db,
            username=username,
            email=settings.default_admin_email,
            password=password,
            role=Role.ADMIN,
            first_name="",
            last_name="",
            actor="system",
        )
    except Invalid as refused:  # an operator's file with a weak password: say which file, and why
        raise AdminPasswordRefused(f"the password in {path} is refused: {refused.message}") from None
    except Conflict:
        # another replica created it first; a file we just wrote with another password would mislead
        if written and not await _is_password_of(db, username, password):
            path.unlink(missing_ok=True)
        return AdminUserSetup(False, path, f"console: {login_hint}")
    log.info("admin_user_created", username=username, password_file=str(path))
    origin = "generated, mode 0600" if written else "read from the file"
    return AdminUserSetup(
        True,
        path,
        f"console: {login_hint} as {username!r}; password in {path} ({origin})",
    )
