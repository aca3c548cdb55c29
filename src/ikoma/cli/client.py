"""Admin HTTP client for the IKOMA API, and the connection options every command shares.

One method per admin route of docs/api.md. Every failure, whether the API answered an error body or
never answered at all, surfaces as `ApiError` so commands have a single thing to report.
"""

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Self, cast
from urllib.parse import quote

import httpx
import typer

if TYPE_CHECKING:
    from ikoma.cli import sse

JsonObject = dict[str, Any]

# Empty means "not given": `resolve_api_url` then builds the URL from PORT, as `ikoma up` listens on it.
DEFAULT_API_URL = ""
DEFAULT_PORT = "3000"
DEFAULT_TIMEOUT_SECONDS = 10.0
# the admin key or an API client token; the API also reads `Authorization: Bearer` and x-ikoma-admin-key
ADMIN_KEY_HEADER = "X-Api-Key"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
# an event stream sends a heartbeat every 15 s: this long without a byte means the connection is dead
STREAM_READ_TIMEOUT = 45.0

ApiUrlOption = Annotated[
    str,
    typer.Option(
        "--api-url",
        envvar="IKOMA_API_URL",
        help="Root URL of the IKOMA API (routes start with /v1/). Default: http://127.0.0.1:$PORT (3000).",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
# show_default stays off so the key never lands in --help output.
AdminKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        "--admin-key",
        envvar=["IKOMA_API_KEY", "IKOMA_ADMIN_KEY"],
        help="The admin key or an API client token (ikoma_…), sent as X-Api-Key.",
        show_default=False,
        rich_help_panel="Connection",
    ),
]


class ApiError(Exception):
    """An error to report: answered by the API, or status 0 when the CLI met it itself (no answer)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        details: JsonObject | None = None,
        errors: list[JsonObject] | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details
        self.errors = errors

    @classmethod
    def from_response(cls, response: httpx.Response) -> "ApiError":
        """Build the error from the API's `{"reason", "message", "details"?, "errors"?}` body."""
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
            # Not the API's error shape (a proxy page, a server that is not IKOMA): keep what we can.
            text = response.text.strip()[:200] or response.reason_phrase
            return cls(response.status_code, f"http_{response.status_code}", text)
        details = body.get("details")
        errors = body.get("errors")
        return cls(
            response.status_code,
            body["reason"],
            str(body.get("message", "")),
            details=details if isinstance(details, dict) else None,
            errors=[e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
        )

    def to_body(self) -> JsonObject:
        """The error in the API's own shape, for `--json` output."""
        body: JsonObject = {"reason": self.reason, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        if self.errors is not None:
            body["errors"] = self.errors
        return body


@dataclass(frozen=True)
class OrderFilters:
    """Query filters of `GET /v1/orders`; None means "do not filter on this"."""

    status: str | None = None
    server_id: str | None = None
    runner_id: str | None = None
    playbook_key: str | None = None

    def to_query(self) -> dict[str, str]:
        query = {
            "status": self.status,
            "serverId": self.server_id,
            "runnerId": self.runner_id,
            "playbookKey": self.playbook_key,
        }
        return {name: value for name, value in query.items() if value is not None}


def resolve_api_url(api_url: str | None = None) -> str:
    """The API root: the given URL, else IKOMA_API_URL, else http://127.0.0.1:$PORT, like `ikoma up`."""
    chosen = api_url or os.environ.get("IKOMA_API_URL") or ""
    if chosen:
        return chosen.rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('PORT') or DEFAULT_PORT}"


def without_unset(**fields: Any) -> JsonObject:
    """Keep only the options the user gave, so the server applies its own defaults to the rest."""
    return {name: value for name, value in fields.items() if value is not None}


# A short id: the first characters of a UUID, as tables print it (8 of them; 4 is the least accepted).
SHORT_ID = re.compile(r"^[0-9a-f][0-9a-f-]{3,35}$")
# Orders are too many to list: a short order id is looked up among the newest ones only.
SHORT_ORDER_SEARCH = 2000


@dataclass(frozen=True)
class Reference:
    """How `AdminClient.resolve` finds one kind of object by what people type."""

    noun: str
    answer: str  # the field returned: "id", or "key" for playbooks
    names: tuple[str, ...]  # fields matched exactly before any id prefix
    candidates: Callable[["AdminClient"], Iterator[JsonObject]]


REFERENCES: dict[str, Reference] = {
    "server": Reference("server", "id", ("name",), lambda c: iter(c.list_servers())),
    "runner": Reference("runner", "id", ("name",), lambda c: iter(c.list_runners())),
    "playbook": Reference("playbook", "key", ("key", "name"), lambda c: iter(c.list_playbooks())),
    "api-client": Reference("API client", "id", ("name",), lambda c: iter(c.list_api_clients())),
    "webhook": Reference("webhook", "id", ("url", "description"), lambda c: iter(c.list_webhooks())),
    "order": Reference(
        "order", "id", (), lambda c: islice(c.iter_orders(OrderFilters(), page_size=500), SHORT_ORDER_SEARCH)
    ),
}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def _segment(value: str) -> str:
    # Ids come from the command line: quoting keeps "a/../b" one path segment the API can refuse (422).
    return quote(value, safe="")


class AdminClient:
    """Synchronous client of the admin routes, authenticated with the admin key."""

    def __init__(
        self,
        base_url: str,
        admin_key: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        if not admin_key:
            raise ApiError(0, "missing_admin_key", "pass --admin-key or set IKOMA_ADMIN_KEY")
        self.base_url = resolve_api_url(base_url)
        self._http = httpx.Client(
            base_url=self.base_url, headers={ADMIN_KEY_HEADER: admin_key}, timeout=timeout
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # Servers

    def list_servers(self, where: str | None = None) -> list[JsonObject]:
        """Every server, or those the selector `where` designates (docs/fleet-operations.md)."""
        return self._list("GET", "/v1/servers", params={"where": where} if where is not None else None)

    def create_server(self, fields: Mapping[str, Any]) -> JsonObject:
        return self._object("POST", "/v1/servers", json=dict(fields))

    def get_server(self, server_id: str) -> JsonObject:
        return self._object("GET", f"/v1/servers/{_segment(server_id)}")

    def update_server(self, server_id: str, fields: Mapping[str, Any]) -> JsonObject:
        """PATCH the given fields only; `{"runnerId": None}` detaches the runner."""
        return self._object("PATCH", f"/v1/servers/{_segment(server_id)}", json=dict(fields))

    def test_connection(self, server_id: str) -> JsonObject:
        return self._object("POST", f"/v1/servers/{_segment(server_id)}/test-connection")

    def trust_host_key(self, server_id: str, fingerprint: str | None) -> JsonObject:
        return self._object(
            "POST", f"/v1/servers/{_segment(server_id)}/trust-host-key", json={"fingerprint": fingerprint}
        )

    def delete_server(self, server_id: str) -> None:
        self._request("DELETE", f"/v1/servers/{_segment(server_id)}")

    def attach_runner(self, server_id: str, runner_id: str) -> JsonObject:
        return self._object(
            "POST", f"/v1/servers/{_segment(server_id)}/attach-runner", json={"runnerId": runner_id}
        )

    # Runners

    def list_runners(self) -> list[JsonObject]:
        return self._list("GET", "/v1/runners")

    def create_runner(self, name: str) -> JsonObject:
        """The answer carries `token`: the only time the API ever shows it."""
        return self._object("POST", "/v1/runners", json={"name": name})

    def get_runner(self, runner: str) -> JsonObject:
        """`runner` is an id or a name."""
        return self._object("GET", f"/v1/runners/{_segment(runner)}")

    def revoke_runner(self, runner: str) -> JsonObject:
        return self._object("POST", f"/v1/runners/{_segment(runner)}/revoke")

    def rotate_runner_token(self, runner: str) -> JsonObject:
        """The answer carries the new `token`, shown this once."""
        return self._object("POST", f"/v1/runners/{_segment(runner)}/rotate-token")

    def delete_runner(self, runner: str) -> None:
        self._request("DELETE", f"/v1/runners/{_segment(runner)}")

    # Playbooks

    def list_playbooks(self) -> list[JsonObject]:
        return self._list("GET", "/v1/playbooks")

    def create_playbook(self, fields: Mapping[str, Any]) -> JsonObject:
        return self._object("POST", "/v1/playbooks", json=dict(fields))

    def apply_playbook(self, fields: Mapping[str, Any]) -> JsonObject:
        """Create or replace a (non built-in) playbook by its key."""
        return self._object("PUT", f"/v1/playbooks/{_segment(str(fields.get('key', '')))}", json=dict(fields))

    # Orders

    def create_order(self, fields: Mapping[str, Any], idempotency_key: str | None = None) -> JsonObject:
        """Answer `{"order", "reportContract"}`; replaying an idempotency key returns the same order."""
        headers = {IDEMPOTENCY_KEY_HEADER: idempotency_key} if idempotency_key is not None else None
        return self._object("POST", "/v1/orders", json=dict(fields), headers=headers)

    def list_orders(
        self, filters: OrderFilters, cursor: str | None = None, limit: int | None = None
    ) -> JsonObject:
        """One page, newest first: `{"items": [Order], "nextCursor": str | None}`."""
        params: dict[str, str | int] = {**filters.to_query()}
        if cursor is not None:
            params["cursor"] = cursor
        if limit is not None:
            params["limit"] = limit
        return self._object("GET", "/v1/orders", params=params)

    def iter_orders(
        self, filters: OrderFilters, cursor: str | None = None, page_size: int | None = None
    ) -> Iterator[JsonObject]:
        """Every matching order from `cursor` on, newest first, following `nextCursor` to the last page."""
        while True:
            page = self.list_orders(filters, cursor=cursor, limit=page_size)
            yield from cast(list[JsonObject], page.get("items", []))
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def get_order(self, order_id: str) -> JsonObject:
        """The order plus its `report` and `attempts`."""
        return self._object("GET", f"/v1/orders/{_segment(order_id)}")

    def rerun_order(self, order_id: str, idempotency_key: str | None = None) -> JsonObject:
        """Answer `{"order", "reportContract"}`: a new order repeating this one (`order.rerunOf`)."""
        headers = {IDEMPOTENCY_KEY_HEADER: idempotency_key} if idempotency_key is not None else None
        return self._object("POST", f"/v1/orders/{_segment(order_id)}/rerun", headers=headers)

    def cancel_order(self, order_id: str, reason: str | None = None) -> JsonObject:
        return self._object(
            "POST", f"/v1/orders/{_segment(order_id)}/cancel", json=without_unset(reason=reason)
        )

    def order_events(self, order_id: str) -> list[JsonObject]:
        """Status transitions, oldest first."""
        return self._list("GET", f"/v1/orders/{_segment(order_id)}/events")

    def order_logs(self, order_id: str, *, after_seq: int = -1, wait: float = 0) -> JsonObject:
        """Log chunks after `after_seq`; with `wait`, the API holds the call until there are new ones."""
        return self._object(
            "GET",
            f"/v1/orders/{_segment(order_id)}/logs",
            params={"afterSeq": after_seq, "wait": str(wait)},
        )

    def create_bootstrap_token(
        self, *, name: str | None, server_id: str | None, expires_in: int
    ) -> JsonObject:
        """A one-time token for `ikoma runner register`, shown once."""
        body = without_unset(name=name, serverId=server_id)
        body["expiresInSeconds"] = expires_in
        return self._object("POST", "/v1/runner-bootstrap-tokens", json=body)

    # API clients

    def create_api_client(
        self, *, name: str, role: str, expires_in: int | None, server_ids: list[str] | None
    ) -> JsonObject:
        body = without_unset(name=name, role=role, expiresInSeconds=expires_in, serverIds=server_ids or None)
        return self._object("POST", "/v1/api-clients", json=body)

    def list_api_clients(self) -> list[JsonObject]:
        return cast(list[JsonObject], self._request("GET", "/v1/api-clients"))

    def revoke_api_client(self, client_id: str) -> JsonObject:
        return self._object("DELETE", f"/v1/api-clients/{_segment(client_id)}")

    # Webhooks (issue 12)

    def create_webhook(self, fields: Mapping[str, Any]) -> JsonObject:
        """The new webhook with its signing `secret`, shown this once."""
        return self._object("POST", "/v1/webhooks", json=dict(fields))

    def list_webhooks(self) -> list[JsonObject]:
        return self._list("GET", "/v1/webhooks")

    def get_webhook(self, webhook_id: str) -> JsonObject:
        return self._object("GET", f"/v1/webhooks/{_segment(webhook_id)}")

    def set_webhook_enabled(
        self, webhook_id: str, enabled: bool, *, skip_backlog: bool = False
    ) -> JsonObject:
        if not enabled:
            return self._object("POST", f"/v1/webhooks/{_segment(webhook_id)}/disable")
        body = {"skipBacklog": True} if skip_backlog else None
        return self._object("POST", f"/v1/webhooks/{_segment(webhook_id)}/enable", json=body)

    def delete_webhook(self, webhook_id: str) -> None:
        self._request("DELETE", f"/v1/webhooks/{_segment(webhook_id)}")

    def webhook_deliveries(self, webhook_id: str, *, limit: int, status: str | None) -> list[JsonObject]:
        params: dict[str, str | int] = {"limit": limit, **({"status": status} if status else {})}
        return self._list("GET", f"/v1/webhooks/{_segment(webhook_id)}/deliveries", params=params)

    def redeliver(self, webhook_id: str, delivery_id: str) -> JsonObject:
        path = f"/v1/webhooks/{_segment(webhook_id)}/deliveries/{_segment(delivery_id)}/redeliver"
        return self._object("POST", path)

    # Tools and audit (issue 5)

    def list_tools(self) -> list[JsonObject]:
        """The catalog with each tool's params schema, role, and whether this key may run it."""
        return self._list("GET", "/v1/tools")

    def execute_tool(
        self,
        tool: str,
        params: Mapping[str, Any],
        *,
        server: str | None = None,
        wait: float | None = None,
        role: str | None = None,
    ) -> tuple[int, JsonObject]:
        """`POST /execute/<tool>`: (200, the tool's result) or (202, {orderId, status, location}).

        An error answer raises `ApiError`; its `details.orderId` names the order when one was created.
        """
        body = {**params, **without_unset(serverId=server, wait=wait)}
        headers = {"X-Role": role} if role else None
        # the API holds the call up to `wait` seconds (300 by default): the HTTP timeout must outlast it
        timeout = (wait if wait is not None else 300.0) + DEFAULT_TIMEOUT_SECONDS
        try:
            response = self._http.post(
                f"/execute/{_segment(tool)}", json=body, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            raise ApiError(0, "api_timeout", f"no answer from {self.base_url} in time: {exc}") from exc
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise ApiError(0, "api_unreachable", f"cannot reach {self.base_url}: {exc}") from exc
        if response.is_error:
            raise ApiError.from_response(response)
        return response.status_code, cast(JsonObject, response.json())

    def list_audit(self, filters: Mapping[str, str | int | None], cursor: str | None = None) -> JsonObject:
        """One page of the audit log, newest first: `{"items", "nextCursor"}` (admin only)."""
        params = {k: v for k, v in {**filters, "cursor": cursor}.items() if v is not None}
        return self._object("GET", "/v1/audit", params=params)

    # The event log (issue 12)

    def list_events(self, filters: Mapping[str, str | int | list[str]]) -> JsonObject:
        """One page in id order: `{"events": [Event], "next": <last id>}`."""
        return self._object("GET", "/v1/events", params=filters)

    def stream_sse(
        self, path: str, params: Mapping[str, str | int | list[str]], *, last_event_id: str | None = None
    ) -> Iterator["sse.Message"]:
        """The messages of one Server-Sent Events answer, until the server or the network ends it.

        A silent connection (no heartbeat for `STREAM_READ_TIMEOUT` seconds) raises httpx.ReadTimeout.
        """
        from ikoma.cli import sse  # here, not at the top: sse imports this module

        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(DEFAULT_TIMEOUT_SECONDS, read=STREAM_READ_TIMEOUT)
        try:
            with self._http.stream("GET", path, params=params, headers=headers, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response)
                yield from sse.parse(response.iter_lines())
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ApiError(0, "api_unreachable", f"cannot reach {self.base_url}: {exc}") from exc

    # Machine state (issue 4)

    def server_state(self, server_id: str) -> JsonObject:
        return self._object("GET", f"/v1/servers/{_segment(server_id)}/state")

    def server_hardware(self, server_id: str) -> JsonObject | None:
        """None while no system.facts has run on the server."""
        try:
            return self._object("GET", f"/v1/servers/{_segment(server_id)}/hardware")
        except ApiError as error:
            if error.reason == "hardware_unknown":
                return None
            raise

    def server_timeline(self, server_id: str, *, limit: int = 10) -> JsonObject:
        return self._object("GET", f"/v1/servers/{_segment(server_id)}/timeline", params={"limit": limit})

    def important_messages(self, server_id: str, *, only_new: bool = False) -> list[JsonObject]:
        params: dict[str, str | int] = {"new": "true"} if only_new else {}
        return self._list("GET", f"/v1/servers/{_segment(server_id)}/important-messages", params=params)

    def fleet_summary(self) -> JsonObject:
        return self._object("GET", "/v1/fleet/summary")

    def rebuild_state(self, server_id: str | None = None) -> JsonObject:
        return self._object("POST", "/v1/state/rebuild", json=without_unset(serverId=server_id))

    # The catalog (issue 16): seed 002's paths, without /v1

    def list_instance_types(self, provider: str | None = None) -> list[JsonObject]:
        return self._list("GET", "/instance_types", params={"provider": provider} if provider else None)

    def list_models(self) -> list[JsonObject]:
        return self._list("GET", "/models")

    def create_model(self, fields: Mapping[str, Any]) -> JsonObject:
        return self._object("POST", "/models", json=dict(fields))

    def sync_catalog(self, provider: str | None = None) -> JsonObject:
        return self._object("POST", "/catalog/sync", json=without_unset(provider=provider))

    # Names, keys and short ids

    def resolve(self, kind: str, ref: str) -> str:
        """The id (a playbook's key) of the `kind` object people named `ref`.

        `ref` may be the full id, a name (a playbook's key or name), or the first characters of an id
        as tables print them. A full id or a dotted playbook key is passed on as is, without a lookup:
        the API's answer to the request itself says when it does not exist.
        """
        how = REFERENCES[kind]
        if how.answer == "id" and _is_uuid(ref):
            return ref.lower()
        if kind == "playbook" and "." in ref:
            return ref
        lowered = ref.lower()
        by_prefix: list[JsonObject] = []
        searched = how.candidates(self) if how.names or SHORT_ID.match(lowered) else iter(())
        for candidate in searched:
            if any(candidate.get(field) == ref for field in how.names):
                return str(candidate[how.answer])
            if SHORT_ID.match(lowered) and str(candidate.get("id", "")).startswith(lowered):
                by_prefix.append(candidate)
        if len(by_prefix) == 1:
            return str(by_prefix[0][how.answer])
        if by_prefix:
            found = ", ".join(str(c["id"]) for c in by_prefix[:5])
            raise ApiError(
                0,
                "ambiguous_reference",
                f"{ref!r} starts the ids of {len(by_prefix)} {how.noun}s ({found}); give more characters",
            )
        if kind == "order":
            message = (
                f"no order id starts with {ref!r} among the newest {SHORT_ORDER_SEARCH}: give the full id"
            )
        else:
            fields = " or ".join(how.names)
            message = f"no {how.noun} with {fields} {ref!r}, and no {how.noun} id starts with it"
        raise ApiError(404, f"{how.noun.replace(' ', '_').lower()}_not_found", message)

    # Transport

    def _object(self, method: str, path: str, **kwargs: Any) -> JsonObject:
        return cast(JsonObject, self._request(method, path, **kwargs))

    def _list(self, method: str, path: str, **kwargs: Any) -> list[JsonObject]:
        return cast(list[JsonObject], self._request(method, path, **kwargs))

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: JsonObject | None = None,
        params: Mapping[str, str | int | list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ApiError(0, "api_unreachable", f"cannot reach {self.base_url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise ApiError(0, "api_timeout", f"no answer from {self.base_url} in time: {exc}") from exc
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise ApiError(0, "api_unreachable", f"cannot talk to {self.base_url}: {exc}") from exc
        if response.is_error:
            raise ApiError.from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code, "invalid_response", f"{method} {path} did not answer JSON"
            ) from exc
