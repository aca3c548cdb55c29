"""An async client of Scaleway's Instance API (`/instance/v1/zones/{zone}/...`): the calls IKOMA makes,
each answering the API's JSON, and every failure as a `ProviderError` with a stable reason.

    client = InstanceClient(secret_key, api_url="https://api.scaleway.com", timeout=30.0)
    server = await client.create_server("fr-par-2", {"name": ..., "commercial_type": ..., ...})
    await client.server_action("fr-par-2", server["id"], "poweron")
    await client.close()

Retries: a call the API refused before doing anything (429, or a connection never made) is tried again
after a backoff, at most `retries` more times; a 5xx, a timeout or a dropped connection is tried again
only for calls that are safe to repeat (reads, deletes, user data, power actions: a repeated one ends
where the first would have). `POST /servers` is never repeated on those: the server may exist, so the
error says so (PROVIDER_TIMEOUT, PROVIDER_UNAVAILABLE) and the caller looks for it by its tags.

The secret key travels only in the `X-Auth-Token` header: no message, log line or error carries it.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import httpx
import structlog

from ikoma.providers import base
from ikoma.providers.base import ProviderError

log = structlog.get_logger("ikoma.providers.scaleway")

DEFAULT_API_URL = "https://api.scaleway.com"
MAX_PER_PAGE = 100  # the API's ceiling for `per_page`
MAX_PAGES = 1000  # a runaway pagination guard: 100,000 servers in one zone
MAX_RETRY_AFTER = 30.0  # seconds: a longer Retry-After is the caller's problem, not one call's
USER_DATA_KEY = "cloud-init"  # the key cloud-init reads on a Scaleway Instance

Sleep = Callable[[float], Awaitable[None]]
Json = dict[str, Any]


class InstanceClient:
    def __init__(
        self,
        secret_key: str,
        *,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        page_size: int = MAX_PER_PAGE,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.retries = retries
        self.backoff = backoff
        self.page_size = min(max(page_size, 1), MAX_PER_PAGE)
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            headers={"X-Auth-Token": secret_key, "User-Agent": "ikoma"},
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self._http.aclose()

    # --- servers ---------------------------------------------------------------------------------------

    async def list_servers(
        self, zone: str, *, project: str | None = None, tags: list[str] | None = None
    ) -> list[Json]:
        """Every server of the zone (all pages) carrying all of `tags` (`key=value` strings)."""
        params: dict[str, str] = {}
        if project:
            params["project"] = project
        if tags:
            params["tags"] = ",".join(tags)
        servers: list[Json] = []
        for page in range(1, MAX_PAGES + 1):
            response = await self._call(
                "GET",
                _zone(zone, "/servers"),
                params={**params, "page": str(page), "per_page": str(self.page_size)},
                safe=True,
            )
            body = _json(response)
            batch = body.get("servers") or []
            servers.extend(batch)
            if not _more_pages(response, body, len(servers), len(batch), self.page_size):
                break
        return servers

    async def get_server(self, zone: str, server_id: str) -> Json | None:
        """The server, or None when the API answers 404 (never existed, or deleted)."""
        try:
            response = await self._call("GET", _zone(zone, f"/servers/{server_id}"), safe=True)
        except ProviderError as exc:
            if exc.reason == base.NOT_FOUND:
                return None
            raise
        server: Json = _json(response)["server"]
        return server

    async def create_server(self, zone: str, body: Mapping[str, Any]) -> Json:
        """POST /servers: the server as created (stopped). Never repeated once it may have been sent."""
        response = await self._call("POST", _zone(zone, "/servers"), json=dict(body), safe=False)
        server: Json = _json(response)["server"]
        return server

    async def server_action(self, zone: str, server_id: str, action: str) -> Json:
        """POST /servers/{id}/action: the task the API started."""
        response = await self._call(
            "POST", _zone(zone, f"/servers/{server_id}/action"), json={"action": action}, safe=True
        )
        task: Json = _json(response).get("task") or {}
        return task

    async def delete_server(self, zone: str, server_id: str) -> None:
        """DELETE /servers/{id} (a stopped server; its volumes stay); 404 raises NOT_FOUND."""
        await self._call("DELETE", _zone(zone, f"/servers/{server_id}"), safe=True)

    async def set_user_data(self, zone: str, server_id: str, content: str, key: str = USER_DATA_KEY) -> None:
        """PATCH /servers/{id}/user_data/{key} with the raw content (text/plain)."""
        await self._call(
            "PATCH",
            _zone(zone, f"/servers/{server_id}/user_data/{key}"),
            content=content.encode(),
            headers={"Content-Type": "text/plain"},
            safe=True,
        )

    async def delete_volume(self, zone: str, volume_id: str) -> None:
        await self._call("DELETE", _zone(zone, f"/volumes/{volume_id}"), safe=True)

    # --- products --------------------------------------------------------------------------------------

    async def list_server_types(self, zone: str) -> dict[str, Json]:
        """GET /products/servers (all pages): commercial type -> its description (prices as Decimal)."""
        types: dict[str, Json] = {}
        for page in range(1, MAX_PAGES + 1):
            response = await self._call(
                "GET",
                _zone(zone, "/products/servers"),
                params={"page": str(page), "per_page": str(self.page_size)},
                safe=True,
            )
            body = _json(response)
            batch = body.get("servers") or {}
            types.update(batch)
            if not _more_pages(response, body, len(types), len(batch), self.page_size):
                break
        return types

    async def server_types_availability(self, zone: str) -> dict[str, str]:
        """GET /products/servers/availability: commercial type -> available | scarce | shortage."""
        availability: dict[str, str] = {}
        for page in range(1, MAX_PAGES + 1):
            response = await self._call(
                "GET",
                _zone(zone, "/products/servers/availability"),
                params={"page": str(page), "per_page": str(self.page_size)},
                safe=True,
            )
            body = _json(response)
            batch = body.get("servers") or {}
            availability.update({code: str(v.get("availability", "")) for code, v in batch.items()})
            if not _more_pages(response, body, len(availability), len(batch), self.page_size):
                break
        return availability

    # --- one call, retried -----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        safe: bool,
        params: Mapping[str, str] | None = None,
        json: Json | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The response of a 2xx; anything else raises. `safe`: the call may be repeated after a 5xx,
        a timeout or a dropped connection (it was perhaps done; doing it again ends the same)."""
        what = f"Scaleway {method} {path}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self._http.request(
                    method, path, params=params, json=json, content=content, headers=headers
                )
            except httpx.TimeoutException:
                # no answer in time: the call may have happened
                if safe and not last:
                    await self._sleep(self._delay(attempt))
                    continue
                raise ProviderError(
                    f"{what}: no answer within the timeout", reason=base.PROVIDER_TIMEOUT, retryable=True
                ) from None
            except httpx.TransportError as exc:
                # a connection never made was never a request: repeating it is safe for any call
                if (safe or isinstance(exc, httpx.ConnectError)) and not last:
                    await self._sleep(self._delay(attempt))
                    continue
                raise ProviderError(
                    f"{what}: {type(exc).__name__}", reason=base.PROVIDER_UNAVAILABLE, retryable=True
                ) from None
            if response.status_code < 400:
                return response
            error = _error(what, response)
            retry = response.status_code == 429 or (safe and response.status_code >= 500)
            if not retry or last:
                raise error
            delay = self._delay(attempt, retry_after=response.headers.get("Retry-After"))
            log.info("scaleway_call_retried", call=what, status=response.status_code, delay=round(delay, 3))
            await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _delay(self, attempt: int, *, retry_after: str | None = None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER)
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        # exponential with full jitter, so replicas retrying together spread out
        return float(random.uniform(0, self.backoff * 2**attempt))  # noqa: S311  (not a secret)


def _zone(zone: str, path: str) -> str:
    return f"/instance/v1/zones/{zone}{path}"


def _json(response: httpx.Response) -> Json:
    """The body as JSON, numbers with a fraction as Decimal (prices stay exact)."""
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except ValueError:
        raise ProviderError(
            f"Scaleway answered {response.status_code} with a body that is not JSON",
            reason=base.PROVIDER_UNAVAILABLE,
            retryable=True,
            status=response.status_code,
        ) from None
    if not isinstance(body, dict):
        raise ProviderError(
            "Scaleway answered JSON that is not an object",
            reason=base.PROVIDER_UNAVAILABLE,
            retryable=True,
            status=response.status_code,
        )
    return body


def _more_pages(response: httpx.Response, body: Json, seen: int, batch: int, page_size: int) -> bool:
    """Whether another page follows: the total (X-Total-Count, or `total_count`) when the API gives it,
    else a full page."""
    total = response.headers.get("X-Total-Count", body.get("total_count"))
    if batch == 0:
        return False
    try:
        return seen < int(total) if total is not None else batch >= page_size
    except (TypeError, ValueError):
        return batch >= page_size


def _error(what: str, response: httpx.Response) -> ProviderError:
    """The API's error (`{"type": ..., "message": ...}`) as a ProviderError with IKOMA's reason."""
    status = response.status_code
    kind = message = ""
    try:
        body = json.loads(response.content)
        if isinstance(body, dict):
            kind = str(body.get("type") or "")
            message = str(body.get("message") or body.get("help_message") or "")
    except ValueError:
        pass
    detail = f"{what}: {status}" + (f" {kind}" if kind else "") + (f": {message[:200]}" if message else "")
    if kind == "out_of_stock":
        reason, retryable = base.CAPACITY_SHORTAGE, True
    elif kind == "quotas_exceeded" or "quota exceeded" in message.lower():
        reason, retryable = base.QUOTA_EXCEEDED, False
    elif kind == "transient_state":
        reason, retryable = base.ACTION_NOT_ALLOWED, True
    elif status in (401, 403) or kind in ("denied_authentication", "permissions_denied"):
        reason, retryable = base.AUTH_FAILED, False
    elif status == 404 or kind in ("not_found", "unknown_resource"):
        reason, retryable = base.NOT_FOUND, False
    elif status == 429:
        reason, retryable = base.RATE_LIMITED, True
    elif status >= 500:
        reason, retryable = base.PROVIDER_UNAVAILABLE, True
    else:
        reason, retryable = base.INVALID_REQUEST, False
    return ProviderError(detail, reason=reason, retryable=retryable, status=status)
