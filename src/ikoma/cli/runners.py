"""`ikoma runners`: register runners and see which are online."""

from typing import Annotated

import typer

from ikoma.cli import output
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiUrlOption
from ikoma.cli.output import Column, JsonOption

app = typer.Typer(help="Manage runners: the agents that claim and run orders.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "NAME"),
    ("serverName", "SERVER"),
    ("online", "ONLINE"),
    ("lastHeartbeatAt", "LAST HEARTBEAT"),
]


@app.command("list")
def list_runners(
    api_url: ApiUrlOption = DEFAULT_API_URL, admin_key: AdminKeyOption = None, as_json: JsonOption = False
) -> None:
    """List every runner, the server it serves and whether it is online."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_list(client.list_runners(), COLUMNS, as_json=as_json, empty="no runners")


@app.command("create")
def create_runner(
    name: Annotated[str, typer.Argument(help="Unique runner name.", show_default=False)],
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a runner and print its token, which the API never shows again."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        runner = client.create_runner(name)
    output.show_object(runner, as_json=as_json, skip=["token"])
    if not as_json:
        # The token goes on stdout, alone on its line, so it can be copied or piped as is.
        typer.echo(f"\ntoken: {runner['token']}")
    output.notice("Save this runner token now: it will not be shown again.")


@app.command("bootstrap-token")
def create_bootstrap_token(
    name: Annotated[str | None, typer.Option("--name", help="Name the new runner will get.")] = None,
    server_id: Annotated[
        str | None, typer.Option("--server", help="Attach the new runner to this server.")
    ] = None,
    expires_in: Annotated[int, typer.Option("--expires-in", help="Seconds the token stays usable.")] = 3600,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a one-time token for `ikoma runner register` on the new machine (shown once)."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        issued = client.create_bootstrap_token(name=name, server_id=server_id, expires_in=expires_in)
    output.show_object(issued, as_json=as_json, skip=["token"])
    if not as_json:
        typer.echo(issued["token"])
