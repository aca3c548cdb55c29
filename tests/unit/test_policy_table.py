"""Deny by default: every route the app answers is in the policy table, and the table names no ghost."""

from __future__ import annotations

from pathlib import Path

from ikoma.api.app import create_app
from ikoma.api.policy import POLICY, route_keys
from ikoma.settings import Settings


def test_every_route_is_in_the_policy_table_and_every_entry_is_a_route(tmp_path: Path) -> None:
    app = create_app(Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}"), run_reconciler=False)
    routes = route_keys(app.routes)
    missing = sorted(routes - POLICY.keys())
    assert missing == [], f"routes missing from api/policy.py POLICY: {missing}"
    ghosts = sorted(POLICY.keys() - routes)
    assert ghosts == [], f"POLICY entries with no route behind them: {ghosts}"
