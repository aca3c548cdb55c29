"""Encryption at rest for secrets (order parameters, later SSH credentials): one store, keys outside the DB.

Keys come from `IKOMA_ENCRYPTION_KEYS` (comma-separated Fernet keys, the first encrypts, all decrypt: add
a new key in front to rotate, keep the old ones until `ikoma secrets rotate` re-sealed everything) or,
when unset, from `<data dir>/encryption.keys` (one key a line, created 0600 on first start). Replicas on
one PostgreSQL must share the keys: set the variable on each of them.

Fernet is AES-128-CBC + HMAC-SHA256 with a timestamp: a changed byte is refused, never decrypted wrongly.

Secrets bound to a row (SSH credentials, issue 14) are sealed with AES-256-GCM instead (`seal_bound`):
`ikv2:<key id>:<nonce + ciphertext>`, the AES key derived from a configured key by HKDF-SHA256, the row
and field given as associated data. The key id picks the key that opens it (old keys keep opening what
they sealed after a rotation; a key file gains keys while the server runs: it is read again when an
unknown id shows up), and the associated data makes a value copied onto another row unreadable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ikoma.domain.errors import DomainError

PREFIX = "ikv1:"  # sealed values say which scheme sealed them, so a later one can sit beside it
BOUND_PREFIX = "ikv2:"  # AES-256-GCM with a key id and associated data (seal_bound)
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
        self._aead: tuple[str, dict[str, AESGCM]] | None = None
        self._raw: Sequence[bytes] | None = None if callable(keys) else tuple(keys)

    @property
    def _fernet(self) -> MultiFernet:
        return self._loaded()[0]

    def _loaded(self) -> tuple[MultiFernet, bytes]:
        if self._keys is None:
            assert self._load is not None
            self._raw = tuple(self._load())
            self._keys = _fernet(self._raw)
        return self._keys

    def _aead_keys(self) -> tuple[str, dict[str, AESGCM]]:
        """(id of the sealing key, every AES-256-GCM key by id), derived from the configured keys."""
        if self._aead is None:
            self._loaded()
            assert self._raw is not None
            derived = [_aead_key(raw) for raw in self._raw]
            self._aead = derived[0][0], dict(derived)
        return self._aead

    def reload(self) -> bool:
        """Read a key file again (keys added by `ikoma keys rotate` while this process runs); False when
        the keys came from the environment and cannot change."""
        if self._load is None:
            return False
        self._keys, self._aead, self._fingerprint_key = None, None, None
        self._loaded()
        return True

    @property
    def current_key_id(self) -> str:
        return self._aead_keys()[0]

    def seal_bound(self, plaintext: str, context: str) -> str:
        """Seal with the current key; `context` (the row and field) must be given again to open it."""
        key_id, keys = self._aead_keys()
        nonce = secrets.token_bytes(12)
        sealed = keys[key_id].encrypt(nonce, plaintext.encode(), _associated(key_id, context))
        return f"{BOUND_PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def unseal_bound(self, sealed: str, context: str) -> str:
        """The secret; SecretUnreadable when it was edited, moved to another row, or its key is gone."""
        key_id, body = _split_bound(sealed)
        keys = self._aead_keys()[1]
        if key_id not in keys and self.reload():
            keys = self._aead_keys()[1]
        if key_id not in keys:
            raise SecretUnreadable("a sealed value was sealed with a key that is not configured")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return keys[key_id].decrypt(raw[:12], raw[12:], _associated(key_id, context)).decode()
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise SecretUnreadable("a sealed value was edited or does not belong to this row") from exc

    def bound_key_id(self, sealed: str) -> str:
        return _split_bound(sealed)[0]

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


def _aead_key(raw: bytes) -> tuple[str, AESGCM]:
    """A 256-bit AES key derived from a configured key, and its public id (a digest of the derived key:
    it names the key without revealing anything usable)."""
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ikoma-aes256gcm-v1").derive(
        bytes(raw)
    )
    return hashlib.sha256(b"ikoma-key-id\0" + material).hexdigest()[:16], AESGCM(material)


def _associated(key_id: str, context: str) -> bytes:
    return f"{key_id}\0{context}".encode()


def _split_bound(sealed: str) -> tuple[str, str]:
    if not sealed.startswith(BOUND_PREFIX) or sealed.count(":") != 2:
        raise SecretUnreadable("a sealed value has an unknown format")
    _, key_id, body = sealed.split(":")
    return key_id, body


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


def load_vault(env_keys: str | None, data_dir: Path, key_file: Path | None = None) -> Vault:
    """The vault from the environment's keys, or from the key file (`key_file`, else the data dir's;
    read, or made, on first use: the first secret sealed or order fingerprinted; a process that does
    neither leaves no file)."""
    if env_keys:
        return Vault([k.strip().encode() for k in env_keys.split(",") if k.strip()])
    path = key_file if key_file is not None else data_dir / KEYS_FILE

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


def add_key_to_file(path: Path) -> None:
    """Put a new key first in the key file (it seals from now on; the others still open): written aside,
    synced, then renamed over the file, so a reader sees the old file or the new one, never half."""
    if not path.exists():
        _create_key_file(path)
    old = path.read_text()
    aside = path.with_name(f".{path.name}.{os.getpid()}.rotate")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(new_key() + "\n" + old)
        out.flush()
        os.fsync(out.fileno())
    os.replace(aside, path)
