"""`ikoma keys`: rotate the key that seals secrets at rest (run where the server runs, on its data).

`rotate` puts a new key first in the key file (the old ones stay: they still open what they sealed),
then seals every SSH credential again with it. With `IKOMA_ENCRYPTION_KEYS` the keys live in the
environment: put a new key first there on every replica, then run `ikoma keys reseal`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from ikoma.cli import output
from ikoma.cli.output import JsonOption

app = typer.Typer(
    help="Encryption keys of secrets at rest (SSH credentials, secret params).", no_args_is_help=True
)


async def _reseal(settings: Any) -> dict[str, Any]:
    from ikoma.services.vault import load_vault
    from ikoma.ssh.credentials import reseal_all
    from ikoma.storage.database import Database

    vault = load_vault(
        settings.encryption_keys.get_secret_value() if settings.encryption_keys else None,
        settings.data_dir,
        settings.master_key_file,
    )
    db = Database(settings.resolved_database_url)
    try:
        return await reseal_all(db, vault)
    finally:
        await db.dispose()


def _show(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.print_json(summary)
        return
    typer.echo(
        f"key {summary['keyId']} seals from now on; {summary['resealed']} of {summary['servers']} "
        "servers' credentials sealed again"
    )
    for server_id in summary["undecryptable"]:
        typer.secho(f"server {server_id}: credentials_undecryptable (set them again)", fg="yellow", err=True)


@app.command("rotate")
def rotate(as_json: JsonOption = False) -> None:
    """Add a new key to the key file and seal every SSH credential with it; old keys still open."""
    from ikoma.cli.database import settings_for_reading
    from ikoma.services.vault import KEYS_FILE, add_key_to_file

    settings = settings_for_reading("rotate the encryption key")
    if settings.encryption_keys:
        typer.secho(
            "the keys come from IKOMA_ENCRYPTION_KEYS: put a new key first there (on every replica), "
            "then run `ikoma keys reseal`",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    add_key_to_file(settings.master_key_file or settings.data_dir / KEYS_FILE)
    _show(asyncio.run(_reseal(settings)), as_json)


@app.command("reseal")
def reseal(as_json: JsonOption = False) -> None:
    """Seal every SSH credential again with the current (first) key."""
    from ikoma.cli.database import settings_for_reading

    _show(asyncio.run(_reseal(settings_for_reading("reseal credentials"))), as_json)
