"""What the runner lane saves per runner call: the same calls through the full app and through the lane.

In process, one event loop, no HTTP: the app is built as `ikoma serve` builds it (SQLite in a temp
dir) and driven with bare ASGI messages, so the difference between the two paths is the admin
middleware stack a runner call no longer passes (RequestContext → PolicyMiddleware → RequestGuard →
FastAPI's error and telemetry wrappers → the FastAPI router), not the client or the network.
Rounds alternate (full app, lane, full app, …); the figure is process CPU per call, median of the
rounds. Two calls:

- `claim-empty`: `POST /v1/runner/orders/claim-next` by a runner with nothing queued (204; one write
  transaction: the runner read, the claim's UPDATE finding nothing);
- `refused`: the same without credentials (401 in the one error shape; no database).

    .venv/bin/python bench/lane.py --calls 3000 --rounds 5

One JSON document on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def call(app: Any, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> int:
    """One request as uvicorn hands it over; the answer's status."""
    query = b""
    if "?" in path:
        path, raw = path.split("?", 1)
        query = raw.encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode()), (b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(app: Any, request: tuple[str, str, dict[str, str]], calls: int, expected: int) -> float:
    """Process CPU µs per call of `calls` sequential calls."""
    method, path, headers = request
    started = time.process_time()
    for _ in range(calls):
        status = await call(app, method, path, headers)
        if status != expected:
            raise RuntimeError(f"{method} {path} answered {status}, expected {expected}")
    return (time.process_time() - started) / calls * 1e6


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from ikoma.api.app import create_app, served
    from ikoma.settings import Settings
    from ikoma.storage import migrate

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'lane.db'}"
        await migrate.upgrade(url)
        admin_key = "ika_bench_" + secrets.token_urlsafe(24)
        settings = Settings(DATABASE_URL=url, IKOMA_ADMIN_KEY=admin_key, IKOMA_SSH_EXECUTOR=False)
        app = create_app(settings, run_migrations=False, run_reconciler=False)
        lane = served(app)
        async with app.router.lifespan_context(app):
            runner = await _runner(app, admin_key)
            claim = ("POST", "/v1/runner/orders/claim-next?wait=0", runner)
            refused = ("POST", "/v1/runner/orders/claim-next", {})
            cases = {"claim-empty": (claim, 204), "refused": (refused, 401)}
            for request, expected in cases.values():  # warm both paths (plans, caches)
                await measure(app, request, 200, expected)
                await measure(lane, request, 200, expected)
            results: dict[str, Any] = {}
            for name, (request, expected) in cases.items():
                full: list[float] = []
                by_lane: list[float] = []
                for round_ in range(args.rounds):
                    full.append(await measure(app, request, args.calls, expected))
                    by_lane.append(await measure(lane, request, args.calls, expected))
                    log(f"{name} round {round_ + 1}: full app {full[-1]:.1f} µs, lane {by_lane[-1]:.1f} µs")
                f, la = statistics.median(full), statistics.median(by_lane)
                results[name] = {
                    "fullAppUsPerCall": round(f, 1),
                    "laneUsPerCall": round(la, 1),
                    "savedUsPerCall": round(f - la, 1),
                    "laneVsFullApp": round(la / f, 3),
                    "fullAppRounds": [round(x, 1) for x in full],
                    "laneRounds": [round(x, 1) for x in by_lane],
                }
    return {"config": {"calls": args.calls, "rounds": args.rounds, "backend": "sqlite"}, "results": results}


async def _runner(app: Any, admin_key: str) -> dict[str, str]:
    """A runner attached to a server, created through the admin API; its credential headers."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    headers = {"x-ikoma-admin-key": admin_key}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as admin:
        runner = (await admin.post("/v1/runners", json={"name": "lane-bench"})).raise_for_status().json()
        server = (
            await admin.post("/v1/servers", json={"name": "lane-bench", "hostname": "lane.example.net"})
        ).raise_for_status()
        attached = await admin.patch(f"/v1/servers/{server.json()['id']}", json={"runnerId": runner["id"]})
        attached.raise_for_status()
    return {"x-runner-id": runner["id"], "x-runner-token": runner["token"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per round and path (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(run(args)), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
