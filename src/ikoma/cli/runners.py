"""`ikoma runners`: register runners, see which are online, and revoke, rotate or delete one."""

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
    ("revokedAt", "REVOKED"),
]
RunnerArgument = Annotated[
    str, typer.Argument(help="The runner's name, id, or the start of its id.", show_default=False)
]


@app.command("list")
def list_runners(
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: output.WideOption = False,
) -> None:
    """List every runner, the server it serves and whether it is online."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.list_runners()
    output.show_list(found, COLUMNS, as_json=as_json, empty="no runners", wide=wide)


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
        str | None, typer.Option("--server", help="Attach the new runner to this server (name or id).")
    ] = None,
    expires_in: Annotated[int, typer.Option("--expires-in", help="Seconds the token stays usable.")] = 3600,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a one-time token for `ikoma runner register` on the new machine (shown once)."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        server_id = client.resolve("server", server_id) if server_id else None
        issued = client.create_bootstrap_token(name=name, server_id=server_id, expires_in=expires_in)
    output.show_object(issued, as_json=as_json, skip=["token"])
    if not as_json:
        typer.echo(issued["token"])


@app.command("show")
def show_runner(
    runner: RunnerArgument,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one runner: its server, liveness, version, and whether it is revoked."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.get_runner(client.resolve("runner", runner)), as_json=as_json)


@app.command("revoke")
def revoke_runner(
    runner: RunnerArgument,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Refuse the runner's token from now on; the orders it holds are requeued or ended, never lost."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        revoked = client.revoke_runner(client.resolve("runner", runner))
    output.show_object(revoked, as_json=as_json)
    if not as_json:
        requeued, ended = revoked.get("requeuedOrderIds", []), revoked.get("endedOrderIds", [])
        output.notice(f"Runner revoked: {len(requeued)} order(s) requeued, {len(ended)} ended.")


@app.command("rotate-token")
def rotate_token(
    runner: RunnerArgument,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give the runner a new token (printed once); the old one is refused at once."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        rotated = client.rotate_runner_token(client.resolve("runner", runner))
    output.show_object(rotated, as_json=as_json, skip=["token"])
    if not as_json:
        # alone on its line, as `runners create` prints it, so it can be copied or piped as is
        typer.echo(f"\ntoken: {rotated['token']}")
    output.notice("Save this runner token now and give it to the runner: it will not be shown again.")


@app.command("delete")
def delete_runner(
    runner: RunnerArgument,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a runner no order ever referred to (a used one: revoke it). Prints nothing with --json."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        runner_id = client.resolve("runner", runner)
        client.delete_runner(runner_id)
    if not as_json:
        typer.echo(
            f"deleted runner {runner} ({runner_id})" if runner != runner_id else f"deleted runner {runner_id}"
        )
