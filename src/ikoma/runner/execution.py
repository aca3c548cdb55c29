"""Running one step: a contained subprocess, argv only, a clean environment, a deadline.

Cancel, timeout and the runner's hard stop all end the same way: everything the step started
(its cgroup leaf, or its session, cookie and descendants: see containment.py) gets SIGTERM, then
SIGKILL after a grace period, so grandchildren (a shell's `sleep`, a `setsid` child, a daemon) never
outlive the step. A step that ends on its own loses what it left running too.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from ikoma.runner import containment as containments
from ikoma.runner.config import DEFAULT_KILL_GRACE
from ikoma.runner.containment import COOKIE_ENV, Containment, Jail
from ikoma.runner.logs import LogStream, Masker

log = structlog.get_logger("ikoma.runner.execution")

OUTPUT_TAIL_BYTES = 4096
# The environment a step inherits: enough to find programs and behave, nothing of the runner's.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TZ", "TMPDIR")
READ_SIZE = 65536

CANCELLED = "CANCELLED"
TIMEOUT = "TIMEOUT"
ABORTED = "ABORTED"  # hard stop of the runner: kill at once, report nothing
LOST = "LOST"  # the API says the order is not ours any more: stop it gracefully, report nothing
UNREPORTED = (ABORTED, LOST)


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An allow-list, not a deny-list: a secret added to the runner's environment later stays out too."""
    base = os.environ if base is None else base
    env = {name: base[name] for name in INHERITED_ENV if name in base and not name.startswith("IKOMA_")}
    env.setdefault("PATH", os.defpath)
    env["LANG"] = "C.UTF-8"
    env["LC_ALL"] = "C.UTF-8"
    return env


@dataclass
class StepResult:
    name: str
    status: str
    duration_ms: int
    exit_code: int | None = None
    output: str = ""
    data: dict[str, Any] | None = None

    def to_report(self) -> dict[str, Any]:
        step: dict[str, Any] = {"name": self.name, "status": self.status, "durationMs": self.duration_ms}
        if self.exit_code is not None:
            step["exitCode"] = self.exit_code
        step["output"] = self.output
        if self.data is not None:
            step["data"] = self.data
        return step


@dataclass
class _Tail:
    """The last bytes of a step's combined output, for the report (the full text goes to the logs)."""

    limit: int = OUTPUT_TAIL_BYTES * 2  # kept twice as long so masking can see secrets cut at the edge
    text: str = ""

    def add(self, text: str) -> None:
        self.text = (self.text + text)[-self.limit :]


@dataclass(eq=False)  # compared and hashed by identity: the agent keeps running contexts in a set
class ExecutionContext:
    """What a playbook gets: its order's params, a way to run steps, and the stop signals."""

    order_id: str
    params: dict[str, Any]
    logs: LogStream | None = None
    timeout_seconds: float | None = None
    kill_grace: float = DEFAULT_KILL_GRACE
    step_timeout: float = 3600.0
    masker: Masker = field(default_factory=Masker)
    containment: Containment = field(default_factory=containments.default)
    # the server's apt proxy, handed with an apt order's claim (aptProxyMode `proxy`), else None
    apt_proxy_url: str | None = None
    stop_reason: str | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _hard: asyncio.Event = field(default_factory=asyncio.Event)
    _deadline: float | None = None
    _started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.timeout_seconds is not None and self._deadline is None:
            self._deadline = self._started + self.timeout_seconds

    def request_stop(self, reason: str) -> None:
        """The first reason wins (a cancel then a timeout stays a cancel); ABORTED also cuts the grace."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if reason == ABORTED:
            self._hard.set()
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    def _log_system(self, message: str) -> None:
        if self.logs is not None:
            self.logs.system(message)

    async def run_step(
        self,
        name: str,
        argv: list[str],
        *,
        time_limit: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> StepResult:
        """Run `argv`; `env` adds variables to the clean environment (a secret for this child only,
        e.g. PGPASSWORD: never argv, which every local user can read in /proc)."""
        started = time.monotonic()
        if self.stopped:
            return StepResult(name, "SKIPPED", 0, output=f"skipped: order {self.stop_reason}")
        shown = " ".join(repr(a) for a in argv)
        self._log_system(f"[runner] step {name}: {self.masker(shown)}")
        jail = self.containment.open()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**child_env(), **(env or {}), COOKIE_ENV: jail.cookie},
                start_new_session=True,  # its own session and process group, found again by the sweep
                # enters its cgroup leaf and dies with the runner; spawned from the loop's thread,
                # which lives as long as the runner (PDEATHSIG follows the forking thread)
                preexec_fn=jail.child_setup,  # only syscalls between fork and exec (Jail.child_setup)
            )
        except OSError as exc:
            jail.close()
            message = self.masker(f"cannot start {argv[0]!r}: {exc.strerror or exc}")
            self._log_system(f"[runner] {message}")
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return StepResult(name, "FAILED", _ms_since(started), exit_code=code, output=message)
        jail.attach(proc.pid)
        tail = _Tail()
        if proc.stdout is None or proc.stderr is None:  # pragma: no cover - PIPE was asked for
            raise RuntimeError("subprocess pipes missing")
        readers = [
            asyncio.create_task(self._read(proc.stdout, "stdout", tail)),
            asyncio.create_task(self._read(proc.stderr, "stderr", tail)),
        ]
        limits = [started + (time_limit if time_limit is not None else self.step_timeout)]
        if self._deadline is not None:
            limits.append(self._deadline)
        deadline = min(limits)
        exited = asyncio.create_task(_exit_code(proc))
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait(
                {exited, stop},
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            status: str | None = None
            if not exited.done():
                if stop.done():
                    # LOST/ABORTED orders are never reported: CANCELLED keeps the step contract-valid
                    status = TIMEOUT if self.stop_reason == TIMEOUT else CANCELLED
                else:
                    status = TIMEOUT
                    if self._deadline is not None and time.monotonic() >= self._deadline:
                        self.request_stop(TIMEOUT)  # the order's time is up: later steps are skipped
                self._log_system(f"[runner] step {name}: {status.lower()}, stopping all its processes")
                await self._stop_jail(jail, exited)
            await exited
            # the leader is gone; what it left behind (background jobs, daemons) must not outlive it
            if jail.alive():
                await self._stop_jail(jail, exited, grace=min(self.kill_grace, 1.0))
        finally:
            stop.cancel()
            # also when cancelled from outside (hard stop of the agent): leave nothing behind
            jail.close()
        # pipes close when the last writer dies; a bounded wait guards against a descendant that escaped
        _, unfinished = await asyncio.wait(readers, timeout=2.0)
        for task in unfinished:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=1.0)  # lets asyncio close the pipe transports
        _close_pipes(proc)
        exit_code = exited.result()
        if status is None:
            status = "SUCCEEDED" if exit_code == 0 else "FAILED"
        output = self.masker(tail.text)[-OUTPUT_TAIL_BYTES:]
        return StepResult(name, status, _ms_since(started), exit_code=exit_code, output=output)

    async def _read(self, reader: asyncio.StreamReader, stream: str, tail: _Tail) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            raw = await reader.read(READ_SIZE)
            text = decoder.decode(raw, final=not raw)
            if text:
                tail.add(text)
                if self.logs is not None:
                    self.logs.write(stream, text)
            if not raw:
                return

    async def _stop_jail(self, jail: Jail, exited: asyncio.Task[int], grace: float | None = None) -> None:
        """SIGTERM every process of the step, SIGKILL them when the grace ends (or at once on a hard stop)."""
        grace = self.kill_grace if grace is None else grace
        jail.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not self._hard.is_set():
            if exited.done() and not jail.alive():
                return
            await asyncio.sleep(0.1)
        if jail.alive():
            log.info("step processes still alive after the grace, sending SIGKILL", order_id=self.order_id)
            await asyncio.to_thread(jail.kill)
        # SIGKILL cannot be ignored: the leader's exit status follows at once
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), timeout=5.0)


async def _exit_code(proc: asyncio.subprocess.Process) -> int:
    """The leader's exit status as soon as it is known.

    Not `proc.wait()`: asyncio only answers that once every pipe is closed too, and a background
    grandchild holding stdout would keep a finished step "running" for as long as it lives.
    """
    while proc.returncode is None:  # noqa: ASYNC110 - asyncio offers no exit-only event to await
        await asyncio.sleep(0.05)
    return proc.returncode


def _close_pipes(proc: asyncio.subprocess.Process) -> None:
    """Close the step's pipes even when a process that left the step (a detached daemon that kept
    stdout) still holds them: otherwise every such step leaks two descriptors in the runner.

    asyncio exposes no public way to close a finished Process's transport; `_transport` is the
    documented-by-source `SubprocessTransport` it wraps. Its `close` only kills a leader that is
    still running, and ours has exited (or been killed) by now."""
    transport = getattr(proc, "_transport", None)
    if transport is not None and not transport.is_closing():
        transport.close()


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
