"""Worker enrolment (seed 002 "Worker Auth"): `POST /internal/worker/register` and
`POST /internal/worker/heartbeat`, the seed's names for IKOMA's runner registration and heartbeat.

- register: `Authorization: Bearer <the instance's one-time bootstrap token>` (from its user data),
  body `{instance_id?, name?, hostname?}`; spends the token exactly as `POST /v1/runner/register` does
  and answers the runner credentials once (`runnerId`, `token`; stored as a SHA-256 hash). An
  `instance_id` that is not the instance the token was issued for is refused (409 instance_mismatch)
  before the token is spent: a machine that took over another's IP cannot enrol as it.
- heartbeat: `Authorization: Bearer <runner token>`, body `{instance_id, hostname?}`; the runner
  attached to that instance's server must hold that token (401 otherwise): the runner's heartbeat is
  recorded, and the answer names the instance, which is the readiness check's "own id".

PUBLIC in the policy table like the RUNNER routes: the handlers check their own tokens.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from ikoma.api.deps import Ctx
from ikoma.domain import tokens
from ikoma.domain.errors import Conflict, Unauthorized
from ikoma.domain.ids import is_uuid
from ikoma.services import bootstrap
from ikoma.storage.tables import runner_bootstrap_tokens, servers
from ikoma.storage.tables_instances import instances

router = APIRouter(tags=["worker enrolment"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "the bearer token is missing, invalid, expired or already used"},
    409: {"description": "instance_mismatch: the token belongs to another instance"},
}


class _Worker(BaseModel):
    # the seed's worker sends more than IKOMA reads (model, ports, ...): unknown fields are ignored
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class WorkerRegister(_Worker):
    instance_id: str | None = Field(default=None, max_length=64)
    name: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )
    hostname: str | None = Field(default=None, max_length=255)


class WorkerHeartbeat(_Worker):
    instance_id: str = Field(max_length=64)
    hostname: str | None = Field(default=None, max_length=255)


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("an Authorization: Bearer token is required")
    return value.strip()


@router.post("/internal/worker/register", status_code=201, responses=ERRORS)
async def register_worker(body: WorkerRegister, request: Request, ctx: Ctx) -> dict[str, Any]:
    secret = _bearer(request)
    if body.instance_id is not None:
        async with ctx.db.read() as tx:
            owner = (
                await tx.execute(
                    select(instances.c.id)
                    .select_from(
                        instances.join(
                            runner_bootstrap_tokens,
                            runner_bootstrap_tokens.c.id == instances.c.bootstrap_token_id,
                        )
                    )
                    .where(runner_bootstrap_tokens.c.token_hash == tokens.hash_token(secret))
                )
            ).scalar()
        if owner is not None and str(owner) != body.instance_id:
            raise Conflict(
                "this token was issued for another instance",
                reason="instance_mismatch",
                instanceId=body.instance_id,
            )
    answer = await bootstrap.register_runner(
        ctx.db,
        bootstrap_token=secret,
        name=body.name,
        hostname=body.hostname,
        stale_after=ctx.settings.stale_after,
    )
    return {**answer, "instanceId": body.instance_id}


@router.post("/internal/worker/heartbeat", responses=ERRORS)
async def worker_heartbeat(body: WorkerHeartbeat, request: Request, ctx: Ctx) -> dict[str, Any]:
    secret = _bearer(request)
    runner_id = None
    if is_uuid(body.instance_id):
        async with ctx.db.read() as tx:
            runner_id = (
                await tx.execute(
                    select(servers.c.runner_id)
                    .select_from(instances.join(servers, servers.c.id == instances.c.server_id))
                    .where(instances.c.id == body.instance_id)
                )
            ).scalar()
    if runner_id is None:  # no such instance, or no runner yet: the same answer as a wrong token
        raise Unauthorized("runner credentials are missing or invalid")
    identity = await ctx.dispatcher.authenticate(str(runner_id), secret)
    answer = await ctx.dispatcher.record_heartbeat(
        identity, version=None, hostname=body.hostname, capabilities=None
    )
    return {**answer, "instanceId": body.instance_id}
