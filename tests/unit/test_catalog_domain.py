"""The catalog's rules without a database (domain/catalog.py): prices as exact decimals, codes, names and
models refused with stable reasons, what a sync changes, and a seed the catalog itself accepts."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from ikoma.domain import catalog as rules
from ikoma.domain.errors import Invalid
from ikoma.providers.base import Offer
from ikoma.services import catalog_seed


def offer(type_code: str = "T-1", zone: str = "z-1", **fields: Any) -> Offer:
    values: dict[str, Any] = {
        "zone": zone,
        "region": "r",
        "instance_type": type_code,
        "vcpus": 4,
        "ram_mb": 8192,
        "gpu_count": 1,
        "gpu_model": "L4",
        "gpu_memory_mb": 24576,
        "hourly_price_eur": Decimal("0.75"),
        "available": True,
    }
    values.update(fields)
    return Offer(**values)


def known(o: Offer, *, available: bool = True) -> rules.KnownType:
    return rules.KnownType(spec=rules.TypeSpec.of(o), available=available)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0.75", Decimal("0.75")),
        (" 23.028 ", Decimal("23.028")),
        ("0.000001", Decimal("0.000001")),
        (2, Decimal(2)),
        (Decimal("999999.999999"), Decimal("999999.999999")),
        ("0", Decimal(0)),
    ],
)
def test_a_price_is_read_exactly_from_text_ints_and_decimals(given: Any, expected: Decimal) -> None:
    assert rules.parse_price(given) == expected


@pytest.mark.parametrize(
    "bad",
    ["abc", "", "-0.01", "1000000", "0.0000001", "NaN", "Infinity", "1e400", 0.1, True, None, [1]],
)
def test_a_price_that_is_not_an_exact_bounded_decimal_is_invalid_price(bad: Any) -> None:
    with pytest.raises(Invalid) as refused:
        rules.parse_price(bad)
    assert (refused.value.reason, refused.value.details["field"]) == ("invalid_price", "hourlyPriceEur")


@pytest.mark.parametrize(
    ("price", "text"),
    [("0.75", "0.75"), ("0.750000", "0.75"), ("23.028", "23.028"), ("1", "1.00"), ("0.0088", "0.0088")],
)
def test_prices_are_written_with_two_to_six_decimals(price: str, text: str) -> None:
    assert rules.format_price(Decimal(price)) == text
    assert rules.parse_price(text) == Decimal(price)  # what is written reads back as the same price


@pytest.mark.parametrize(
    ("check", "value", "reason"),
    [
        (lambda v: rules.check_code(v, field="zone"), "fr par", "invalid_code"),
        (lambda v: rules.check_code(v, field="zone"), "-fr", "invalid_code"),
        (rules.check_name, "   ", "invalid_name"),
        (rules.check_name, "a\x00b", "invalid_name"),
        (rules.check_name, "x" * 201, "invalid_name"),
        (rules.check_model_name, "Qwen/Qwen2.5/0.5B", "invalid_model_name"),
        (rules.check_model_name, "../etc/passwd", "invalid_model_name"),
        (rules.check_model_name, "a b", "invalid_model_name"),
        (rules.check_serving, "docker", "invalid_serving"),
        (rules.check_gpu_memory, -1, "invalid_gpu_memory"),
        (rules.check_gpu_memory, True, "invalid_gpu_memory"),
        (rules.check_parameters, {"x": "y" * 20000}, "invalid_parameters"),
        (rules.check_parameters, ["not", "an", "object"], "invalid_parameters"),
        (rules.check_parameters, {"args": ["--x", "a\x00b"]}, "invalid_parameters"),  # JSONB cannot hold NUL
        (rules.check_description, "bell\x07", "invalid_description"),
        (rules.check_description, "x" * 501, "invalid_description"),
    ],
)
def test_bad_catalog_values_are_refused_with_a_stable_reason(check: Any, value: Any, reason: str) -> None:
    with pytest.raises(Invalid) as refused:
        check(value)
    assert refused.value.reason == reason


def test_good_catalog_values_pass_as_given_or_trimmed() -> None:
    assert rules.check_code("fr-par-2", field="zone") == "fr-par-2"
    assert rules.check_name("  Paris 2 ") == "Paris 2"
    assert rules.check_model_name("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert rules.check_model_name("local-model") == "local-model"
    assert rules.check_serving("vllm") == "vllm"
    assert rules.check_parameters({"maxModelLen": 8192}) == {"maxModelLen": 8192}


def test_a_model_fits_a_type_by_its_gpu_memory_in_all() -> None:
    assert rules.fits(0, gpu_count=0, gpu_memory_mb=None)  # a CPU model fits anywhere
    assert not rules.fits(1, gpu_count=0, gpu_memory_mb=None)
    assert rules.fits(40_000, gpu_count=2, gpu_memory_mb=24_576)
    assert not rules.fits(50_000, gpu_count=2, gpu_memory_mb=24_576)


def test_a_first_sync_adds_every_offered_type_once_whatever_its_zones() -> None:
    plan = rules.plan_sync([offer("A", "z-1"), offer("A", "z-2"), offer("B", "z-1")], {})
    assert (plan.added, plan.updated, plan.unavailable, plan.unchanged) == (["A", "B"], [], [], [])
    assert plan.zones == {"z-1": "r", "z-2": "r"}
    assert set(plan.availability) == {("A", "z-1"), ("A", "z-2"), ("B", "z-1")}


def test_a_sync_updates_changed_types_and_marks_unoffered_ones_unavailable() -> None:
    same, repriced, gone = offer("SAME"), offer("PRICE"), offer("GONE")
    catalog = {"SAME": known(same), "PRICE": known(repriced), "GONE": known(gone)}
    catalog["OLD"] = known(offer("OLD"), available=False)  # already unavailable: not counted again
    plan = rules.plan_sync([same, replace(repriced, hourly_price_eur=Decimal("0.80")), offer("NEW")], catalog)
    assert plan.added == ["NEW"]
    assert plan.updated == ["PRICE"]
    assert plan.unchanged == ["SAME"]
    assert plan.unavailable == ["GONE"]
    assert plan.types["PRICE"].hourly_price_eur == Decimal("0.80")


def test_a_price_written_with_more_zeros_is_the_same_price() -> None:
    o = offer()
    plan = rules.plan_sync([replace(o, hourly_price_eur=Decimal("0.750000"))], {"T-1": known(o)})
    assert plan.unchanged == ["T-1"]


def test_a_type_is_available_when_any_zone_sells_it_and_coming_back_is_an_update() -> None:
    out_of_stock = [offer("A", "z-1", available=False), offer("A", "z-2", available=False)]
    plan = rules.plan_sync(out_of_stock, {"A": known(offer("A"))})
    assert plan.type_available == {"A": False}
    assert plan.updated == ["A"]
    assert plan.unavailable == []  # still offered: its listings say where it is out of stock
    back = rules.plan_sync(
        [offer("A", "z-1", available=False), offer("A", "z-2")], {"A": known(offer("A"), available=False)}
    )
    assert back.type_available == {"A": True}
    assert back.availability == {("A", "z-1"): False, ("A", "z-2"): True}
    assert back.updated == ["A"]


def test_offers_the_catalog_cannot_hold_are_skipped_and_named() -> None:
    bad = [
        offer("bad type", "z-1"),
        offer("A", "z-1", hourly_price_eur=Decimal("-1")),
        offer("A", "z-1", hourly_price_eur=Decimal("0.1234567")),
        offer("A", "z 1"),
        offer("A", "z-1", vcpus=-2),
    ]
    plan = rules.plan_sync([*bad, offer("A", "z-2")], {})
    assert [reason for _, reason in plan.rejected] == [
        "invalid_code",
        "invalid_price",
        "invalid_price",
        "invalid_code",
        "invalid_size",
    ]
    assert plan.rejected[0][0] == "bad type@z-1"
    assert plan.added == ["A"]
    assert set(plan.availability) == {("A", "z-2")}


def test_the_seed_is_a_catalog_the_sync_accepts_whole() -> None:
    for seed in catalog_seed.PROVIDERS:
        assert [rules.offer_problem(o) for o in seed.offers] == [None] * len(seed.offers)
        pairs = [(o.instance_type, o.zone) for o in seed.offers]
        assert len(pairs) == len(set(pairs))
        assert {o.zone for o in seed.offers} <= set(seed.zones)
        assert {seed.zones[o.zone][0] for o in seed.offers} <= set(seed.regions)
        assert all(seed.zones[o.zone][0] == o.region for o in seed.offers)
        first = rules.plan_sync(seed.offers, {})
        again = rules.plan_sync(
            seed.offers, {c: rules.KnownType(s, first.type_available[c]) for c, s in first.types.items()}
        )
        assert sorted(again.unchanged) == sorted(first.added) == sorted(first.types)
    for model in catalog_seed.MODELS:
        rules.check_model_name(model.name)
        rules.check_serving(model.serving)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in {m.name for m in catalog_seed.MODELS}
    assert {o.zone for o in catalog_seed.MOCK_OFFERS} == {"mock-par-1", "mock-par-2"}
