"""The catalog routes and CLI on SQLite and PostgreSQL: camelCase answers with prices as text, changes
validated with stable reasons, who may read, change and sync, and `ikoma catalog` against a real server.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from ikoma.cli.main import app as cli
from ikoma.providers.base import ProviderError
from ikoma.services import catalog_seed
from tests import support
from tests.integration.catalog_helpers import OffersOnly, by_code
from tests.integration.inprocess_api import as_client, running_app


# --- over HTTP: validation with stable reasons, and roles -----------------------------------------------
async def client_token(client: httpx.AsyncClient, role: str) -> str:
    answer = await client.post("/v1/api-clients", json={"name": f"catalog-{role}", "role": role})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


async def test_routes_answer_the_catalog_in_camel_case_with_prices_as_text(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(database_url, tmp_path) as (client, _ctx):
        mock = by_code((await client.get("/providers")).json())["mock"]
        assert (mock["enabled"], mock["configured"]) == (True, True)
        assert {"createdAt", "updatedAt"} <= mock.keys()
        kinds = by_code((await client.get("/instance_types", params={"provider": "mock"})).json())
        gpu = kinds["MOCK-GPU-S"]
        assert (gpu["hourlyPriceEur"], gpu["ramMb"], gpu["gpuMemoryMb"], gpu["providerCode"]) == (
            "0.25",
            32768,
            24576,
            "mock",
        )
        zone = by_code(
            (await client.get("/zones", params={"provider": "mock", "region": "mock-par"})).json()
        )["mock-par-1"]
        assert zone["regionCode"] == "mock-par"
        in_zone = (await client.get(f"/zones/{zone['id']}/instance_types")).json()
        assert [t["code"] for t in in_zone] == ["MOCK-CPU-S", "MOCK-GPU-S"]
        listed = (await client.get(f"/zones/{zone['id']}/instance_types", params={"all": "true"})).json()
        assert [(t["code"], t["zoneAvailable"]) for t in listed] == [
            ("MOCK-CPU-S", True),
            ("MOCK-GPU-M", False),
            ("MOCK-GPU-S", True),
        ]
        where = (await client.get(f"/instance_types/{gpu['id']}/zones")).json()
        assert [(z["zoneCode"], z["available"], z["enabled"]) for z in where] == [
            ("mock-par-1", True, True),
            ("mock-par-2", True, True),
        ]
        assert [
            r["code"] for r in (await client.get("/regions", params={"provider": "scaleway"})).json()
        ] == [
            "fr-par",
            "nl-ams",
            "pl-waw",
        ]
        assert (await client.get("/instance_types", params={"available": "false"})).json() == []
        qwen = next(
            m for m in (await client.get("/models")).json() if m["name"] == "Qwen/Qwen2.5-0.5B-Instruct"
        )
        assert (qwen["gpuMemoryMb"], qwen["serving"]) == (2048, "vllm")
        assert (await client.get(f"/models/{qwen['id']}")).json() == qwen


async def test_changes_are_validated_with_stable_reasons(database_url: str, tmp_path: Path) -> None:
    async with running_app(database_url, tmp_path) as (client, _ctx):
        gpu = by_code((await client.get("/instance_types", params={"provider": "mock"})).json())["MOCK-GPU-S"]
        path = f"/instance_types/{gpu['id']}"
        for bad in ("-1", "abc", "0.1234567", "1000000", True):
            refused = await client.put(path, json={"hourlyPriceEur": bad})
            assert (refused.status_code, refused.json()["reason"]) == (422, "invalid_price"), bad
        refused = await client.put(path, json={"name": "  "})
        assert (refused.status_code, refused.json()["reason"]) == (422, "invalid_name")
        refused = await client.put(path, json={"enabled": None})
        assert refused.status_code == 422
        changed = await client.put(path, json={"hourlyPriceEur": 0.3, "name": "Small GPU", "enabled": False})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["hourlyPriceEur"], changed.json()["name"], changed.json()["enabled"]) == (
            "0.30",
            "Small GPU",
            False,
        )
        exact = await client.put(path, json={"hourlyPriceEur": "0.123456"})
        assert exact.json()["hourlyPriceEur"] == "0.123456"

        missing = await client.put(
            "/instance_types/00000000-0000-0000-0000-000000000000", json={"enabled": True}
        )
        assert (missing.status_code, missing.json()["reason"]) == (404, "instance_type_not_found")
        for path_name in ("providers", "regions", "zones"):
            gone = await client.put(
                f"/{path_name}/00000000-0000-0000-0000-000000000000", json={"enabled": True}
            )
            assert (gone.status_code, gone.json()["reason"]) == (404, f"{path_name[:-1]}_not_found")

        paris = by_code((await client.get("/zones", params={"provider": "scaleway"})).json())["fr-par-2"]
        other = await client.put(f"{path}/zones", json={"zoneIds": [paris["id"]]})
        assert (other.status_code, other.json()["reason"]) == (422, "zone_of_other_provider")
        unknown = await client.put(
            f"{path}/zones", json={"zoneIds": ["00000000-0000-0000-0000-000000000000"]}
        )
        assert (unknown.status_code, unknown.json()["reason"]) == (422, "zone_not_found")
        mock_zones = by_code((await client.get("/zones", params={"provider": "mock"})).json())
        only = await client.put(f"{path}/zones", json={"zoneIds": [mock_zones["mock-par-2"]["id"]]})
        assert [(z["zoneCode"], z["enabled"]) for z in only.json()] == [
            ("mock-par-1", False),
            ("mock-par-2", True),
        ]

        for body, reason in (
            ({"name": "not a model", "gpuMemoryMb": 1, "serving": "vllm"}, "invalid_model_name"),
            ({"name": "org/m", "gpuMemoryMb": -1, "serving": "vllm"}, "invalid_gpu_memory"),
            ({"name": "org/m", "gpuMemoryMb": 1, "serving": "docker"}, "invalid_serving"),
        ):
            refused = await client.post("/models", json=body)
            assert (refused.status_code, refused.json()["reason"]) == (422, reason)
        created = await client.post(
            "/models",
            json={"name": "org/m-1B", "gpuMemoryMb": 4096, "serving": "mock", "parameters": {"a": 1}},
        )
        assert created.status_code == 201, created.text
        assert {
            k: created.json()[k] for k in ("name", "gpuMemoryMb", "serving", "parameters", "enabled")
        } == {
            "name": "org/m-1B",
            "gpuMemoryMb": 4096,
            "serving": "mock",
            "parameters": {"a": 1},
            "enabled": True,
        }
        twice = await client.post("/models", json={"name": "org/m-1B", "gpuMemoryMb": 1, "serving": "mock"})
        assert (twice.status_code, twice.json()["reason"]) == (409, "model_exists")


async def test_everyone_reads_the_catalog_and_only_admins_change_or_sync_it(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(database_url, tmp_path) as (client, ctx):
        ctx.providers.clear()
        ctx.providers["mock"] = OffersOnly("mock", list(catalog_seed.MOCK_OFFERS))
        mock = by_code((await client.get("/providers")).json())["mock"]
        gpu = by_code((await client.get("/instance_types")).json())["MOCK-GPU-S"]
        zone = by_code((await client.get("/zones")).json())["mock-par-1"]
        region = by_code((await client.get("/regions")).json())["mock-par"]
        changes = [
            ("PUT", f"/providers/{mock['id']}", {"name": "Mock"}),
            ("PUT", f"/regions/{region['id']}", {"name": "Mock Paris"}),
            ("PUT", f"/zones/{zone['id']}", {"enabled": True}),
            ("PUT", f"/instance_types/{gpu['id']}", {"enabled": True}),
            ("PUT", f"/instance_types/{gpu['id']}/zones", {"zoneIds": [zone["id"]]}),
            ("POST", "/models", {"name": "org/roles", "gpuMemoryMb": 0, "serving": "mock"}),
            ("POST", "/catalog/sync", {"provider": "mock"}),
        ]
        reads = [
            "/providers",
            "/regions",
            "/zones",
            f"/zones/{zone['id']}/instance_types",
            "/instance_types",
            f"/instance_types/{gpu['id']}",
            f"/instance_types/{gpu['id']}/zones",
            "/models",
        ]
        for role in ("observer", "operator"):
            async with as_client(client, await client_token(client, role)) as caller:
                for path in reads:
                    assert (await caller.get(path)).status_code == 200, (role, path)
                for method, path, body in changes:
                    refused = await caller.request(method, path, json=body)
                    assert (refused.status_code, refused.json()["reason"]) == (403, "forbidden"), (role, path)
        async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as anonymous:
            assert (await anonymous.get("/providers")).status_code == 401
        async with as_client(client, await client_token(client, "admin")) as admin:
            for method, path, body in changes:
                answer = await admin.request(method, path, json=body)
                assert answer.status_code in (200, 201), (path, answer.text)
        audited = (await client.get("/action_logs", params={"action": "PUT /instance_types"})).json()["items"]
        assert {(e["outcome"], e["role"]) for e in audited} >= {("denied", "observer"), ("allowed", "admin")}


async def test_sync_route_answers_counts_and_refuses_an_unconfigured_provider(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(database_url, tmp_path) as (client, ctx):
        ctx.providers.clear()
        gone = [o for o in catalog_seed.MOCK_OFFERS if o.instance_type != "MOCK-GPU-M"]
        ctx.providers["mock"] = OffersOnly("mock", [*gone, replace(gone[0], instance_type="MOCK-NEW")])
        answer = await client.post("/catalog/sync")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["added"], body["updated"], body["unavailable"]) == (1, 0, 1)
        assert [
            (p["provider"], p["unchanged"], p["zonesAdded"], p["rejected"]) for p in body["providers"]
        ] == [("mock", 2, 0, [])]
        refused = await client.post("/catalog/sync", json={"provider": "scaleway"})
        assert (refused.status_code, refused.json()["reason"]) == (422, "provider_not_configured")
        ctx.providers["mock"] = OffersOnly(
            "mock", failure=ProviderError("down", reason="provider_timeout", retryable=True)
        )
        failed = await client.post("/catalog/sync", json={"provider": "mock"})
        assert (failed.status_code, failed.json()["reason"]) == (502, "provider_timeout")


async def test_syncing_the_real_mock_provider_finds_the_seed_as_it_is(
    database_url: str, tmp_path: Path
) -> None:
    """The Mock adapter (providers/mock) sells what the seed lists: a fresh install's sync changes nothing."""
    async with running_app(database_url, tmp_path) as (client, ctx):
        assert "mock" in ctx.providers
        answer = await client.post("/catalog/sync", json={"provider": "mock"})
        assert answer.status_code == 200, answer.text
        [mock] = answer.json()["providers"]
        assert (
            mock["added"],
            mock["updated"],
            mock["unavailable"],
            mock["zonesAdded"],
            mock["rejected"],
        ) == (
            0,
            0,
            0,
            0,
            [],
        )
        assert mock["unchanged"] == len({o.instance_type for o in catalog_seed.MOCK_OFFERS})


# --- the CLI against a real server ----------------------------------------------------------------------
def test_cli_lists_types_and_models_syncs_and_adds_a_model(shared_server: support.LiveServer) -> None:
    env = {"IKOMA_API_URL": shared_server.url, "IKOMA_ADMIN_KEY": shared_server.admin_key, "COLUMNS": "200"}

    def ikoma(*args: str) -> Any:
        return CliRunner().invoke(cli, ["catalog", *args], env={**env, "NO_COLOR": "1"})

    listed = ikoma("list", "--provider", "mock", "--json")
    assert listed.exit_code == 0, listed.output
    assert sorted(t["code"] for t in json.loads(listed.stdout)) == ["MOCK-CPU-S", "MOCK-GPU-M", "MOCK-GPU-S"]
    table = ikoma("list", "--zone", "mock-par-1")
    assert table.exit_code == 0, table.output
    gpu_line = next(line for line in table.stdout.splitlines() if "MOCK-GPU-S" in line)
    assert "1x Mock L4 (24 GiB)" in gpu_line
    assert "0.25" in gpu_line
    assert "MOCK-GPU-M" not in table.stdout  # listed in mock-par-1 but sold out there
    assert "provider off" in ikoma("list", "--provider", "scaleway").stdout  # no credentials here
    models = ikoma("models")
    assert "Qwen/Qwen2.5-0.5B-Instruct" in models.stdout
    synced = ikoma("sync", "--json")
    assert synced.exit_code == 0, synced.output
    assert [(p["provider"], p["added"]) for p in json.loads(synced.stdout)["providers"]] == [("mock", 0)]
    refused = ikoma("sync", "--provider", "nowhere")
    assert refused.exit_code == 1
    assert "provider_not_configured" in refused.output
    name = f"org/cli-{uuid.uuid4().hex[:8]}"
    added = ikoma("add-model", name, "--gpu-memory-mb", "0", "--serving", "mock", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["name"] == name
