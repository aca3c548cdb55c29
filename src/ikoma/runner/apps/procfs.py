"""Is that pid still the process we started? Answers from /proc that survive pid reuse.

A pid alone is not an identity: after a reboot or a long uptime another program may hold it.
The kernel's start time of the process (field 22 of /proc/<pid>/stat) pins it down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    _, _, rest = raw.rpartition(")")
    return rest.split()


def start_time(pid: int) -> int | None:
    """Clock ticks since boot at which `pid` started, or None when there is no such live process."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie is gone for us
        return None
    return int(fields[19])


def alive(pid: int, started: int | None = None) -> bool:
    current = start_time(pid)
    return current is not None and (started is None or current == started)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def uptime_seconds(pid: int) -> float | None:
    """Seconds since `pid` started, from the kernel's clock (no wall-clock jumps)."""
    started = start_time(pid)
    if started is None:
        return None
    try:
        boot_uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, boot_uptime - started / os.sysconf("SC_CLK_TCK"))


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_gone(pid: int, started: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, started):
            return True
        time.sleep(0.05)
    return not alive(pid, started)


def terminate_group(pgid: int, started: int | None, grace: float) -> None:
    """SIGTERM a process group whose leader is still the one we know; SIGKILL it after `grace`."""
    if not alive(pgid, started):
        if group_alive(pgid):  # the leader is gone but members stayed (a daemonising child)
            signal_group(pgid, signal.SIGKILL)
        return
    signal_group(pgid, signal.SIGTERM)
    if not wait_gone(pgid, started, grace):
        signal_group(pgid, signal.SIGKILL)
        wait_gone(pgid, started, 5.0)
    if group_alive(pgid):
        signal_group(pgid, signal.SIGKILL)
