"""A server's SSH target, its pinned host key (trust on first use), re-trust, and "test connection".

The pin is the SHA-256 fingerprint of the key the server presented at the first successful connection
(test connection or an order), recorded on the timeline. From then on any other key is refused before a
credential is sent (`host_key_changed`), until an admin trusts the new key (audited like every mutation).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import select, update

from ikoma.domain.errors import Conflict, NotFound
from ikoma.services import timeline
from ikoma.services.vault import Vault
from ikoma.ssh import credentials
from ikoma.ssh.connection import OK, SUDO_FAILED, ConnectFailed, Target, connect
from ikoma.ssh.credentials import CredentialsUndecryptable
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import servers

SUDO_CHECK_TIMEOUT = 15.0


async def target_of(db: Database, vault: Vault, server_id: str) -> tuple[Target, dict[str, Any]]:
    """The connection target (credentials opened) and the server's row; 409 for an agent server."""
    async with db.read() as tx:
        row = (
            (
                await tx.execute(
                    select(servers).where(servers.c.id == server_id, servers.c.deleted_at.is_(None))
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound("no server with this id", reason="server_not_found", serverId=server_id)
        if row["connection_mode"] != "ssh":
            raise Conflict(
                "this server is reached by its runner, not over SSH",
                reason="not_ssh_server",
                serverId=server_id,
            )
        creds = await credentials.load(tx, vault, server_id)
    target = Target(
        server_id=server_id,
        hostname=row["hostname"],
        port=row["port"],
        username=row["ssh_username"] or "root",
        credentials=creds,
        pinned_host_key=row["host_key_fingerprint"],
    )
    return target, dict(row)


async def pin(db: Database, server_id: str, fingerprint: str, *, actor: str) -> None:
    """Record the first key seen (only while none is pinned: two first connections agree on one)."""
    async with db.write() as tx:
        pinned = (
            await tx.execute(
                update(servers)
                .where(servers.c.id == server_id, servers.c.host_key_fingerprint.is_(None))
                .values(host_key_fingerprint=fingerprint, host_key_pinned_at=db_now(), updated_at=db_now())
                .returning(servers.c.id)
            )
        ).first()
        if pinned is not None:
            await timeline.add_event(
                tx,
                server_id=server_id,
                type="ssh.host_key_pinned",
                severity="info",
                message=f"SSH host key pinned on first use: {fingerprint}",
                actor=actor,
                details={"fingerprint": fingerprint},
            )


async def note_refused(db: Database, server_id: str, message: str) -> None:
    async with db.write() as tx:
        await timeline.add_event(
            tx,
            server_id=server_id,
            type="ssh.host_key_changed",
            severity="error",
            message=message,
            actor="ssh-executor",
        )


async def trust(db: Database, server_id: str, fingerprint: str | None, *, actor: str) -> dict[str, Any]:
    """Trust a new host key: the given fingerprint, or (None) whatever the next connection presents."""
    async with db.write() as tx:
        row = (
            await tx.execute(
                update(servers)
                .where(
                    servers.c.id == server_id,
                    servers.c.deleted_at.is_(None),
                    servers.c.connection_mode == "ssh",
                )
                .values(
                    host_key_fingerprint=fingerprint,
                    host_key_pinned_at=db_now() if fingerprint else None,
                    updated_at=db_now(),
                )
                .returning(servers.c.id)
            )
        ).first()
        if row is None:
            raise NotFound("no ssh server with this id", reason="server_not_found", serverId=server_id)
        await timeline.add_event(
            tx,
            server_id=server_id,
            type="ssh.host_key_trusted",
            severity="warning",
            message=f"SSH host key re-trusted: {fingerprint or 'the next key presented'}",
            actor=actor,
            details={"fingerprint": fingerprint},
        )
    return {"serverId": server_id, "hostKeyFingerprint": fingerprint}


async def test_connection(
    db: Database, vault: Vault, server_id: str, *, connect_timeout: float, actor: str
) -> dict[str, Any]:
    """`{ok, reason, message, os?, hostKeyFingerprint?, sudo?}`: a diagnosis, never an exception."""
    try:
        target, _ = await target_of(db, vault, server_id)
    except CredentialsUndecryptable as exc:
        return {"ok": False, "reason": exc.reason, "message": exc.message}
    try:
        conn, seen = await connect(target, connect_timeout=connect_timeout)
    except ConnectFailed as exc:
        return {"ok": False, "reason": exc.reason, "message": exc.message}
    try:
        if target.pinned_host_key is None:
            await pin(db, server_id, seen, actor=actor)
        answer: dict[str, Any] = {"ok": True, "reason": OK, "hostKeyFingerprint": seen}
        with contextlib.suppress(Exception):
            found = await asyncio.wait_for(
                conn.run('. /etc/os-release 2>/dev/null; echo "$PRETTY_NAME"; uname -srm', check=False),
                timeout=SUDO_CHECK_TIMEOUT,
            )
            lines = str(found.stdout or "").splitlines()
            answer["os"] = lines[0] if lines and lines[0] else None
            answer["kernel"] = lines[1] if len(lines) > 1 else None
        answer["sudo"] = await _check_sudo(conn, target)
        if answer["sudo"] == "failed":
            answer.update(
                ok=False,
                reason=SUDO_FAILED,
                message="sudo refused the sudo password (or the user may not sudo)",
            )
        else:
            answer["message"] = f"connected as {target.username}" + (
                f" to {answer['os']}" if answer.get("os") else ""
            )
        return answer
    finally:
        conn.close()


async def _check_sudo(conn: Any, target: Target) -> str:
    """`root` (no sudo needed), `not_configured` (no sudo password given), `ok` or `failed`."""
    if target.username == "root":
        return "root"
    password = target.credentials.sudo_password
    if not password:
        return "not_configured"
    try:
        done = await asyncio.wait_for(
            conn.run("sudo -S -k -p '' -- true", input=password + "\n", check=False),
            timeout=SUDO_CHECK_TIMEOUT,
        )
    except (TimeoutError, OSError):
        return "failed"
    return "ok" if done.exit_status == 0 else "failed"
