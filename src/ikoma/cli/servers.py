"""`ikoma servers`: register, inspect and change the machines IKOMA manages."""

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console

from ikoma.cli import output, ssh_options, state_view
from ikoma.cli.client import (
    DEFAULT_API_URL,
    AdminClient,
    AdminKeyOption,
    ApiUrlOption,
    without_unset,
)
from ikoma.cli.output import Column, JsonOption, WideOption
from ikoma.cli.ssh_options import (
    AptProxyOption,
    KeyFileOption,
    PassphraseFileOption,
    PasswordFileOption,
    SshOption,
    SudoPasswordFileOption,
)

app = typer.Typer(help="Manage servers: the machines playbooks run on.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "NAME"),
    ("hostname", "HOSTNAME"),
    ("port", "PORT"),
    ("osFamily", "OS"),
    ("connectionMode", "MODE"),
    ("runnerName", "RUNNER"),
    ("labels", "LABELS"),
]

ServerArg = Annotated[
    str, typer.Argument(help="Server name, id, or the id's first characters.", show_default=False)
]
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
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            metavar="SELECTOR",
            help="Only the servers a selector designates, e.g. 'env=prod,role in (web,api),name=web-*,"
            "state=online' (docs/fleet-operations.md).",
        ),
    ] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """List every server with its attached runner (or those --where designates)."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.list_servers(where)
    output.show_list(found, COLUMNS, as_json=as_json, empty="no servers", wide=wide)


@app.command("create")
def create_server(
    name: Annotated[str, typer.Argument(help="Unique server name.", show_default=False)],
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="Host name or address to reach it.")
    ] = None,
    port: PortOption = None,
    label: LabelOption = None,
    os_family: OsFamilyOption = None,
    ssh: SshOption = None,
    password_file: PasswordFileOption = None,
    key_file: KeyFileOption = None,
    key_passphrase_file: PassphraseFileOption = None,
    sudo_password_file: SudoPasswordFileOption = None,
    apt_proxy: AptProxyOption = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a server: reached by its runner, or agentless with --ssh USER@HOST[:PORT]."""
    fields = without_unset(
        name=name,
        hostname=hostname,
        port=port,
        labels=parse_labels(label) if label else None,
        osFamily=os_family,
    )
    fields.update(
        ssh_options.ssh_fields(
            ssh, password_file, key_file, key_passphrase_file, sudo_password_file, apt_proxy
        )
    )
    if "hostname" not in fields:
        raise typer.BadParameter("give --hostname, or --ssh USER@HOST[:PORT]")
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.create_server(fields), as_json=as_json)


@app.command("show")
def show_server(
    server: ServerArg,
    timeline: Annotated[int, typer.Option("--timeline", min=0, max=200, help="Timeline entries shown.")] = 10,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One server at a glance: up?, updates, reboot, docker, metrics, hardware, messages, timeline."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.get_server(client.resolve("server", server))
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


@app.command("update")
def update_server(
    server: ServerArg,
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
    ssh: SshOption = None,
    password_file: PasswordFileOption = None,
    key_file: KeyFileOption = None,
    key_passphrase_file: PassphraseFileOption = None,
    sudo_password_file: SudoPasswordFileOption = None,
    apt_proxy: AptProxyOption = None,
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
    fields.update(
        ssh_options.ssh_fields(
            ssh, password_file, key_file, key_passphrase_file, sudo_password_file, apt_proxy
        )
    )
    if not fields:
        raise typer.BadParameter("give at least one field to change (see --help)")
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.update_server(client.resolve("server", server), fields), as_json=as_json)


@app.command("delete")
def delete_server(
    server: ServerArg,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a server (refused while it has unfinished orders). Prints nothing with --json."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        server_id = client.resolve("server", server)
        client.delete_server(server_id)
    if not as_json:
        typer.echo(f"deleted server {server_id}")


@app.command("attach")
def attach_runner(
    server: ServerArg,
    runner: Annotated[str, typer.Option("--runner", help="Runner (name or id) to attach.")],
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Attach a runner to a server; a runner serves one server only."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        attached = client.attach_runner(client.resolve("server", server), client.resolve("runner", runner))
    output.show_object(attached, as_json=as_json)


@app.command("detach")
def detach_runner(
    server: ServerArg,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Detach the runner from a server."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        detached = client.update_server(client.resolve("server", server), {"runnerId": None})
    output.show_object(detached, as_json=as_json)


@app.command("test-connection")
def check_connection(
    server: ServerArg,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Connect to an ssh server now: `ok` (and its OS), or why not. Exit 1 when it is not ok."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        answer = client.test_connection(client.resolve("server", server))
    if as_json:
        output.print_json(answer)
    else:
        typer.echo(f"{answer['reason']}: {answer.get('message') or ''}".rstrip(": "))
        if answer.get("hostKeyFingerprint"):
            typer.echo(f"host key: {answer['hostKeyFingerprint']}")
    if not answer.get("ok"):
        raise typer.Exit(1)


@app.command("trust-host-key")
def trust_host_key(
    server: ServerArg,
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint", help="SHA256:… to trust; left out: the key the next connection presents."
        ),
    ] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Trust a new SSH host key (a reinstalled machine) after checking it; audited."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        trusted = client.trust_host_key(client.resolve("server", server), fingerprint)
    output.show_object(trusted, as_json=as_json)
