"""`python bench/ssh.py`: system.test_ping over SSH on N ssh machines (one real sshd, N server rows).

Starts a real sshd (tests/sshd.py: needs root and openssh-server) and a real `ikoma serve` (SQLite, or
PostgreSQL with --backend postgresql), registers N ssh machines (password auth), then creates
`--orders` test_ping orders spread over them, all at once, and waits for every one. Prints orders/s
(first create → last finish), p50/p99 order latency (createdAt → finishedAt, the API's own clock) and
the API process's CPU per order (user + system ticks of the server's process tree over the run, which
includes its SSH executor: the work a runner would do elsewhere is done here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import sshd as sshd_support  # noqa: E402 - the repository root is put on the path first
from tests.support import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """user + system CPU of `root` and its descendants (children's ticks counted once they are reaped)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root or ppid == root:
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / TICK


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    with sshd_support.running_sshd(work / "sshd") as sshd:
        port, admin_key = free_port(), "ika_bench_" + secrets.token_urlsafe(16)
        env = {
            "PATH": os.environ["PATH"],
            "DATABASE_URL": args.database_url or f"sqlite:///{work / 'ikoma.db'}",
            "IKOMA_ADMIN_KEY": admin_key,
            "IKOMA_DATA_DIR": str(work / "data"),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "IKOMA_LOG_LEVEL": "warning",
            "IKOMA_SSH_MAX_CONNECTIONS": str(args.connections),
        }
        log = (work / "server.log").open("wb")
        server = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
            [sys.executable, "-m", "ikoma", "serve"], env=env, stdout=log, stderr=log
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(
                base_url=url, headers={"x-ikoma-admin-key": admin_key}, timeout=120
            ) as admin:
                for _ in range(600):
                    try:
                        if (await admin.get("/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.1)
                machine_ids = []
                for i in range(args.machines):
                    answer = await admin.post(
                        "/v1/servers",
                        json={
                            "name": f"bench-ssh-{i}",
                            "hostname": "127.0.0.1",
                            "port": sshd.port,
                            "connectionMode": "ssh",
                            "sshUsername": sshd_support.USER,
                            "sshPassword": sshd_support.PASSWORD,
                        },
                    )
                    answer.raise_for_status()
                    machine_ids.append(answer.json()["id"])
                # one warm-up order per machine: host keys pinned, executor loops started
                await asyncio.gather(*(order(admin, m) for m in machine_ids))
                cpu_before, started = tree_cpu_seconds(server.pid), time.monotonic()
                ids = await run_orders(admin, [machine_ids[i % len(machine_ids)] for i in range(args.orders)])
                wall = time.monotonic() - started
                cpu = tree_cpu_seconds(server.pid) - cpu_before
                done = await read_orders(admin, ids)
                runner = (
                    await runner_path(admin, server.pid, url, work, args) if args.compare_runner else None
                )
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()
    statuses = {o["status"] for o in done}
    latencies = [at(o["finishedAt"]) - at(o["createdAt"]) for o in done]
    span = max(at(o["finishedAt"]) for o in done) - min(at(o["createdAt"]) for o in done)
    return {
        "machines": args.machines,
        "orders": args.orders,
        "connections": args.connections,
        "statuses": sorted(statuses),
        "ordersPerSecond": round(args.orders / span, 1),
        "latencyP50Ms": round(percentile(latencies, 50) * 1000),
        "latencyP99Ms": round(percentile(latencies, 99) * 1000),
        "wallSeconds": round(wall, 2),
        "apiCpuPerOrderMs": round(cpu / args.orders * 1000, 2),
        "runner": runner,
    }


async def runner_path(
    admin: httpx.AsyncClient, server_pid: int, url: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The same orders on one agent server run by a real `ikoma runner` (its own process, parallel
    `--connections`): the API process's CPU per order when a runner does the work."""
    made = await admin.post("/v1/servers", json={"name": "bench-agent", "hostname": "127.0.0.1"})
    made.raise_for_status()
    runner = await admin.post("/v1/runners", json={"name": "bench-runner"})
    runner.raise_for_status()
    attached = await admin.patch(f"/v1/servers/{made.json()['id']}", json={"runnerId": runner.json()["id"]})
    attached.raise_for_status()
    config = work / "runner.json"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"apiUrl": url, "runnerId": runner.json()["id"], "token": runner.json()["token"]}, out)
    env = {
        "PATH": os.environ["PATH"],
        "IKOMA_DATA_DIR": str(work / "runner-data"),
        "IKOMA_LOG_LEVEL": "warning",
    }
    argv = [
        sys.executable,
        "-m",
        "ikoma",
        "runner",
        "--config",
        str(config),
        "--parallel",
        str(min(args.connections, 64)),
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        server_id = made.json()["id"]
        await order(admin, server_id)  # warm-up: the runner is up and claiming
        cpu_before = tree_cpu_seconds(server_pid)
        ids = await run_orders(admin, [server_id] * args.orders)
        cpu = tree_cpu_seconds(server_pid) - cpu_before
        done = await read_orders(admin, ids)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    latencies = [at(o["finishedAt"]) - at(o["createdAt"]) for o in done]
    span = max(at(o["finishedAt"]) for o in done) - min(at(o["createdAt"]) for o in done)
    return {
        "statuses": sorted({o["status"] for o in done}),
        "ordersPerSecond": round(args.orders / span, 1),
        "latencyP50Ms": round(percentile(latencies, 50) * 1000),
        "latencyP99Ms": round(percentile(latencies, 99) * 1000),
        "apiCpuPerOrderMs": round(cpu / args.orders * 1000, 2),
    }


async def run_orders(admin: httpx.AsyncClient, server_ids: list[str]) -> list[str]:
    """Create one order per entry at once and wait until the server's /metrics counts them ended (one
    cheap call a second: polling the orders would cost the API more CPU than running them)."""
    before = await ended_count(admin)
    created = await asyncio.gather(
        *(
            admin.post("/v1/orders", json={"serverId": s, "playbookKey": "system.test_ping"})
            for s in server_ids
        )
    )
    ids = [c.raise_for_status().json()["order"]["id"] for c in created]
    while await ended_count(admin) - before < len(ids):  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(1.0)
    return ids


async def read_orders(admin: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    return [(await admin.get(f"/v1/orders/{order_id}")).json() for order_id in ids]


async def ended_count(admin: httpx.AsyncClient) -> float:
    text = (await admin.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ikoma_transitions_total{") and any(f'"{s}"' in line for s in FINAL)
    )


FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE")


async def order(admin: httpx.AsyncClient, server_id: str) -> dict[str, Any]:
    created = await admin.post("/v1/orders", json={"serverId": server_id, "playbookKey": "system.test_ping"})
    created.raise_for_status()
    order_id = created.json()["order"]["id"]
    while True:
        await asyncio.sleep(0.25)
        found = (await admin.get(f"/v1/orders/{order_id}")).json()
        if found["status"] in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE"):
            return dict(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--connections", type=int, default=32, help="IKOMA_SSH_MAX_CONNECTIONS")
    parser.add_argument("--database-url", help="default: a new SQLite file")
    parser.add_argument(
        "--no-compare-runner",
        dest="compare_runner",
        action="store_false",
        help="skip the same orders run by a real runner on one agent server",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ikoma-bench-ssh-") as work:
        print(json.dumps(asyncio.run(run(args, Path(work))), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
