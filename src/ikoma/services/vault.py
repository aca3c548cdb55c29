"""Encryption at rest for secrets (order parameters, later SSH credentials): one store, keys outside the DB.

Keys come from `IKOMA_ENCRYPTION_KEYS` (comma-separated Fernet keys, the first encrypts, all decrypt: add
a new key in front to rotate, keep the old ones until `ikoma secrets rotate` re-sealed everything) or,
when unset, from `<data dir>/encryption.keys` (one key a line, created 0600 on first start). Replicas on
one PostgreSQL must share the keys: set the variable on each of them.

Fernet is AES-128-CBC + HMAC-SHA256 with a timestamp: a changed byte is refused, never decrypted wrongly.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ikoma.domain.errors import DomainError

PREFIX = "ikv1:"  # sealed values say which scheme sealed them, so a later one can sit beside it
KEYS_FILE = "encryption.keys"


class SecretUnreadable(DomainError):
    status_code = 500
    reason = "secret_unreadable"


class VaultKeyError(Exception):
    """Malformed or missing keys: start-up stops with this message."""


class Vault:
    def __init__(self, keys: Sequence[bytes] | Callable[[], Sequence[bytes]]) -> None:
        """`keys`, or a function giving them when first needed (a key file is made only when used)."""
        self._load = keys if callable(keys) else None
        self._keys: tuple[MultiFernet, bytes] | None = None if callable(keys) else _fernet(keys)
        self._fingerprint_key: bytes | None = None

    @property
    def _fernet(self) -> MultiFernet:
        return self._loaded()[0]

    def _loaded(self) -> tuple[MultiFernet, bytes]:
        if self._keys is None:
            assert self._load is not None
            self._keys = _fernet(self._load())
        return self._keys

    def fingerprint(self, data: bytes) -> str:
        """A keyed digest (HMAC-SHA256 under a key derived from the current key): a fingerprint of a
        request that holds a secret cannot be brute-forced from the database alone."""
        if self._fingerprint_key is None:
            self._fingerprint_key = hashlib.sha256(b"ikoma-fingerprint\0" + self._loaded()[1]).digest()
        return hmac.new(self._fingerprint_key, data, hashlib.sha256).hexdigest()

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def unseal(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            raise SecretUnreadable("a sealed value has an unknown format")
        try:
            return self._fernet.decrypt(sealed[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            # tampered, or sealed with a key that is no longer configured
            raise SecretUnreadable("a sealed value cannot be opened with the configured keys") from exc

    def reseal(self, sealed: str) -> str:
        """The same secret sealed with the current (first) key."""
        self.unseal(sealed)  # refuses what cannot be opened, with our error
        return PREFIX + self._fernet.rotate(sealed[len(PREFIX) :].encode()).decode()


def _fernet(keys: Sequence[bytes]) -> tuple[MultiFernet, bytes]:
    """The keys as one MultiFernet (the first seals, all open), and the first key itself."""
    if not keys:
        raise VaultKeyError("at least one encryption key is needed")
    try:
        return MultiFernet([Fernet(key) for key in keys]), bytes(keys[0])
    except (ValueError, TypeError) as exc:
        raise VaultKeyError(
            "an encryption key is not a Fernet key (32 url-safe base64 bytes, e.g. from "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
        ) from exc


def new_key() -> str:
    return Fernet.generate_key().decode()


def load_vault(env_keys: str | None, data_dir: Path) -> Vault:
    """The vault from the environment's keys, or from the data dir's key file (read, or made, on first
    use: the first secret sealed or order fingerprinted; a process that does neither leaves no file)."""
    if env_keys:
        return Vault([k.strip().encode() for k in env_keys.split(",") if k.strip()])
    path = data_dir / KEYS_FILE

    def from_file() -> list[bytes]:
        if not path.exists():
            _create_key_file(path)
        return [line.strip().encode() for line in path.read_text().splitlines() if line.strip()]

    return Vault(from_file)


def _create_key_file(path: Path) -> None:
    """Write a new key file atomically: written and synced aside, then linked into place.

    `link` fails when the file exists, so two processes starting at once agree on the first one's key
    and neither ever reads a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(new_key() + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first: its key stands
            os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)
