"""The Scaleway client's rules without a network (httpx.MockTransport): how the API's errors become
reasons, when a call is repeated and after how long, how pages end."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest

from ikoma.providers import base
from ikoma.providers.base import ProviderError
from ikoma.providers.scaleway.client import MAX_RETRY_AFTER, InstanceClient

Handler = Callable[[httpx.Request], httpx.Response]


def client_with(handler: Handler, slept: list[float], *, page_size: int = 100) -> InstanceClient:
    async def record(seconds: float) -> None:
        slept.append(seconds)

    return InstanceClient(
        "secret-key",
        api_url="http://scw.test",
        transport=httpx.MockTransport(handler),
        retries=3,
        backoff=0.01,
        page_size=page_size,
        sleep=record,
    )


@pytest.mark.parametrize(
    ("status", "body", "reason", "retryable"),
    [
        (
            400,
            {"type": "out_of_stock", "message": "out of stock", "resource": "instance_server"},
            "capacity_shortage",
            True,
        ),
        (
            400,
            {"type": "invalid_request_error", "message": "Quota exceeded for this resource"},
            "quota_exceeded",
            False,
        ),
        (
            403,
            {"type": "quotas_exceeded", "message": "quota(s) exceeded", "details": []},
            "quota_exceeded",
            False,
        ),
        (
            409,
            {"type": "transient_state", "message": "resource is in a transient state"},
            "action_not_allowed",
            True,
        ),
        (401, {"type": "denied_authentication", "message": "authentication is denied"}, "auth_failed", False),
        (403, {"type": "permissions_denied", "message": "insufficient permissions"}, "auth_failed", False),
        (404, {"type": "unknown_resource", "message": '"x" not found'}, "not_found", False),
        (
            400,
            {"type": "invalid_request_error", "message": "instance should be powered off"},
            "invalid_request",
            False,
        ),
    ],
)
async def test_the_apis_error_types_become_stable_reasons(
    status: int, body: dict[str, object], reason: str, retryable: bool
) -> None:
    client = client_with(lambda _: httpx.Response(status, json=body), [])
    with pytest.raises(ProviderError) as raised:
        await client.create_server("fr-par-2", {"commercial_type": "DEV1-S"})
    await client.close()
    assert (raised.value.reason, raised.value.retryable, raised.value.status) == (reason, retryable, status)
    assert "secret-key" not in str(raised.value)


async def test_retry_after_is_honoured_capped_and_an_http_date_falls_back_to_backoff() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "2"}, json={}),
            httpx.Response(429, headers={"Retry-After": "3600"}, json={}),
            httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, json={}),
            httpx.Response(200, json={"server": {"id": "s"}}),
        ]
    )
    slept: list[float] = []
    client = client_with(lambda _: next(answers), slept)
    assert (await client.get_server("fr-par-2", "s")) == {"id": "s"}
    await client.close()
    assert slept[:2] == [2.0, MAX_RETRY_AFTER]
    assert 0 <= slept[2] <= 0.01 * 2**2


async def test_a_connection_never_made_is_retried_even_for_a_create_but_a_5xx_is_not() -> None:
    calls: list[str] = []

    def refuse_then_answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(calls) == 2:
            return httpx.Response(201, json={"server": {"id": "new"}})
        return httpx.Response(502, json={})

    client = client_with(refuse_then_answer, [])
    assert (await client.create_server("fr-par-2", {}))["id"] == "new"
    with pytest.raises(ProviderError) as raised:
        await client.create_server("fr-par-2", {})
    await client.close()
    assert raised.value.reason == base.PROVIDER_UNAVAILABLE
    assert calls == ["POST", "POST", "POST"]  # the 502 was not repeated


async def test_a_body_that_is_not_json_is_provider_unavailable() -> None:
    client = client_with(lambda _: httpx.Response(200, text="<html>maintenance</html>"), [])
    with pytest.raises(ProviderError) as raised:
        await client.get_server("fr-par-2", "s")
    await client.close()
    assert raised.value.reason == base.PROVIDER_UNAVAILABLE


async def test_pages_end_at_the_total_count_of_the_body_or_at_a_short_page() -> None:
    servers = [{"id": str(i)} for i in range(5)]

    def paged(request: httpx.Request) -> httpx.Response:
        page, per_page = int(request.url.params["page"]), int(request.url.params["per_page"])
        chunk = servers[(page - 1) * per_page : page * per_page]
        return httpx.Response(200, json={"servers": chunk, "total_count": len(servers)})

    client = client_with(paged, [], page_size=2)
    assert [s["id"] for s in await client.list_servers("fr-par-2")] == ["0", "1", "2", "3", "4"]
    await client.close()


async def test_prices_are_read_as_exact_decimals() -> None:
    body = (
        '{"servers": {"DEV1-S": {"hourly_price": 0.0088, "ncpus": 2, "ram": 2147483648}}, "total_count": 1}'
    )
    client = client_with(lambda _: httpx.Response(200, text=body), [])
    types = await client.list_server_types("fr-par-1")
    await client.close()
    assert types["DEV1-S"]["hourly_price"] == Decimal("0.0088")
