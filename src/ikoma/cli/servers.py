"""`ikoma servers`: register, inspect and change the machines IKOMA manages."""

from collections.abc import Sequence
from typing import Annotated

import typer

from ikoma.cli import output
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiUrlOption, without_unset
from ikoma.cli.output import Column, JsonOption

app = typer.Typer(help="Manage servers: the machines playbooks run on.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "NAME"),
    ("hostname", "HOSTNAME"),
    ("port", "PORT"),
    ("osFamily", "OS"),
    ("runnerName", "RUNNER"),
    ("labels", "LABELS"),
]

ServerIdArg = Annotated[str, typer.Argument(help="Server id (UUID).", show_default=False)]
PortOption = Annotated[
    int | None, typer.Option("--port", min=1, max=65535, help="SSH port (API default 22).")
]
LabelOption = Annotated[
    list[str] | None, typer.Option("--label", metavar="KEY=VALUE", help="Label; repeat for several.")
]
OsFamilyOption = Annotated[str | None, typer.Option("--os-family", help="OS family, e.g. debian.")]


def parse_labels(pairs: Sequence[str]) -> dict[str, str]:
    """`["env=prod", "tier=web"]` -> `{"env": "prod", "tier": "web"}`; values stay strings.

    Only the first `=` splits, so values may contain `=`. A repeated key keeps its last value.
    """
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--label")
        labels[key] = value
    return labels


@app.command("list")
def list_servers(
    api_url: ApiUrlOption = DEFAULT_API_URL, admin_key: AdminKeyOption = None, as_json: JsonOption = False
) -> None:
    """List every server with its attached runner."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_list(client.list_servers(), COLUMNS, as_json=as_json, empty="no servers")


@app.command("create")
def create_server(
    name: Annotated[str, typer.Argument(help="Unique server name.", show_default=False)],
    hostname: Annotated[str, typer.Option("--hostname", help="Host name or address to reach it.")],
    port: PortOption = None,
    label: LabelOption = None,
    os_family: OsFamilyOption = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a server."""
    fields = without_unset(
        name=name,
        hostname=hostname,
        port=port,
        labels=parse_labels(label) if label else None,
        osFamily=os_family,
    )
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.create_server(fields), as_json=as_json)


@app.command("show")
def show_server(
    server_id: ServerIdArg,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one server."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.get_server(server_id), as_json=as_json)


@app.command("update")
def update_server(
    server_id: ServerIdArg,
    name: Annotated[str | None, typer.Option("--name", help="New unique name.")] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", help="New host name or address.")] = None,
    port: PortOption = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label", metavar="KEY=VALUE", help="Label; the given labels replace all current ones."
        ),
    ] = None,
    os_family: OsFamilyOption = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change the given fields of a server; the others keep their value."""
    fields = without_unset(
        name=name,
        hostname=hostname,
        port=port,
        labels=parse_labels(label) if label else None,
        osFamily=os_family,
    )
    if not fields:
        raise typer.BadParameter("give at least one field to change (see --help)")
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.update_server(server_id, fields), as_json=as_json)


@app.command("delete")
def delete_server(
    server_id: ServerIdArg,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a server (refused while it has unfinished orders). Prints nothing with --json."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        client.delete_server(server_id)
    if not as_json:
        typer.echo(f"deleted server {server_id}")


@app.command("attach")
def attach_runner(
    server_id: ServerIdArg,
    runner_id: Annotated[str, typer.Option("--runner", help="Runner id to attach (UUID).")],
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Attach a runner to a server; a runner serves one server only."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.attach_runner(server_id, runner_id), as_json=as_json)


@app.command("detach")
def detach_runner(
    server_id: ServerIdArg,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Detach the runner from a server."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.update_server(server_id, {"runnerId": None}), as_json=as_json)
