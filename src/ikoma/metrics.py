"""Prometheus metrics. Each app owns its registry, so tests and benchmarks can build many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ikoma.domain.lifecycle import OrderStatus


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.claims = Counter("ikoma_claims", "Orders claimed by runners", registry=self.registry)
        self.transitions = Counter(
            "ikoma_transitions", "Order transitions applied", ["to_status"], registry=self.registry
        )
        self.claim_to_start = Histogram(
            "ikoma_claim_to_start_seconds",
            "Time from claim to start, by the database clock",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.orders = Gauge("ikoma_orders", "Orders by status", ["status"], registry=self.registry)
        self.runners_online = Gauge(
            "ikoma_runners_online", "Runners with a recent heartbeat", registry=self.registry
        )
        # replicas (services/broadcast.py, services/leader.py): what woke each waiting claim, the
        # messages other processes sent us, and whether this process runs the background loops
        self.claim_wakeups = Counter(
            "ikoma_claim_wakeups",
            "Waiting claims woken, by source (local, broadcast from another process, doorbell poll)",
            ["source"],
            registry=self.registry,
        )
        self.claims_waiting = Gauge(
            "ikoma_claims_waiting", "Long-polling claims waiting in this process", registry=self.registry
        )
        self.broadcasts_received = Counter(
            "ikoma_broadcasts_received",
            "Messages received from other processes (PostgreSQL NOTIFY)",
            ["channel"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "ikoma_leader", "1 while this process runs the background loops", registry=self.registry
        )

    def count_transition(self, to_status: OrderStatus | str, n: int = 1) -> None:
        self.transitions.labels(to_status=str(to_status)).inc(n)

    def set_snapshot(self, by_status: dict[str, int], runners_online: int) -> None:
        for status in OrderStatus:
            self.orders.labels(status=status.value).set(by_status.get(status.value, 0))
        self.runners_online.set(runners_online)

    def render(self) -> bytes:
        return generate_latest(self.registry)
