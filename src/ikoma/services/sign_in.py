"""Signing in and out, changing one's password, and the optional TOTP second factor.

Sign-in: the rate limiter first (services/login_limits.py), then the password is verified against the
user's argon2id hash, or against a dummy hash when no such user exists, so the answer's timing does not
tell whether an account exists. A wrong password (or TOTP code) counts as one failure for the account
tried and for the client address. A right password is rehashed when the hashing parameters changed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pyotp
from sqlalchemy import or_, select, update

from ikoma.domain import passwords
from ikoma.domain.errors import Conflict, Forbidden, Invalid, Unauthorized
from ikoma.services import login_limits, sessions
from ikoma.services.login_limits import Limits
from ikoma.services.users import PUBLIC_COLUMNS, get_user
from ikoma.services.vault import Vault
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import users

TOTP_ISSUER = "IKOMA"


@dataclass(frozen=True)
class SignedIn:
    user: dict[str, Any]
    session: sessions.IssuedSession


def invalid_credentials() -> Unauthorized:
    return Unauthorized("wrong username, email or password", reason="invalid_credentials")


def _totp_context(user_id: str) -> str:
    return f"users:{user_id}:totp_secret"


async def sign_in(
    db: Database,
    vault: Vault,
    *,
    login: str,
    password: str,
    totp: str | None,
    address: str,
    limits: Limits,
    ttl_s: float,
) -> SignedIn:
    account = login.strip().lower()[:254]
    await login_limits.check(db, limits, account=account, address=address)
    async with db.read() as tx:
        row = (
            (
                await tx.execute(
                    select(*PUBLIC_COLUMNS, users.c.password_hash, users.c.totp_secret).where(
                        or_(users.c.username == account, users.c.email == account)
                    )
                )
            )
            .mappings()
            .first()
        )
    stored = row["password_hash"] if row is not None else None
    if not account or not await asyncio.to_thread(passwords.verify_password, stored, password):
        await login_limits.record_failure(db, limits, account=account, address=address)
        raise invalid_credentials()
    assert row is not None  # a password matched: the user exists
    user_id = str(row["id"])
    if row["disabled"]:
        raise Forbidden("this account is disabled", reason="user_disabled")
    if row["totp_enabled"]:
        if not totp:
            raise Unauthorized("this account also needs its TOTP code", reason="totp_required")
        secret = vault.unseal_bound(row["totp_secret"], _totp_context(user_id))
        if not pyotp.TOTP(secret).verify(totp.strip(), valid_window=1):
            await login_limits.record_failure(db, limits, account=account, address=address)
            raise invalid_credentials()
    rehashed = None
    if passwords.needs_rehash(stored or ""):
        rehashed = await asyncio.to_thread(passwords.hash_password, password)
    await login_limits.clear_account(db, account=account)
    async with db.write() as tx:
        if rehashed is not None:
            await tx.execute(update(users).where(users.c.id == user_id).values(password_hash=rehashed))
        issued = await sessions.issue(tx, user_id, ttl_s=ttl_s, address=address)
    public = {k: v for k, v in row.items() if k not in ("password_hash", "totp_secret")}
    return SignedIn(public, issued)


async def change_password(
    db: Database,
    user_id: str,
    *,
    current: str,
    new: str,
    address: str,
    limits: Limits,
    ttl_s: float,
) -> SignedIn:
    """Change one's own password: every session of the user ends, the caller gets a fresh one."""
    user = await get_user(db, user_id)
    account = str(user["username"])
    await login_limits.check(db, limits, account=account, address=address)
    async with db.read() as tx:
        stored = (await tx.execute(select(users.c.password_hash).where(users.c.id == user_id))).scalar_one()
    if not await asyncio.to_thread(passwords.verify_password, stored, current):
        await login_limits.record_failure(db, limits, account=account, address=address)
        raise Forbidden(
            "the current password is wrong", reason="invalid_credentials", field="currentPassword"
        )
    passwords.check_policy(new, username=account, email=str(user["email"]))
    hashed = await asyncio.to_thread(passwords.hash_password, new)
    async with db.write() as tx:
        await tx.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(password_hash=hashed, password_changed_at=db_now(), updated_at=db_now())
        )
        await sessions.end_all_for_user(tx, user_id, reason="password_changed")
        issued = await sessions.issue(tx, user_id, ttl_s=ttl_s, address=address)
    return SignedIn(await get_user(db, user_id), issued)


async def start_totp(db: Database, vault: Vault, user_id: str) -> str:
    """A new (not yet active) TOTP secret; its otpauth:// URI is returned this once, never again."""
    user = await get_user(db, user_id)
    if user["totp_enabled"]:
        raise Conflict("TOTP is already on for this account; turn it off first", reason="totp_enabled")
    secret = pyotp.random_base32()
    async with db.write() as tx:
        await tx.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(totp_secret=vault.seal_bound(secret, _totp_context(user_id)), updated_at=db_now())
        )
    return pyotp.TOTP(secret).provisioning_uri(name=str(user["username"]), issuer_name=TOTP_ISSUER)


async def confirm_totp(db: Database, vault: Vault, user_id: str, code: str) -> dict[str, Any]:
    """Turn TOTP on once the user proves their authenticator has the secret."""
    async with db.read() as tx:
        row = (
            await tx.execute(select(users.c.totp_secret, users.c.totp_enabled).where(users.c.id == user_id))
        ).first()
    if row is None or row.totp_secret is None:
        raise Conflict("start TOTP enrolment first (POST /auth/me/totp)", reason="totp_not_started")
    if row.totp_enabled:
        raise Conflict("TOTP is already on for this account", reason="totp_enabled")
    secret = vault.unseal_bound(row.totp_secret, _totp_context(user_id))
    if not pyotp.TOTP(secret).verify(code.strip(), valid_window=1):
        raise Invalid("this code does not match", reason="invalid_totp", field="code")
    async with db.write() as tx:
        await tx.execute(
            update(users).where(users.c.id == user_id).values(totp_enabled=True, updated_at=db_now())
        )
    return await get_user(db, user_id)


async def disable_totp(db: Database, user_id: str, *, password: str) -> dict[str, Any]:
    """Turn TOTP off; the password is asked again (a session left open must not be enough)."""
    async with db.read() as tx:
        stored = (await tx.execute(select(users.c.password_hash).where(users.c.id == user_id))).scalar_one()
    if not await asyncio.to_thread(passwords.verify_password, stored, password):
        raise Forbidden("the password is wrong", reason="invalid_credentials", field="password")
    async with db.write() as tx:
        await tx.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(totp_enabled=False, totp_secret=None, updated_at=db_now())
        )
    return await get_user(db, user_id)
