"""CPU meters of the benchmarks: the server's process tree, PostgreSQL's backends, the machine.

Everything is read from /proc (Linux), in jiffies (1/100 s here): a figure per order is only as
good as the run is long, so the benchmarks give totals of seconds, not single calls.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_table() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, utime + stime jiffies)} of every process visible in /proc."""
    table: dict[int, tuple[int, int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return table
    for entry in entries:
        try:
            rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return table


def tree_ticks(root: int, table: dict[int, tuple[int, int]]) -> int | None:
    """utime+stime jiffies of `root` and all its descendants (None when `root` is gone)."""
    if root not in table:
        return None
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, frontier = {root}, [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(table[pid][1] for pid in tree)


def pg_backend_ticks(database: str) -> dict[int, int]:
    """{pid: jiffies} of the PostgreSQL backends connected to `database`, found by their process
    title (`postgres: 15/main: user <database> 127.0.0.1(port) idle`), so no query is needed."""
    found: dict[int, int] = {}
    needle = f" {database} ".encode()
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return found
    for entry in entries:
        try:
            title = Path(f"/proc/{entry}/cmdline").read_bytes()
            if not title.startswith(b"postgres:") or needle not in title.replace(b"\0", b" "):
                continue
            rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[int(entry)] = int(rest[11]) + int(rest[12])
    return found


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat (None off Linux)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


class CpuMeter:
    """CPU used between start() and stop(): this process (plus the client CPU of worker processes
    passed to stop), the server's process tree, PostgreSQL's backends of one database, the machine.

    The database figure counts the backends alive at stop() (a connection opened and closed within
    the window is missed) and none of PostgreSQL's shared processes (WAL writer, checkpointer)."""

    def __init__(self, server_pid: int | None, pg_database: str | None = None) -> None:
        self.server_pid = server_pid
        self.pg_database = pg_database
        self._wall0 = self._cpu0 = 0.0
        self._server0: int | None = None
        self._db0: dict[int, int] = {}
        self._machine0: tuple[int, int] | None = None

    def _server_ticks(self) -> int | None:
        return None if self.server_pid is None else tree_ticks(self.server_pid, process_table())

    def start(self) -> None:
        self._db0 = pg_backend_ticks(self.pg_database) if self.pg_database else {}
        self._server0, self._machine0 = self._server_ticks(), machine_ticks()
        self._wall0, self._cpu0 = time.monotonic(), time.process_time()

    def stop(self, client_cpu_s: float = 0.0) -> dict[str, float | None]:
        wall1, cpu1 = time.monotonic(), time.process_time()
        server1, machine1 = self._server_ticks(), machine_ticks()
        wall = max(wall1 - self._wall0, 1e-9)
        server_s = None
        if self._server0 is not None and server1 is not None:
            server_s = (server1 - self._server0) / HZ
        machine = None
        if self._machine0 is not None and machine1 is not None and machine1[1] > self._machine0[1]:
            busy = machine1[0] - self._machine0[0]
            machine = round(100.0 * busy / (machine1[1] - self._machine0[1]), 1)
        out: dict[str, float | None] = {
            "clientPercent": round(100.0 * (cpu1 - self._cpu0 + client_cpu_s) / wall, 1),
            "serverPercent": None if server_s is None else round(100.0 * server_s / wall, 1),
            "machineBusyPercent": machine,
            "serverCpuSeconds": None if server_s is None else round(server_s, 2),
        }
        if self.pg_database:
            db1 = pg_backend_ticks(self.pg_database)
            database_s = sum(t - self._db0.get(pid, 0) for pid, t in db1.items()) / HZ
            out["databasePercent"] = round(100.0 * database_s / wall, 1)
            out["databaseCpuSeconds"] = round(database_s, 2)
        return out


def rss_mb(pid: int) -> float | None:
    """Resident memory of one process in MB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
