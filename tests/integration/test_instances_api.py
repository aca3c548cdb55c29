"""The instance routes through the real app (middlewares, policy table, error shape) on SQLite and
PostgreSQL, with the Mock provider booting at once (IKOMA_MOCK_BOOT_SECONDS=0) and the worker enrolment
done over `/internal/worker/*` as the seed's worker does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from ikoma.providers.mock.adapter import MockProvider
from ikoma.providers.mock.user_data import read_enrolment
from ikoma.storage.tables_cloud import instance_types, models, zones
from tests.integration.auth_helpers import Console, console_app


async def _ids(console: Console) -> dict[str, str]:
    async with console.ctx.db.read() as tx:
        zone = (await tx.execute(select(zones.c.id).where(zones.c.code == "mock-par-1"))).scalar_one()
        kind = (
            await tx.execute(select(instance_types.c.id).where(instance_types.c.code == "MOCK-GPU-S"))
        ).scalar_one()
        model = (
            await tx.execute(select(models.c.id).where(models.c.name == "Qwen/Qwen2.5-0.5B-Instruct"))
        ).scalar_one()
    return {"instance_type_id": str(kind), "zone_id": str(zone), "model_id": str(model)}


async def _bootstrap_token(console: Console, instance: dict[str, Any]) -> str:
    provider = console.ctx.providers["mock"]
    assert isinstance(provider, MockProvider)
    machine = next(m for m in await provider.cloud.tick() if m.id == instance["providerId"])
    return read_enrolment(machine.user_data or "").bootstrap_token


def _reason(answer: httpx.Response) -> str:
    return str(answer.json()["reason"])


async def test_deploy_enrol_ready_and_delete_through_the_api(database_url: str, tmp_path: Path) -> None:
    async with (
        console_app(database_url, tmp_path, IKOMA_MOCK_BOOT_SECONDS=0) as console,
        console.keyed() as api,
    ):
        ids = await _ids(console)
        for missing in ("instance_type_id", "zone_id", "model_id"):
            refused = await api.post("/deployments", json={k: v for k, v in ids.items() if k != missing})
            assert refused.status_code == 422, refused.text
            assert _reason(refused) == f"{missing}_required"
        unknown = await api.post(
            "/deployments", json={**ids, "model_id": "00000000-0000-4000-8000-000000000000"}
        )
        assert (unknown.status_code, _reason(unknown)) == (422, "model_not_found")
        observer = await api.post("/deployments", json=ids, headers={"x-role": "observer"})
        assert observer.status_code == 403

        created = await api.post("/deployments", json={**ids, "name": "gpu-api"})
        assert created.status_code == 201, created.text
        instance = created.json()
        assert (instance["state"], instance["name"], instance["hourlyPriceEur"]) == (
            "booting",
            "gpu-api",
            "0.25",
        )
        token = await _bootstrap_token(console, instance)

        async with console.client() as worker:
            wrong = await worker.post(
                "/internal/worker/register",
                json={"instance_id": "00000000-0000-4000-8000-000000000000"},
                headers={"authorization": f"Bearer {token}"},
            )
            assert (wrong.status_code, _reason(wrong)) == (409, "instance_mismatch")
            unauthenticated = await worker.post("/internal/worker/register", json={})
            assert unauthenticated.status_code == 401
            registered = await worker.post(
                "/internal/worker/register",
                json={"instance_id": instance["id"], "hostname": "vm-1"},
                headers={"authorization": f"Bearer {token}"},
            )
            assert registered.status_code == 201, registered.text
            again = await worker.post(
                "/internal/worker/register", json={}, headers={"authorization": f"Bearer {token}"}
            )
            assert again.status_code == 401  # one-time
            runner_token = registered.json()["token"]
            bad = await worker.post(
                "/internal/worker/heartbeat",
                json={"instance_id": instance["id"]},
                headers={"authorization": "Bearer ikr_not-the-token"},
            )
            assert bad.status_code == 401
            beat = await worker.post(
                "/internal/worker/heartbeat",
                json={"instance_id": instance["id"]},
                headers={"authorization": f"Bearer {runner_token}"},
            )
            assert beat.status_code == 200, beat.text
            assert beat.json()["instanceId"] == instance["id"]

        reconciled = await api.post("/reconcile")
        assert reconciled.status_code == 200, reconciled.text
        assert reconciled.json()["done"].get("health_ready") == 1
        shown = (await api.get(f"/instances/{instance['id']}")).json()
        assert shown["state"] == "ready"
        assert [h["toState"] for h in shown["history"]] == ["provisioning", "booting", "ready"]
        assert (await api.get("/instances", headers={"x-role": "observer"})).status_code == 200

        early = await api.put(f"/instances/{instance['id']}/archive")
        assert (early.status_code, _reason(early)) == (409, "instance_not_terminated")
        deleted = await api.delete(f"/instances/{instance['id']}")
        assert (deleted.status_code, deleted.json()["state"]) == (202, "terminating")
        missing = await api.get("/instances/00000000-0000-4000-8000-000000000000")
        assert (missing.status_code, _reason(missing)) == (404, "instance_not_found")

        types = (await api.get("/action_types")).json()["items"]
        assert {"provider.create", "provider.terminate", "provider.adopt", "provider.orphan_found"} <= {
            t["type"] for t in types
        }
        assert all(t["label"] and t["color"] and t["icon"] for t in types)
        logged = (await api.get("/action_logs", params={"channel": "system"})).json()["items"]
        # newest first: the provider's create, and every state move of the instance
        assert [e["action"] for e in logged] == [
            "instance.terminating",
            "instance.ready",
            "provider.create",
            "instance.booting",
            "instance.provisioning",
        ]
        assert "instance." in {t["type"] for t in types}
