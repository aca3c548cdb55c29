"""Webhook routes (admin only, api/policy.py): register (the signing secret is shown once), list, show,
change, disable/enable, delete, the delivery log and redelivery. Audited by the policy middleware."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Security
from pydantic import Field
from starlette.responses import Response

from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.api.schemas import Labels, NotNull, Public, UtcDatetime, Wire
from ikoma.services import webhooks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Security(admin_key_header)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "needs the admin role"},
}
URL_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "`webhook_url_invalid` (not http(s) with a host), `webhook_target_private` (resolves "
        "to a loopback, private, link-local or reserved address), `webhook_target_unresolvable`, "
        "`unknown_event_kind`, `unknown_server`, `validation_error`"
    }
}

Url = Annotated[str, Field(min_length=1, max_length=2000)]
Kind = Annotated[str, Field(min_length=1, max_length=64)]
Kinds = Annotated[list[Kind], Field(min_length=1, max_length=webhooks.MAX_KINDS)]
ServerIds = Annotated[list[uuid.UUID], Field(min_length=1, max_length=1000)]
Description = Annotated[str, Field(max_length=200)]
DeliveryStatus = Literal["pending", "delivered", "failed"]


class WebhookCreate(Wire):
    url: Url
    events: Kinds = Field(description="Event kinds or prefixes (`order.failed`, `order`, `*` for all).")
    # absent: events of every server; present: only events of these servers
    server_ids: ServerIds | None = None
    # absent: no label filter; present: only events of servers carrying every one of these labels
    labels: Labels | None = None
    description: Description | None = None


class WebhookUpdate(Wire):
    """Only the fields given change; `serverIds: null` / `labels: null` remove that filter."""

    url: Annotated[Url | None, NotNull] = None
    events: Annotated[Kinds | None, NotNull] = None
    server_ids: ServerIds | None = None
    labels: Labels | None = None
    description: Description | None = None


class WebhookEnable(Wire):
    skip_backlog: bool = Field(
        default=False, description="Start with the next new event: what happened while disabled is not sent."
    )


class WebhookPublic(Public):
    id: str
    url: str
    description: str | None
    events: list[str] = Field(validation_alias="kinds")
    server_ids: list[str] | None
    labels: dict[str, str] | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: UtcDatetime | None
    last_event_id: int
    consecutive_failures: int
    created_by: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class WebhookIssued(WebhookPublic):
    secret: str = Field(description="The signing secret: shown once, stored encrypted.")


class DeliveryPublic(Public):
    id: str = Field(description="The `X-Ikoma-Delivery` header of its POSTs.")
    webhook_id: str
    event_id: int
    kind: str
    status: DeliveryStatus
    attempts: int
    status_code: int | None
    duration_ms: int | None
    error: str | None
    next_attempt_at: UtcDatetime | None
    redelivery_of: str | None
    created_at: UtcDatetime
    last_attempt_at: UtcDatetime | None
    delivered_at: UtcDatetime | None
    failed_at: UtcDatetime | None


def _wake(request: Request) -> None:
    dispatcher = getattr(request.app.state, "webhook_dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()


@router.post("", status_code=201, response_model=WebhookIssued, responses={**ERRORS, **URL_ERRORS})
async def create_webhook(body: WebhookCreate, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Register a webhook; the answer holds its signing secret, which is never shown again."""
    return await webhooks.create_webhook(
        ctx.db,
        ctx.vault,
        url=body.url,
        kinds=body.events,
        server_ids=[str(s) for s in body.server_ids] if body.server_ids is not None else None,
        labels=body.labels,
        description=body.description,
        created_by=principal.actor,
        allow_private=ctx.settings.webhook_allow_private,
    )


@router.get("", response_model=list[WebhookPublic], responses=ERRORS)
async def list_webhooks(ctx: Ctx) -> Any:
    return await webhooks.list_webhooks(ctx.db)


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=ERRORS)
async def get_webhook(webhook_id: uuid.UUID, ctx: Ctx) -> Any:
    return await webhooks.get_webhook(ctx.db, str(webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookPublic, responses={**ERRORS, **URL_ERRORS})
async def update_webhook(
    webhook_id: uuid.UUID, body: WebhookUpdate, ctx: Ctx, principal: CurrentPrincipal
) -> Any:
    changes = body.model_dump(exclude_unset=True, by_alias=False)
    if "events" in changes:
        changes["kinds"] = changes.pop("events")
    if changes.get("server_ids") is not None:
        changes["server_ids"] = [str(s) for s in changes["server_ids"]]
    return await webhooks.update_webhook(
        ctx.db,
        str(webhook_id),
        changes,
        actor=principal.actor,
        allow_private=ctx.settings.webhook_allow_private,
    )


@router.delete("/{webhook_id}", status_code=204, responses=ERRORS)
async def delete_webhook(webhook_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    await webhooks.delete_webhook(ctx.db, str(webhook_id), actor=principal.actor)
    return Response(status_code=204)


@router.post("/{webhook_id}/disable", response_model=WebhookPublic, responses=ERRORS)
async def disable_webhook(webhook_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Nothing is sent until it is enabled again (disabling twice is no error)."""
    return await webhooks.disable_webhook(ctx.db, str(webhook_id), actor=principal.actor)


@router.post("/{webhook_id}/enable", response_model=WebhookPublic, responses=ERRORS)
async def enable_webhook(
    webhook_id: uuid.UUID,
    ctx: Ctx,
    principal: CurrentPrincipal,
    request: Request,
    body: WebhookEnable | None = None,
) -> Any:
    """Deliveries resume where they stopped (the failure count starts again from zero)."""
    enabled = await webhooks.enable_webhook(
        ctx.db, str(webhook_id), actor=principal.actor, skip_backlog=body.skip_backlog if body else False
    )
    _wake(request)
    return enabled


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryPublic], responses=ERRORS)
async def list_deliveries(
    webhook_id: uuid.UUID,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: DeliveryStatus | None = None,
) -> Any:
    """Newest first: each delivery's status, attempts, last status code, duration and error."""
    return await webhooks.list_deliveries(ctx.db, str(webhook_id), limit=limit, status=status)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=201,
    response_model=DeliveryPublic,
    responses={
        **ERRORS,
        409: {
            "description": "`webhook_disabled`: enable it first; `event_expired`: the event is no longer kept"
        },
    },
)
async def redeliver(webhook_id: uuid.UUID, delivery_id: uuid.UUID, ctx: Ctx, request: Request) -> Any:
    """Send the delivery's event again, as a new delivery (a new `X-Ikoma-Delivery` id)."""
    queued = await webhooks.redeliver(ctx.db, str(webhook_id), str(delivery_id))
    _wake(request)
    return queued
