"""A server's SSH secrets: sealed by the vault (AES-256-GCM) and bound to their row and field.

Sealed here, opened only by the process that opens the SSH connection, never returned: the API shows
`hasPassword`, `hasPrivateKey`, `hasSudoPassword` and the private key's fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncssh
from sqlalchemy import insert, select, update

from ikoma.domain.errors import Conflict, Invalid
from ikoma.services.vault import SecretUnreadable, Vault
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import server_credentials

# API field → column; every column holds a sealed value or NULL
FIELDS = {
    "ssh_password": "password",
    "ssh_private_key": "private_key",
    "ssh_key_passphrase": "key_passphrase",
    "sudo_password": "sudo_password",
}
COLUMNS = tuple(FIELDS.values())


class CredentialsUndecryptable(Conflict):
    """A sealed credential of this server cannot be opened: edited in the database, or its key is gone."""

    reason = "credentials_undecryptable"


@dataclass(frozen=True)
class Credentials:
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    key_passphrase: str | None = field(default=None, repr=False)
    sudo_password: str | None = field(default=None, repr=False)

    def secrets(self) -> list[str]:
        """Every secret value, for the log masker."""
        return [v for v in (self.password, self.private_key, self.key_passphrase, self.sudo_password) if v]


def context(server_id: str, column: str) -> str:
    """The associated data of a sealed value: a value copied onto another row or field does not open."""
    return f"server_credentials:{server_id}:{column}"


def key_fingerprint(private_key: str, passphrase: str | None) -> str:
    """The SHA-256 fingerprint of a private key; 422 when it cannot be read (or the passphrase is wrong)."""
    try:
        key = asyncssh.import_private_key(private_key, passphrase)
    except asyncssh.KeyEncryptionError:
        raise Invalid(
            "the private key cannot be decrypted with this passphrase",
            reason="ssh_key_passphrase_invalid",
            field="sshKeyPassphrase",
        ) from None
    except (asyncssh.KeyImportError, ValueError):
        raise Invalid(
            "the private key is not a key in OpenSSH, PKCS#8 or PEM format",
            reason="ssh_key_invalid",
            field="sshPrivateKey",
        ) from None
    return str(key.get_fingerprint("sha256"))


async def store(tx: Tx, vault: Vault, server_id: str, values: dict[str, str | None]) -> None:
    """Seal and write the given columns (None clears one); the others keep their value."""
    sealed = {
        column: None if value is None else vault.seal_bound(value, context(server_id, column))
        for column, value in values.items()
    }
    exists = (
        await tx.execute(
            select(server_credentials.c.server_id).where(server_credentials.c.server_id == server_id)
        )
    ).first()
    if exists is None:
        await tx.execute(insert(server_credentials).values(server_id=server_id, **sealed))
    elif sealed:
        await tx.execute(
            update(server_credentials)
            .where(server_credentials.c.server_id == server_id)
            .values(**sealed, updated_at=db_now())
        )


async def load(tx: Tx, vault: Vault, server_id: str) -> Credentials:
    """The opened secrets; CredentialsUndecryptable (409) names the server when one cannot be opened."""
    row = (
        (await tx.execute(select(server_credentials).where(server_credentials.c.server_id == server_id)))
        .mappings()
        .first()
    )
    if row is None:
        return Credentials()
    opened: dict[str, Any] = {}
    for column in COLUMNS:
        if row[column] is None:
            continue
        try:
            opened[column] = vault.unseal_bound(row[column], context(server_id, column))
        except SecretUnreadable:
            raise CredentialsUndecryptable(
                "a credential of this server cannot be decrypted (edited in the database, or sealed with "
                "a key that is no longer configured); set it again",
                serverId=server_id,
                field=column,
            ) from None
    return Credentials(**opened)


async def reseal_all(db: Database, vault: Vault) -> dict[str, Any]:
    """Seal every credential again with the current key (after `ikoma keys rotate`).

    One transaction per server; a value that cannot be opened is left as it is and reported, so one bad
    row never stops the others from moving to the new key.
    """
    async with db.read() as tx:
        ids = [str(r) for r in (await tx.execute(select(server_credentials.c.server_id))).scalars()]
    resealed, unreadable = 0, []
    current = vault.current_key_id
    for server_id in ids:
        async with db.write() as tx:
            row = (
                (
                    await tx.execute(
                        select(server_credentials).where(server_credentials.c.server_id == server_id)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                continue
            changes: dict[str, str] = {}
            try:
                for column in COLUMNS:
                    sealed = row[column]
                    if sealed is None or vault.bound_key_id(sealed) == current:
                        continue
                    plain = vault.unseal_bound(sealed, context(server_id, column))
                    changes[column] = vault.seal_bound(plain, context(server_id, column))
            except SecretUnreadable:
                unreadable.append(server_id)
                continue
            if changes:
                await tx.execute(
                    update(server_credentials)
                    .where(server_credentials.c.server_id == server_id)
                    .values(**changes, updated_at=db_now())
                )
                resealed += 1
    return {"keyId": current, "servers": len(ids), "resealed": resealed, "undecryptable": unreadable}
