"""`ikoma instances`: deploy an instance at a provider, watch it boot, list, show, delete and archive.

    ikoma instances create --type MOCK-GPU-S --zone mock-par-1 --model Qwen/Qwen2.5-0.5B-Instruct
    ikoma instances list
    ikoma instances delete <id>

Types, zones and models are named by their catalog code (or name, for models) or id; `create` and
`delete` follow the instance's state with a spinner until it settles (`--no-wait`: answer at once).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from ikoma.cli import output
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiError, ApiUrlOption, JsonObject
from ikoma.cli.output import Column, JsonOption

app = typer.Typer(help="Deploy and manage cloud instances (issue 16).", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("name", "NAME"),
    ("state", "STATE"),
    ("provider", "PROVIDER"),
    ("zone", "ZONE"),
    ("instanceType", "TYPE"),
    ("hourlyPriceEur", "EUR/H"),
    ("publicIp", "IP"),
    ("createdAt", "CREATED"),
]
# states an instance rests in; `create --wait` stops at the first of them, `delete --wait` at terminated
SETTLED = {"ready", "failed", "terminated", "orphaned", "unreachable"}
InstanceArgument = Annotated[
    str, typer.Argument(help="The instance's id or the start of it.", show_default=False)
]
WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the state until it settles.")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds to wait at most.")]


class InstanceClient(AdminClient):
    def deploy(self, fields: JsonObject) -> JsonObject:
        return self._object("POST", "/deployments", json=fields)

    def instances(self, *, archived: bool | None = False) -> list[JsonObject]:
        params = {} if archived is None else {"archived": str(archived).lower()}
        return self._list("GET", "/instances", params=params)

    def instance(self, instance_id: str) -> JsonObject:
        return self._object("GET", f"/instances/{instance_id}")

    def terminate(self, instance_id: str) -> JsonObject:
        return self._object("DELETE", f"/instances/{instance_id}")

    def archive(self, instance_id: str) -> JsonObject:
        return self._object("PUT", f"/instances/{instance_id}/archive")

    def catalog_id(self, path: str, ref: str, *keys: str) -> str:
        """The id of the catalog row whose id or one of `keys` (code, name) is `ref`."""
        rows = self._list("GET", path)
        for row in rows:
            if ref == row.get("id") or any(ref == row.get(k) for k in keys):
                return str(row["id"])
        raise ApiError(404, "not_found", f"nothing in {path} is named {ref!r}")

    def instance_id(self, ref: str) -> str:
        matches = [i["id"] for i in self.instances(archived=None) if str(i["id"]).startswith(ref)]
        if len(matches) != 1:
            reason = "instance_not_found" if not matches else "ambiguous_id"
            raise ApiError(404 if not matches else 409, reason, f"{len(matches)} instances match {ref!r}")
        return str(matches[0])


def _follow(client: InstanceClient, instance: JsonObject, until: set[str], timeout: float) -> JsonObject:
    """Poll the instance (once a second) with a spinner naming its state, until a state of `until`."""
    deadline = time.monotonic() + timeout
    with output.live_status(f"{instance['name']}: {instance['state']}") as status:
        while instance["state"] not in until and time.monotonic() < deadline:
            time.sleep(1.0)
            instance = client.instance(str(instance["id"]))
            status.update(f"{instance['name']}: {instance['state']}")
    if instance["state"] not in until:
        output.notice(f"still {instance['state']} after {timeout:g} s; `ikoma instances show` follows it")
    return instance


def _shown(instance: JsonObject) -> dict[str, Any]:
    return {k: v for k, v in instance.items() if k != "history"}


@app.command("create")
def create_instance(
    instance_type: Annotated[
        str, typer.Option("--type", help="Instance type code or id.", show_default=False)
    ],
    zone: Annotated[str, typer.Option("--zone", help="Zone code or id.", show_default=False)],
    model: Annotated[str, typer.Option("--model", help="Model name or id.", show_default=False)],
    name: Annotated[str | None, typer.Option("--name", help="The instance's name.")] = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 900.0,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy an instance (POST /deployments) and follow it until it is ready (or failed)."""
    with output.api_errors(as_json), InstanceClient(api_url, admin_key) as client:
        fields: JsonObject = {
            "instance_type_id": client.catalog_id("/instance_types", instance_type, "code"),
            "zone_id": client.catalog_id("/zones", zone, "code"),
            "model_id": client.catalog_id("/models", model, "name"),
        }
        if name:
            fields["name"] = name
        instance = client.deploy(fields)
        if wait and not as_json:
            instance = _follow(client, instance, SETTLED, timeout)
    output.show_object(_shown(instance), as_json=as_json)
    if instance["state"] == "failed":
        raise typer.Exit(code=1)


@app.command("list")
def list_instances(
    archived: Annotated[bool, typer.Option("--archived", help="Archived instances instead.")] = False,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: output.WideOption = False,
) -> None:
    """List instances (not archived ones unless --archived), newest first."""
    with output.api_errors(as_json), InstanceClient(api_url, admin_key) as client:
        found = client.instances(archived=archived)
    output.show_list(found, COLUMNS, as_json=as_json, empty="no instances", wide=wide)


@app.command("show")
def show_instance(
    instance: InstanceArgument,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """One instance and its state history."""
    with output.api_errors(as_json), InstanceClient(api_url, admin_key) as client:
        found = client.instance(client.instance_id(instance))
    output.show_object(_shown(found), as_json=as_json)
    if not as_json:
        output.show_heading("history")
        history: list[dict[str, Any]] = found.get("history") or []
        output.show_list(
            history,
            [("at", "AT"), ("fromState", "FROM"), ("toState", "TO"), ("reason", "REASON")],
            as_json=False,
            empty="no changes",
        )


@app.command("delete")
def delete_instance(
    instance: InstanceArgument,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Terminate an instance at its provider (DELETE /instances/{id}) and follow it until terminated."""
    with output.api_errors(as_json), InstanceClient(api_url, admin_key) as client:
        found = client.terminate(client.instance_id(instance))
        if wait and not as_json:
            found = _follow(client, found, {"terminated"}, timeout)
    output.show_object(_shown(found), as_json=as_json)


@app.command("archive")
def archive_instance(
    instance: InstanceArgument,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a terminated instance out of the default list."""
    with output.api_errors(as_json), InstanceClient(api_url, admin_key) as client:
        found = client.archive(client.instance_id(instance))
    output.show_object(_shown(found), as_json=as_json)
