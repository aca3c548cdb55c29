"""The per-app supervisor of the `process` runtime: `python -m ikoma.runner.apps.supervisor start <app dir>`.

`start` double-forks a daemon in its own session, which leaves the step's containment (cgroup leaf
and cookie, see runner/containment.py) and re-execs itself: neither the end of the deploy step nor
the runner's exit or death reaches it. `start` waits until the daemon says it started the app's
processes, and exits 0. The daemon:

- holds `<app>/.ikoma/supervisor.lock` (one supervisor per app) and writes `supervisor.pid`;
- runs each manifest process from the app directory, in its own process group, with a clean
  environment: a few basics (PATH, HOME, LANG…), then `.env`, then the manifest's env, then PORT;
- appends each process's stdout/stderr to `<app>/.ikoma/logs/<process>.log`;
- restarts a process that exits, with an exponential backoff (reset after a stable run);
- keeps `<app>/.ikoma/state.json` up to date (pids, start times, restarts, last exit);
- on SIGTERM stops every process (SIGTERM to its group, SIGKILL after the grace) and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ikoma.runner import containment
from ikoma.runner.apps import envfile, procfs
from ikoma.runner.apps import manifest as manifests
from ikoma.runner.apps.errors import AppError

STATE_DIR = ".ikoma"
PID_FILE = "supervisor.pid"
LOCK_FILE = "supervisor.lock"
STATE_FILE = "state.json"
LOG_DIR = "logs"
SUPERVISOR_LOG = "supervisor.log"
MODULE = "ikoma.runner.apps.supervisor"

BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TZ", "TMPDIR")
STOP_GRACE = 10.0
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0
STABLE_AFTER = 10.0  # a process that ran this long before exiting starts again with the first delay
LOG_ROTATE_BYTES = 10 * 1024 * 1024
READY_TIMEOUT = 30.0
TICK = 0.1
STATE_REFRESH = 5.0
EXIT_ALREADY_RUNNING = 3


def state_dir(app_dir: Path) -> Path:
    return app_dir / STATE_DIR


def log_path(app_dir: Path, process: str) -> Path:
    return state_dir(app_dir) / LOG_DIR / f"{process}.log"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def read_state(app_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir(app_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def running_pid(app_dir: Path) -> int | None:
    """The live supervisor's pid for this app (pid file + /proc cmdline check), else None."""
    try:
        pid = int((state_dir(app_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    argv = procfs.cmdline(pid)
    if procfs.alive(pid) and MODULE in argv and str(app_dir) in argv:
        return pid
    return None


def process_env(
    app_dir: Path, spec: manifests.ProcessSpec, base: dict[str, str] | None = None
) -> dict[str, str]:
    """What a process sees: basics, then `.env`, then the manifest's env, then PORT; nothing else."""
    base = dict(os.environ) if base is None else base
    env = {name: base[name] for name in BASE_ENV if name in base}
    env.setdefault("PATH", os.defpath)
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    env.update(envfile.read(app_dir / envfile.ENV_FILE))
    env.update(spec.env)
    if spec.port is not None:
        env["PORT"] = str(spec.port)
    return env


@dataclass
class Child:
    spec: manifests.ProcessSpec
    popen: subprocess.Popen[bytes] | None = None
    started_mono: float = 0.0
    started_at: str | None = None
    start_time: int | None = None
    restarts: int = 0
    failures: int = 0
    next_start: float | None = None
    last_exit: int | None = None
    last_exit_at: str | None = None
    error: str | None = None

    def state(self) -> dict[str, Any]:
        running = self.popen is not None and self.popen.poll() is None
        if running:
            status = "running"
        elif self.next_start is not None:
            status = "backoff"
        else:
            status = "stopped"
        return {
            "pid": self.popen.pid if running and self.popen else None,
            "startTime": self.start_time if running else None,
            "startedAt": self.started_at if running else None,
            "status": status,
            "port": self.spec.port,
            "restarts": self.restarts,
            "lastExit": self.last_exit,
            "lastExitAt": self.last_exit_at,
            "error": self.error,
        }


class Supervisor:
    def __init__(self, app_dir: Path, ready_fd: int | None = None) -> None:
        self.app_dir = app_dir
        self.dir = state_dir(app_dir)
        self.ready_fd = ready_fd
        self.children: list[Child] = []
        self.stopping = False
        self.started_at = _now_iso()
        self._last_state = 0.0
        self._lock: IO[str] | None = None

    def say(self, message: str) -> None:
        print(f"{_now_iso()} [supervisor {os.getpid()}] {message}", flush=True)

    def _notify(self, message: str) -> None:
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, (message + "\n").encode())
                os.close(self.ready_fd)
            self.ready_fd = None

    def _take_lock(self) -> bool:
        import fcntl  # POSIX only, like the rest of the process runtime

        self._lock = open(self.dir / LOCK_FILE, "a")  # noqa: SIM115 - held for the daemon's life
        deadline = time.monotonic() + 2.0
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def write_state(self) -> None:
        self._last_state = time.monotonic()
        state = {
            "supervisorPid": os.getpid(),
            "supervisorStartTime": procfs.start_time(os.getpid()),
            "startedAt": self.started_at,
            "updatedAt": _now_iso(),
            "stopping": self.stopping,
            "processes": {child.spec.name: child.state() for child in self.children},
        }
        _write_json(self.dir / STATE_FILE, state)

    def _spawn(self, child: Child) -> None:
        spec = child.spec
        path = log_path(self.app_dir, spec.name)
        with contextlib.suppress(OSError):
            if path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(path, path.with_suffix(".log.1"))
        env = process_env(self.app_dir, spec)
        argv = list(spec.command)
        if "/" not in argv[0]:
            argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        with open(path, "ab") as log:
            log.write(f"{_now_iso()} [ikoma] starting {spec.name}: {spec.command!r}\n".encode())
            log.flush()
            child.popen = subprocess.Popen(  # noqa: S603 - argv from the manifest, never a shell
                argv,
                cwd=self.app_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,  # its own group: stopping it reaches its children too
                close_fds=True,
            )
        child.started_mono = time.monotonic()
        child.started_at = _now_iso()
        child.start_time = procfs.start_time(child.popen.pid)
        child.next_start = None
        child.error = None
        self.say(f"started {spec.name} pid {child.popen.pid}")

    def _reap(self, child: Child) -> None:
        if child.popen is None or child.popen.poll() is None:
            return
        code = child.popen.returncode
        pid = child.popen.pid
        child.popen = None
        # the leader is gone; whatever it left in its group (a worker holding the port) goes too
        if procfs.group_alive(pid):
            procfs.signal_group(pid, signal.SIGKILL)
        child.last_exit = code
        child.last_exit_at = _now_iso()
        ran = time.monotonic() - child.started_mono
        child.failures = 0 if ran >= STABLE_AFTER else child.failures + 1
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, child.failures - 1))
        child.next_start = time.monotonic() + delay
        with contextlib.suppress(OSError), open(log_path(self.app_dir, child.spec.name), "ab") as log:
            log.write(
                f"{_now_iso()} [ikoma] {child.spec.name} exited ({code}), restart in {delay:.1f}s\n".encode()
            )
        self.say(f"{child.spec.name} pid {pid} exited with {code}; restarting in {delay:.1f}s")

    def _stop_children(self) -> None:
        for child in self.children:
            if child.popen is not None and child.popen.poll() is None:
                procfs.signal_group(child.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and any(
            c.popen is not None and c.popen.poll() is None for c in self.children
        ):
            time.sleep(0.05)
        for child in self.children:
            if child.popen is None:
                continue
            if child.popen.poll() is None:
                self.say(f"{child.spec.name} ignored SIGTERM for {STOP_GRACE:.0f}s: SIGKILL")
            procfs.signal_group(child.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(timeout=5)
            child.last_exit = child.popen.returncode
            child.last_exit_at = _now_iso()
            child.popen = None
            child.next_start = None

    def run(self) -> int:
        (self.dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
        if not self._take_lock():
            pid = running_pid(self.app_dir)
            self._notify(f"already {pid or '?'}")
            return EXIT_ALREADY_RUNNING
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        (self.dir / PID_FILE).write_text(f"{os.getpid()}\n")
        try:
            return self._run_locked()
        finally:
            with contextlib.suppress(OSError):
                (self.dir / PID_FILE).unlink()

    def _run_locked(self) -> int:
        try:
            manifest = manifests.load(self.app_dir)
        except AppError as exc:
            self._notify(f"error {exc.message}")
            return 1
        self.children = [Child(spec) for spec in manifest.processes]
        for child in self.children:
            try:
                self._spawn(child)
            except OSError as exc:
                message = f"cannot start {child.spec.name}: {exc.strerror or exc}"
                self.say(message)
                self._stop_children()
                self.write_state()
                self._notify(f"error {message}")
                return 1
        self.write_state()
        self._notify(f"ready {os.getpid()}")
        self.say(f"supervising {len(self.children)} processes of {self.app_dir.name}")
        while not self.stopping:
            changed = False
            for child in self.children:
                if child.popen is not None and child.popen.poll() is not None:
                    self._reap(child)
                    changed = True
                if (
                    child.popen is None
                    and child.next_start is not None
                    and time.monotonic() >= child.next_start
                ):
                    try:
                        self._spawn(child)
                        child.restarts += 1
                    except OSError as exc:
                        child.error = f"cannot start: {exc.strerror or exc}"
                        child.failures += 1
                        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2**child.failures)
                        child.next_start = time.monotonic() + delay
                    changed = True
            if changed or time.monotonic() - self._last_state > STATE_REFRESH:
                self.write_state()
            time.sleep(TICK)
        self.say("stopping: SIGTERM to every process")
        self.write_state()
        self._stop_children()
        self.write_state()
        self.say("stopped")
        return 0


def _daemonize(app_dir: Path) -> int:
    """Start the daemon and wait for its answer; the exit code and one line say how it went."""
    directory = state_dir(app_dir)
    (directory / LOG_DIR).mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - runs in the forked children
        os.close(read_end)
        os.setsid()  # a new session and process group: the step's group kill does not reach it
        if os.fork() != 0:
            os._exit(0)  # the session leader leaves; the daemon can never reacquire a terminal
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(directory / SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.chdir(app_dir)
        try:
            # meant to outlive the deploy step: leave the step's containment explicitly (its cgroup,
            # and the cookie in the environment it re-execs with), or the step's end would kill it
            os.set_inheritable(write_end, True)
            argv = [sys.executable, "-I", "-m", MODULE, "daemon", str(app_dir), str(write_end)]
            os.execve(sys.executable, argv, containment.detach_self(os.environ))  # noqa: S606 - argv only
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)
    os.close(write_end)
    os.waitpid(first, 0)
    answer = b""
    deadline = time.monotonic() + READY_TIMEOUT
    while b"\n" not in answer and time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        answer += chunk
    os.close(read_end)
    word, _, rest = answer.decode(errors="replace").strip().partition(" ")
    if word == "ready":
        print(f"supervisor of {app_dir.name} started (pid {rest})")
        return 0
    if word == "already":
        print(f"supervisor of {app_dir.name} already running (pid {rest})")
        return 0
    if word == "error":
        print(f"supervisor of {app_dir.name} failed: {rest}", file=sys.stderr)
        return 1
    print(f"supervisor of {app_dir.name} gave no answer; see {directory / SUPERVISOR_LOG}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "daemon":  # what `start` re-execs, detached (see _daemonize)
        return Supervisor(Path(argv[1]), ready_fd=int(argv[2])).run()
    if len(argv) != 2 or argv[0] not in ("start", "run"):
        print(f"usage: python -m {MODULE} start|run <app dir>", file=sys.stderr)
        return 2
    app_dir = Path(argv[1]).resolve()
    if not (app_dir / manifests.MANIFEST_FILE).is_file():
        print(f"{app_dir} has no {manifests.MANIFEST_FILE}", file=sys.stderr)
        return 2
    if argv[0] == "run":  # in the foreground (debugging, or under systemd)
        (state_dir(app_dir) / LOG_DIR).mkdir(parents=True, exist_ok=True)
        return Supervisor(app_dir).run()
    return _daemonize(app_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
