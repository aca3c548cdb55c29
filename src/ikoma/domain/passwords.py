"""Passwords: the policy a new one must meet, and argon2id hashing (no I/O; CPU-heavy by design).

argon2id with argon2-cffi's RFC 9106 low-memory profile (t=3, 64 MiB, p=4). A hash made with older
parameters still verifies, and `needs_rehash` tells the caller to store a fresh one at the next
successful sign-in. Callers run `hash_password`/`verify_password` in a thread: one takes ~50-100 ms.
"""

from __future__ import annotations

import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ikoma.domain.errors import Invalid

MIN_LENGTH = 12
# argon2 reads all of it; a megabyte-long password would be a cheap way to burn CPU
MAX_LENGTH = 256
GENERATED_LENGTH = 24
_GENERATED_ALPHABET = string.ascii_letters + string.digits

_HASHER = PasswordHasher()
# verified against when the account does not exist, so an unknown name costs the same time as a known one
_DUMMY_HASH = _HASHER.hash("ikoma-no-such-user-" + secrets.token_hex(8))


def weak_password(message: str) -> Invalid:
    return Invalid(message, reason="weak_password", field="password")


def check_policy(password: str, *, username: str | None = None, email: str | None = None) -> None:
    """422 `weak_password` unless the password is long enough and not the account's own name."""
    if len(password) < MIN_LENGTH:
        raise weak_password(f"a password has at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise weak_password(f"a password has at most {MAX_LENGTH} characters")
    if "\x00" in password:
        raise weak_password("a password must not contain the NUL character")
    if password.strip() == "" or len(set(password)) < 4:
        raise weak_password("a password needs at least 4 different characters")
    lowered = password.lower()
    for name in (username, email, (email or "").partition("@")[0]):
        if name and len(name) >= 3 and name.lower() in lowered:
            raise weak_password("a password must not contain the username or email")


def generate() -> str:
    """A random password (~143 bits) for the bootstrap admin and `ikoma users reset-password`."""
    return "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(GENERATED_LENGTH))


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no stored hash (unknown user) a dummy is checked, same cost."""
    if len(password) > MAX_LENGTH:  # no such password exists; refused after the same work as a check
        _matches(_DUMMY_HASH, password[:MAX_LENGTH])
        return False
    return _matches(stored_hash or _DUMMY_HASH, password) and stored_hash is not None


def _matches(stored_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with other parameters than today's (store a new one)."""
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
