"""The catalog's seed: the Mock provider (so a fresh `ikoma up` can deploy at once), Scaleway, and models.

Applied at every start (api/app.py lifespan) and safe to re-run: each row is inserted only when its
natural key (provider code; provider + region, zone or type code; type + zone; model name) is absent
(`INSERT … ON CONFLICT DO NOTHING`), so an admin's later changes (a disabled zone, a renamed provider)
are never undone, and replicas starting together insert each row once (PostgreSQL: they also queue on
the catalog's advisory lock). A provider is seeded enabled only when it is configured (Mock unless
`IKOMA_PROVIDER_MOCK=0`; Scaleway once its secret key is set): after that, enabling it is the admin's
call (`PUT /providers/{id}`).

The Mock provider's offers are `MOCK_OFFERS`: the Mock adapter (providers/mock) sells exactly these, so a
sync of `mock` finds the seed unchanged. Scaleway's rows are its public EUR list prices (2025) for a
handful of CPU and GPU types; where each type is sold is indicative: a sync with credentials replaces it
with what the Instance API answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from ikoma.providers.base import Offer
from ikoma.services.catalog import insert_for, lock_catalog
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables_cloud import instance_type_zones, instance_types, models, providers, regions, zones

GIB = 1024  # MiB


@dataclass(frozen=True)
class SeedProvider:
    code: str
    name: str
    description: str
    regions: Mapping[str, str]  # region code → name
    zones: Mapping[str, tuple[str, str]]  # zone code → (region code, name)
    offers: tuple[Offer, ...]


@dataclass(frozen=True)
class SeedModel:
    name: str  # Hugging Face id
    gpu_memory_mb: int
    serving: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


def _offers(
    region_of: Mapping[str, str],
    types: list[tuple[str, int, int, int, str | None, int | None, str, Mapping[str, bool]]],
) -> tuple[Offer, ...]:
    """(code, vCPUs, RAM GiB, GPUs, GPU model, GiB per GPU, EUR/h, {zone: available}) → offers."""
    return tuple(
        Offer(
            zone=zone,
            region=region_of[zone],
            instance_type=code,
            vcpus=vcpus,
            ram_mb=ram_gib * GIB,
            gpu_count=gpus,
            gpu_model=gpu_model,
            gpu_memory_mb=None if gpu_gib is None else gpu_gib * GIB,
            hourly_price_eur=Decimal(price),
            available=available,
        )
        for code, vcpus, ram_gib, gpus, gpu_model, gpu_gib, price, where in types
        for zone, available in where.items()
    )


MOCK_ZONES = {"mock-par-1": ("mock-par", "Mock Paris 1"), "mock-par-2": ("mock-par", "Mock Paris 2")}
_MOCK_REGION_OF = {zone: region for zone, (region, _) in MOCK_ZONES.items()}
_BOTH = {"mock-par-1": True, "mock-par-2": True}
# a type listed in mock-par-1 but out of stock there: the catalog shows availability per zone
MOCK_OFFERS = _offers(
    _MOCK_REGION_OF,
    [
        ("MOCK-CPU-S", 2, 4, 0, None, None, "0.01", _BOTH),
        ("MOCK-GPU-S", 8, 32, 1, "Mock L4", 24, "0.25", _BOTH),
        ("MOCK-GPU-M", 16, 64, 2, "Mock L40S", 48, "1.20", {"mock-par-1": False, "mock-par-2": True}),
    ],
)

SCALEWAY_ZONES = {
    "fr-par-1": ("fr-par", "Paris 1"),
    "fr-par-2": ("fr-par", "Paris 2"),
    "nl-ams-1": ("nl-ams", "Amsterdam 1"),
    "pl-waw-1": ("pl-waw", "Warsaw 1"),
}
_SCW_REGION_OF = {zone: region for zone, (region, _) in SCALEWAY_ZONES.items()}
_EVERYWHERE = dict.fromkeys(SCALEWAY_ZONES, True)
_PAR = {"fr-par-1": True, "fr-par-2": True}
_PAR2 = {"fr-par-2": True}
SCALEWAY_OFFERS = _offers(
    _SCW_REGION_OF,
    [
        ("DEV1-S", 2, 2, 0, None, None, "0.0088", _EVERYWHERE),
        ("PRO2-XXS", 2, 8, 0, None, None, "0.055", _EVERYWHERE),
        ("PRO2-S", 8, 32, 0, None, None, "0.219", _EVERYWHERE),
        ("GPU-3070-S", 8, 16, 1, "RTX 3070", 8, "0.98", _PAR2),
        ("RENDER-S", 10, 42, 1, "Tesla P100", 16, "1.221", _PAR),
        ("L4-1-24G", 8, 48, 1, "L4", 24, "0.75", {**_PAR, "nl-ams-1": True}),
        ("L4-2-24G", 16, 96, 2, "L4", 24, "1.50", {**_PAR, "nl-ams-1": True}),
        ("L40S-1-48G", 8, 96, 1, "L40S", 48, "1.40", _PAR2),
        ("L40S-2-48G", 16, 192, 2, "L40S", 48, "2.80", _PAR2),
        ("H100-1-80G", 24, 240, 1, "H100 PCIe", 80, "2.73", _PAR),
        ("H100-2-80G", 48, 480, 2, "H100 PCIe", 80, "5.46", _PAR),
        ("H100-SXM-2-80G", 32, 240, 2, "H100 SXM", 80, "6.018", _PAR2),
    ],
)

PROVIDERS = (
    SeedProvider(
        code="mock",
        name="Mock",
        description="Simulated provider: machines boot on this host as real runner processes",
        regions={"mock-par": "Mock Paris"},
        zones=MOCK_ZONES,
        offers=MOCK_OFFERS,
    ),
    SeedProvider(
        code="scaleway",
        name="Scaleway",
        description="Scaleway Instances (Instance API); needs SCALEWAY_SECRET_KEY and SCALEWAY_PROJECT_ID",
        regions={"fr-par": "Paris", "nl-ams": "Amsterdam", "pl-waw": "Warsaw"},
        zones=SCALEWAY_ZONES,
        offers=SCALEWAY_OFFERS,
    ),
)

# GPU memory in all that vLLM needs for weights and a working KV cache, in MiB
MODELS = (
    SeedModel("Qwen/Qwen2.5-0.5B-Instruct", 2 * GIB, "vllm", {"maxModelLen": 8192}),
    SeedModel("Qwen/Qwen2.5-7B-Instruct", 16 * GIB, "vllm", {"maxModelLen": 32768}),
    SeedModel("mistralai/Mistral-7B-Instruct-v0.3", 16 * GIB, "vllm", {"maxModelLen": 32768}),
)


async def apply(db: Database, *, configured: Collection[str] = ("mock",)) -> int:
    """Insert every seed row that is missing; the number of rows inserted (0 when already seeded).

    `configured`: the provider codes with an adapter (providers/registry.py); the others are seeded
    disabled.
    """
    async with db.write() as tx:
        await lock_catalog(tx)
        inserted = 0
        for provider in PROVIDERS:
            inserted += await _seed_provider(tx, provider, enabled=provider.code in configured)
        inserted += await _insert_missing(
            tx,
            models,
            ["name"],
            [
                {
                    "id": str(uuid.uuid4()),
                    "name": m.name,
                    "gpu_memory_mb": m.gpu_memory_mb,
                    "serving": m.serving,
                    "parameters": dict(m.parameters),
                    "enabled": True,
                }
                for m in MODELS
            ],
        )
    return inserted


async def _insert_missing(tx: Tx, table: Any, keys: list[str], rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    done = await tx.execute(insert_for(tx, table).values(rows).on_conflict_do_nothing(index_elements=keys))
    return max(int(getattr(done, "rowcount", 0) or 0), 0)


async def _ids(tx: Tx, table: Any, provider_id: str) -> dict[str, str]:
    found = await tx.execute(select(table.c.code, table.c.id).where(table.c.provider_id == provider_id))
    return {row["code"]: str(row["id"]) for row in found.mappings().all()}


async def _seed_provider(tx: Tx, seed: SeedProvider, *, enabled: bool) -> int:
    inserted = await _insert_missing(
        tx,
        providers,
        ["code"],
        [
            {
                "id": str(uuid.uuid4()),
                "code": seed.code,
                "name": seed.name,
                "description": seed.description,
                "enabled": enabled,
            }
        ],
    )
    provider_id = str(
        (await tx.execute(select(providers.c.id).where(providers.c.code == seed.code))).scalar_one()
    )
    new = {"provider_id": provider_id, "enabled": True}
    inserted += await _insert_missing(
        tx,
        regions,
        ["provider_id", "code"],
        [{"id": str(uuid.uuid4()), "code": code, "name": name, **new} for code, name in seed.regions.items()],
    )
    region_ids = await _ids(tx, regions, provider_id)
    inserted += await _insert_missing(
        tx,
        zones,
        ["provider_id", "code"],
        [
            {"id": str(uuid.uuid4()), "code": code, "name": name, "region_id": region_ids[region], **new}
            for code, (region, name) in seed.zones.items()
        ],
    )
    zone_ids = await _ids(tx, zones, provider_id)
    types: dict[str, Offer] = {}
    for offer in seed.offers:
        types.setdefault(offer.instance_type, offer)
    inserted += await _insert_missing(
        tx,
        instance_types,
        ["provider_id", "code"],
        [
            {
                "id": str(uuid.uuid4()),
                "code": code,
                "name": code,
                "vcpus": offer.vcpus,
                "ram_mb": offer.ram_mb,
                "gpu_count": offer.gpu_count,
                "gpu_model": offer.gpu_model,
                "gpu_memory_mb": offer.gpu_memory_mb,
                "hourly_price_eur": offer.hourly_price_eur,
                "available": any(o.available for o in seed.offers if o.instance_type == code),
                **new,
            }
            for code, offer in types.items()
        ],
    )
    type_ids = await _ids(tx, instance_types, provider_id)
    inserted += await _insert_missing(
        tx,
        instance_type_zones,
        ["instance_type_id", "zone_id"],
        [
            {
                "instance_type_id": type_ids[o.instance_type],
                "zone_id": zone_ids[o.zone],
                "available": o.available,
                "enabled": True,
            }
            for o in seed.offers
        ],
    )
    return inserted
