"""`ikoma catalog`: what the providers sell (instance types, zones, EUR prices), the models, and a sync."""

from decimal import Decimal
from typing import Annotated, Any

import typer

from ikoma.cli import output
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiUrlOption, JsonObject
from ikoma.cli.output import Column, JsonOption, WideOption

app = typer.Typer(
    help="The catalog: providers' instance types, zones and prices; models; sync.", no_args_is_help=True
)

MIB_PER_GIB = 1024
TYPE_COLUMNS: list[Column] = [
    ("providerCode", "PROVIDER"),
    ("code", "TYPE"),
    ("vcpus", "VCPU"),
    ("ram", "RAM"),
    ("gpu", "GPU"),
    ("hourlyPriceEur", "EUR/H"),
    ("zones", "DEPLOYABLE IN"),
    ("state", "STATE"),
    ("id", "ID"),
]
MODEL_COLUMNS: list[Column] = [
    ("name", "MODEL"),
    ("gpuMemory", "GPU MEMORY"),
    ("serving", "SERVING"),
    ("enabled", "ENABLED"),
    ("id", "ID"),
]
SYNC_COLUMNS: list[Column] = [
    ("provider", "PROVIDER"),
    ("offers", "OFFERS"),
    ("added", "ADDED"),
    ("updated", "UPDATED"),
    ("unavailable", "UNAVAILABLE"),
    ("unchanged", "UNCHANGED"),
    ("zonesAdded", "NEW ZONES"),
    ("rejected", "REJECTED"),
]
ProviderOption = Annotated[
    str | None, typer.Option("--provider", "-p", help="Only this provider (`mock`, `scaleway`).")
]


def _gib(mib: int | None) -> str:
    if mib is None:
        return "-"
    gib = Decimal(mib) / MIB_PER_GIB
    return f"{gib.normalize():f} GiB"


def _type_row(kind: JsonObject) -> JsonObject:
    """A type as a table shows it: sizes in GiB, GPUs as `2x L4 (24 GiB)`, one word for its state."""
    gpus = kind["gpuCount"]
    gpu = f"{gpus}x {kind['gpuModel'] or 'GPU'} ({_gib(kind['gpuMemoryMb'])})" if gpus else "-"
    if not kind["available"]:
        state = "unavailable"
    elif not kind["providerEnabled"]:
        state = "provider off"
    elif not kind["enabled"]:
        state = "disabled"
    else:
        state = "offered" if kind["zones"] else "no zone"
    return {**kind, "ram": _gib(kind["ramMb"]), "gpu": gpu, "state": state}


@app.command("list")
def list_types(
    provider: ProviderOption = None,
    zone: Annotated[str | None, typer.Option(help="Only types deployable in this zone (its code).")] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """List instance types: sizes, GPUs, the hourly price in EUR, where each can be deployed now."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.list_instance_types(provider)
    if zone is not None:
        found = [kind for kind in found if zone in kind["zones"]]
    rows: list[dict[str, Any]] = found if as_json else [_type_row(kind) for kind in found]
    output.show_list(rows, TYPE_COLUMNS, as_json=as_json, empty="no instance types", wide=wide)


@app.command("models")
def list_models(
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """List the models a deployment may name, with the GPU memory each needs."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.list_models()
    rows = found if as_json else [{**m, "gpuMemory": _gib(m["gpuMemoryMb"])} for m in found]
    output.show_list(rows, MODEL_COLUMNS, as_json=as_json, empty="no models", wide=wide)


@app.command("add-model")
def add_model(
    name: Annotated[str, typer.Argument(help="Hugging Face id, e.g. Qwen/Qwen2.5-0.5B-Instruct.")],
    gpu_memory_mb: Annotated[int, typer.Option(help="GPU memory it needs in all, in MiB (0: no GPU).")],
    serving: Annotated[str, typer.Option(help="How a worker serves it: vllm or mock.")] = "vllm",
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a model to the catalog (admin)."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        created = client.create_model({"name": name, "gpuMemoryMb": gpu_memory_mb, "serving": serving})
    output.show_object(created, as_json=as_json)


@app.command("sync")
def sync_catalog(
    provider: ProviderOption = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Refresh the catalog from what the providers sell now (admin): types added, updated, no longer sold."""
    with (
        output.api_errors(as_json),
        AdminClient(api_url, admin_key) as client,
        output.live_status("asking the providers for their offers"),
    ):
        answer = client.sync_catalog(provider)
    if as_json:
        output.print_json(answer)
        return
    rows = [{**p, "rejected": len(p["rejected"])} for p in answer["providers"]]
    output.show_list(rows, SYNC_COLUMNS, as_json=False, empty="no provider is configured")
    for result in answer["providers"]:
        for rejected in result["rejected"]:
            output.notice(f"{result['provider']}: offer {rejected['offer']} skipped ({rejected['reason']})")
