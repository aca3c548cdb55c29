"""cgroup v2 leaves for steps: one directory per step under the runner's own cgroup.

A process cannot leave a cgroup it has no write access to, whatever it forks or `setsid`s, and
`cgroup.kill` (Linux 5.14+) SIGKILLs every member at once, so a step in its own leaf can be ended
whole. Used when the runner may write its cgroup (root, or a delegated systemd unit); otherwise the
runner falls back to the session sweep of `containment.py`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

LEAF_PREFIX = "ikoma-step-"


def _mount_point() -> Path | None:
    """Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup`, or `…/unified` on hybrid hosts)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        # fields: id parent major:minor root mountpoint options [optional…] - fstype source super
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split(" ")[4])
    return None


def own_cgroup(pid: int | str = "self") -> Path | None:
    """The absolute directory of `pid`'s cgroup v2, or None without a cgroup2 mount."""
    mount = _mount_point()
    if mount is None:
        return None
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return mount / line[3:].lstrip("/")
    return None


def probe() -> Path | None:
    """The runner's cgroup when step leaves can be made, filled and killed in it; else None."""
    base = own_cgroup()
    if base is None:
        return None
    trial = base / f"{LEAF_PREFIX}probe-{os.getpid()}"
    try:
        trial.mkdir()
    except OSError:
        return None
    try:
        usable = (trial / "cgroup.kill").exists() and os.access(trial / "cgroup.procs", os.W_OK)
    finally:
        with contextlib.suppress(OSError):
            trial.rmdir()
    return base if usable else None


def create_leaf(base: Path, name: str) -> Path:
    leaf = base / f"{LEAF_PREFIX}{name}"
    leaf.mkdir(exist_ok=True)
    return leaf


def enter(leaf: Path) -> None:
    """Move the calling process into `leaf` (writing 0 to cgroup.procs means "myself")."""
    fd = os.open(leaf / "cgroup.procs", os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def members(leaf: Path) -> list[int]:
    """Every pid in `leaf` and in any cgroup the step made below it."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for directory, _, _ in os.walk(leaf):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (Path(directory) / "cgroup.procs").read_text().split()]
    return pids


def populated(leaf: Path) -> bool:
    """A live process is in the leaf or below (zombies waiting for their parent do not count)."""
    try:
        events = (leaf / "cgroup.events").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return "populated 1" in events


def kill(leaf: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (leaf / "cgroup.kill").write_text("1")


def remove(leaf: Path, timeout: float = 5.0) -> bool:
    """Remove the leaf (and sub-cgroups the step made) once empty; False if it is still in use."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for directory, _, _ in sorted(os.walk(leaf), key=lambda entry: -len(entry[0])):
                Path(directory).rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def leave_step_leaf() -> bool:
    """Move the calling process from its step leaf to the runner's cgroup (a daemon meant to stay)."""
    current = own_cgroup()
    if current is None or not current.name.startswith(LEAF_PREFIX):
        return False
    try:
        enter(current.parent)
    except OSError:
        return False
    return True
