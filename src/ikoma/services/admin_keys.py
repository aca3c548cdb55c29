"""The admin key: from IKOMA_ADMIN_KEY, or generated once, shown once and kept only as a hash."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select

from ikoma.domain import tokens
from ikoma.domain.errors import Unauthorized
from ikoma.storage.database import Database
from ikoma.storage.tables import admin_keys

ADMIN_KEY_KIND = "ika"


@dataclass(frozen=True)
class AdminKeyring:
    """The hashes of the admin keys this server accepts; holds no plaintext."""

    hashes: tuple[str, ...]

    def verify(self, presented: str | None) -> None:
        if not presented:
            raise Unauthorized("admin key is missing or invalid")
        digest = tokens.hash_token(presented)
        # compare against every hash, without stopping early, so timing reveals nothing
        ok = False
        for stored in self.hashes:
            ok |= hmac.compare_digest(digest, stored)
        if not ok:
            raise Unauthorized("admin key is missing or invalid")


@dataclass(frozen=True)
class AdminKeySetup:
    keyring: AdminKeyring
    announcement: str  # what start-up prints about the key
    new_key: str | None = None  # the plaintext, only when it was generated just now


async def ensure_admin_key(db: Database, configured: str | None) -> AdminKeySetup:
    if configured:
        # a short key would be shown whole by its prefix; long ones are recognisable by their start
        hint = f" ({configured[:4]}…)" if len(configured) >= 24 else ""
        return AdminKeySetup(
            AdminKeyring((tokens.hash_token(configured),)), f"admin key: from IKOMA_ADMIN_KEY{hint}"
        )
    async with db.write() as tx:
        stored = (await tx.execute(select(admin_keys.c.key_hash, admin_keys.c.key_prefix))).all()
        if stored:
            return AdminKeySetup(
                AdminKeyring(tuple(r.key_hash for r in stored)),
                f"admin key: generated earlier ({stored[0].key_prefix}…), shown only when it was created; "
                "set IKOMA_ADMIN_KEY to use your own",
            )
        issued = tokens.issue(ADMIN_KEY_KIND)
        await tx.execute(
            insert(admin_keys).values(id=str(uuid.uuid4()), key_prefix=issued.prefix, key_hash=issued.hash)
        )
    return AdminKeySetup(
        AdminKeyring((issued.hash,)),
        f"admin key (generated, shown this once, stored hashed): {issued.secret}",
        new_key=issued.secret,
    )
