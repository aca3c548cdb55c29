"""Where the server's time goes during a drain: py-spy samples of `ikoma serve`, summarised.

Starts `ikoma serve` (bench/dispatch.py's set-up: 8 runners, `--orders` queued), attaches
`py-spy record` to the server process for the drain (the runners in worker processes, as in
`make bench`), then reads the raw collapsed stacks and prints one JSON document:

* `byPackage`: share of samples by the package of the innermost frame (self time: sqlalchemy,
  sqlite3 / asyncpg, starlette, fastapi, uvicorn, pydantic, ikoma, ...);
* `ikomaInclusive`: the IKOMA functions most often on the stack (inclusive time: what a service or
  route costs with everything it calls), `file:function`;
* `topSelf`: the innermost frames that take most samples.

    .venv/bin/pip install py-spy   # not a dependency: a profiler binary, needs ptrace (root here)
    .venv/bin/python bench/hotpath.py --backend sqlite --orders 3000

Shares are of samples taken while the process was on CPU or waiting in Python (py-spy's default:
idle threads are not sampled), so they say where the work is, not how long a call takes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

import loadgen
from dispatch import (
    ServerProcess,
    Tally,
    admin_client,
    create_orders,
    ikoma_server,
    in_workers,
    log,
    runner_tuples,
    setup_fleet,
    split,
)

SAMPLE_RATE = 250


def package_of(frame: str) -> str:
    """`func (sqlalchemy/engine/base.py:1234)` -> `sqlalchemy`; a bare stdlib file -> its name."""
    location = frame.rsplit("(", 1)[-1].rstrip(")")
    path = location.rsplit(":", 1)[0]
    head = path.split("/", 1)[0]
    return head.removesuffix(".py") or "?"


def summarise(collapsed: str, top: int) -> dict[str, Any]:
    by_package: Counter[str] = Counter()
    self_frames: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        by_package[package_of(leaf)] += count
        self_frames[leaf] += count
        seen = set()
        for frame in frames:
            location = frame.rsplit("(", 1)[-1]
            if location.startswith("ikoma/"):
                name = f"{location.rsplit(':', 1)[0]}:{frame.split(' (', 1)[0]}"
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += count

    def share(counter: Counter[str], n: int) -> dict[str, float]:
        return (
            {key: round(100.0 * value / total, 1) for key, value in counter.most_common(n)} if total else {}
        )

    return {
        "samples": total,
        "byPackage": share(by_package, top),
        "ikomaInclusive": share(inclusive, top),
        "topSelf": share(self_frames, top),
    }


async def drain_under_profiler(
    server: ServerProcess, args: argparse.Namespace, py_spy: str, out: Path
) -> dict[str, Any]:
    workers = loadgen.pool(2)
    try:
        async with admin_client(server.base_url, server.admin_key, connections=16) as admin:
            runners = await setup_fleet(admin, 8)
            created = await create_orders(admin, runners, args.orders, Tally())
        if server.proc is None:
            raise RuntimeError("the server did not start")
        argv = [py_spy, "record", "--pid", str(server.proc.pid), "--rate", str(SAMPLE_RATE)]
        profiler = await asyncio.create_subprocess_exec(
            *argv,
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(1.0)  # py-spy attaches
        log(f"profile: draining {len(created)} orders under py-spy")
        target = loadgen.Target(server.base_url)
        start_at = time.monotonic() + 0.2
        parts = await in_workers(
            workers,
            [
                functools.partial(loadgen.drain, target, g, len(created), start_at, start_at + 600)
                for g in split(runner_tuples(runners), 2)
            ],
        )
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        _, err = await asyncio.wait_for(profiler.communicate(), timeout=60)
    finally:
        workers.shutdown()
    return {
        "orders": len(created),
        "completed": sum(len(p["completed"]) for p in parts),
        "pySpy": err.decode(errors="replace")[-300:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--top", type=int, default=20, help="entries per list")
    parser.add_argument("--keep", type=Path, help="also keep the raw collapsed stacks in this file")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        parser.error("py-spy is not installed: .venv/bin/pip install py-spy")
    with tempfile.TemporaryDirectory(prefix="ikoma-profile-") as tmp:
        out = Path(tmp) / "stacks.txt"
        with ikoma_server(args.backend) as server:  # sync: it may create a PostgreSQL database
            drained = asyncio.run(drain_under_profiler(server, args, py_spy, out))
        if not out.exists():
            raise SystemExit(f"py-spy wrote nothing: {drained['pySpy']}")
        del drained["pySpy"]
        collapsed = out.read_text()
        if args.keep:
            args.keep.write_text(collapsed)
    document = {"profile": {"backend": args.backend, **drained, **summarise(collapsed, args.top)}}
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(main())
