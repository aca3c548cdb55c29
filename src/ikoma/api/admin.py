"""Fleet routes (servers, playbooks, orders): parse, check the caller's scope, call one service."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Security
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.api.schemas import (
    AttachRunner,
    BootstrapTokenCreate,
    BootstrapTokenIssued,
    CancelRequest,
    ConnectionTest,
    LogPage,
    OrderCreate,
    OrderCreated,
    OrderDetail,
    OrderEventPublic,
    OrderPage,
    OrderPublic,
    OrderRerun,
    OrderStatusName,
    PlaybookCreate,
    PlaybookPublic,
    ServerCreate,
    ServerPublic,
    ServerUpdate,
    TrustHostKey,
)
from ikoma.contracts import REPORT_CONTRACT
from ikoma.contracts.playbook import template_errors
from ikoma.domain.errors import Invalid, NotFound
from ikoma.domain.lifecycle import OrderStatus
from ikoma.domain.roles import Role
from ikoma.domain.selectors import parse as parse_selector
from ikoma.services import audit, bootstrap, logs, orders, playbooks, reruns, selectors, servers, waiting
from ikoma.services.identity import Principal
from ikoma.ssh import hostkeys

router = APIRouter(prefix="/v1", dependencies=[Security(admin_key_header)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "the caller's role does not allow this"},
}


async def _visible_order(ctx: Any, principal: Principal, order_id: str) -> dict[str, Any]:
    """The order, if the caller's server scope covers it; otherwise it does not exist for them."""
    order = await orders.get_order(ctx.db, order_id)
    if not principal.can_see_server(str(order["server_id"])):
        raise NotFound("no order with this id", reason="order_not_found", orderId=order_id)
    return order


def _server_fields(body: ServerCreate | ServerUpdate) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True, by_alias=False)
    for name, value in fields.items():  # SSH secrets (SecretStr) go to the service in clear, sealed there
        if isinstance(value, SecretStr):
            fields[name] = value.get_secret_value()
    if "runner_id" in fields and fields["runner_id"] is not None:
        fields["runner_id"] = str(fields["runner_id"])
    if isinstance(body, ServerCreate):
        # defaults count on create even when the client left them out
        defaults = body.model_dump(by_alias=False, exclude={"runner_id"}, exclude_none=True)
        fields = {**{k: v for k, v in defaults.items() if not isinstance(v, SecretStr)}, **fields}
    return fields


# --- servers ---------------------------------------------------------------------------------------
@router.get("/servers", response_model=list[ServerPublic], responses=ERRORS)
async def list_servers(
    ctx: Ctx,
    principal: CurrentPrincipal,
    label: Annotated[
        list[Annotated[str, Query(min_length=1, max_length=601)]] | None,
        Query(
            max_length=20,
            description="`key=value` (the label has this value) or `key` (the label is set); "
            "repeat to require several (AND)",
        ),
    ] = None,
    where: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=4000,
            description="A selector (docs/fleet-operations.md): `env=prod,role in (web,api),!retired,"
            "name=web-*,state=online`; 422 `invalid_selector` names the position and what was expected",
        ),
    ] = None,
) -> Any:
    if where is not None:
        found = await selectors.select_servers(
            ctx.db,
            parse_selector(where),
            server_ids=principal.server_ids,
            stale_after=ctx.settings.stale_after,
        )
        wanted = servers.parse_label_filters(label or [])
        return [s for s in found if servers.has_labels(s["labels"], wanted)]
    found = await servers.list_servers(ctx.db, labels=label)
    return [s for s in found if principal.can_see_server(str(s["id"]))]


@router.post("/servers", status_code=201, response_model=ServerPublic, responses=ERRORS)
async def create_server(body: ServerCreate, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    return await servers.create_server(
        ctx.db,
        _server_fields(body),
        actor=principal.actor,
        vault=ctx.vault,
        stale_after=ctx.settings.stale_after,
    )


@router.get("/servers/{server_id}", response_model=ServerPublic, responses=ERRORS)
async def get_server(server_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    principal.require_server(str(server_id))
    return await servers.get_server(ctx.db, str(server_id))


@router.patch("/servers/{server_id}", response_model=ServerPublic, responses=ERRORS)
async def update_server(
    server_id: uuid.UUID, body: ServerUpdate, ctx: Ctx, principal: CurrentPrincipal
) -> Any:
    principal.require_server(str(server_id))
    return await servers.update_server(
        ctx.db,
        str(server_id),
        _server_fields(body),
        actor=principal.actor,
        vault=ctx.vault,
        stale_after=ctx.settings.stale_after,
    )


@router.post("/servers/{server_id}/test-connection", response_model=ConnectionTest, responses=ERRORS)
async def test_connection(server_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Connect over SSH now: `ok` (with the remote OS) or why not (`dns_failed`, `connection_refused`,
    `timeout`, `auth_failed`, `host_key_changed`, `sudo_failed`, `credentials_undecryptable`, …).
    The first success pins the host key (trust on first use)."""
    principal.require_server(str(server_id))
    return await hostkeys.test_connection(
        ctx.db,
        ctx.vault,
        str(server_id),
        connect_timeout=ctx.settings.ssh_connect_timeout,
        actor=principal.actor,
    )


@router.post("/servers/{server_id}/trust-host-key", response_model=ServerPublic, responses=ERRORS)
async def trust_host_key(
    server_id: uuid.UUID, body: TrustHostKey, ctx: Ctx, principal: CurrentPrincipal
) -> Any:
    """Trust a new SSH host key (a reinstalled machine): this fingerprint, or the next one presented."""
    principal.require_server(str(server_id))
    await hostkeys.trust(ctx.db, str(server_id), body.fingerprint, actor=principal.actor)
    return await servers.get_server(ctx.db, str(server_id))


@router.delete("/servers/{server_id}", status_code=204, responses=ERRORS)
async def delete_server(server_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    principal.require_server(str(server_id))
    await servers.delete_server(ctx.db, str(server_id), actor=principal.actor)
    return Response(status_code=204)


# one route per method: a route on two methods gets one operationId for both in OpenAPI
@router.patch("/servers/{server_id}/attach-runner", response_model=ServerPublic, responses=ERRORS)
@router.post("/servers/{server_id}/attach-runner", response_model=ServerPublic, responses=ERRORS)
async def attach_runner(
    server_id: uuid.UUID, body: AttachRunner, ctx: Ctx, principal: CurrentPrincipal
) -> Any:
    """Legacy alias of `PATCH /v1/servers/:id {runnerId}` (seed 000), on PATCH and POST."""
    principal.require_server(str(server_id))
    runner_id = str(body.runner_id) if body.runner_id else None
    return await servers.update_server(
        ctx.db, str(server_id), {"runner_id": runner_id}, actor=principal.actor
    )


# --- playbooks -------------------------------------------------------------------------------------
@router.get("/playbooks", response_model=list[PlaybookPublic], responses=ERRORS)
async def list_playbooks(ctx: Ctx) -> Any:
    return await playbooks.list_playbooks(ctx.db)


@router.post("/playbooks", status_code=201, response_model=PlaybookPublic, responses=ERRORS)
async def create_playbook(body: PlaybookCreate, ctx: Ctx) -> Any:
    return await playbooks.create_playbook(ctx.db, _playbook_fields(body))


@router.put("/playbooks/{key}", response_model=PlaybookPublic, responses=ERRORS)
async def apply_playbook(key: str, body: PlaybookCreate, ctx: Ctx) -> Any:
    """Create or replace a playbook (`ikoma playbooks apply FILE`); built-in ones cannot be replaced."""
    if key != body.key:
        raise Invalid("the key in the path and in the body differ", field="key", path=key, body=body.key)
    return await playbooks.apply_playbook(ctx.db, _playbook_fields(body))


def _playbook_fields(body: PlaybookCreate) -> dict[str, Any]:
    """The columns of a playbook definition, after checks no type can express (schema, templates)."""
    try:
        Draft202012Validator.check_schema(body.params_schema)
    except SchemaError as exc:
        raise Invalid(
            f"paramsSchema is not a valid JSON schema: {exc.message}", field="paramsSchema"
        ) from None
    if body.steps is not None:
        problems = template_errors(body.steps, body.params_schema)
        if problems:
            raise Invalid("steps misuse parameters", errors=problems)
    fields = body.model_dump(by_alias=False, exclude={"steps"})
    fields["default_timeout_s"] = fields.pop("default_timeout_seconds")
    fields["name"] = fields["name"] or body.key
    fields["steps"] = [s.model_dump(by_alias=True) for s in body.steps] if body.steps else None
    return fields


# --- orders ----------------------------------------------------------------------------------------
@router.post("/orders", status_code=201, response_model=OrderCreated, responses=ERRORS)
async def create_order(
    body: OrderCreate,
    ctx: Ctx,
    principal: CurrentPrincipal,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> Any:
    principal.require_server(str(body.server_id))

    def authorize(playbook: dict[str, Any]) -> None:
        principal.require(Role.parse(playbook["min_role"]), f"playbook {body.playbook_key}")

    # the audit entry is written in the order's transaction (api/policy.py AUDITED_IN_TRANSACTION)
    in_transaction: audit.InTransaction | None = getattr(request.state, "audit", None)
    payload = body.model_dump(mode="json", by_alias=False)
    order, replayed = await orders.create_order(
        ctx.db,
        ctx.wakeups,
        payload,
        idempotency_key=idempotency_key,
        default_timeout=ctx.settings.order_timeout,
        actor=principal.actor,
        vault=ctx.vault,
        authorize=authorize,
        joined=in_transaction.join if in_transaction is not None else None,
    )
    if replayed:
        response.status_code = 200
    return {"order": order, "report_contract": REPORT_CONTRACT}


@router.get("/orders", response_model=OrderPage, responses=ERRORS)
async def list_orders(
    ctx: Ctx,
    principal: CurrentPrincipal,
    status: OrderStatusName | None = None,
    server_id: Annotated[uuid.UUID | None, Query(alias="serverId")] = None,
    runner_id: Annotated[uuid.UUID | None, Query(alias="runnerId")] = None,
    playbook_key: Annotated[str | None, Query(alias="playbookKey", max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Any:
    if server_id is not None:
        principal.require_server(str(server_id))
    elif principal.server_ids is not None:
        # a scoped client lists one server at a time (or the only one it has)
        if len(principal.server_ids) != 1:
            raise Invalid(
                "this API client is scoped to several servers: pass serverId", reason="server_required"
            )
        server_id = uuid.UUID(next(iter(principal.server_ids)))
    items, next_cursor = await orders.list_orders(
        ctx.db,
        status=OrderStatus(status) if status else None,
        server_id=str(server_id) if server_id else None,
        runner_id=str(runner_id) if runner_id else None,
        playbook_key=playbook_key,
        limit=limit,
        cursor=cursor,
    )
    waits = await waiting.waiting_for(ctx.db, items, stale_after=ctx.settings.stale_after)
    items = [{**item, "waiting_for": waits[str(item["id"])]} for item in items]
    return {"items": items, "next_cursor": next_cursor}


@router.get("/orders/{order_id}", response_model=OrderDetail, responses=ERRORS)
async def get_order(order_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """The order with its attempts, its re-runs and, while it is not running, why (`waitingFor`)."""
    order = await _visible_order(ctx, principal, str(order_id))
    waits = await waiting.waiting_for(ctx.db, [order], stale_after=ctx.settings.stale_after)
    return {**order, "waiting_for": waits[order["id"]], "reruns": await reruns.reruns_of(ctx.db, order["id"])}


@router.post("/orders/{order_id}/rerun", status_code=201, response_model=OrderRerun, responses=ERRORS)
async def rerun_order(
    order_id: uuid.UUID,
    ctx: Ctx,
    principal: CurrentPrincipal,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> Any:
    """A new order with the same playbook, server, params (secret ones carried sealed), timeout and
    attempts, naming this one in `rerunOf`; the playbook's own role applies as for POST /v1/orders."""

    def authorize(playbook: dict[str, Any]) -> None:
        principal.require(Role.parse(playbook["min_role"]), f"playbook {playbook['key']}")

    in_transaction: audit.InTransaction | None = getattr(request.state, "audit", None)
    order, replayed = await reruns.rerun_order(
        ctx.db,
        ctx.wakeups,
        str(order_id),
        idempotency_key=idempotency_key,
        actor=principal.actor,
        vault=ctx.vault,
        can_see=principal.can_see_server,
        authorize=authorize,
        joined=in_transaction.join if in_transaction is not None else None,
    )
    if replayed:
        response.status_code = 200
    waits = await waiting.waiting_for(ctx.db, [order], stale_after=ctx.settings.stale_after)
    return {"order": {**order, "waiting_for": waits[str(order["id"])]}, "report_contract": REPORT_CONTRACT}


@router.post("/orders/{order_id}/cancel", response_model=OrderPublic, responses=ERRORS)
async def cancel_order(
    order_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal, body: CancelRequest | None = None
) -> Any:
    await _visible_order(ctx, principal, str(order_id))
    return await orders.cancel_order(
        ctx.db, str(order_id), reason=body.reason if body else None, actor=principal.actor
    )


@router.get("/orders/{order_id}/logs", response_model=LogPage, responses=ERRORS)
async def order_logs(
    order_id: uuid.UUID,
    ctx: Ctx,
    principal: CurrentPrincipal,
    after_seq: Annotated[int, Query(alias="afterSeq", ge=-1)] = -1,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
) -> Any:
    """Log chunks after `afterSeq`; with `wait`, held until new chunks arrive or the order ends."""
    await _visible_order(ctx, principal, str(order_id))
    return await logs.read_logs(
        ctx.db, ctx.wakeups, order_id=str(order_id), after_seq=after_seq, limit=limit, wait=wait
    )


@router.post(
    "/runner-bootstrap-tokens", status_code=201, response_model=BootstrapTokenIssued, responses=ERRORS
)
async def create_bootstrap_token(body: BootstrapTokenCreate, ctx: Ctx) -> Any:
    """A one-time token a new runner trades for its credentials (`ikoma runner register`)."""
    return await bootstrap.issue_bootstrap_token(
        ctx.db,
        name=body.name,
        server_id=str(body.server_id) if body.server_id else None,
        expires_in=body.expires_in_seconds,
    )


@router.get("/orders/{order_id}/events", response_model=list[OrderEventPublic], responses=ERRORS)
async def order_events(order_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    await _visible_order(ctx, principal, str(order_id))
    return await orders.list_events(ctx.db, str(order_id))
