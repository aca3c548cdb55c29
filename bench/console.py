"""Console pages under a 500-server fleet (`make bench-console`; issue 13's measure).

A real `python -m ikoma serve` on a throw-away database (SQLite; PostgreSQL with `--backend
postgresql` or `all`) gets `--servers` (500) servers, each with its own runner, whose machine state is
made the product's way: a `system.facts` and a `system.metrics` order per server completed through
the runner routes with the reports the real playbooks produce on this machine; every 10th server also
has a failed `apt.analyze` (an error and an important message: "needs attention"), and 4 runners in 5
heartbeat (the rest are offline). Then 24 h of metrics per server go straight into `machine_metrics`
the way ingestion keeps them: one raw point per minute (`IKOMA_METRICS_RAW_HOURS` is 24 h, so none is
downsampled yet), 1,440 points a server, 720,000 rows for 500 servers.

Signed in as the bootstrap admin (a session cookie, as a browser), the script then GETs `/` (the
fleet) and `/machines/{id}` (round-robin over 50 servers) `--requests` times each, one at a time
after a warm-up: `p50Ms`/`p99Ms` are the client's send → last byte on loopback (the server's render
plus a few tens of µs), `serverCpuMsPerPage` the server's CPU over the run ÷ pages. Sizes: the page's
HTML (bytes, and gzip'ed as a proxy would send it) and every script, stylesheet and image it links,
fetched once. `metricsSeries` times the 24-h series API (`GET /v1/servers/{id}/metrics`, 1,440 points)
the same way, whether the page embeds its chart data or its script fetches it.

    .venv/bin/python bench/console.py [--servers 500] [--requests 200] [--backend sqlite|postgresql|all]

One JSON document on stdout, progress on stderr; all traffic to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx

from dispatch import (
    BenchError,
    ServerProcess,
    expect,
    ikoma_server,
    latency_summary,
    log,
    postgres_reachable,
)
from meters import CpuMeter

SEED_CONCURRENCY = 16
METRIC_BATCH = 10_000
MINUTES = 24 * 60
MACHINE_PAGES = 50  # distinct servers the machine-page requests cycle through
WARM_UP = 5
FAILED_APT_REPORT: dict[str, Any] = {
    "version": "v2",
    "summary": "apt simulation failed: E: Unable to locate package nope",
    "durationMs": 5,
    "steps": [{"name": "simulate", "status": "FAILED", "exitCode": 100, "output": "E: nope"}],
    "errors": [
        {"message": "step simulate ended FAILED (exit 100)", "code": "step_failed", "step": "simulate"}
    ],
}


async def live_reports() -> dict[str, dict[str, Any]]:
    """The v2 reports of system.facts and system.metrics, run for real on this machine as the agent does."""
    from ikoma.runner.agent import build_report
    from ikoma.runner.execution import ExecutionContext
    from ikoma.runner.playbooks import REGISTRY

    reports = {}
    for key in ("system.facts", "system.metrics"):
        ctx = ExecutionContext("bench-console", {})
        reports[key] = build_report(await REGISTRY[key](ctx, {}), 1234, ctx.masker)
    return reports


# --- the fleet --------------------------------------------------------------------------------------


async def seed_server(
    admin: httpx.AsyncClient, index: int, tag: str, reports: dict[str, dict[str, Any]]
) -> str:
    """One server with its runner and its state, through the admin and runner routes."""
    name = f"web-{tag}-{index:04d}"
    runner = expect(await admin.post("/v1/runners", json={"name": f"runner-{name}"}), 201, "POST /v1/runners")
    server = expect(
        await admin.post(
            "/v1/servers", json={"name": name, "hostname": f"{name}.invalid", "runnerId": runner["id"]}
        ),
        201,
        "POST /v1/servers",
    )
    headers = {"x-runner-id": runner["id"], "x-runner-token": runner["token"]}
    runs: list[tuple[str, str, dict[str, Any]]] = [
        (key, "SUCCEEDED", report) for key, report in reports.items()
    ]
    if index % 10 == 0:
        runs.append(("apt.analyze", "FAILED", FAILED_APT_REPORT))
    for key, status, report in runs:
        expect(
            await admin.post("/v1/orders", json={"serverId": server["id"], "playbookKey": key}),
            201,
            "POST /v1/orders",
        )
        claimed = expect(await admin.post("/v1/runner/orders/claim-next", headers=headers), 200, "claim-next")
        lease = {"leaseToken": claimed["leaseToken"]}
        expect(
            await admin.post(f"/v1/runner/orders/{claimed['id']}/start", headers=headers, json=lease),
            200,
            "start",
        )
        expect(
            await admin.post(
                f"/v1/runner/orders/{claimed['id']}/complete",
                headers=headers,
                json={**lease, "status": status, "report": report},
            ),
            200,
            "complete",
        )
    if index % 5 != 0:
        expect(await admin.post("/v1/runner/heartbeat", headers=headers, json={}), 200, "heartbeat")
    return str(server["id"])


async def seed_fleet(server: ServerProcess, count: int, reports: dict[str, dict[str, Any]]) -> list[str]:
    tag = secrets.token_hex(2)
    gate = asyncio.Semaphore(SEED_CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=server.base_url,
        headers={"x-ikoma-admin-key": server.admin_key},
        timeout=60,
        trust_env=False,
        limits=httpx.Limits(max_connections=SEED_CONCURRENCY),
    ) as admin:

        async def one(index: int) -> str:
            async with gate:
                return await seed_server(admin, index, tag, reports)

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def metric_rows(server_ids: list[str], now: datetime) -> list[dict[str, Any]]:
    """One raw point per minute for the last 24 h per server: a daily wave plus per-server offsets."""
    rows = []
    for number, server_id in enumerate(server_ids):
        base = (number % 7) * 0.3
        for minute in range(MINUTES, 0, -1):
            wave = math.sin(2 * math.pi * minute / MINUTES + number)
            rows.append(
                {
                    "server_id": server_id,
                    "at": now - timedelta(minutes=minute),
                    "period_s": 0,
                    "samples": 1,
                    "load1": round(max(0.0, 0.8 + base + 0.6 * wave), 2),
                    "load5": round(max(0.0, 0.7 + base + 0.4 * wave), 2),
                    "memory_used_percent": round(40 + 5 * (number % 9) + 10 * wave, 1),
                    "root_used_percent": round(30 + (number % 60) + minute / MINUTES, 1),
                }
            )
    return rows


async def seed_metrics(database_url: str, server_ids: list[str]) -> int:
    from sqlalchemy import insert

    from ikoma.storage.database import Database
    from ikoma.storage.tables import machine_metrics

    rows = metric_rows(server_ids, datetime.now(UTC))
    db = Database(database_url)
    try:
        for start in range(0, len(rows), METRIC_BATCH):
            async with db.write() as tx:
                await tx.execute(insert(machine_metrics), rows[start : start + METRIC_BATCH])
    finally:
        await db.dispose()
    return len(rows)


# --- the pages --------------------------------------------------------------------------------------


class Assets(HTMLParser):
    """The same-origin scripts, stylesheets and images a page links to, and the API URLs it names."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = None
        if tag == "script":
            url = found.get("src")
        elif tag == "link" and (found.get("rel") or "") in ("stylesheet", "icon", "modulepreload"):
            url = found.get("href")
        elif tag == "img":
            url = found.get("src")
        if url and url.startswith("/") and not url.startswith("//") and url not in self.urls:
            self.urls.append(url)


def linked_assets(html: str) -> list[str]:
    parser = Assets()
    parser.feed(html)
    return parser.urls


async def sign_in(client: httpx.AsyncClient, password: str) -> None:
    answer = await client.post("/auth/login", json={"username": "admin", "password": password})
    if answer.status_code != 200:
        raise BenchError(f"sign-in answered {answer.status_code}: {answer.text[:300]}")


async def timed_gets(
    client: httpx.AsyncClient, server: ServerProcess, paths: list[str], requests: int
) -> dict[str, Any]:
    """GET the paths round-robin, one at a time: latency, server CPU per page, and the sizes."""
    for path in paths[:WARM_UP]:
        expect_page(await client.get(path), path)
    samples = []
    meter = CpuMeter(server.proc.pid if server.proc is not None else None, server.pg_database)
    meter.start()
    for i in range(requests):
        path = paths[i % len(paths)]
        sent = time.monotonic()
        answer = await client.get(path)
        samples.append(time.monotonic() - sent)
        expect_page(answer, path)
    cpu = meter.stop()
    out = latency_summary(samples, (50, 99), with_max=True)
    if cpu["serverCpuSeconds"] is not None:
        out["serverCpuMsPerPage"] = round(1000 * cpu["serverCpuSeconds"] / requests, 2)
    out["machineBusyPercent"] = cpu["machineBusyPercent"]
    return out


def expect_page(answer: httpx.Response, path: str) -> None:
    if answer.status_code != 200:
        raise BenchError(f"GET {path} answered {answer.status_code}: {answer.text[:300]}")


async def sizes(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    """The HTML's size (raw and gzip'ed) and the size of each asset it links to."""
    page = await client.get(path)
    html = page.content
    assets = {}
    for url in linked_assets(html.decode(errors="replace")):
        answer = await client.get(url)
        expect_page(answer, url)
        assets[url] = {"bytes": len(answer.content), "gzipBytes": len(gzip.compress(answer.content))}
    return {
        "htmlBytes": len(html),
        "htmlGzipBytes": len(gzip.compress(html)),
        "sentEncoding": page.headers.get("content-encoding"),  # None: sent as it is, uncompressed
        "assetsBytes": sum(a["bytes"] for a in assets.values()),
        "assetsGzipBytes": sum(a["gzipBytes"] for a in assets.values()),
        "assets": assets,
    }


async def measure(
    server: ServerProcess, server_ids: list[str], password: str, requests: int
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, trust_env=False) as client:
        await sign_in(client, password)
        machines = [f"/machines/{sid}" for sid in server_ids[:: max(1, len(server_ids) // MACHINE_PAGES)]]
        out: dict[str, Any] = {
            "fleet": {"path": "/", **await timed_gets(client, server, ["/"], requests)},
            "machine": {"path": "/machines/{id}", **await timed_gets(client, server, machines, requests)},
        }
        out["fleet"]["size"] = await sizes(client, "/")
        out["machine"]["size"] = await sizes(client, machines[0])
        series = [f"/v1/servers/{sid}/metrics" for sid in server_ids[:MACHINE_PAGES]]
        out["metricsSeries"] = {
            "path": "/v1/servers/{id}/metrics",
            **await timed_gets(client, server, series, requests),
            "bytes": len((await client.get(series[0])).content),
        }
        return out


def run_backend(backend: str, args: argparse.Namespace, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    password = "bench-" + secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="ikoma-bench-console-") as secrets_dir:
        password_file = Path(secrets_dir) / "admin_password"
        password_file.write_text(password)
        password_file.chmod(0o600)
        os.environ["IKOMA_DEFAULT_ADMIN_PASSWORD_FILE"] = str(password_file)  # the server inherits it
        with ikoma_server(backend) as server:
            started = time.monotonic()
            server_ids = asyncio.run(seed_fleet(server, args.servers, reports))
            log(f"{backend}: {len(server_ids)} servers with state in {time.monotonic() - started:.0f} s")
            started = time.monotonic()
            points = asyncio.run(seed_metrics(server.database_url, server_ids))
            log(f"{backend}: {points} metric points in {time.monotonic() - started:.0f} s")
            result = asyncio.run(measure(server, server_ids, password, args.requests))
            return {"servers": len(server_ids), "metricPoints": points, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--servers", type=int, default=500)
    parser.add_argument("--requests", type=int, default=200, help="GETs per page")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="sqlite")
    args = parser.parse_args()
    reports = asyncio.run(live_reports())
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    out: dict[str, Any] = {"benchmark": "console", "servers": args.servers, "requests": args.requests}
    for backend in backends:
        if backend == "postgresql" and (why := postgres_reachable()) is not None:
            out[backend] = {"skipped": why}
            continue
        out[backend] = run_backend(backend, args, reports)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        log(f"failed: {error}")
        sys.exit(1)
