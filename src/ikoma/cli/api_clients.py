"""`ikoma api-clients`: tokens for automation, each with a role, an optional expiry and server scope."""

from typing import Annotated

import typer

from ikoma.cli import output
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiUrlOption
from ikoma.cli.output import Column, JsonOption, WideOption

app = typer.Typer(help="Manage API clients: scoped tokens for automation.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "NAME"),
    ("role", "ROLE"),
    ("tokenPrefix", "PREFIX"),
    ("expiresAt", "EXPIRES"),
    ("lastUsedAt", "LAST USED"),
    ("revokedAt", "REVOKED"),
]
ROLES = ("observer", "builder", "operator", "admin")


@app.command("create")
def create_api_client(
    name: Annotated[str, typer.Argument(help="A name saying who uses it.", show_default=False)],
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLES)}.")] = "observer",
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", min=1, help="Days until the token stops working.")
    ] = None,
    servers: Annotated[
        list[str] | None, typer.Option("--server", help="Limit it to this server (name or id); repeatable.")
    ] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a client and print its token, which the API never shows again."""
    expires_in = expires_in_days * 86400 if expires_in_days else None
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        server_ids = [client.resolve("server", server) for server in servers or []]
        created = client.create_api_client(name=name, role=role, expires_in=expires_in, server_ids=server_ids)
    output.show_object(created, as_json=as_json, skip=["token"])
    if not as_json:
        # alone on its line so it can be copied or piped as is
        typer.echo(f"\ntoken: {created['token']}")
    output.notice("Save this token now: it will not be shown again.")


@app.command("list")
def list_api_clients(
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """List clients (never their tokens): role, prefix, expiry, last use, revocation."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.list_api_clients()
    output.show_list(found, COLUMNS, as_json=as_json, empty="no API clients", wide=wide)


@app.command("revoke")
def revoke_api_client(
    client_ref: Annotated[str, typer.Argument(help="The client's name or id.", show_default=False)],
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a client: its token is refused from its next request on."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        revoked = client.revoke_api_client(client.resolve("api-client", client_ref))
    output.show_object(revoked, as_json=as_json)
