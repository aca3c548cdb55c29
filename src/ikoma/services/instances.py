"""Instances: deployments at a provider and the provisioning step (rows and transitions: instance_records.py).

    fleet = Instances(db, providers, settings)
    instance = await fleet.deploy(instance_type_id=..., zone_id=..., model_id=..., actor="user:...")
    await fleet.provision(instance["id"])     # also what the leader's driver retries (instance_loops.py)
    await fleet.request_termination(instance_id, actor=...)   # -> terminating; the terminator does it

Rules (issue 16): the provider call is made OUTSIDE any transaction, under a lease on the row
(`lease_owner`, `lease_until` by the database clock), so a crash or a timeout leaves a row the next
worker takes once the lease ran out; it always lists the provider's machines by the instance's tag
before creating, and adopts what it finds: never two machines for one instance. Every transition is an
`instance.<state>` event and a row of `instance_state_changes`; every provider action (create, adopt,
terminate, orphan found) is an entry of the action log (the audit log, channel `system`).

A deployment also creates its fleet server (labels `ikoma.instance`, `ikoma.provider`, `ikoma.zone`)
and a one-time runner bootstrap token bound to it, put in the machine's user data: the runner that
spends that token is attached to that server by the existing registration, whatever IP the machine has.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy import and_, delete, insert, or_, select, update

from ikoma.domain import tokens
from ikoma.domain.errors import Conflict, Invalid
from ikoma.domain.instances import (
    DELETABLE,
    CreatePlan,
    State,
    after_create_error,
    can_archive,
    provisioning,
)
from ikoma.providers import base
from ikoma.providers.base import InstanceRequest, Provider, ProviderError, ProviderInstance
from ikoma.providers.mock.user_data import render_user_data
from ikoma.services import catalog, events
from ikoma.services.bootstrap import BOOTSTRAP_TOKEN_KIND
from ikoma.services.instance_records import (
    error_values,
    get_row,
    installation_id,
    machine_values,
    public,
    record_action,
    record_move,
    transition,
)
from ikoma.settings import Settings
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import runner_bootstrap_tokens, servers
from ikoma.storage.tables_instances import instance_state_changes, instances

log = structlog.get_logger("ikoma.instances")

DEFAULT_IMAGE = "ubuntu_jammy"


class Instances:
    """Deployments and the provisioning driver, over the configured providers."""

    def __init__(self, db: Database, providers: Mapping[str, Provider], settings: Settings) -> None:
        self.db = db
        self.providers = providers
        self.settings = settings
        # who holds a lease: this process, recognisable in the row
        self.worker = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    @property
    def api_url(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url
        host = self.settings.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - reached through loopback
        return f"http://{host}:{self.settings.port}"

    def provider(self, code: str) -> Provider:
        found = self.providers.get(code)
        if found is None:
            raise Invalid(
                f"provider {code!r} is not configured on this IKOMA",
                reason="provider_not_configured",
                provider=code,
            )
        return found

    # --- reads ----------------------------------------------------------------------------------------

    async def list_instances(self, *, archived: bool | None = False) -> list[dict[str, Any]]:
        query = select(instances).order_by(instances.c.created_at.desc(), instances.c.id)
        if archived is not None:
            query = query.where(instances.c.archived == archived)
        async with self.db.read() as tx:
            return [public(dict(r)) for r in (await tx.execute(query)).mappings()]

    async def get(self, instance_id: str) -> dict[str, Any]:
        async with self.db.read() as tx:
            return public(await get_row(tx, instance_id))

    async def history(self, instance_id: str) -> list[dict[str, Any]]:
        async with self.db.read() as tx:
            await get_row(tx, instance_id)
            rows = await tx.execute(
                select(instance_state_changes)
                .where(instance_state_changes.c.instance_id == instance_id)
                .order_by(instance_state_changes.c.id)
            )
            return [dict(r) for r in rows.mappings()]

    # --- deployment -----------------------------------------------------------------------------------

    async def deploy(
        self,
        *,
        instance_type_id: str,
        zone_id: str,
        model_id: str,
        name: str | None = None,
        actor: str = "system",
        provision_now: bool = True,
    ) -> dict[str, Any]:
        """Insert a `provisioning` instance (with its fleet server) and, unless told not to, make the
        provider call at once under this process's lease; the answer is the row after that call."""
        instance_id = str(uuid.uuid4())
        server_id = str(uuid.uuid4())
        async with self.db.write() as tx:
            offer = await catalog.check_deployable(
                tx, instance_type_id=instance_type_id, zone_id=zone_id, model_id=model_id
            )
            self.provider(offer.provider)
            owner = await installation_id(tx)
            name = name or f"{offer.provider}-{instance_id[:8]}"
            tags = {base.OWNER_TAG: owner, base.INSTANCE_TAG: instance_id}
            labels = {
                "ikoma.instance": instance_id,
                "ikoma.provider": offer.provider,
                "ikoma.zone": offer.zone,
                "ikoma.instance_type": offer.instance_type,
            }
            await tx.execute(
                insert(servers).values(
                    id=server_id, name=name, hostname=name, port=22, labels=labels, os_family="linux"
                )
            )
            events.publish(
                tx, "server.created", server_id=server_id, actor=actor, data={"name": name, "hostname": name}
            )
            row = {
                "id": instance_id,
                "name": name,
                "provider": offer.provider,
                "zone_id": zone_id,
                "instance_type_id": instance_type_id,
                "model_id": model_id,
                "zone": offer.zone,
                "instance_type": offer.instance_type,
                "hourly_price_eur": offer.hourly_price_eur,
                "state": State.PROVISIONING.value,
                "tags": tags,
                "server_id": server_id,
                "created_by": actor[:100],
            }
            await tx.execute(insert(instances).values(**row))
            await tx.execute(
                insert(instance_state_changes).values(
                    instance_id=instance_id,
                    from_state=None,
                    to_state=State.PROVISIONING.value,
                    reason="deployed",
                )
            )
            events.publish(
                tx,
                "instance.provisioning",
                server_id=server_id,
                actor=actor,
                data={
                    "instanceId": instance_id,
                    "name": name,
                    "provider": offer.provider,
                    "from": None,
                    "to": State.PROVISIONING.value,
                    "reason": "deployed",
                    "model": offer.model_name,
                },
            )
            await record_move(
                tx, instance_id, offer.provider, None, State.PROVISIONING.value, "deployed", actor=actor
            )
        if provision_now:
            await self.provision(instance_id)
        return await self.get(instance_id)

    async def _take_lease(self, instance_id: str) -> dict[str, Any] | None:
        """The row, leased to this process, if it is provisioning without a machine and free."""
        async with self.db.write() as tx:
            row = (
                (
                    await tx.execute(
                        update(instances)
                        .where(
                            instances.c.id == instance_id,
                            instances.c.state == State.PROVISIONING.value,
                            instances.c.provider_id.is_(None),
                            or_(
                                instances.c.lease_until.is_(None),
                                instances.c.lease_until < db_now(),
                                instances.c.lease_owner == self.worker,
                            ),
                        )
                        .values(lease_owner=self.worker, lease_until=db_now(self.settings.instance_lease))
                        .returning(*instances.c)
                    )
                )
                .mappings()
                .first()
            )
            return None if row is None else dict(row)

    def _mine(self, instance_id: str) -> Any:
        return and_(instances.c.id == instance_id, instances.c.lease_owner == self.worker)

    async def provision(self, instance_id: str) -> str | None:
        """One provisioning step for one instance (the request's, or the driver's retry): list by tag,
        then adopt, create, or give up. Answers what it did (`adopted`, `created`, `failed`,
        `retry`) or None when the row was not free for it."""
        row = await self._take_lease(instance_id)
        if row is None:
            return None
        provider = self.providers.get(row["provider"])
        if provider is None:  # configured when deployed, not any more: nothing can be done now
            await self._release(instance_id, last_error="provider_not_configured", backoff=60.0)
            return "retry"
        found: ProviderInstance | None = None
        if row["attempts"] > 0:  # a create may have happened (timeout, crash): look before creating again
            try:
                owned = await provider.list_owned(str(row["tags"][base.OWNER_TAG]))
            except ProviderError as exc:
                await self._release(instance_id, error=exc, backoff=self._backoff(row["attempts"]))
                return "retry"
            found = next((m for m in owned if m.tags.get(base.INSTANCE_TAG) == instance_id), None)
        plan = provisioning(
            tagged_machine_found=found is not None,
            attempts=row["attempts"],
            max_attempts=self.settings.instance_create_attempts,
        )
        if plan is CreatePlan.ADOPT:
            assert found is not None
            await self._booting(row, found, action="provider.adopt", reason="adopted")
            return "adopted"
        if plan is CreatePlan.GIVE_UP:
            async with self.db.write() as tx:
                await transition(
                    tx,
                    row,
                    State.FAILED,
                    reason="create_attempts_exhausted",
                    values={"lease_owner": None, "lease_until": None},
                )
            return "failed"
        try:
            token = await self._prepare_create(row)
        except _LeaseLost:
            return None
        request = InstanceRequest(
            zone=row["zone"],
            instance_type=row["instance_type"],
            name=row["name"],
            image=self._image(row["provider"]),
            tags={**row["tags"]},
            user_data=render_user_data(self.api_url, token, instance_id),
        )
        try:
            machine = await provider.create(request)
        except ProviderError as exc:
            await self._create_failed(row, exc)
            return "retry" if exc.retryable else "failed"
        await self._booting(row, machine, action="provider.create", reason="created")
        return "created"

    def _image(self, provider: str) -> str:
        return self.settings.scaleway_image if provider == "scaleway" else DEFAULT_IMAGE

    def _backoff(self, attempts: int) -> float:
        return float(min(5.0 * 2 ** max(attempts - 1, 0), 300.0))

    async def _prepare_create(self, row: dict[str, Any]) -> str:
        """Count the attempt and issue a fresh one-time bootstrap token (the previous, unused, is
        deleted: its secret was only ever in the user data of a create that did not take)."""
        token = tokens.issue(BOOTSTRAP_TOKEN_KIND)
        expires = self.settings.instance_boot_timeout + self.settings.instance_lease + 300.0
        token_id = str(uuid.uuid4())
        async with self.db.write() as tx:
            if row["bootstrap_token_id"] is not None:
                await tx.execute(
                    delete(runner_bootstrap_tokens).where(
                        runner_bootstrap_tokens.c.id == row["bootstrap_token_id"],
                        runner_bootstrap_tokens.c.used_at.is_(None),
                    )
                )
            await tx.execute(
                insert(runner_bootstrap_tokens).values(
                    id=token_id,
                    token_hash=token.hash,
                    token_prefix=token.prefix,
                    name=row["name"],
                    server_id=row["server_id"],
                    expires_at=db_now(expires),
                )
            )
            counted = (
                await tx.execute(
                    update(instances)
                    .where(self._mine(row["id"]), instances.c.state == State.PROVISIONING.value)
                    .values(
                        attempts=instances.c.attempts + 1,
                        bootstrap_token_id=token_id,
                        lease_until=db_now(self.settings.instance_lease),
                        updated_at=db_now(),
                    )
                    .returning(instances.c.attempts)
                )
            ).first()
            if counted is None:  # rolls the token back with it
                raise _LeaseLost
            row["attempts"] = counted.attempts
        return token.secret

    async def _booting(
        self, row: dict[str, Any], machine: ProviderInstance, *, action: str, reason: str
    ) -> None:
        async with self.db.write() as tx:
            current = await get_row(tx, row["id"])
            values = {
                **machine_values(machine),
                "lease_owner": None,
                "lease_until": None,
                "last_error": None,
            }
            if current["state"] != State.PROVISIONING.value or current["provider_id"] is not None:
                # adopted by another worker, or deleted meanwhile: the terminator finds the machine by
                # its tag once this lease is given back
                await tx.execute(
                    update(instances).where(self._mine(row["id"])).values(lease_owner=None, lease_until=None)
                )
                return
            if machine.public_ip:
                await tx.execute(
                    update(servers)
                    .where(servers.c.id == current["server_id"])
                    .values(hostname=machine.public_ip, updated_at=db_now())
                )
            moved = await transition(tx, current, State.BOOTING, reason=reason, values=values)
            if moved:
                await record_action(tx, action, {**current, **values}, actor=self.worker)

    async def _create_failed(self, row: dict[str, Any], exc: ProviderError) -> None:
        move = after_create_error(
            retryable=exc.retryable,
            attempts=row["attempts"],
            max_attempts=self.settings.instance_create_attempts,
        )
        async with self.db.write() as tx:
            await record_action(
                tx, "provider.create", row, outcome="error", reason=exc.reason, actor=self.worker
            )
            events.publish(
                tx,
                "provider.error",
                actor="system",
                data={
                    "provider": row["provider"],
                    "call": "create",
                    "reason": exc.reason,
                    "instanceId": row["id"],
                },
            )
            if move.to is State.FAILED:
                current = await get_row(tx, row["id"])
                if current["state"] == State.PROVISIONING.value:
                    await transition(
                        tx,
                        current,
                        State.FAILED,
                        reason=exc.reason,
                        values={"lease_owner": None, "lease_until": None, **error_values(exc)},
                    )
                return
            # timeout: the machine may exist; anything retryable: try again after a pause
            await tx.execute(
                update(instances)
                .where(self._mine(row["id"]))
                .values(
                    lease_owner=None,
                    lease_until=db_now(self._backoff(row["attempts"])),
                    updated_at=db_now(),
                    **error_values(exc),
                )
            )

    async def _release(
        self,
        instance_id: str,
        *,
        error: ProviderError | None = None,
        last_error: str | None = None,
        backoff: float,
    ) -> None:
        values: dict[str, Any] = {"lease_owner": None, "lease_until": db_now(backoff), "updated_at": db_now()}
        if error is not None:
            values.update(error_values(error))
        elif last_error is not None:
            values["last_error"] = last_error
        async with self.db.write() as tx:
            await tx.execute(update(instances).where(self._mine(instance_id)).values(**values))

    # --- operator actions -----------------------------------------------------------------------------

    async def request_termination(self, instance_id: str, *, actor: str) -> dict[str, Any]:
        """DELETE: `terminating` (the terminator does the provider calls); already terminating or
        terminated answers the row as it is."""
        async with self.db.write() as tx:
            row = await get_row(tx, instance_id)
            if State(row["state"]) in DELETABLE:
                await transition(tx, row, State.TERMINATING, reason="requested", actor=actor)
        return await self.get(instance_id)

    async def archive(self, instance_id: str, *, actor: str) -> dict[str, Any]:
        async with self.db.write() as tx:
            row = await get_row(tx, instance_id)
            if not can_archive(State(row["state"])):
                raise Conflict(
                    "only a terminated instance can be archived: delete it first",
                    reason="instance_not_terminated",
                    state=row["state"],
                )
            await tx.execute(
                update(instances)
                .where(instances.c.id == instance_id, instances.c.archived.is_(False))
                .values(archived=True, archived_at=db_now(), updated_at=db_now())
            )
        return await self.get(instance_id)


class _LeaseLost(Exception):
    """Another worker took the row while this one was between two transactions."""
