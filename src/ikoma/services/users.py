"""User accounts of the console: create, list, show, update, delete, with the last-admin guard.

Usernames and emails are stored lower-cased (unique whatever the case a user types). Answers never
carry the password hash nor the TOTP secret (`PUBLIC_COLUMNS` lists what may leave). Disabling a user, or an
admin setting their password, ends their sessions at once; deleting a user deletes them. The last
enabled admin can be neither disabled, demoted nor deleted (409 `last_admin`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ikoma.domain import passwords
from ikoma.domain.errors import Conflict, Invalid, NotFound
from ikoma.domain.roles import Role
from ikoma.services import events, sessions
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import users

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
NAME_MAX = 100

PUBLIC_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.email,
    users.c.first_name,
    users.c.last_name,
    users.c.role,
    users.c.disabled,
    users.c.totp_enabled,
    users.c.created_at,
    users.c.updated_at,
    users.c.password_changed_at,
)


def normalize_username(value: str) -> str:
    name = value.strip().lower()
    if not USERNAME.match(name):
        raise Invalid(
            "a username is 2 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
            reason="invalid_username",
            field="username",
        )
    return name


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > 254 or not EMAIL.match(email):
        raise Invalid("not an email address", reason="invalid_email", field="email")
    return email


def _name(value: str | None, field: str) -> str:
    text = (value or "").strip()
    if len(text) > NAME_MAX or "\x00" in text:
        raise Invalid(f"{field} has at most {NAME_MAX} characters", reason="invalid_name", field=field)
    return text


def _not_found(user_id: str) -> NotFound:
    return NotFound("no user with this id", reason="user_not_found", id=user_id)


async def _taken(tx: Tx, *, username: str | None, email: str | None, other_than: str | None) -> None:
    for column, value, reason in (
        (users.c.username, username, "username_taken"),
        (users.c.email, email, "email_taken"),
    ):
        if value is None:
            continue
        query = select(users.c.id).where(column == value)
        if other_than is not None:
            query = query.where(users.c.id != other_than)
        if (await tx.execute(query)).first() is not None:
            field = "username" if reason == "username_taken" else "email"
            raise Conflict(f"this {field} is already used by another user", reason=reason, field=field)


def _conflict(exc: IntegrityError) -> Conflict:
    """Two creations racing past the check: the unique index decides, named as the check would."""
    text = str(exc.orig).lower()
    if "email" in text:
        return Conflict("this email is already used by another user", reason="email_taken", field="email")
    return Conflict(
        "this username is already used by another user", reason="username_taken", field="username"
    )


async def create_user(
    db: Database,
    *,
    username: str,
    email: str,
    password: str,
    role: Role,
    first_name: str = "",
    last_name: str = "",
    actor: str | None,
) -> dict[str, Any]:
    name = normalize_username(username)
    mail = normalize_email(email)
    passwords.check_policy(password, username=name, email=mail)
    hashed = await asyncio.to_thread(passwords.hash_password, password)
    user_id = str(uuid.uuid4())
    try:
        async with db.write() as tx:
            await _taken(tx, username=name, email=mail, other_than=None)
            await tx.execute(
                insert(users).values(
                    id=user_id,
                    username=name,
                    email=mail,
                    first_name=_name(first_name, "firstName"),
                    last_name=_name(last_name, "lastName"),
                    role=role.label,
                    disabled=False,
                    password_hash=hashed,
                    totp_enabled=False,
                )
            )
            row = (await tx.execute(select(*PUBLIC_COLUMNS).where(users.c.id == user_id))).mappings().one()
            events.publish(
                tx,
                "user.created",
                actor=actor,
                data={"userId": user_id, "username": name, "role": role.label},
            )
    except IntegrityError as exc:
        raise _conflict(exc) from None
    return dict(row)


async def list_users(db: Database) -> list[dict[str, Any]]:
    async with db.read() as tx:
        rows = (await tx.execute(select(*PUBLIC_COLUMNS).order_by(users.c.username))).mappings().all()
    return [dict(r) for r in rows]


async def get_user(db: Database, user_id: str) -> dict[str, Any]:
    async with db.read() as tx:
        row = (await tx.execute(select(*PUBLIC_COLUMNS).where(users.c.id == user_id))).mappings().first()
    if row is None:
        raise _not_found(user_id)
    return dict(row)


async def find_user(db: Database, ref: str) -> dict[str, Any]:
    """A user by id, username or email (the CLI's way to name one)."""
    key = ref.strip().lower()
    match = (users.c.username == key) | (users.c.email == key)
    with contextlib.suppress(ValueError):  # not an id: a username or email only
        match = match | (users.c.id == str(uuid.UUID(key)))
    async with db.read() as tx:
        query = select(*PUBLIC_COLUMNS).where(match)
        row = (await tx.execute(query)).mappings().first()
    if row is None:
        raise NotFound("no user with this id, username or email", reason="user_not_found", user=ref)
    return dict(row)


async def count_users(db: Database) -> int:
    async with db.read() as tx:
        return int((await tx.execute(select(func.count()).select_from(users))).scalar_one())


async def _guard_last_admin(tx: Tx, user_id: str) -> None:
    """409 `last_admin` when `user_id` is the only enabled admin (rows locked on PostgreSQL)."""
    admins = (
        (
            await tx.execute(
                select(users.c.id)
                .where(users.c.role == Role.ADMIN.label, users.c.disabled.is_(False))
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    if [str(a) for a in admins] == [user_id]:
        raise Conflict(
            "this is the last enabled admin: make another user admin first", reason="last_admin", id=user_id
        )


async def update_user(
    db: Database, user_id: str, changes: dict[str, Any], *, actor: str | None
) -> dict[str, Any]:
    """Admin's update: email, names, role, disabled, password (a reset). Absent keys stay as they are."""
    values: dict[str, Any] = {}
    if "email" in changes:
        values["email"] = normalize_email(changes["email"])
    for key, column in (("first_name", "first_name"), ("last_name", "last_name")):
        if key in changes:
            values[column] = _name(changes[key], key)
    if "role" in changes:
        values["role"] = Role.parse(changes["role"]).label
    if "disabled" in changes:
        values["disabled"] = bool(changes["disabled"])
    new_password = changes.get("password")
    if new_password is not None:
        # hashed before the write transaction: it takes ~100 ms, and SQLite has one writer at a time
        known = await get_user(db, user_id)
        passwords.check_policy(
            new_password, username=known["username"], email=values.get("email", known["email"])
        )
        values["password_hash"] = await asyncio.to_thread(passwords.hash_password, new_password)
        values["password_changed_at"] = db_now()
    try:
        async with db.write() as tx:
            current = (
                (await tx.execute(select(*PUBLIC_COLUMNS).where(users.c.id == user_id))).mappings().first()
            )
            if current is None:
                raise _not_found(user_id)
            demoted = values.get("role", current["role"]) != Role.ADMIN.label
            disabling = values.get("disabled", current["disabled"])
            if current["role"] == Role.ADMIN.label and not current["disabled"] and (demoted or disabling):
                await _guard_last_admin(tx, user_id)
            await _taken(tx, username=None, email=values.get("email"), other_than=user_id)
            if values:
                values["updated_at"] = db_now()
                await tx.execute(update(users).where(users.c.id == user_id).values(**values))
            if disabling and not current["disabled"]:
                await sessions.end_all_for_user(tx, user_id, reason="user_disabled")
            if new_password is not None:
                await sessions.end_all_for_user(tx, user_id, reason="password_reset")
            row = (await tx.execute(select(*PUBLIC_COLUMNS).where(users.c.id == user_id))).mappings().one()
            _publish_update(
                tx, dict(current), dict(row), actor=actor, password_reset=new_password is not None
            )
    except IntegrityError as exc:
        raise _conflict(exc) from None
    return dict(row)


def _publish_update(
    tx: Tx, before: dict[str, Any], after: dict[str, Any], *, actor: str | None, password_reset: bool
) -> None:
    changed = sorted(
        key for key in ("email", "first_name", "last_name", "role", "disabled") if before[key] != after[key]
    )
    if password_reset:
        changed.append("password")
    if not changed:
        return
    data = {
        "userId": str(after["id"]),
        "username": after["username"],
        "role": after["role"],
        "changed": changed,
    }
    kind = "user.disabled" if after["disabled"] and not before["disabled"] else "user.updated"
    events.publish(tx, kind, actor=actor, data=data)


async def delete_user(db: Database, user_id: str, *, actor: str | None) -> None:
    """Delete a user and (by cascade) their sessions; their audit entries stay, naming `user:<id>`."""
    async with db.write() as tx:
        current = (await tx.execute(select(*PUBLIC_COLUMNS).where(users.c.id == user_id))).mappings().first()
        if current is None:
            raise _not_found(user_id)
        if current["role"] == Role.ADMIN.label and not current["disabled"]:
            await _guard_last_admin(tx, user_id)
        await tx.execute(delete(users).where(users.c.id == user_id))
        events.publish(
            tx, "user.deleted", actor=actor, data={"userId": user_id, "username": current["username"]}
        )


async def update_profile(db: Database, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """A user's own profile: names and email only (the role and the rest are the admin's)."""
    allowed = {k: v for k, v in changes.items() if k in ("email", "first_name", "last_name")}
    return await update_user(db, user_id, allowed, actor=f"user:{user_id}")
