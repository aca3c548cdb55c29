"""An in-process app (the real middlewares and policy) on each backend, with helpers to sign in."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from ikoma.api.app import create_app
from ikoma.bootstrap import Context
from ikoma.settings import Settings

BASE = "http://console.test"
ADMIN_PASSWORD = "correct horse battery staple"
USER_PASSWORD = "a fine long password"


@dataclass
class Console:
    app: FastAPI
    ctx: Context
    admin_key: str
    data_dir: Path
    admin_password: str

    def client(self, **headers: str) -> httpx.AsyncClient:
        """A client with its own cookie jar (a browser of its own)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=("203.0.113.7", 40000)),
            base_url=BASE,
            headers=headers,
            timeout=30,
        )

    def keyed(self) -> httpx.AsyncClient:
        return self.client(**{"x-ikoma-admin-key": self.admin_key})


@asynccontextmanager
async def console_app(database_url: str, data_dir: Path, **overrides: Any) -> AsyncIterator[Console]:
    """The app as `ikoma serve` builds it; the bootstrap admin's password file is written beforehand."""
    admin_key = "ika_test_" + secrets.token_urlsafe(24)
    password_file = data_dir / "secrets" / "default_admin_password"
    password_file.parent.mkdir(parents=True, exist_ok=True)
    password_file.write_text(ADMIN_PASSWORD + "\n")
    settings = Settings(
        DATABASE_URL=database_url,
        IKOMA_ADMIN_KEY=admin_key,
        IKOMA_SSH_EXECUTOR=False,
        IKOMA_DATA_DIR=data_dir,
        **overrides,
    )
    app = create_app(settings, run_migrations=False, run_reconciler=False)
    async with app.router.lifespan_context(app):
        yield Console(app, app.state.ctx, admin_key, data_dir, ADMIN_PASSWORD)


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> str:
    """Sign in with JSON; the client keeps the cookie. The CSRF token."""
    answer = await client.post("/auth/login", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["csrfToken"]
    return token


async def create_user(console: Console, username: str, role: str, password: str = USER_PASSWORD) -> str:
    async with console.keyed() as admin:
        created = await admin.post(
            "/users",
            json={
                "username": username,
                "email": f"{username}@example.net",
                "password": password,
                "role": role,
            },
        )
    assert created.status_code == 201, created.text
    user_id: str = created.json()["id"]
    return user_id
