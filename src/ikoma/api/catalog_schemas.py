"""Request and answer shapes of the catalog routes (camelCase on the wire).

Prices are EUR per hour written as decimal text (`"0.75"`, 2 to 6 decimals), never as a JSON number:
a client that reads them into binary floats would round them. A price sent in a request may be text
or a number; text is exact.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from ikoma.api.schemas import Id, NotNull, Public, UtcDatetime, Wire
from ikoma.domain.catalog import format_price


def _price_text(value: Any) -> Any:
    return format_price(value) if isinstance(value, Decimal) else value


Price = Annotated[
    str,
    BeforeValidator(_price_text),
    Field(description='EUR per hour, as decimal text (e.g. `"0.75"`)', examples=["0.75"]),
]
DisplayName = Annotated[str, Field(max_length=200)]  # checked by domain/catalog.check_name (reason)
Description = Annotated[str, Field(max_length=500)]


class ProviderPublic(Public):
    id: str
    code: str = Field(description="The registry's name: `mock`, `scaleway`.")
    name: str
    description: str
    enabled: bool
    configured: bool = Field(description="This IKOMA has an adapter for it (credentials set, or Mock on).")
    created_at: UtcDatetime
    updated_at: UtcDatetime


class ProviderUpdate(Wire):
    """Absent fields stay as they are. A disabled provider's instance types are not deployable."""

    name: Annotated[DisplayName | None, NotNull] = None
    description: Annotated[Description | None, NotNull] = None
    enabled: Annotated[bool | None, NotNull] = None


class RegionPublic(Public):
    id: str
    provider_id: str
    provider_code: str
    code: str
    name: str
    enabled: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime


class PlaceUpdate(Wire):
    """A region's or zone's display name, or whether it is offered. Absent fields stay as they are."""

    name: Annotated[DisplayName | None, NotNull] = None
    enabled: Annotated[bool | None, NotNull] = None


class ZonePublic(RegionPublic):
    region_id: str
    region_code: str


class InstanceTypePublic(Public):
    id: str
    provider_id: str
    provider_code: str
    provider_enabled: bool
    code: str = Field(description="The provider's commercial type, e.g. `L4-1-24G`.")
    name: str
    vcpus: int
    ram_mb: int
    gpu_count: int
    gpu_model: str | None
    gpu_memory_mb: int | None = Field(description="Per GPU, in MiB.")
    hourly_price_eur: Price
    available: bool = Field(
        description="The provider sells it (in at least one zone), as its last sync said."
    )
    enabled: bool = Field(description="The admin offers it.")
    zones: list[str] = Field(
        description="Codes of the zones where it can be deployed now (none while it or its provider is off)."
    )
    created_at: UtcDatetime
    updated_at: UtcDatetime


class ZoneInstanceType(InstanceTypePublic):
    zone_available: bool = Field(description="The provider sells it in this zone.")
    zone_enabled: bool = Field(description="The admin offers it in this zone.")


class InstanceTypeUpdate(Wire):
    """Absent fields stay as they are. A sync of the provider sets the price again from its offers."""

    name: Annotated[DisplayName | None, NotNull] = None
    enabled: Annotated[bool | None, NotNull] = None
    # any JSON value reaches domain/catalog.parse_price, so that every bad price is `invalid_price`
    hourly_price_eur: Annotated[Any, NotNull] = Field(
        default=None,
        description='EUR per hour; decimal text is exact (`"0.75"`), a JSON number is taken as written.',
        json_schema_extra={"anyOf": [{"type": "string"}, {"type": "number"}]},
    )


class TypeZonePublic(Public):
    instance_type_id: str
    zone_id: str
    zone_code: str
    zone_name: str
    region_code: str
    available: bool = Field(description="The provider sells the type in this zone.")
    enabled: bool = Field(description="The admin offers the type in this zone.")


class TypeZonesUpdate(Wire):
    """The zones (of the type's provider) where the type is offered; every other listing is disabled."""

    zone_ids: Annotated[list[Id], Field(max_length=1000)]


class ModelPublic(Public):
    id: str
    name: str = Field(description="Hugging Face id, e.g. `Qwen/Qwen2.5-0.5B-Instruct`.")
    gpu_memory_mb: int = Field(description="GPU memory needed in all, in MiB (0: no GPU).")
    serving: str = Field(description="How a worker serves it: `vllm` or `mock`.")
    parameters: dict[str, Any]
    enabled: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime


class ModelCreate(Wire):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    gpu_memory_mb: int
    serving: Annotated[str, Field(max_length=50)]
    parameters: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class SyncRequest(Wire):
    provider: Annotated[str, Field(max_length=50)] | None = Field(
        default=None, description="A provider code; absent: every configured and enabled provider."
    )


class RejectedOffer(Public):
    offer: str = Field(description="`<type>@<zone>`")
    reason: str


class ProviderSync(Public):
    provider: str
    offers: int
    added: int
    updated: int
    unavailable: int
    unchanged: int
    zones_added: int
    rejected: list[RejectedOffer]


class SyncAnswer(Public):
    added: int
    updated: int
    unavailable: int
    providers: list[ProviderSync]
