"""`ikoma servers`: register, inspect and change the machines IKOMA manages."""

import uuid
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console

from ikoma.cli import output, state_view
from ikoma.cli.client import (
    DEFAULT_API_URL,
    AdminClient,
    AdminKeyOption,
    ApiError,
    ApiUrlOption,
    without_unset,
)
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
    server: Annotated[str, typer.Argument(help="Server name or id.", show_default=False)],
    timeline: Annotated[int, typer.Option("--timeline", min=0, max=200, help="Timeline entries shown.")] = 10,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One server at a glance: up?, updates, reboot, docker, metrics, hardware, messages, timeline."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = resolve_server(client, server)
        server_id = str(found["id"])
        state = client.server_state(server_id)
        hardware = client.server_hardware(server_id)
        fresh = client.important_messages(server_id, only_new=True)
        entries = client.server_timeline(server_id, limit=timeline)["items"] if timeline else []
    if as_json:
        output.print_json(
            {
                "server": found,
                "state": state,
                "hardware": hardware,
                "importantMessages": fresh,
                "timeline": entries,
            }
        )
        return
    Console(highlight=False).print(state_view.render(found, state, hardware, fresh, entries))


def resolve_server(client: AdminClient, name_or_id: str) -> dict[str, Any]:
    """A server by id, or by its (unique) name."""
    try:
        uuid.UUID(name_or_id)
    except ValueError:
        for candidate in client.list_servers():
            if candidate.get("name") == name_or_id:
                return candidate
        raise ApiError(404, "server_not_found", f"no server named {name_or_id!r}") from None
    return client.get_server(name_or_id)


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
