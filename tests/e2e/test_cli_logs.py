"""`ikoma orders logs ID --follow` prints a running order's log until the order ends."""

from __future__ import annotations

import os
import sys
import threading
import time

import httpx
import pytest

from tests import processes, support

pytestmark = pytest.mark.e2e


def test_logs_follow_prints_chunks_in_order_until_the_order_ends(live_server: support.LiveServer) -> None:
    with live_server.admin() as admin:
        server = admin.post("/v1/servers", json={"name": "log-1", "hostname": "log-1"}).json()
        runner = admin.post("/v1/runners", json={"name": "runner-log-1"}).json()
        admin.patch(f"/v1/servers/{server['id']}", json={"runnerId": runner["id"]})
        admin.post("/v1/orders", json={"serverId": server["id"], "playbookKey": "system.test_ping"})
    headers = {"x-runner-id": runner["id"], "x-runner-token": runner["token"]}
    agent = httpx.Client(base_url=live_server.url, headers=headers, timeout=30)
    order = agent.post("/v1/runner/orders/claim-next").json()
    lease = order["leaseToken"]
    agent.post(f"/v1/runner/orders/{order['id']}/start", json={"leaseToken": lease})

    def run_the_order() -> None:
        # chunks sent out of order and once twice: the reader must still see each line once, in order
        batches = [[(1, "line 1\n")], [(0, "line 0\n"), (1, "line 1\n")], [(2, "line 2\n")]]
        for batch in batches:
            time.sleep(0.5)
            chunks = [{"seq": seq, "stream": "stdout", "data": data} for seq, data in batch]
            agent.post(f"/v1/runner/orders/{order['id']}/logs", json={"leaseToken": lease, "chunks": chunks})
        report = {"version": "v2", "summary": "ok", "durationMs": 1, "steps": [], "errors": []}
        agent.post(
            f"/v1/runner/orders/{order['id']}/complete",
            json={"leaseToken": lease, "status": "SUCCEEDED", "report": report},
        )

    worker = threading.Thread(target=run_the_order)
    worker.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKOMA_")}
    env.update({"IKOMA_API_URL": live_server.url, "IKOMA_ADMIN_KEY": live_server.admin_key})
    followed = processes.run(
        [sys.executable, "-m", "ikoma", "orders", "logs", order["id"], "--follow"],
        env=env, text=True, timeout=60,
    )  # fmt: skip
    worker.join()
    agent.close()
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "line 0\nline 1\nline 2\n"
