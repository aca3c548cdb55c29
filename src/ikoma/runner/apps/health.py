"""HTTP health checks: GET http://127.0.0.1:<port><health path> for each process that declares one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ikoma.runner.apps.manifest import ProcessSpec

TIMEOUT = 5.0
HOST = "127.0.0.1"


async def check_http(port: int, path: str, limit: float = TIMEOUT) -> dict[str, Any]:
    """`{healthy, status, detail}`: healthy on a 2xx/3xx answer; redirects are not followed."""
    url = f"http://{HOST}:{port}{path}"
    try:
        async with httpx.AsyncClient(timeout=limit, follow_redirects=False, trust_env=False) as client:
            response = await client.get(url)
    except httpx.TimeoutException:
        return {"healthy": False, "status": None, "detail": f"GET {url}: no answer within {limit:.0f}s"}
    except httpx.HTTPError as exc:
        return {"healthy": False, "status": None, "detail": f"GET {url}: {type(exc).__name__}: {exc}"[:300]}
    healthy = 200 <= response.status_code < 400
    return {
        "healthy": healthy,
        "status": response.status_code,
        "detail": f"GET {url}: HTTP {response.status_code}",
    }


async def check_processes(specs: tuple[ProcessSpec, ...], running: dict[str, bool]) -> list[dict[str, Any]]:
    """One entry per process: a stopped process is unhealthy whatever its port answers (another
    program may hold that port); one without a health path is healthy when it runs."""

    async def one(spec: ProcessSpec) -> dict[str, Any]:
        if not running.get(spec.name, False):
            return {"name": spec.name, "healthy": False, "status": None, "detail": "not running"}
        if spec.port is None or spec.health is None:
            return {"name": spec.name, "healthy": True, "status": None, "detail": "running (no health path)"}
        return {"name": spec.name, **await check_http(spec.port, spec.health)}

    return list(await asyncio.gather(*(one(spec) for spec in specs)))


async def wait_healthy(
    specs: tuple[ProcessSpec, ...],
    running: Callable[[], Awaitable[dict[str, bool]]],
    within: float,
    interval: float = 0.25,
) -> list[dict[str, Any]]:
    """Poll until every process answers healthy or `within` seconds pass; the last answers either way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        results = await check_processes(specs, await running())
        if all(r["healthy"] for r in results) or loop.time() >= deadline:
            return results
        await asyncio.sleep(interval)
