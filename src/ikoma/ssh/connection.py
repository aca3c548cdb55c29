"""One SSH connection to a server: its credentials, its pinned host key, and a precise diagnosis.

The host key is checked before any credential is sent: an unpinned server is trusted on first use (the
caller records the fingerprint), a pinned one must present exactly that key, else `host_key_changed`.
Nothing of the API process's own SSH setup is used (no ~/.ssh keys, agent, config or known_hosts).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from ikoma.ssh.credentials import Credentials

# diagnosis reasons (API contract, docs/ssh.md)
OK = "ok"
DNS_FAILED = "dns_failed"
CONNECTION_REFUSED = "connection_refused"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
AUTH_FAILED = "auth_failed"
HOST_KEY_CHANGED = "host_key_changed"
SUDO_FAILED = "sudo_failed"
KEY_INVALID = "ssh_key_invalid"
SSH_ERROR = "ssh_error"


@dataclass(frozen=True)
class Target:
    server_id: str
    hostname: str
    port: int
    username: str
    credentials: Credentials = field(repr=False)
    pinned_host_key: str | None = None  # SHA256:… fingerprint, None until the first connection


class ConnectFailed(Exception):
    """Why a connection could not be opened, as a stable reason and a sentence without secrets."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _PinnedClient(asyncssh.SSHClient):
    """Accepts the host key when it matches the pin (or when there is none yet) and remembers it."""

    def __init__(self, pinned: str | None) -> None:
        self.pinned = pinned
        self.seen: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.seen = str(key.get_fingerprint("sha256"))
        return self.pinned is None or self.seen == self.pinned


async def connect(target: Target, *, connect_timeout: float) -> tuple[asyncssh.SSHClientConnection, str]:
    """An authenticated connection and the server's host key fingerprint; ConnectFailed otherwise."""
    client = _PinnedClient(target.pinned_host_key)
    creds = target.credentials
    options: dict[str, Any] = {
        "username": target.username,
        # an empty trust list (not None): asyncssh then asks validate_host_public_key for every key
        "known_hosts": ([], [], []),
        "agent_path": None,
        "config": [],
        "gss_auth": False,
        "host_based_auth": False,
        "password": creds.password,
        "client_keys": None,
        "connect_timeout": connect_timeout,
        "login_timeout": connect_timeout,
        "keepalive_interval": 15,
    }
    if creds.private_key:
        try:
            options["client_keys"] = [asyncssh.import_private_key(creds.private_key, creds.key_passphrase)]
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError):
            raise ConnectFailed(KEY_INVALID, "the stored private key cannot be read") from None
    if not creds.password:
        options["password"] = None
        options["kbdint_auth"] = False
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(target.hostname, target.port, client_factory=lambda: client, **options),
            timeout=connect_timeout * 2
            + 1,  # connect_timeout covers TCP; this also bounds a stalled handshake
        )
    except asyncssh.HostKeyNotVerifiable:
        raise ConnectFailed(
            HOST_KEY_CHANGED,
            f"the host key changed (pinned {target.pinned_host_key}, presented {client.seen}); nothing was "
            "run. If the machine was reinstalled, trust its new key (`ikoma servers trust-host-key`)",
        ) from None
    except asyncssh.PermissionDenied:
        raise ConnectFailed(AUTH_FAILED, f"authentication failed for user {target.username!r}") from None
    except socket.gaierror:
        raise ConnectFailed(DNS_FAILED, f"the name {target.hostname!r} does not resolve") from None
    except ConnectionRefusedError:
        raise ConnectFailed(
            CONNECTION_REFUSED, f"{target.hostname}:{target.port} refused the connection"
        ) from None
    except TimeoutError:
        raise ConnectFailed(TIMEOUT, f"no SSH answer from {target.hostname}:{target.port} in time") from None
    except asyncssh.Error as exc:
        raise ConnectFailed(SSH_ERROR, f"SSH error: {exc.reason}") from None
    except OSError as exc:
        raise ConnectFailed(
            UNREACHABLE, f"cannot reach {target.hostname}:{target.port}: {exc.strerror}"
        ) from None
    return conn, client.seen or ""
