"""Console sessions: an opaque random id in a cookie, kept server-side only as its SHA-256.

A session lives until its absolute expiry (`IKOMA_SESSION_TTL`), until it has been idle for
`IKOMA_SESSION_IDLE_TIMEOUT`, or until it is ended (logout, password change or reset, the user
disabled; deleting the user deletes its sessions). Expiry and idleness are compared with the database
clock. `last_seen_at` is refreshed at most once a minute: a write per request would serialise every
click. The CSRF token is derived from the raw id (HMAC), so nothing more is stored and a token is
worthless without the cookie it belongs to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update

from ikoma.domain import tokens
from ikoma.domain.errors import Unauthorized
from ikoma.domain.roles import Role
from ikoma.services.identity import Principal
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import user_sessions, users

COOKIE_NAME = "ikoma_session"
LAST_SEEN_RESOLUTION_S = 60.0
KEEP_ENDED_S = 30 * 86400.0  # ended and expired sessions are kept this long (who was signed in when)
_ID_BYTES = 32  # 256 bits
_CSRF_CONTEXT = b"ikoma-csrf-v1"


class SessionExpired(Unauthorized):
    """401 `session_expired`: the cookie names no live session (expired, idle, ended or unknown)."""

    reason = "session_expired"


@dataclass(frozen=True)
class IssuedSession:
    raw_id: str  # the cookie value: handed to the browser once, never stored
    token_hash: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class SessionPrincipal:
    principal: Principal
    token_hash: str
    csrf_token: str
    expires_at: datetime


def csrf_token_for(raw_id: str) -> str:
    digest = hmac.new(raw_id.encode(), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_matches(raw_id: str, presented: str | None) -> bool:
    """Constant-time comparison of a presented CSRF token with the session's."""
    if not presented:
        return False
    return hmac.compare_digest(csrf_token_for(raw_id).encode(), presented.strip().encode())


def _as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


async def issue(tx: Tx, user_id: str, *, ttl_s: float, address: str | None) -> IssuedSession:
    """A new session for `user_id`, written in `tx`."""
    raw_id = secrets.token_urlsafe(_ID_BYTES)
    digest = tokens.hash_token(raw_id)
    # the user's sessions long over go now: the table stays as small as its users' recent history
    await tx.execute(
        delete(user_sessions).where(
            user_sessions.c.user_id == user_id, user_sessions.c.expires_at < db_now(-KEEP_ENDED_S)
        )
    )
    expires = (
        await tx.execute(
            insert(user_sessions)
            .values(
                token_hash=digest,
                user_id=user_id,
                expires_at=db_now(ttl_s),
                client_address=(address or None) and address[:64],
            )
            .returning(user_sessions.c.expires_at)
        )
    ).scalar_one()
    return IssuedSession(raw_id, digest, csrf_token_for(raw_id), _as_datetime(expires))


def _live(idle_timeout_s: float) -> tuple[Any, ...]:
    return (
        user_sessions.c.ended_at.is_(None),
        user_sessions.c.expires_at > db_now(),
        user_sessions.c.last_seen_at > db_now(-idle_timeout_s),
        users.c.disabled.is_(False),
    )


async def authenticate(db: Database, raw_id: str, *, idle_timeout_s: float) -> SessionPrincipal:
    """The signed-in user behind a cookie value, or 401 `session_expired`."""
    if not raw_id or len(raw_id) > 128:
        raise SessionExpired("your session has expired or ended; sign in again")
    digest = tokens.hash_token(raw_id)
    async with db.read() as tx:
        row = (
            await tx.execute(
                select(
                    users.c.id,
                    users.c.username,
                    users.c.role,
                    user_sessions.c.expires_at,
                    (user_sessions.c.last_seen_at < db_now(-LAST_SEEN_RESOLUTION_S)).label("touch"),
                )
                .select_from(user_sessions.join(users, users.c.id == user_sessions.c.user_id))
                .where(user_sessions.c.token_hash == digest, *_live(idle_timeout_s))
            )
        ).first()
    if row is None:
        raise SessionExpired("your session has expired or ended; sign in again")
    if row.touch:
        async with db.write() as tx:
            await tx.execute(
                update(user_sessions)
                .where(user_sessions.c.token_hash == digest)
                .values(last_seen_at=db_now())
            )
    role = Role.parse(row.role)
    principal = Principal(
        kind="user",
        id=str(row.id),
        name=row.username,
        role=role,
        granted_role=role,
        # harmless in the audit log: the start of the hash, never of the cookie value
        token_prefix=digest[: tokens.PREFIX_LENGTH],
    )
    return SessionPrincipal(principal, digest, csrf_token_for(raw_id), _as_datetime(row.expires_at))


async def end(db: Database, raw_id: str, *, reason: str) -> str | None:
    """End the session of this cookie value; the user id it belonged to (None: none was live)."""
    digest = tokens.hash_token(raw_id)
    async with db.write() as tx:
        ended = (
            await tx.execute(
                update(user_sessions)
                .where(user_sessions.c.token_hash == digest, user_sessions.c.ended_at.is_(None))
                .values(ended_at=db_now(), end_reason=reason)
                .returning(user_sessions.c.user_id)
            )
        ).first()
    return None if ended is None else str(ended.user_id)


async def end_all_for_user(tx: Tx, user_id: str, *, reason: str) -> int:
    """End every live session of a user (password changed or reset, user disabled); how many."""
    result = await tx.execute(
        update(user_sessions)
        .where(and_(user_sessions.c.user_id == user_id, user_sessions.c.ended_at.is_(None)))
        .values(ended_at=db_now(), end_reason=reason)
    )
    return int(getattr(result, "rowcount", 0) or 0)
