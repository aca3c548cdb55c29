"""The Mock provider: the `Provider` interface over the Mock cloud kept in IKOMA's database.

    provider = MockProvider(MockCloud(DatabaseStore(db)), boot=RunnerBoot(data_dir / "mock-machines"))
    leader.run_while_leading("mock-cloud", provider.run_forever)  # moves machines, boots their runners

Every call brings the simulated world up to now first, so answers are right without the loop; the
loop is what starts a real `ikoma runner` when a machine reaches `running` (and stops it when the
machine stops, is terminated or vanishes), as cloud-init would on a VM. It runs on the leader only:
the processes live on the replica that leads.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from ikoma.providers import base
from ikoma.providers.base import InstanceRequest, Offer, ProviderError, ProviderInstance
from ikoma.providers.mock.boot import RunnerBoot
from ikoma.providers.mock.cloud import MockCloud
from ikoma.providers.mock.simulator import REGION

log = structlog.get_logger("ikoma.providers.mock")

NAME = "mock"


class MockProvider:
    name = NAME

    def __init__(
        self, cloud: MockCloud, *, boot: RunnerBoot | None = None, tick_interval: float = 1.0
    ) -> None:
        self.cloud = cloud
        self.boot = boot
        self.tick_interval = tick_interval

    async def offers(self) -> list[Offer]:
        return [
            Offer(
                zone=o.zone,
                region=REGION,
                instance_type=o.machine_type.code,
                vcpus=o.machine_type.vcpus,
                ram_mb=o.machine_type.ram_mb,
                gpu_count=o.machine_type.gpu_count,
                gpu_model=o.machine_type.gpu_model,
                gpu_memory_mb=o.machine_type.gpu_memory_mb,
                hourly_price_eur=o.machine_type.hourly_price_eur,
                available=o.available,
            )
            for o in await self.cloud.offers()
        ]

    async def create(self, request: InstanceRequest) -> ProviderInstance:
        machine = await self.cloud.create(
            zone=request.zone,
            instance_type=request.instance_type,
            name=request.name,
            image=request.image,
            tags=request.tags,
            user_data=request.user_data,
        )
        return machine.to_instance()

    async def get(self, zone: str, provider_id: str) -> ProviderInstance | None:
        machine = await self.cloud.get(zone, provider_id)
        return machine.to_instance() if machine is not None else None

    async def list_owned(self, owner: str) -> list[ProviderInstance]:
        return [m.to_instance() for m in await self.cloud.list_machines(tags={base.OWNER_TAG: owner})]

    async def start(self, zone: str, provider_id: str) -> None:
        await self.cloud.act(zone, provider_id, "poweron")

    async def stop(self, zone: str, provider_id: str) -> None:
        await self.cloud.act(zone, provider_id, "poweroff")

    async def terminate(self, zone: str, provider_id: str) -> None:
        try:
            await self.cloud.act(zone, provider_id, "terminate")
        except ProviderError as exc:
            if exc.reason != base.NOT_FOUND:  # gone already is what terminate asks for
                raise

    async def close(self) -> None:
        if self.boot is not None:
            await self.boot.close()

    async def run_forever(self) -> None:
        """Move the simulated machines every `tick_interval` seconds and keep their runners in step;
        every runner process is stopped when this is cancelled (shutdown, leadership lost)."""
        try:
            while True:
                try:
                    machines = await self.cloud.tick()
                    if self.boot is not None:
                        await self.boot.sync(machines)
                        spent = self.boot.enrolled(machines)
                        if spent:  # the runner has its own credentials: the one-time token goes
                            await self.cloud.forget_user_data(spent)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a database hiccup: the next tick tries again
                    log.warning("mock_cloud_tick_failed", error=type(exc).__name__, detail=str(exc)[:200])
                await asyncio.sleep(self.tick_interval)
        finally:
            if self.boot is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.boot.close())
