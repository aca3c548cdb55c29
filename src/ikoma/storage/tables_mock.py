"""The Mock provider's own state (issue 16, migration 0017), in the one `metadata` of tables.py.

This is the simulated cloud's memory, not IKOMA's view of its instances (that is `instances`): the
machines the Mock provider "runs" and the failure scenarios switched on. Only
`providers/mock/store.py` reads or writes these tables. Times are the simulator's clock (a test
drives it), not the database's.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Float, Index, Integer, String, Table, Text

from ikoma.storage.tables import Json, Serial, Timestamp, metadata

MOCK_MACHINE_STATES = "'creating','starting','running','stopping','stopped','terminating','terminated'"

mock_machines = Table(
    "mock_machines",
    metadata,
    Column("id", String(64), primary_key=True),  # the provider id the Mock hands out (a uuid)
    Column("zone", String(64), nullable=False),
    Column("instance_type", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("image", String(255), nullable=False),
    Column("tags", Json, nullable=False),
    Column("state", String(16), nullable=False),
    Column("public_ip", String(45)),
    Column("private_ip", String(45)),
    # the cloud-init document, read at boot (it carries a one-time bootstrap token): cleared once the
    # machine is terminated, and never returned by the provider interface
    Column("user_data", Text),
    Column("flags", Json, nullable=False),  # scenarios decided at creation, `vanished`
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),  # when it entered its state
    CheckConstraint(f"state IN ({MOCK_MACHINE_STATES})", name="state"),
)
Index("ix_mock_machines_state", mock_machines.c.state)

mock_scenarios = Table(
    "mock_scenarios",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("scenario", String(64), nullable=False),
    Column("zone", String(64)),
    Column("instance_type", String(64)),
    Column("calls", Integer),  # times it still applies; NULL: until cleared
    Column("seconds", Float),  # latency only
    CheckConstraint("calls IS NULL OR calls > 0", name="calls"),
)
