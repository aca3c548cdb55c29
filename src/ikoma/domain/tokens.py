"""Secrets handed to runners and admins: high-entropy, shown once, stored as SHA-256 plus a prefix.

SHA-256 (not argon2) is right here because the secrets are 256-bit random values: there is nothing to
brute-force, and the runner hot path checks a token on every call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
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


# --- API client tokens ------------------------------------------------------------------------------
# `ikoma_<32 base62 random><6 base62 checksum>`: the typed prefix and the checksum make a leaked token
# recognisable by secret scanners (and a mistyped one refused without a database lookup).
API_CLIENT_KIND = "ikoma"
API_CLIENT_PREFIX_LENGTH = 14  # "ikoma_" + 8 characters of the secret: enough to tell keys apart
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_LENGTH = 32  # 32 base62 characters ≈ 190 bits
_CHECKSUM_LENGTH = 6


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), _CHECKSUM_LENGTH)


def issue_api_client_token() -> IssuedToken:
    random_part = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_LENGTH))
    secret = f"{API_CLIENT_KIND}_{random_part}{_checksum(random_part)}"
    return IssuedToken(secret=secret, hash=hash_token(secret), prefix=secret[:API_CLIENT_PREFIX_LENGTH])


def is_api_client_token(secret: str) -> bool:
    """Shape and checksum of an API client token (says nothing about whether it is valid)."""
    head = f"{API_CLIENT_KIND}_"
    if not secret.startswith(head) or len(secret) != len(head) + _RANDOM_LENGTH + _CHECKSUM_LENGTH:
        return False
    body = secret[len(head) :]
    random_part, checksum = body[:_RANDOM_LENGTH], body[_RANDOM_LENGTH:]
    return all(c in _BASE62 for c in body) and hmac.compare_digest(_checksum(random_part), checksum)
