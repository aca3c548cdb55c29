"""The local machine's server and runner for `ikoma up`: one command, and orders run here at once.

The runner's credentials live in `<data dir>/runner.json` (0600), exactly as `ikoma runner register`
would leave them on any other machine; the API keeps only the token's hash.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from ikoma.runner.config import write_config_file
from ikoma.services.runners import insert_runner
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import runners, servers

CONFIG_NAME = "runner.json"


def local_names() -> tuple[str, str]:
    """(server name, hostname) for this machine."""
    hostname = socket.gethostname() or "localhost"
    return f"local-{re.sub(r'[^A-Za-z0-9.-]+', '-', hostname)[:60]}", hostname


def _saved(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ready_line(api_url: str, local_runner: bool) -> str:
    """What `ikoma up` prints once it serves: where, and the first command to try."""
    if not local_runner:
        return f"ready: IKOMA answers at {api_url}"
    server_name, _ = local_names()
    return (
        f"ready: IKOMA answers at {api_url}; orders for server {server_name} run on this machine, e.g.\n"
        f"  ikoma orders create --server {server_name} --playbook system.test_ping --wait"
    )


async def ensure_local_runner(db: Database, *, data_dir: Path, api_url: str, stale_after: float) -> Path:
    """Make sure this machine is a server with a runner whose credentials are in the data dir."""
    config_path = data_dir / CONFIG_NAME
    server_name, hostname = local_names()
    saved = _saved(config_path)
    async with db.write() as tx:
        server = (
            await tx.execute(
                select(servers.c.id, servers.c.runner_id).where(
                    servers.c.name == server_name, servers.c.deleted_at.is_(None)
                )
            )
        ).first()
        if saved and server is not None and saved.get("runnerId") == server.runner_id:
            live = (
                await tx.execute(
                    select(runners.c.id).where(
                        runners.c.id == server.runner_id, runners.c.revoked_at.is_(None)
                    )
                )
            ).first()
            if live is not None:
                if saved.get("apiUrl") != api_url:
                    write_config_file(config_path, {**saved, "apiUrl": api_url})
                return config_path
        if server is None:
            server_id = str(uuid.uuid4())
            await tx.execute(
                insert(servers).values(
                    id=server_id,
                    name=server_name,
                    hostname=hostname,
                    port=22,
                    labels={"ikoma": "local"},
                    os_family="unknown",
                )
            )
        else:
            server_id = server.id
        runner = await insert_runner(
            tx, name=f"{server_name}-{secrets.token_hex(3)}", stale_after=stale_after
        )
        await tx.execute(
            update(servers)
            .where(servers.c.id == server_id)
            .values(runner_id=runner["id"], updated_at=db_now())
        )
    # written after the commit: credentials on disk always name a runner that exists
    write_config_file(config_path, {"apiUrl": api_url, "runnerId": runner["id"], "token": runner["token"]})
    return config_path


async def start_local_runner(config_path: Path, data_dir: Path) -> asyncio.subprocess.Process:
    """`ikoma runner --config …` as a child process; it retries until the API listens."""
    # the runner needs none of the server's secrets; it reads its own credentials from the file
    env = {k: v for k, v in os.environ.items() if k not in ("IKOMA_ADMIN_KEY", "DATABASE_URL")}
    env["IKOMA_DATA_DIR"] = str(data_dir)
    # /srv/apps is rarely writable for whoever runs `ikoma up`; its apps live next to its data instead
    if "IKOMA_APPS_ROOT" not in env:
        apps_root = (data_dir / "apps").resolve()
        apps_root.mkdir(parents=True, exist_ok=True)
        env["IKOMA_APPS_ROOT"] = str(apps_root)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ikoma", "runner", "--config", str(config_path), env=env
    )


async def stop_local_runner(process: asyncio.subprocess.Process, *, grace: float = 15.0) -> None:
    """SIGTERM lets the runner finish what it runs (its drain); SIGKILL only past the grace."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=grace)
    except TimeoutError:
        process.kill()
        await process.wait()
