"""The real ASGI app (every middleware: policy, guard, audit) in this process, over httpx, on the test's
database: for tests of a route's contract on both backends without starting a server process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from ikoma.api.app import create_app
from ikoma.bootstrap import Context
from ikoma.settings import Settings

ADMIN_KEY = "ika_test_inprocess_admin_key_0123456789"


@contextlib.asynccontextmanager
async def running_app(database_url: str, data_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Context]]:
    """An admin-key client of the app, and the app's context (its database, vault, settings)."""
    settings = Settings(
        DATABASE_URL=database_url,
        IKOMA_ADMIN_KEY=ADMIN_KEY,
        IKOMA_DATA_DIR=data_dir,
        IKOMA_SSH_EXECUTOR=False,
        IKOMA_LOG_LEVEL="warning",
    )
    app = create_app(settings, run_reconciler=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ikoma.test", headers={"x-ikoma-admin-key": ADMIN_KEY}
        ) as client:
            yield client, app.state.ctx


def as_client(client: httpx.AsyncClient, token: str) -> httpx.AsyncClient:
    """The same app, called with an API client's token instead of the admin key."""
    return httpx.AsyncClient(
        transport=client._transport, base_url=client.base_url, headers={"authorization": f"Bearer {token}"}
    )
