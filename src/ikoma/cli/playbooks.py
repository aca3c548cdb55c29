"""`ikoma playbooks`: list and declare the playbooks orders can run."""

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from ikoma.cli import output
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiUrlOption, without_unset
from ikoma.cli.output import Column, JsonOption, WideOption

app = typer.Typer(help="Manage playbooks: the actions orders can run.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("key", "KEY"),
    ("name", "NAME"),
    ("minRole", "MIN ROLE"),
    ("destructive", "DESTRUCTIVE"),
    ("maxAttempts", "MAX ATTEMPTS"),
    ("defaultTimeoutSeconds", "TIMEOUT (S)"),
    ("builtin", "BUILTIN"),
]


class Role(StrEnum):
    OBSERVER = "observer"
    BUILDER = "builder"
    OPERATOR = "operator"
    ADMIN = "admin"


def read_params_schema(path: Path) -> dict[str, Any]:
    """The JSON schema object stored in `path`."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        message = f"cannot read a JSON schema from {path}: {exc}"
        raise typer.BadParameter(message, param_hint="--params-schema") from exc
    if not isinstance(schema, dict):
        raise typer.BadParameter(f"{path} must hold a JSON object", param_hint="--params-schema")
    return schema


@app.command("list")
def list_playbooks(
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """List every playbook, built-in ones included."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.list_playbooks()
    output.show_list(found, COLUMNS, as_json=as_json, empty="no playbooks", wide=wide)


@app.command("create")
def create_playbook(
    key: Annotated[str, typer.Argument(help="Unique dotted key, e.g. system.reboot.", show_default=False)],
    name: Annotated[str | None, typer.Option("--name", help="Human name.")] = None,
    description: Annotated[str | None, typer.Option("--description", help="What it does.")] = None,
    max_attempts: Annotated[
        int | None,
        typer.Option("--max-attempts", min=1, max=20, help="Claims allowed per order (API default 1)."),
    ] = None,
    timeout: Annotated[
        int | None,
        typer.Option(
            "--timeout", min=1, max=86400, help="Default order timeout in seconds (API default 3600)."
        ),
    ] = None,
    min_role: Annotated[
        Role | None,
        typer.Option("--min-role", help="Lowest role allowed to order it (API default operator)."),
    ] = None,
    destructive: Annotated[
        bool, typer.Option("--destructive", help="Mark it as changing the server.")
    ] = False,
    params_schema: Annotated[
        Path | None,
        typer.Option("--params-schema", metavar="FILE", help="JSON schema file for the order params."),
    ] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Declare a playbook."""
    fields = without_unset(
        key=key,
        name=name,
        description=description,
        maxAttempts=max_attempts,
        defaultTimeoutSeconds=timeout,
        minRole=min_role.value if min_role else None,
        destructive=destructive or None,
        paramsSchema=read_params_schema(params_schema) if params_schema else None,
    )
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.create_playbook(fields), as_json=as_json)


# YAML keys a playbook file may use, mapped to the API's fields (the file reads like the API, plus
# `params`/`required` as a shorthand for the JSON schema's properties and required list).
PLAYBOOK_FILE_KEYS = {
    "key",
    "name",
    "description",
    "paramsSchema",
    "minRole",
    "destructive",
    "defaultTimeoutSeconds",
    "maxAttempts",
    "steps",
    "params",
    "required",
}


def read_playbook_file(path: Path) -> dict[str, Any]:
    """A declarative playbook from YAML, as the body of `PUT /v1/playbooks/:key`."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must hold a mapping with key, steps, …")
    unknown = sorted(set(data) - PLAYBOOK_FILE_KEYS)
    if unknown:
        raise typer.BadParameter(f"{path}: unknown keys {', '.join(unknown)}")
    body = {k: v for k, v in data.items() if k not in ("params", "required")}
    if "params" in data or "required" in data:
        if "paramsSchema" in data:
            raise typer.BadParameter(f"{path}: give either params/required or paramsSchema, not both")
        body["paramsSchema"] = {
            "type": "object",
            "additionalProperties": False,
            "properties": data.get("params") or {},
            "required": data.get("required") or [],
        }
    return body


@app.command("apply")
def apply_playbook(
    file: Annotated[Path, typer.Argument(help="YAML playbook definition.", show_default=False)],
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register or update a declarative playbook from a YAML file (errors name the offending path)."""
    body = read_playbook_file(file)
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.apply_playbook(body), as_json=as_json)
