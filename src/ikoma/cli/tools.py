"""`ikoma tools`: the operations tools of the seed 001 runbook, from a terminal (`POST /execute/<tool>`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ikoma.cli import output
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiError, ApiUrlOption, JsonObject
from ikoma.cli.orders import parse_params
from ikoma.cli.output import Column, JsonOption

app = typer.Typer(help="Run operations tools (apps, deploys, databases) and wait for their answer.")

# Exit codes of `run`: 0 the tool answered, 1 it failed or was refused, 3 still running at --wait.
EXIT_STILL_RUNNING = 3

COLUMNS: list[Column] = [
    ("key", "TOOL"),
    ("minRole", "ROLE"),
    ("destructive", "DESTRUCTIVE"),
    ("readOnly", "READ-ONLY"),
    ("allowed", "ALLOWED"),
    ("description", "DESCRIPTION"),
]


@app.command("list")
def list_tools(
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """The tools, the role each needs, and whether this key may run it."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        tools = client.list_tools()
    output.show_list(tools, COLUMNS, as_json=as_json, empty="no tools")


def read_param_files(pairs: list[str]) -> dict[str, str]:
    """`KEY=PATH` pairs as params whose value is the file's text (`--param-file sql=001_init.sql`)."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, path = pair.partition("=")
        if not sep or not key or not path:
            raise typer.BadParameter(f"expected KEY=PATH, got {pair!r}", param_hint="--param-file")
        try:
            params[key] = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {path}: {exc.strerror}", param_hint="--param-file"
            ) from None
    return params


def show_result(result: JsonObject) -> None:
    """A text answer (`apps.env.example`'s template) as it is, anything else as a key/value table."""
    if set(result) == {"result"} and isinstance(result["result"], str):
        typer.echo(result["result"], nl=not result["result"].endswith("\n"))
        return
    output.show_object(result, as_json=False)


@app.command("run")
def run_tool(
    tool: Annotated[str, typer.Argument(help="Tool name, e.g. apps.health (see `ikoma tools list`).")],
    app_name: Annotated[str | None, typer.Option("--app", help="The app (param appName).")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="KEY=VALUE", help="Param; VALUE is read as JSON when it parses."),
    ] = None,
    param_file: Annotated[
        list[str] | None,
        typer.Option("--param-file", metavar="KEY=PATH", help="Param whose value is a file's text."),
    ] = None,
    confirm: Annotated[
        str | None, typer.Option("--confirm", help="Destructive tools: the app's name, typed again.")
    ] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="Server id or name (default: the API's default server).")
    ] = None,
    wait: Annotated[
        float | None, typer.Option("--wait", min=0, help="Seconds to wait for the answer (API cap: 300).")
    ] = None,
    role: Annotated[
        str | None, typer.Option("--role", help="Act with a lower role than the key's (X-Role).")
    ] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a tool on a server and print its answer.

    Exits 0 with the tool's result, 1 when it failed or was refused, 3 when it was still running at
    --wait (the order id is printed; follow it with `ikoma orders show`).
    """
    params: dict[str, Any] = parse_params(param or [])
    params.update(read_param_files(param_file or []))
    if app_name is not None:
        params["appName"] = app_name
    if confirm is not None:
        params["confirm"] = confirm
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        status, body = client.execute_tool(tool, params, server=server, wait=wait, role=role)
    if status == 202:
        if as_json:
            output.print_json(body)
        message = (
            f"{tool} is still {body['status']}: order {body['orderId']} (ikoma orders show {body['orderId']})"
        )
        output.print_error(ApiError(0, "still_running", message), as_json=as_json)
        raise typer.Exit(EXIT_STILL_RUNNING)
    if as_json:
        output.print_json(body)
    else:
        show_result(body)
