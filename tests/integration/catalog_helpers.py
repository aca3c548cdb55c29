"""What the catalog tests share: a provider that only lists offers, and rows by code."""

from __future__ import annotations

from typing import Any

from ikoma.providers.base import InstanceRequest, Offer, ProviderError, ProviderInstance


class OffersOnly:
    """A provider that only lists offers (the catalog sync's one call), or fails doing so."""

    def __init__(self, name: str, offers: list[Offer] | None = None, failure: ProviderError | None = None):
        self.name = name
        self.current = list(offers or [])
        self.failure = failure

    async def offers(self) -> list[Offer]:
        if self.failure is not None:
            raise self.failure
        return list(self.current)

    async def create(self, request: InstanceRequest) -> ProviderInstance:
        raise NotImplementedError

    async def get(self, zone: str, provider_id: str) -> ProviderInstance | None:
        raise NotImplementedError

    async def list_owned(self, owner: str) -> list[ProviderInstance]:
        raise NotImplementedError

    async def start(self, zone: str, provider_id: str) -> None:
        raise NotImplementedError

    async def stop(self, zone: str, provider_id: str) -> None:
        raise NotImplementedError

    async def terminate(self, zone: str, provider_id: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def by_code(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["code"]: r for r in rows}
