"""Steps over SSH: the same `ExecutionContext` a runner's playbook gets, its steps run on the remote host.

A step is an argv, never a command line: each argument is quoted with `shlex.quote` for the remote
login shell, which only ever sees a fixed wrapper (`exec sh -c '…' ikoma 'arg' 'arg' …`), so `;`,
`$()`, backticks, newlines and a leading `-` reach the program as plain bytes. The wrapper prints its
PID first: it is the session (and process group) sshd made for the command, so cancel and timeout
kill the whole group with `kill -- -PID` over a second channel of the same connection. `sudo -S`
reads the sudo password from the step's stdin, never from a command line.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import shlex
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncssh
import structlog

from ikoma.runner.execution import (
    CANCELLED,
    OUTPUT_TAIL_BYTES,
    TIMEOUT,
    ExecutionContext,
    StepResult,
)

log = structlog.get_logger("ikoma.ssh.remote")

PID_MARKER = "IKOMA-PID "
# `$$` is the PID of this sh: sshd started the user's shell in a new session and the shell exec'd us
WRAPPER = 'echo "IKOMA-PID $$"; exec "$@"'
READ_SIZE = 65536
KILL_CALL_TIMEOUT = 10.0


def remote_command(argv: list[str], *, env: Mapping[str, str] | None = None) -> str:
    """The one line the remote login shell runs: the fixed wrapper and the quoted argv."""
    words = list(argv)
    if env:
        words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
    return "exec sh -c " + shlex.quote(WRAPPER) + " ikoma " + " ".join(shlex.quote(w) for w in words)


@dataclass(eq=False)
class RemoteContext(ExecutionContext):
    """An order's context whose steps run over `connection` (one connection per order)."""

    connection: asyncssh.SSHClientConnection | None = None
    sudo_password: str | None = field(default=None, repr=False)
    remote_root: bool = False
    apt_proxy_url: str | None = None  # the server's apt proxy (aptProxyMode `proxy`), else None

    async def find(self, program: str) -> str | None:
        """The program's path on the remote machine (`command -v`), or None (runner builtins' seam)."""
        if self.connection is None:
            return None
        try:
            found = await asyncio.wait_for(
                self.connection.run("command -v " + shlex.quote(program), check=False),
                timeout=KILL_CALL_TIMEOUT,
            )
        except (asyncssh.Error, OSError, TimeoutError):
            return None
        path = str(found.stdout or "").strip()
        return path if found.exit_status == 0 and path.startswith("/") else None

    async def run_captured(
        self, name: str, argv: list[str], *, time_limit: float | None = None
    ) -> tuple[StepResult, str]:
        """A step and its whole output (runner builtins' seam: `_common.run_captured`)."""
        collect: list[str] = []
        step = await self.run_step(name, argv, time_limit=time_limit, collect=collect)
        return step, "".join(collect)

    def sudo_argv(self, argv: list[str]) -> tuple[list[str], str | None]:
        """argv run as root, and what its stdin must carry (the sudo password, when there is one)."""
        if self.remote_root:
            return argv, None
        if self.sudo_password:
            # -S: password from stdin; -p '': no prompt text in the output; -k: never a cached ticket
            return ["sudo", "-S", "-k", "-p", "", "--", *argv], self.sudo_password + "\n"
        return ["sudo", "-n", "--", *argv], None

    async def run_step(
        self,
        name: str,
        argv: list[str],
        *,
        time_limit: float | None = None,
        env: Mapping[str, str] | None = None,
        sudo: bool = False,
        collect: list[str] | None = None,
    ) -> StepResult:
        """`sudo`: run as root; `collect`: receives the whole stdout (the report keeps only a tail)."""
        started = time.monotonic()
        if self.stopped:
            return StepResult(name, "SKIPPED", 0, output=f"skipped: order {self.stop_reason}")
        if self.connection is None:  # pragma: no cover - the executor connects before any playbook
            raise RuntimeError("no SSH connection")
        stdin: str | None = None
        if sudo:
            argv, stdin = self.sudo_argv(argv)
        shown = " ".join(repr(a) for a in argv)
        self._log_system(f"[ssh] step {name}: {self.masker(shown)}")
        try:
            process = await self.connection.create_process(remote_command(argv, env=env), encoding=None)
        except (asyncssh.Error, OSError) as exc:
            message = self.masker(f"cannot start the step over SSH: {exc}")
            self._log_system(f"[ssh] {message}")
            return StepResult(name, "FAILED", _ms_since(started), exit_code=255, output=message)
        if stdin:
            process.stdin.write(stdin.encode())
        process.stdin.write_eof()
        tail: list[str] = [""]
        pid: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        readers = [
            asyncio.create_task(self._read_remote(process.stdout, "stdout", tail, pid, collect)),
            asyncio.create_task(self._read_remote(process.stderr, "stderr", tail, None, None)),
        ]
        limits = [started + (time_limit if time_limit is not None else self.step_timeout)]
        if self._deadline is not None:
            limits.append(self._deadline)
        deadline = min(limits)
        exited = asyncio.create_task(process.wait())
        stop = asyncio.create_task(self._stop.wait())
        status: str | None = None
        try:
            await asyncio.wait(
                {exited, stop},
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not exited.done():
                if stop.done():
                    status = TIMEOUT if self.stop_reason == TIMEOUT else CANCELLED
                else:
                    status = TIMEOUT
                    if self._deadline is not None and time.monotonic() >= self._deadline:
                        self.request_stop(TIMEOUT)
                self._log_system(f"[ssh] step {name}: {status.lower()}, killing its remote processes")
                await self._kill_remote(pid, exited)
        finally:
            stop.cancel()
            if not exited.done():
                process.close()
                exited.cancel()
        _, unfinished = await asyncio.wait(readers, timeout=2.0)
        for task in unfinished:
            task.cancel()
        exit_code: int | None = None
        if exited.done() and not exited.cancelled():
            completed = exited.result()
            exit_code = completed.exit_status
            if exit_code is None or exit_code < 0:
                exit_code = 128 + _signal_number(completed.exit_signal[0] if completed.exit_signal else None)
        if status is None:
            status = "SUCCEEDED" if exit_code == 0 else "FAILED"
        output = self.masker(tail[0])[-OUTPUT_TAIL_BYTES:]
        return StepResult(name, status, _ms_since(started), exit_code=exit_code, output=output)

    async def _read_remote(
        self,
        reader: asyncssh.SSHReader[bytes],
        stream: str,
        tail: list[str],
        pid: asyncio.Future[int | None] | None,
        collect: list[str] | None,
    ) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = b""
        try:
            while True:
                raw = await reader.read(READ_SIZE)
                if pid is not None and not pid.done():
                    # the wrapper's first line is its PID; everything after it is the program's output
                    pending += raw
                    line, newline, rest = pending.partition(b"\n")
                    if not newline and raw:
                        continue
                    text_line = line.decode(errors="replace")
                    pid.set_result(
                        int(text_line[len(PID_MARKER) :]) if text_line.startswith(PID_MARKER) else None
                    )
                    raw = rest if newline else pending
                    if newline and not rest:
                        continue  # only the PID so far; an empty read still means end of output
                text = decoder.decode(raw, final=not raw)
                if text and collect is not None:
                    collect.append(text)
                if text:
                    tail[0] = (tail[0] + text)[-OUTPUT_TAIL_BYTES * 2 :]
                    if self.logs is not None:
                        self.logs.write(stream, text)
                if not raw:
                    return
        finally:
            if pid is not None and not pid.done():
                pid.set_result(None)

    async def _kill_remote(self, pid: asyncio.Future[int | None], exited: asyncio.Task[object]) -> None:
        """SIGTERM the step's remote process group, SIGKILL it after the grace (at once on a hard stop)."""
        assert self.connection is not None
        group: int | None = None
        with contextlib.suppress(TimeoutError):
            group = await asyncio.wait_for(asyncio.shield(pid), timeout=2.0)
        for signal_name, grace in (("TERM", self.kill_grace), ("KILL", 2.0)):
            if exited.done():
                return
            if group is not None and group > 1:
                with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
                    await asyncio.wait_for(
                        self.connection.run(f"kill -{signal_name} -{group}", check=False),
                        timeout=KILL_CALL_TIMEOUT,
                    )
            if self._hard.is_set():
                grace = 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), timeout=grace)
        if not exited.done():
            log.info("remote step still running after SIGKILL, closing its channel", order_id=self.order_id)


def _signal_number(name: str | None) -> int:
    try:
        return int(signal.Signals["SIG" + name]) if name else 0
    except KeyError:
        return 0


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
