"""The instance loops, run on the leader (`ctx.leader.run_while_leading("instances", loops.run_forever)`):

- provisioning driver: provisioning rows no one holds (a timed-out create, a crashed replica, a
  retryable refusal whose pause is over) go through `Instances.provision` again: list by tag, adopt or
  create, or give up;
- health: booting, ready, unreachable and orphaned rows against the provider's answer and their runner
  (domain/instances.health): ready, failed (+ terminate), unreachable, back to ready, or terminated
  once the provider said twice in a row it does not know the machine (database-only);
- terminator: terminating rows are terminated at the provider until it says the machine is gone twice
  in a row; then `terminated`, the fleet server deleted and its runner revoked;
- orphan watchdog: the provider's machines carrying this IKOMA's owner tag that no live row owns get an
  `orphaned` row (event + action log), and are terminated when IKOMA_ORPHAN_POLICY=terminate.

Each step is a method a test calls directly with a controlled clock (no sleeping); `reconcile` runs
them all once (`POST /reconcile`). The decisions are domain/instances.py's; no transaction is held
across a provider call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select, update

from ikoma.domain.instances import (
    GONE_CONFIRMATIONS,
    PROVIDER_GONE,
    WATCHED,
    Known,
    Move,
    Owned,
    Seen,
    State,
    Timeouts,
    health,
    orphans,
    terminator,
)
from ikoma.providers import base
from ikoma.providers.base import PowerState, ProviderError, ProviderInstance
from ikoma.providers.mock.simulator import Clock, SystemClock
from ikoma.services import events
from ikoma.services.instance_records import (
    as_utc,
    installation_id,
    record_action,
    record_move,
    transition,
)
from ikoma.services.instances import Instances
from ikoma.storage.clock import db_now
from ikoma.storage.tables import runner_bootstrap_tokens, runners, servers
from ikoma.storage.tables_cloud import instance_types, providers, zones
from ikoma.storage.tables_instances import instance_state_changes, instances

if TYPE_CHECKING:
    from ikoma.bootstrap import Context

log = structlog.get_logger("ikoma.instances")


def from_context(ctx: Context) -> InstanceLoops:
    """The process's one `InstanceLoops` (and its `Instances`, `.fleet`), made on first use."""
    if ctx.instance_loops is None:
        ctx.instance_loops = InstanceLoops(Instances(ctx.db, ctx.providers, ctx.settings))
    loops: InstanceLoops = ctx.instance_loops
    return loops


class InstanceLoops:
    def __init__(self, fleet: Instances, *, clock: Clock | None = None) -> None:
        self.fleet = fleet
        self.db = fleet.db
        self.settings = fleet.settings
        self.clock = clock or SystemClock()

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(
            boot=self.settings.instance_boot_timeout, heartbeat=self.settings.instance_heartbeat_timeout
        )

    async def run_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database hiccup: the next pass tries again
                log.warning("instance_loops_failed", error=type(exc).__name__, detail=str(exc)[:200])
            await asyncio.sleep(self.settings.instance_loop_interval)

    async def reconcile(self) -> dict[str, int]:
        """Every step once, in the order a new row moves through them; counts of what each did."""
        done: Counter[str] = Counter()
        done.update(await self.drive_provisioning())
        done.update(await self.check_health())
        done.update(await self.terminate_pending())
        done.update(await self.watch_orphans())
        return dict(done)

    async def _rows(self, query: Any) -> list[dict[str, Any]]:
        async with self.db.read() as tx:
            return [dict(r) for r in (await tx.execute(query)).mappings()]

    # --- provisioning driver -------------------------------------------------------------------------

    async def drive_provisioning(self) -> Counter[str]:
        rows = await self._rows(
            select(instances.c.id).where(
                instances.c.state == State.PROVISIONING.value,
                instances.c.provider_id.is_(None),
                (instances.c.lease_until.is_(None)) | (instances.c.lease_until < db_now()),
            )
        )
        done: Counter[str] = Counter()
        for row in rows:
            outcome = await self.fleet.provision(str(row["id"]))
            if outcome is not None:
                done[f"provision_{outcome}"] += 1
        return done

    # --- health ---------------------------------------------------------------------------------------

    async def check_health(self) -> Counter[str]:
        joined = (
            instances.outerjoin(servers, servers.c.id == instances.c.server_id)
            .outerjoin(runners, runners.c.id == servers.c.runner_id)
            .outerjoin(
                runner_bootstrap_tokens, runner_bootstrap_tokens.c.id == instances.c.bootstrap_token_id
            )
        )
        rows = await self._rows(
            select(
                *instances.c,
                servers.c.runner_id.label("server_runner_id"),
                runners.c.last_heartbeat_at.label("heartbeat_at"),
                runners.c.revoked_at.label("runner_revoked_at"),
                runner_bootstrap_tokens.c.runner_id.label("token_runner_id"),
            )
            .select_from(joined)
            .where(
                instances.c.state.in_([s.value for s in WATCHED]),
                instances.c.provider_id.is_not(None),
            )
        )
        done: Counter[str] = Counter()
        for row in rows:
            provider = self.fleet.providers.get(row["provider"])
            if provider is None:
                continue
            try:
                machine = await provider.get(row["zone"], row["provider_id"])
            except ProviderError as exc:
                await self._provider_error(row, "get", exc)
                continue
            registered = row["server_runner_id"] is not None and row["runner_revoked_at"] is None
            seen = Seen(
                state=State(row["state"]),
                since=as_utc(row["state_changed_at"]) or self.clock.now(),
                provider_state=None if machine is None else machine.state,
                missing_checks=row["missing_checks"],
                runner_registered=registered,
                # the runner attached to this server spent THIS instance's own token: a machine that
                # took over the IP of another cannot hold it
                answers_own_id=registered and row["token_runner_id"] == row["server_runner_id"],
                last_heartbeat=as_utc(row["heartbeat_at"]),
            )
            move = health(seen, self.clock.now(), self.timeouts)
            if await self._apply_health(row, machine, move):
                done[f"health_{move.to}"] += 1
        return done

    async def _apply_health(self, row: dict[str, Any], machine: ProviderInstance | None, move: Move) -> bool:
        values: dict[str, Any] = {"missing_checks": move.missing_checks}
        if machine is not None:
            values.update(provider_state=machine.state.value, public_ip=machine.public_ip or row["public_ip"])
        if move.to is State.READY:
            values["runner_id"] = row["server_runner_id"]
        if move.to is None and all(row.get(k) == v for k, v in values.items()):
            return False  # nothing new: no write (every watched instance is looked at every pass)
        async with self.db.write() as tx:
            if move.to is None:
                await tx.execute(
                    update(instances)
                    .where(instances.c.id == row["id"], instances.c.state == row["state"])
                    .values(**values)
                )
                return False
            moved = await transition(tx, row, move.to, reason=move.reason or "health", values=values)
            if not moved:
                return False
            if move.to is State.TERMINATED:
                await self._retire(tx, row)
            if move.terminate:
                failed = {**row, "state": move.to.value}
                await transition(tx, failed, State.TERMINATING, reason=f"{move.reason}: terminate")
        return True

    # --- terminator -----------------------------------------------------------------------------------

    async def terminate_pending(self) -> Counter[str]:
        rows = await self._rows(
            select(instances).where(
                instances.c.state == State.TERMINATING.value,
                # a provider call in flight under a lease: its create may answer yet, wait for it
                instances.c.provider_id.is_not(None)
                | instances.c.lease_until.is_(None)
                | (instances.c.lease_until < db_now()),
            )
        )
        done: Counter[str] = Counter()
        for row in rows:
            if await self._terminate_one(row):
                done["terminated"] += 1
        return done

    async def _terminate_one(self, row: dict[str, Any]) -> bool:
        provider = self.fleet.providers.get(row["provider"])
        if provider is None:
            return False
        provider_id = row["provider_id"]
        try:
            if provider_id is None:  # deleted while provisioning: a create may still have happened
                owned = await provider.list_owned(str(row["tags"][base.OWNER_TAG]))
                found = next((m for m in owned if m.tags.get(base.INSTANCE_TAG) == str(row["id"])), None)
                if found is not None:
                    provider_id = found.provider_id
                    async with self.db.write() as tx:
                        await tx.execute(
                            update(instances)
                            .where(instances.c.id == row["id"])
                            .values(provider_id=provider_id, provider_state=found.state.value)
                        )
                        await record_action(tx, "provider.adopt", {**row, "provider_id": provider_id})
            machine = None if provider_id is None else await provider.get(row["zone"], provider_id)
            alive = machine is not None and machine.state not in PROVIDER_GONE
            if alive and machine is not None and machine.state is not PowerState.TERMINATING:
                await provider.terminate(row["zone"], provider_id)
                async with self.db.write() as tx:
                    await record_action(tx, "provider.terminate", {**row, "provider_id": provider_id})
        except ProviderError as exc:
            async with self.db.write() as tx:
                await record_action(tx, "provider.terminate", row, outcome="error", reason=exc.reason)
                await tx.execute(
                    update(instances)
                    .where(instances.c.id == row["id"])
                    .values(gone_checks=0, last_error=exc.reason[:64], last_error_message=str(exc)[:500])
                )
            await self._provider_error(row, "terminate", exc)
            return False
        checks, finished = terminator(gone=not alive, gone_checks=row["gone_checks"])
        if provider_id is None:  # nothing was ever created: nothing to confirm twice
            checks, finished = GONE_CONFIRMATIONS, True
        async with self.db.write() as tx:
            if not finished:
                await tx.execute(
                    update(instances).where(instances.c.id == row["id"]).values(gone_checks=checks)
                )
                return False
            moved = await transition(
                tx, row, State.TERMINATED, reason="provider_confirmed_gone", values={"gone_checks": checks}
            )
            if moved:
                await self._retire(tx, row)
            return moved

    async def _retire(self, tx: Any, row: Mapping[str, Any]) -> None:
        """A terminated instance's fleet server is deleted and its runner revoked (the machine is gone)."""
        if row.get("server_id") is None:
            return
        server = (
            await tx.execute(
                update(servers)
                .where(servers.c.id == row["server_id"], servers.c.deleted_at.is_(None))
                .values(deleted_at=db_now(), updated_at=db_now())
                .returning(servers.c.id, servers.c.runner_id, servers.c.name)
            )
        ).first()
        if server is None:
            return
        events.publish(
            tx, "server.deleted", server_id=str(server.id), actor="system", data={"name": server.name}
        )
        if server.runner_id is not None:
            await tx.execute(
                update(runners)
                .where(runners.c.id == server.runner_id, runners.c.revoked_at.is_(None))
                .values(revoked_at=db_now(), revoked_by="system")
            )

    # --- orphan watchdog ------------------------------------------------------------------------------

    async def watch_orphans(self) -> Counter[str]:
        async with self.db.read() as tx:
            owner = await installation_id(tx)
        done: Counter[str] = Counter()
        for code, provider in self.fleet.providers.items():
            try:
                machines = await provider.list_owned(owner)
            except ProviderError as exc:
                await self._provider_error({"provider": code, "id": None}, "list_owned", exc)
                continue
            known_rows = await self._rows(
                select(instances.c.id, instances.c.state, instances.c.provider_id).where(
                    instances.c.provider == code
                )
            )
            known = [Known(str(r["id"]), State(r["state"]), r["provider_id"]) for r in known_rows]
            by_id = {m.provider_id: m for m in machines}
            owned = [Owned(m.provider_id, m.tags.get(base.INSTANCE_TAG), m.state) for m in machines]
            for orphan in orphans(owned, known):
                await self._orphan(code, by_id[orphan.provider_id])
                done["orphaned"] += 1
        return done

    async def _orphan(self, code: str, machine: ProviderInstance) -> None:
        terminate = self.settings.orphan_policy == "terminate"
        async with self.db.write() as tx:
            existing = (
                (
                    await tx.execute(
                        select(instances).where(
                            instances.c.provider == code, instances.c.provider_id == machine.provider_id
                        )
                    )
                )
                .mappings()
                .first()
            )
            if existing is not None:
                row = dict(existing)
                if not await transition(tx, row, State.ORPHANED, reason="alive_after_termination"):
                    return
                row["state"] = State.ORPHANED.value
            else:
                row = await self._orphan_row(tx, code, machine)
            await record_action(
                tx, "provider.orphan_found", row, extra={"policy": self.settings.orphan_policy}
            )
            if terminate:
                await transition(tx, row, State.TERMINATING, reason="orphan_policy")

    async def _orphan_row(self, tx: Any, code: str, machine: ProviderInstance) -> dict[str, Any]:
        """A row for a machine IKOMA has no row for, with the catalog's ids and price where it knows them."""
        offer = (
            await tx.execute(
                select(
                    zones.c.id.label("zone_id"),
                    instance_types.c.id.label("instance_type_id"),
                    instance_types.c.hourly_price_eur,
                )
                .select_from(
                    zones.join(providers, providers.c.id == zones.c.provider_id).join(
                        instance_types, instance_types.c.provider_id == providers.c.id
                    )
                )
                .where(
                    providers.c.code == code,
                    zones.c.code == machine.zone,
                    instance_types.c.code == machine.instance_type,
                )
            )
        ).first()
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "name": machine.name[:200] or machine.provider_id[:200],
            "provider": code,
            "zone_id": None if offer is None else offer.zone_id,
            "instance_type_id": None if offer is None else offer.instance_type_id,
            "model_id": None,
            "zone": machine.zone,
            "instance_type": machine.instance_type,
            "hourly_price_eur": None if offer is None else offer.hourly_price_eur,
            "state": State.ORPHANED.value,
            "provider_id": machine.provider_id,
            "provider_state": machine.state.value,
            "public_ip": machine.public_ip,
            "private_ip": machine.private_ip,
            "tags": dict(machine.tags),
            "created_by": "system",
            "server_id": None,
        }
        await tx.execute(instances.insert().values(**row))
        await tx.execute(
            update(instances).where(instances.c.id == row["id"]).values(state_changed_at=db_now())
        )
        await tx.execute(
            instance_state_changes.insert().values(
                instance_id=row["id"], from_state=None, to_state=State.ORPHANED.value, reason="provider_only"
            )
        )
        events.publish(
            tx,
            "instance.orphaned",
            actor="system",
            data={
                "instanceId": row["id"],
                "name": row["name"],
                "provider": code,
                "providerId": machine.provider_id,
                "from": None,
                "to": State.ORPHANED.value,
                "reason": "provider_only",
            },
        )
        await record_move(tx, row["id"], code, None, State.ORPHANED.value, "provider_only", actor="system")
        return row

    async def _provider_error(self, row: Mapping[str, Any], call: str, exc: ProviderError) -> None:
        log.warning("instance_provider_error", call=call, provider=row["provider"], reason=exc.reason)
        async with self.db.write() as tx:
            events.publish(
                tx,
                "provider.error",
                actor="system",
                data={
                    "provider": row["provider"],
                    "call": call,
                    "reason": exc.reason,
                    "instanceId": None if row.get("id") is None else str(row["id"]),
                },
            )
