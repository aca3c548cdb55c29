"""Which cloud providers this IKOMA can use, by catalog code: the composition root asks here once.

    providers = providers_from(settings, db)   # {"mock": MockProvider, "scaleway": ...}

`mock` is always there unless IKOMA_PROVIDER_MOCK=0; `scaleway` when its adapter module says it is
configured (a secret key): `ikoma.providers.scaleway.adapter.provider_from_settings(settings)` answers a
Provider or None, and is imported only then, so an installation without it never loads httpx clients
it does not need.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from typing import Any

from ikoma.providers.base import Provider
from ikoma.providers.mock.adapter import MockProvider
from ikoma.providers.mock.boot import RunnerBoot
from ikoma.providers.mock.cloud import MockCloud
from ikoma.providers.mock.simulator import Clock, Timings
from ikoma.providers.mock.store import DatabaseStore
from ikoma.settings import Settings
from ikoma.storage.database import Database

MOCK_MACHINES_DIR = "mock-machines"  # under the data dir: one directory per booted Mock machine
SCALEWAY_ADAPTER = "ikoma.providers.scaleway.adapter"
LoopFactory = Callable[[], Coroutine[Any, Any, None]]


def providers_from(settings: Settings, db: Database, *, clock: Clock | None = None) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    if settings.provider_mock:
        providers["mock"] = mock_provider(settings, db, clock=clock)
    scaleway = _scaleway(settings)
    if scaleway is not None:
        providers["scaleway"] = scaleway
    return providers


def mock_provider(settings: Settings, db: Database, *, clock: Clock | None = None) -> MockProvider:
    cloud = MockCloud(
        DatabaseStore(db), clock=clock, timings=Timings(boot_seconds=settings.mock_boot_seconds)
    )
    return MockProvider(
        cloud,
        boot=RunnerBoot(settings.data_dir.resolve() / MOCK_MACHINES_DIR),
        tick_interval=settings.mock_tick_interval,
    )


def _scaleway(settings: Settings) -> Provider | None:
    try:
        module: Any = importlib.import_module(SCALEWAY_ADAPTER)
    except ModuleNotFoundError as exc:
        if exc.name is not None and SCALEWAY_ADAPTER.startswith(exc.name):
            return None  # not written yet / not installed: no Scaleway
        raise
    factory = getattr(module, "provider_from_settings", None)
    if factory is None:
        return None
    provider: Provider | None = factory(settings)
    return provider


def background_loops(providers: dict[str, Provider]) -> dict[str, LoopFactory]:
    """The loops providers need on the leader, by name: the Mock's simulated machines and runners."""
    return {
        f"provider-{name}": provider.run_forever
        for name, provider in providers.items()
        if isinstance(provider, MockProvider)
    }
