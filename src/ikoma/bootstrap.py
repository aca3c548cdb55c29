"""The composition root: settings → database → services. The app, CLI and tests build from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ikoma.domain.retention import Retention
from ikoma.metrics import Metrics
from ikoma.providers import registry as provider_registry
from ikoma.providers.base import Provider
from ikoma.services.admin_keys import AdminKeyring
from ikoma.services.artifacts import Artifacts
from ikoma.services.audit_anchor import load_anchor
from ikoma.services.broadcast import Broadcast
from ikoma.services.dispatch import Dispatcher
from ikoma.services.ingest import Ingestor
from ikoma.services.leader import Leader
from ikoma.services.reconciler import Reconciler
from ikoma.services.retention import Sweeper
from ikoma.services.schedules import Scheduler
from ikoma.services.vault import Vault, load_vault
from ikoma.services.wakeups import Wakeups
from ikoma.settings import Settings
from ikoma.storage.database import Database


@dataclass
class Context:
    settings: Settings
    db: Database
    wakeups: Wakeups
    metrics: Metrics
    dispatcher: Dispatcher
    reconciler: Reconciler
    artifacts: Artifacts
    vault: Vault
    # wake-ups across replicas (LISTEN/NOTIFY) and the one replica that runs the background loops
    broadcast: Broadcast
    leader: Leader
    keyring: AdminKeyring = field(default_factory=lambda: AdminKeyring(()))
    # cloud providers by catalog code (issue 16, providers/registry.py): `mock`, `scaleway` when configured
    providers: dict[str, Provider] = field(default_factory=dict)
    head_revision: str = ""
    # deployments and the leader's instance loops (issue 16), built on first use: instance_loops.from_context
    instance_loops: Any = None


def build(settings: Settings) -> Context:
    db = Database(settings.resolved_database_url)
    metrics = Metrics()
    broadcast = Broadcast(db, metrics=metrics)
    wakeups = Wakeups(broadcast)
    artifacts = Artifacts(settings.data_dir, retention_of(settings))
    vault = load_vault(
        settings.encryption_keys.get_secret_value() if settings.encryption_keys else None,
        settings.data_dir,
        settings.master_key_file,
    )
    return Context(
        settings=settings,
        db=db,
        wakeups=wakeups,
        metrics=metrics,
        dispatcher=Dispatcher(
            db,
            claim_lease=settings.claim_lease,
            wakeups=wakeups,
            metrics=metrics,
            ingestor=Ingestor(artifacts),
            vault=vault,
            broadcast=broadcast,
        ),
        reconciler=Reconciler(
            db,
            stale_after=settings.stale_after,
            interval=settings.reconcile_interval,
            wakeups=wakeups,
            metrics=metrics,
            scheduler=Scheduler(
                wakeups, default_timeout=settings.order_timeout, defaults=settings.schedule_defaults
            ),
            sweeper=Sweeper(
                db,
                settings.data_dir,
                interval=settings.retention_sweep_interval,
                orphan_grace=settings.artifact_orphan_grace,
                metrics_raw_hours=settings.metrics_raw_hours,
                metrics_max_points=settings.metrics_max_points,
                snapshot_days=settings.snapshot_retention_days,
                event_days=settings.event_retention_days,
            ),
            anchor=load_anchor(
                settings.audit_key.get_secret_value() if settings.audit_key else None,
                settings.data_dir,
                settings.audit_checkpoints,
            ),
            checkpoint_interval=settings.audit_checkpoint_interval,
        ),
        artifacts=artifacts,
        vault=vault,
        broadcast=broadcast,
        # a dead leader's loops move within one check; no need to wait a whole reconcile interval
        leader=Leader(db, interval=min(settings.reconcile_interval, 5.0), metrics=metrics),
        providers=provider_registry.providers_from(settings, db),
    )


def retention_of(settings: Settings) -> Retention:
    """How long raw logs are kept, per policy (issue 4)."""
    return Retention(
        default_days=settings.artifact_retention_days,
        failed_days=settings.artifact_retention_failed_days,
        short_days=settings.artifact_retention_short_days,
        short_playbooks=frozenset(
            key.strip() for key in settings.artifact_short_playbooks.split(",") if key.strip()
        ),
    )
