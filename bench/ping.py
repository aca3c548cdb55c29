"""How long a ping takes from order creation to SUCCEEDED with a long-polling runner.

Starts `python -m ikoma up` (API + reconciler + the local runner) on a free port with a throw-away
data dir, then creates `--orders` system.test_ping orders one after the other, each once the previous
one has ended, so every figure is an unloaded end-to-end latency. The latency of an order is
`finishedAt - createdAt`, both stamped by the database clock, so the client's polling adds nothing.
Prints one JSON document on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ikoma up exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("ikoma up did not become ready")


def wait_online(admin: httpx.Client, timeout: float = 30.0) -> str:
    """The local server's id, once its runner has sent a heartbeat."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runners = admin.get("/v1/runners").json()
        if runners and runners[0]["online"]:
            return str(runners[0]["serverId"])
        time.sleep(0.2)
    raise RuntimeError("the local runner never came online")


def run(orders: int) -> dict[str, Any]:
    admin_key = "ika_bench_" + secrets.token_urlsafe(24)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="ikoma-ping-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}
        # no collection schedules: a ping queued behind the first apt.analyze would measure apt, not IKOMA
        env.update(
            {"IKOMA_ADMIN_KEY": admin_key, "IKOMA_LOG_LEVEL": "warning", "IKOMA_DEFAULT_SCHEDULES": "false"}
        )
        with (Path(tmp) / "up.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "ikoma", "up", "--data-dir", f"{tmp}/data", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(url, process)
            with httpx.Client(base_url=url, headers={"x-ikoma-admin-key": admin_key}, timeout=30) as admin:
                server_id = wait_online(admin)
                latencies: list[float] = []
                failures = 0
                for i in range(orders):
                    body = {
                        "serverId": server_id,
                        "playbookKey": "system.test_ping",
                        "params": {"message": f"#{i}"},
                    }
                    order_id = admin.post("/v1/orders", json=body).json()["order"]["id"]
                    while True:
                        order = admin.get(f"/v1/orders/{order_id}").json()
                        if order["status"] in TERMINAL:
                            break
                        time.sleep(0.005)
                    if order["status"] != "SUCCEEDED":
                        failures += 1
                        continue
                    created = datetime.fromisoformat(order["createdAt"])
                    finished = datetime.fromisoformat(order["finishedAt"])
                    latencies.append((finished - created).total_seconds() * 1000)
                    if (i + 1) % 50 == 0:
                        print(f"[ping] {i + 1}/{orders}", file=sys.stderr)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    return {
        "orders": orders,
        "succeeded": len(latencies),
        "failed": failures,
        "createToSucceededMs": {
            "p50": round(statistics.median(latencies), 1),
            "p90": round(percentile(latencies, 90), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(max(latencies), 1),
            "min": round(min(latencies), 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    args = parser.parse_args()
    result = run(args.orders)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps({"machine": machine, "backend": "sqlite", "ping": result}, indent=2))


if __name__ == "__main__":
    main()
