"""The composition root: settings → database → services. The app, CLI and tests build from here."""

from __future__ import annotations

from dataclasses import dataclass, field

from ikoma.metrics import Metrics
from ikoma.services.admin_keys import AdminKeyring
from ikoma.services.dispatch import Dispatcher
from ikoma.services.reconciler import Reconciler
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
    keyring: AdminKeyring = field(default_factory=lambda: AdminKeyring(()))
    head_revision: str = ""


def build(settings: Settings) -> Context:
    db = Database(settings.resolved_database_url)
    wakeups = Wakeups()
    metrics = Metrics()
    return Context(
        settings=settings,
        db=db,
        wakeups=wakeups,
        metrics=metrics,
        dispatcher=Dispatcher(db, claim_lease=settings.claim_lease, wakeups=wakeups, metrics=metrics),
        reconciler=Reconciler(
            db,
            stale_after=settings.stale_after,
            interval=settings.reconcile_interval,
            wakeups=wakeups,
            metrics=metrics,
        ),
    )
