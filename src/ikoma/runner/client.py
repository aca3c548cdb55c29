"""An httpx.AsyncClient wrapper for the runner routes, turning answers into typed errors."""

from __future__ import annotations

from typing import Any

import httpx

from ikoma.runner.config import Credentials


class RunnerApiError(Exception):
    """The API answered with an error status (its `reason` says why)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Unauthorized(RunnerApiError):
    """401: wrong or revoked credentials; retrying will not help until an operator acts."""


class Conflict(RunnerApiError):
    """409: the order is no longer this runner's to act on (stale_lease, invalid_status, …)."""


class NotFound(RunnerApiError):
    """404: the route does not exist (an older server)."""


class ServerError(RunnerApiError):
    """5xx: the API or its database is unavailable for now."""


class ApiUnreachable(Exception):
    """No answer at all: connection refused, reset or timed out."""


def _error(response: httpx.Response) -> RunnerApiError:
    reason, message = "unknown", response.text[:200]
    try:
        body = response.json()
        if isinstance(body, dict):
            reason = str(body.get("reason", reason))
            message = str(body.get("message", message))
    except ValueError:
        pass
    status = response.status_code
    kind: type[RunnerApiError] = RunnerApiError
    if status == 401:
        kind = Unauthorized
    elif status == 409:
        kind = Conflict
    elif status == 404:
        kind = NotFound
    elif status >= 500:
        kind = ServerError
    return kind(status, reason, message)


class RunnerClient:
    """One runner's calls. Every method raises ApiUnreachable or a RunnerApiError subclass."""

    def __init__(self, credentials: Credentials, *, timeout: float = 15.0) -> None:
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=credentials.api_url,
            headers={"x-runner-id": credentials.runner_id, "x-runner-token": credentials.token},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(
        self,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        read_timeout: float | None = None,
        **params: Any,
    ) -> httpx.Response:
        try:
            response = await self._http.post(
                path,
                json=body if body is not None else {},
                params=params or None,
                timeout=read_timeout or self._timeout,
            )
        except httpx.HTTPError as exc:  # transport-level: DNS, refused, reset, timeout
            raise ApiUnreachable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response

    async def heartbeat(self, *, version: str, hostname: str, capabilities: list[str]) -> dict[str, Any]:
        body = {"version": version, "hostname": hostname, "capabilities": capabilities}
        return dict((await self._post("/v1/runner/heartbeat", body)).json())

    async def claim_next(self, wait: float) -> dict[str, Any] | None:
        # the server holds the request for up to `wait`: the read timeout must outlast it
        response = await self._post("/v1/runner/orders/claim-next", read_timeout=wait + 15, wait=f"{wait:g}")
        if response.status_code == 204 or not response.content:
            return None
        return dict(response.json())

    async def start(self, order_id: str, lease_token: str) -> dict[str, Any]:
        return dict(
            (await self._post(f"/v1/runner/orders/{order_id}/start", {"leaseToken": lease_token})).json()
        )

    async def order_heartbeat(self, order_id: str, lease_token: str) -> dict[str, Any]:
        path = f"/v1/runner/orders/{order_id}/heartbeat"
        return dict((await self._post(path, {"leaseToken": lease_token})).json())

    async def complete(
        self, order_id: str, lease_token: str, status: str, report: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"leaseToken": lease_token, "status": status, "report": without_nul(report)}
        return dict((await self._post(f"/v1/runner/orders/{order_id}/complete", body)).json())

    async def send_logs(
        self, order_id: str, lease_token: str, chunks: list[dict[str, Any]]
    ) -> dict[str, Any]:
        body = {"leaseToken": lease_token, "chunks": without_nul(chunks)}
        return dict((await self._post(f"/v1/runner/orders/{order_id}/logs", body)).json())


def without_nul(value: Any) -> Any:
    """The value with every NUL character (keys included) replaced by U+FFFD.

    The API refuses NUL in JSON text (PostgreSQL cannot store it), while a program's output or a
    parsed file may contain one: a log batch or report refused for it would be retried forever.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


async def register(
    api_url: str, bootstrap_token: str, *, name: str | None, hostname: str, request_timeout: float = 15.0
) -> dict[str, Any]:
    """Trade a one-time bootstrap token for a runner id and token (POST /v1/runner/register)."""
    body: dict[str, Any] = {"hostname": hostname}
    if name:
        body["name"] = name
    async with httpx.AsyncClient(base_url=api_url.rstrip("/"), timeout=request_timeout) as http:
        try:
            response = await http.post(
                "/v1/runner/register", json=body, headers={"x-bootstrap-token": bootstrap_token}
            )
        except httpx.HTTPError as exc:
            raise ApiUnreachable(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code >= 400:
        raise _error(response)
    return dict(response.json())
