"""The one interface every cloud provider adapter implements, in IKOMA's terms (issue 16).

An adapter turns these calls into a provider's API (Scaleway's Instance API, the Mock simulator) and
its answers back into `ProviderInstance` values; nothing above this module knows a provider's JSON.

    provider = registry.get("mock")
    offers = await provider.offers()                     # catalog sync: zone x type, EUR per hour
    created = await provider.create(InstanceRequest(...))  # once the provider accepted it
    found = await provider.get(zone, created.provider_id)  # None: the provider does not know it (any more)
    owned = await provider.list_owned(installation_id)     # every instance carrying this IKOMA's tag
    await provider.terminate(zone, created.provider_id)    # idempotent: gone already is success

Rules every adapter keeps:
- Calls are idempotent where the provider allows it; `create` is NOT, which is why every request
  carries ownership tags (OWNER_TAG = the installation's id, INSTANCE_TAG = IKOMA's instance id): after
  a crash or a timeout the caller lists by tag and adopts what it already created instead of a second.
- Errors are `ProviderError` with a stable `reason` and `retryable`; an adapter never lets a transport
  exception (httpx, timeouts) escape.
- No secret (API keys, user data holding a bootstrap token) in an exception message, a log line or a
  `ProviderInstance`.
- No database transaction is held across a call (the caller's rule; adapters never touch IKOMA's tables,
  except the Mock's own simulator state).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

# every instance IKOMA creates carries these tags (as `key=value` strings where a provider has flat tags)
OWNER_TAG = "ikoma"  # value: the IKOMA installation's id, so two installations in one project never mix
INSTANCE_TAG = "ikoma-instance"  # value: IKOMA's instance id


class PowerState(enum.StrEnum):
    """What the provider says of one of its machines, mapped from its own vocabulary."""

    CREATING = "creating"  # accepted, not yet running (allocating, stopped-before-first-boot)
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATING = "terminating"
    TERMINATED = "terminated"  # gone, or going with nothing left to bill
    ERROR = "error"  # the provider reports a failure (e.g. Scaleway `locked`, a failed boot)


@dataclass(frozen=True)
class Offer:
    """One instance type in one zone, as the provider sells it (catalog sync)."""

    zone: str  # provider's zone code, e.g. `fr-par-2`
    region: str  # e.g. `fr-par`
    instance_type: str  # provider's commercial type code, e.g. `GPU-3070-S`
    vcpus: int
    ram_mb: int
    gpu_count: int
    gpu_model: str | None
    gpu_memory_mb: int | None
    hourly_price_eur: Decimal
    available: bool


@dataclass(frozen=True)
class InstanceRequest:
    zone: str
    instance_type: str
    name: str
    image: str  # provider's image label or id
    tags: Mapping[str, str]  # ownership tags (OWNER_TAG, INSTANCE_TAG) and labels
    user_data: str | None = None  # cloud-init: holds the one-time enrolment token; never logged


@dataclass(frozen=True)
class ProviderInstance:
    provider_id: str
    zone: str
    instance_type: str
    name: str
    state: PowerState
    public_ip: str | None
    private_ip: str | None
    tags: Mapping[str, str]
    created_at: datetime | None = None
    # the provider's own state word, kept for the action log and diagnostics (`running`, `stopped in place`)
    raw_state: str | None = None
    allowed_actions: frozenset[str] = field(default_factory=frozenset)


class ProviderError(Exception):
    """A provider call failed. `reason` is stable (API, events, action log); `retryable` says whether
    the same call may succeed later (429, 5xx, timeouts) or not (bad request, quota, auth)."""

    def __init__(self, message: str, *, reason: str, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
        self.status = status


# reasons adapters use (more may be added; callers branch on `retryable`, show `reason`)
CAPACITY_SHORTAGE = "capacity_shortage"  # no machine of this type in this zone now (retryable)
PROVIDER_TIMEOUT = "provider_timeout"  # no answer in time: the call may or may not have happened
PROVIDER_UNAVAILABLE = "provider_unavailable"  # 5xx, connection refused
RATE_LIMITED = "rate_limited"  # 429
INVALID_REQUEST = "invalid_request"  # 400/404 on create: unknown type, zone, image
AUTH_FAILED = "auth_failed"  # 401/403: the credentials are wrong or lack a permission
ACTION_NOT_ALLOWED = "action_not_allowed"  # the instance's allowed_actions do not list the call
QUOTA_EXCEEDED = "quota_exceeded"
NOT_FOUND = "not_found"  # 404: no such machine in that zone (terminate counts it as done)


class Provider(Protocol):
    """A cloud provider adapter. `name` is the catalog's provider code (`mock`, `scaleway`)."""

    name: str

    async def offers(self) -> list[Offer]: ...

    async def create(self, request: InstanceRequest) -> ProviderInstance:
        """Create and power on. Returns once the provider accepted it (state CREATING or STARTING);
        booting is observed through `get`."""
        ...

    async def get(self, zone: str, provider_id: str) -> ProviderInstance | None:
        """The instance as the provider sees it now; None when the provider does not know it."""
        ...

    async def list_owned(self, owner: str) -> list[ProviderInstance]:
        """Every instance whose OWNER_TAG is `owner`, in every zone (the orphan watchdog's view)."""
        ...

    async def start(self, zone: str, provider_id: str) -> None: ...

    async def stop(self, zone: str, provider_id: str) -> None: ...

    async def terminate(self, zone: str, provider_id: str) -> None:
        """Delete the machine and what it alone uses (volumes, IPs). Success when it is already gone."""
        ...

    async def close(self) -> None:
        """Release connections (httpx clients)."""
        ...
