"""The processes tests start (`ikoma serve`, `ikoma up`, runners, CLI commands), stopped on every path.

Each process starts in a session of its own, so one `killpg` reaches it and everything it spawned in
its group (the local runner of `ikoma up`, for one). Every process started here is tracked per pytest
process (per xdist worker): `stop_all`, called by the session's safety net in tests/conftest.py and at
interpreter exit, kills whatever a failing fixture left behind. A child started from the main thread is
also SIGKILLed by the kernel if this pytest process dies without any clean-up at all.

Start-up waits are generous (a loaded machine is slow, not broken): `START_TIMEOUT`, overridable with
IKOMA_TEST_START_TIMEOUT, and a start that fails says why with the tail of the process's log.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT = float(os.environ.get("IKOMA_TEST_START_TIMEOUT", "180"))
LOG_TAIL_LINES = 60
_PR_SET_PDEATHSIG = 1

# pid (= process group id, each child leads its own session) -> process, for this pytest process only
_started: dict[int, subprocess.Popen[Any]] = {}
_lock = threading.Lock()


class StartError(RuntimeError):
    """A process that did not come up: it exited, or did not answer before the deadline."""


try:  # resolved here: the child, between fork and exec, must not load libraries (dlopen takes locks)
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the session's safety net alone then
    _prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], log_path: Path | None = None, **kwargs: Any
) -> subprocess.Popen[Any]:
    """Start `argv` as the leader of a new process group, its output appended to `log_path`.

    Extra keyword arguments go to `subprocess.Popen` (stdout/stderr when there is no log file).
    """
    # the kernel ties the death signal to the thread that forks: only the main thread lives long enough
    preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
    output: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            # the child keeps its own copy of the descriptor
            output = {"stdout": stack.enter_context(log_path.open("ab")), "stderr": subprocess.STDOUT}
        proc = subprocess.Popen(
            list(argv), env=dict(env), start_new_session=True, preexec_fn=preexec, **output, **kwargs
        )
    with _lock:
        _started[proc.pid] = proc
    return proc


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
    """Stop `proc` and its process group, whatever happens.

    `sig` goes to the process alone (its own shutdown stops its children); past `grace` seconds the
    whole group is SIGKILLed. Group members still alive once the leader is gone are SIGKILLed too.
    """
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                proc.wait(timeout=30)
    finally:
        _killpg(proc.pid)  # the leader was just reaped: its group id cannot have been reused yet
        with _lock:
            _started.pop(proc.pid, None)


def kill(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL `proc` and its whole process group at once."""
    _killpg(proc.pid)
    stop(proc, signal.SIGKILL, grace=10)


def alive() -> list[subprocess.Popen[Any]]:
    """The processes started by this pytest process and not stopped yet."""
    with _lock:
        return [proc for proc in _started.values() if proc.poll() is None]


def stop_all() -> list[int]:
    """SIGKILL every process group this pytest process started and did not stop; their pids."""
    with _lock:
        left = list(_started.values())
    for proc in left:
        with contextlib.suppress(Exception):  # a safety net must reach every process
            kill(proc)
    return [proc.pid for proc in left]


atexit.register(stop_all)


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of `text`, saying how many were left out."""
    all_lines = text.splitlines()
    if len(all_lines) <= lines:
        return text
    return f"[... {len(all_lines) - lines} earlier lines ...]\n" + "\n".join(all_lines[-lines:])


def read_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return tail(path.read_text(errors="replace"), lines) or "(empty log)"


def wait_ready(
    proc: subprocess.Popen[Any],
    url: str,
    *,
    log_path: Path | None,
    what: str = "server",
    timeout: float | None = None,
) -> None:
    """Poll `url` until it answers 200. On any failure (exit, deadline, interruption) `proc` is stopped
    before the error is raised; the error carries the tail of its log."""
    limit = START_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + limit
    try:
        while True:
            if proc.poll() is not None:
                raise StartError(
                    f"{what} exited with {proc.returncode} before {url} answered; "
                    f"last lines of {log_path}:\n{read_tail(log_path)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartError(
                    f"{what} did not answer {url} within {limit:g}s (IKOMA_TEST_START_TIMEOUT); "
                    f"it was stopped; last lines of {log_path}:\n{read_tail(log_path)}"
                )
            try:
                answer = httpx.get(url, timeout=min(5.0, max(remaining, 0.1)), trust_env=False)
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    except BaseException:
        stop(proc, signal.SIGKILL, grace=10)
        raise


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    text: bool = False,
    check: bool = False,
    capture_output: bool = True,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` (output captured, stdin empty unless `input`) in a process group of its own,
    which is killed whole when the timeout expires or the test is interrupted."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} if capture_output else {}
    proc = spawn(
        argv,
        env=os.environ if env is None else env,
        stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        text=text,
        **pipes,
        **kwargs,
    )
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except BaseException:
        kill(proc)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        raise
    stop(proc)  # it has exited: this only reaps what it left in its group
    done = subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done
