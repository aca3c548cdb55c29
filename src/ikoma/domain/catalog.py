"""The catalog's rules, without a database: prices, codes and names, models, and what a sync changes.

Prices are EUR per hour as `Decimal`, parsed from text (a binary float is refused: 0.1 has no exact
binary value) and written back as text with 2 to 6 decimals. `plan_sync` compares what a provider
offers with what the catalog knows and says what to add, update and mark unavailable; the service
(services/catalog.py) only applies the plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from ikoma.domain.errors import Invalid
from ikoma.providers.base import Offer

MAX_PRICE = Decimal("1000000")  # EUR per hour, exclusive: NUMERIC(12, 6)
PRICE_DECIMALS = 6
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# a Hugging Face repository id (`owner/name`) or a plain local name
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
MODEL_NAME_MAX = 200
NAME_MAX = 200
DESCRIPTION_MAX = 500
SERVINGS = ("vllm", "mock")  # how a worker serves a model
MAX_GPU_MEMORY_MB = 100_000_000
MAX_PARAMETERS_BYTES = 16 * 1024


def parse_price(value: str | int | Decimal, *, field: str = "hourlyPriceEur") -> Decimal:
    """EUR per hour from text (`"0.75"`), an int or a Decimal: finite, 0 <= price < 1,000,000, at most
    6 decimals. 422 `invalid_price` otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        # a float is refused on purpose: its binary value is not the price that was meant
        raise Invalid(
            'a price is a decimal number written as text, e.g. "0.75"', reason="invalid_price", field=field
        )
    try:
        price = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise Invalid(f"{value!r} is not a decimal number", reason="invalid_price", field=field) from None
    if not price.is_finite() or price < 0 or price >= MAX_PRICE:
        raise Invalid(
            "a price is at least 0 and below 1,000,000 EUR per hour", reason="invalid_price", field=field
        )
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PRICE_DECIMALS:
        raise Invalid(f"a price has at most {PRICE_DECIMALS} decimals", reason="invalid_price", field=field)
    return price


def format_price(price: Decimal) -> str:
    """`Decimal("0.750000")` → `"0.75"`, `Decimal("23.028")` → `"23.028"`, `Decimal("1")` → `"1.00"`."""
    text = f"{price.quantize(Decimal(1).scaleb(-PRICE_DECIMALS)):f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def check_code(value: str, *, field: str) -> str:
    """A provider's code for a region, zone or instance type: letters, digits, `.`, `_`, `-`."""
    if not CODE.match(value):
        raise Invalid(
            f"{field} is 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit",
            reason="invalid_code",
            field=field,
        )
    return value


def check_name(value: str, *, field: str = "name") -> str:
    """A display name: 1 to 200 printable characters, trimmed."""
    text = value.strip()
    if not text or len(text) > NAME_MAX or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise Invalid(f"{field} is 1 to {NAME_MAX} printable characters", reason="invalid_name", field=field)
    return text


def check_description(value: str) -> str:
    """A provider's description: up to 500 characters, trimmed; tabs and newlines allowed."""
    text = value.strip()
    if len(text) > DESCRIPTION_MAX or any((ord(c) < 32 and c not in "\t\n") or ord(c) == 127 for c in text):
        raise Invalid(
            f"description is at most {DESCRIPTION_MAX} printable characters",
            reason="invalid_description",
            field="description",
        )
    return text


def check_model_name(value: str) -> str:
    """A Hugging Face id such as `Qwen/Qwen2.5-0.5B-Instruct` (or a plain name)."""
    if len(value) > MODEL_NAME_MAX or not MODEL_NAME.match(value):
        raise Invalid(
            "a model name is a Hugging Face id such as 'Qwen/Qwen2.5-0.5B-Instruct': letters, digits, "
            "'.', '_', '-', with at most one '/'",
            reason="invalid_model_name",
            field="name",
        )
    return value


def check_serving(value: str) -> str:
    if value not in SERVINGS:
        raise Invalid(f"serving is one of {', '.join(SERVINGS)}", reason="invalid_serving", field="serving")
    return value


def check_gpu_memory(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GPU_MEMORY_MB:
        raise Invalid(
            "gpuMemoryMb is a whole number of MiB, 0 for a model served without a GPU",
            reason="invalid_gpu_memory",
            field="gpuMemoryMb",
        )
    return value


def check_parameters(value: Mapping[str, Any]) -> dict[str, Any]:
    """How the model is served (vLLM arguments...): a JSON object of at most 16 KiB."""
    if not isinstance(value, Mapping):
        raise Invalid("parameters is a JSON object", reason="invalid_parameters", field="parameters")
    try:
        size = len(orjson.dumps(dict(value)))
    except TypeError:
        raise Invalid(
            "parameters is a JSON object", reason="invalid_parameters", field="parameters"
        ) from None
    if size > MAX_PARAMETERS_BYTES:
        raise Invalid(
            f"parameters holds at most {MAX_PARAMETERS_BYTES} bytes of JSON",
            reason="invalid_parameters",
            field="parameters",
        )
    if _holds_nul(value):  # PostgreSQL's JSONB cannot store one
        raise Invalid(
            "parameters may not hold a NUL character", reason="invalid_parameters", field="parameters"
        )
    return dict(value)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def fits(model_gpu_memory_mb: int, *, gpu_count: int, gpu_memory_mb: int | None) -> bool:
    """Whether an instance type has the GPU memory, in all, that a model needs."""
    if model_gpu_memory_mb == 0:
        return True
    return gpu_count * (gpu_memory_mb or 0) >= model_gpu_memory_mb


# --- sync: what the provider offers against what the catalog knows --------------------------------------
@dataclass(frozen=True)
class TypeSpec:
    """An instance type as a provider sells it (the fields a sync may change)."""

    vcpus: int
    ram_mb: int
    gpu_count: int
    gpu_model: str | None
    gpu_memory_mb: int | None
    hourly_price_eur: Decimal

    @classmethod
    def of(cls, offer: Offer) -> TypeSpec:
        return cls(
            vcpus=offer.vcpus,
            ram_mb=offer.ram_mb,
            gpu_count=offer.gpu_count,
            gpu_model=offer.gpu_model,
            gpu_memory_mb=offer.gpu_memory_mb,
            hourly_price_eur=offer.hourly_price_eur,
        )


@dataclass(frozen=True)
class KnownType:
    """An instance type as the catalog has it now."""

    spec: TypeSpec
    available: bool


@dataclass
class SyncPlan:
    """What a sync writes: every offered region/zone/type/availability, and the counts it answers."""

    regions: set[str] = field(default_factory=set)
    zones: dict[str, str] = field(default_factory=dict)  # zone code → region code
    types: dict[str, TypeSpec] = field(default_factory=dict)  # the offered types, by code
    type_available: dict[str, bool] = field(default_factory=dict)  # offered somewhere now
    availability: dict[tuple[str, str], bool] = field(default_factory=dict)  # (type, zone) → available
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # known types the provider no longer offers
    unchanged: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (what, reason): offers not taken


def offer_problem(offer: Offer) -> str | None:
    """Why an offer cannot enter the catalog (a reason), or None."""
    try:
        for value, name in ((offer.zone, "zone"), (offer.region, "region"), (offer.instance_type, "type")):
            check_code(value, field=name)
        parse_price(offer.hourly_price_eur)
    except Invalid as problem:
        return problem.reason
    sizes = (offer.vcpus, offer.ram_mb, offer.gpu_count, offer.gpu_memory_mb or 0)
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in sizes):
        return "invalid_size"
    return None


def plan_sync(offers: Iterable[Offer], known: Mapping[str, KnownType]) -> SyncPlan:
    """Compare a provider's offers with the catalog's types of that provider.

    A type is available when at least one of its offers is. A type offered in several zones takes its
    sizes and price from its first offer (providers price a type the same in every zone). A known type
    that no offer names is marked unavailable, never deleted: instances keep pointing at it.
    """
    plan = SyncPlan()
    type_available = plan.type_available
    for offer in offers:
        problem = offer_problem(offer)
        if problem is not None:
            plan.rejected.append((f"{offer.instance_type}@{offer.zone}", problem))
            continue
        plan.regions.add(offer.region)
        plan.zones.setdefault(offer.zone, offer.region)
        plan.types.setdefault(offer.instance_type, TypeSpec.of(offer))
        pair = (offer.instance_type, offer.zone)
        plan.availability[pair] = plan.availability.get(pair, False) or offer.available
        type_available[offer.instance_type] = (
            type_available.get(offer.instance_type, False) or offer.available
        )
    for code, spec in plan.types.items():
        before = known.get(code)
        if before is None:
            plan.added.append(code)
        elif before.spec != spec or before.available != type_available[code]:
            plan.updated.append(code)
        else:
            plan.unchanged.append(code)
    plan.unavailable = sorted(code for code, k in known.items() if code not in plan.types and k.available)
    return plan
