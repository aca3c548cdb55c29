"""Secrets handed to runners and admins: high-entropy, shown once, stored as SHA-256 plus a prefix.

SHA-256 (not argon2) is right here because the secrets are 256-bit random values: there is nothing to
brute-force, and the runner hot path checks a token on every call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX_LENGTH = 8


@dataclass(frozen=True, slots=True)
class IssuedToken:
    secret: str  # shown to the caller once, never stored
    hash: str
    prefix: str


def issue(kind: str) -> IssuedToken:
    """A new token such as `ikr_…` (runner) or `ika_…` (admin)."""
    secret = f"{kind}_{secrets.token_urlsafe(32)}"
    return IssuedToken(secret=secret, hash=hash_token(secret), prefix=secret[:PREFIX_LENGTH])


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_hash: str) -> bool:
    """Compare in constant time so response timing tells nothing about the stored hash."""
    return hmac.compare_digest(hash_token(secret), stored_hash)
