"""Containment of steps: nothing a step starts outlives it, nor the runner that runs it.

Each step gets a `Jail` before it starts:

- **cgroup** mode (the runner may write its cgroup v2: root, or a delegated unit): the child enters
  its own leaf before it execs (`cgroups.py`); the leaf's members are the step, whatever they fork,
  `setsid` or double-fork, and `cgroup.kill` ends them all at once.
- **session** mode (the fallback, e.g. an unprivileged runner): the step is a session and process
  group leader, and its environment carries a cookie (`RUNNER_STEP_COOKIE`, the way Jenkins finds a
  build's strays). Its members are the processes in that session or group, those whose environment
  holds the cookie (a `setsid` grandchild or a daemon keeps it), and every descendant of those. What
  escapes this mode: a process that both leaves the session and drops its environment (`setsid env -i`)
  once its parent has exited. Signals go through pidfds checked against the start time, so a reused
  pid is never hit.

Both modes set PR_SET_PDEATHSIG(SIGKILL) on the step's leader, write a record per running step in the
runner's state dir, and run a watchdog process that holds a pipe from the runner: when the runner dies
(even by SIGKILL) the pipe closes and the watchdog kills every step still recorded. A runner that
starts also kills what records of a dead runner name (`sweep_leftovers`), before it claims anything.

A process meant to outlive its step (the app supervisor of `deploy.*`/`apps.*`) says so with
`detach_self()`: it leaves the step's leaf and drops the cookie from the environment it re-execs with.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from ikoma.runner import cgroups, config

log = structlog.get_logger("ikoma.runner.containment")

COOKIE_ENV = "RUNNER_STEP_COOKIE"
CGROUP = "cgroup"
SESSION = "session"
MODES = ("auto", CGROUP, SESSION)
KILL_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1
# loaded here, in the runner: the forked child only calls it (no dlopen between fork and exec)
_LIBC = ctypes.CDLL(None, use_errno=True)


class ContainmentUnavailable(Exception):
    """The containment asked for cannot be used on this host (the message says why)."""


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    start: int


def _stat(pid: int) -> Proc | None:
    """A live (non-zombie) process from /proc/<pid>/stat, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = raw.rpartition(")")[2].split()  # the name (field 2) may hold spaces and parentheses
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))


def processes() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (proc := _stat(int(entry.name))) is not None:
            table[proc.pid] = proc
    return table


def _has_cookie(pid: int, needle: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # another user's process (unprivileged runner) or gone
        return False
    return needle in environ.split(b"\0")


def send(proc: Proc, sig: int) -> None:
    """Signal `proc` only if its pid still names the same process (pidfd, then a start-time check)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd (kernel < 5.3): check then kill, a narrow race
        current = _stat(proc.pid)
        if current is not None and current.start == proc.start:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, sig)
        return
    try:
        current = _stat(proc.pid)
        if current is not None and current.start == proc.start:
            signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass
class StepRecord:
    """What a sweep needs to find a step's processes again, even from another process."""

    cookie: str
    cgroup: str | None = None
    pgid: int | None = None
    leader_start: int | None = None

    def members(self) -> list[Proc]:
        if self.cgroup is not None:
            found = (_stat(pid) for pid in cgroups.members(Path(self.cgroup)))
            return [proc for proc in found if proc is not None]
        return self._session_members()

    def _session_members(self) -> list[Proc]:
        table = processes()
        leader = table.get(self.pgid) if self.pgid is not None else None
        # a session id cannot be reused while a member lives; a live leader with another start time
        # means the old session is gone and the number now names someone else's
        session = self.pgid if leader is None or leader.start == self.leader_start else None
        needle = f"{COOKIE_ENV}={self.cookie}".encode()
        spared = {os.getpid(), 1}
        found = {
            proc.pid
            for proc in table.values()
            if proc.pid not in spared
            and (proc.sid == session or proc.pgid == session or _has_cookie(proc.pid, needle))
        }
        children: dict[int, list[int]] = {}
        for proc in table.values():
            children.setdefault(proc.ppid, []).append(proc.pid)
        todo = list(found)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found and child not in spared:
                    found.add(child)
                    todo.append(child)
        return [table[pid] for pid in sorted(found)]

    def signal(self, sig: int) -> None:
        for proc in self.members():
            send(proc, sig)

    def alive(self) -> bool:
        if self.cgroup is not None:
            return cgroups.populated(Path(self.cgroup))
        return bool(self._session_members())

    def kill(self, timeout: float = KILL_TIMEOUT) -> bool:
        """SIGKILL every member until none is left (stopped first, so none forks in between)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.cgroup is not None:
                cgroups.kill(Path(self.cgroup))
            else:
                members = self._session_members()
                for proc in members:
                    send(proc, signal.SIGSTOP)
                for proc in members:
                    send(proc, signal.SIGKILL)
            time.sleep(0.02)
            if not self.alive():
                return True
            if time.monotonic() > deadline:
                return False

    def dispose(self) -> bool:
        """Kill what is left and remove the leaf; True once nothing of the step remains."""
        dead = self.kill()
        if self.cgroup is not None:
            dead = cgroups.remove(Path(self.cgroup)) and dead
        return dead


class Jail:
    """One step's containment: set up in the child before exec, recorded while the step runs."""

    def __init__(self, record: StepRecord, path: Path | None, runner_pid: int) -> None:
        self.record = record
        self._path = path
        self._runner_pid = runner_pid
        self._procs = f"{record.cgroup}/cgroup.procs" if record.cgroup else None

    @property
    def cookie(self) -> str:
        return self.record.cookie

    def child_setup(self) -> None:  # pragma: no cover - runs in the forked child, before exec
        """Enter the leaf and die with the runner. Only syscalls: this runs between fork and exec."""
        if self._procs is not None:
            with contextlib.suppress(OSError):  # the parent checks where the child landed
                fd = os.open(self._procs, os.O_WRONLY)
                os.write(fd, b"0")
                os.close(fd)
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != self._runner_pid:  # the runner died before prctl: follow it now
            os._exit(128 + signal.SIGKILL)

    def attach(self, pid: int) -> None:
        """The leader started: record its group and start time so a sweep finds the step later."""
        self.record.pgid = pid
        leader = _stat(pid)
        self.record.leader_start = leader.start if leader is not None else None
        leaf = self.record.cgroup
        if leaf is not None and leader is not None and pid not in cgroups.members(Path(leaf)):
            # alive, yet not in its leaf: entering failed; the session sweep still finds the step
            log.warning("step did not enter its cgroup, using the session sweep", pid=pid)
            cgroups.remove(Path(leaf), timeout=0)
            self.record.cgroup = None
        if self._path is not None:
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self.record)))
            os.replace(tmp, self._path)

    def members(self) -> list[Proc]:
        return self.record.members()

    def alive(self) -> bool:
        return self.record.alive()

    def signal(self, sig: int) -> None:
        self.record.signal(sig)

    def kill(self) -> bool:
        return self.record.kill()

    def close(self) -> None:
        """Kill leftovers, remove the leaf and the record (kept if something could not be killed)."""
        if not self.record.dispose():
            log.error("step processes survived SIGKILL", cookie=self.cookie, pids=self.members())
            return
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()


class Containment:
    """The runner's way of containing steps; `create` picks the mode and starts the watchdog."""

    def __init__(self, mode: str, base: Path | None, records: Path | None) -> None:
        self.mode = mode
        self.base = base
        self.records = records
        self._watchdog: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, mode: str = "auto", state_dir: Path | None = None) -> Containment:
        """`state_dir` given: records go there and a watchdog kills the steps if the runner dies."""
        if mode not in MODES:
            raise ContainmentUnavailable(f"containment must be one of {', '.join(MODES)}, got {mode!r}")
        base = cgroups.probe() if mode != SESSION else None
        if mode == CGROUP and base is None:
            raise ContainmentUnavailable("no writable cgroup v2 with cgroup.kill for this runner")
        records = None
        if state_dir is not None:
            me = _stat(os.getpid())
            records = state_dir / "containment" / f"{os.getpid()}-{me.start if me else 0}"
            records.mkdir(parents=True, exist_ok=True)
        containment = cls(CGROUP if base is not None else SESSION, base, records)
        if records is not None:
            containment._start_watchdog()
        return containment

    def _start_watchdog(self) -> None:
        assert self.records is not None
        argv = [sys.executable, "-I", "-m", __name__, "watch", str(self.records)]
        self._watchdog = subprocess.Popen(  # noqa: S603 - our own module, argv only
            argv,
            stdin=subprocess.PIPE,  # never written: its end of file is the runner's death
            stdout=subprocess.DEVNULL,  # what it says goes to the runner's stderr (its log)
            start_new_session=True,  # a signal to the runner's group leaves it standing
            env={"PATH": os.environ.get("PATH", os.defpath)},
        )

    def close(self) -> None:
        """A clean stop: the watchdog sees the end of its pipe, finds no step left and exits."""
        if self._watchdog is not None and self._watchdog.stdin is not None:
            self._watchdog.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(timeout=10)

    def open(self) -> Jail:
        cookie = secrets.token_hex(12)
        leaf = None
        if self.base is not None:
            leaf = str(cgroups.create_leaf(self.base, cookie))
        path = self.records / f"{cookie}.json" if self.records is not None else None
        return Jail(StepRecord(cookie, cgroup=leaf), path, os.getpid())


_default: Containment | None = None


def default() -> Containment:
    """A process-wide containment without records or watchdog (for playbooks run outside an agent)."""
    global _default  # probed once per process
    if _default is None:
        _default = Containment.create(config.containment_mode())
    return _default


def _sweep_instance(directory: Path) -> int:
    killed = 0
    for path in sorted(directory.glob("*.json")):
        try:
            record = StepRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        killed += len(record.members())
        if record.dispose():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    if not any(directory.glob("*.json")):
        for leftover in directory.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()
    return killed


def sweep_leftovers(state_dir: Path) -> int:
    """Kill the steps recorded by runners of this state dir that are gone; the count of processes."""
    root = state_dir / "containment"
    if not root.is_dir():
        return 0
    killed = 0
    for directory in sorted(root.iterdir()):
        pid, _, start = directory.name.partition("-")
        owner = _stat(int(pid)) if pid.isdigit() else None
        if owner is not None and str(owner.start) == start:
            continue  # a live runner shares this state dir: its steps are its own
        killed += _sweep_instance(directory)
    return killed


def detach_self(env: Mapping[str, str]) -> dict[str, str]:
    """For a daemon meant to outlive its step: leave the step's cgroup; the environment to re-exec
    with, without the step's cookie (the session sweep would find it by that)."""
    cgroups.leave_step_leaf()
    return {name: value for name, value in env.items() if name != COOKIE_ENV}


def _watch(directory: Path) -> int:
    """The watchdog: wait for the runner's end (end of file on stdin), then kill its recorded steps."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.read(0, 4096):
        pass
    killed = _sweep_instance(directory)
    if killed:
        with contextlib.suppress(OSError):  # the runner's log may have gone with it
            print(f"ikoma watchdog: runner gone, killed {killed} step processes", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "watch":
        print(f"usage: python -m {__name__} watch <records dir>", file=sys.stderr)
        sys.exit(2)
    sys.exit(_watch(Path(sys.argv[2])))
