"""What a booted Mock machine runs: a real `ikoma runner`, enrolled with its user data's token.

As cloud-init would on a VM: the first boot trades the one-time bootstrap token for runner
credentials (`ikoma runner register`, written to the machine's own data dir, 0600), then runs
`ikoma runner` with them; a later boot (poweron after poweroff) runs it with the saved credentials.

    boot = RunnerBoot(data_dir / "mock-machines")
    await boot.sync(machines)   # start the runners of running machines, stop the others
    await boot.close()          # every process stopped (the driver's exit, leadership lost)

Each process leads its own session, so one `killpg` reaches whatever it spawned, and gets SIGKILL
from the kernel if the IKOMA process that started it dies (PR_SET_PDEATHSIG): a machine's runner never
outlives the simulated cloud. A stopped machine's runner gets SIGTERM (it drains) then SIGKILL after
`grace`; a terminated or vanished machine's runner is killed at once and its data dir removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ikoma.providers.mock.scenarios import Scenario
from ikoma.providers.mock.simulator import Machine, MachineState
from ikoma.providers.mock.user_data import Enrolment, UserDataError, read_enrolment

log = structlog.get_logger("ikoma.providers.mock")

CONFIG_NAME = "runner.json"
LOG_NAME = "runner.log"
REGISTER_ATTEMPTS = 5
REGISTER_RETRY_SECONDS = 2.0
RESTART_AFTER_SECONDS = 10.0  # a runner that exited is started again no sooner (a crash loop stays slow)
POLL_SECONDS = 0.2
_PR_SET_PDEATHSIG = 1
# never handed to a machine's processes: the server's own secrets and settings
_WITHHELD_PREFIXES = ("IKOMA_", "DATABASE_URL", "SCALEWAY_", "SCW_")
_PASSED_THROUGH = ("IKOMA_CLAIM_LEASE", "IKOMA_LOG_LEVEL", "IKOMA_RUNNER_CONTAINMENT")

try:  # resolved before any fork: the child must not load libraries between fork and exec
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: processes are still stopped by `close`
    _prctl = None


def _die_with_parent() -> None:  # in the child, between fork and exec
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class _Booted:
    machine_id: str
    task: asyncio.Task[None] | None = None
    process: subprocess.Popen[bytes] | None = None
    exited_at: float | None = None
    stopping: bool = False


@dataclass
class RunnerBoot:
    root: Path  # one data dir per machine under it
    python: str = sys.executable
    grace: float = 10.0
    _booted: dict[str, _Booted] = field(default_factory=dict)
    _exits: dict[str, float] = field(default_factory=dict)

    def machine_dir(self, machine_id: str) -> Path:
        return self.root / machine_id

    def running(self) -> dict[str, int]:
        """Machine id -> pid of the process it runs now (register or runner)."""
        return {
            key: b.process.pid
            for key, b in self._booted.items()
            if b.process is not None and b.process.poll() is None
        }

    async def sync(self, machines: Iterable[Machine]) -> None:
        """Start the runner of every running machine that should have one; stop every other."""
        by_id = {m.id: m for m in machines}
        now = time.monotonic()
        for key, booted in list(self._booted.items()):
            machine = by_id.get(key)
            if machine is None or machine.state is not MachineState.RUNNING:
                gone = machine is None or not machine.visible
                await self._stop(key, kill=gone)
                if gone:
                    shutil.rmtree(self.machine_dir(key), ignore_errors=True)
            elif booted.task is not None and booted.task.done():
                await self._stop(key, kill=True)  # its process has ended; anything it left goes too
                self._exits[key] = now
        for key, machine in by_id.items():
            if key in self._booted or not self._wants_runner(machine):
                continue
            if now - self._exits.get(key, float("-inf")) < RESTART_AFTER_SECONDS:
                continue
            self._start(machine)
        for key in [k for k in self._exits if k not in by_id]:
            del self._exits[key]
        for key in os.listdir(self.root) if self.root.is_dir() else ():
            machine = by_id.get(key)
            if key not in self._booted and (machine is None or not machine.visible):
                shutil.rmtree(self.machine_dir(key), ignore_errors=True)  # left by an earlier process

    def enrolled(self, machines: Iterable[Machine]) -> list[str]:
        """Machines whose runner holds its credentials while their user data still carries the token:
        the token is spent, so the driver clears it from the cloud's memory."""
        return [m.id for m in machines if m.user_data and self._credentials(m.id).exists()]

    def _credentials(self, machine_id: str) -> Path:
        return self.machine_dir(machine_id) / CONFIG_NAME

    def _wants_runner(self, machine: Machine) -> bool:
        return (
            machine.state is MachineState.RUNNING
            and Scenario.WORKER_NEVER_REGISTERS not in machine.flags
            and (bool(machine.user_data) or self._credentials(machine.id).exists())
        )

    def _start(self, machine: Machine) -> None:
        enrolment = None  # enrolled at an earlier boot: the runner starts from its saved credentials
        if not self._credentials(machine.id).exists():
            try:
                enrolment = read_enrolment(machine.user_data or "")
            except UserDataError as exc:
                log.warning("mock_boot_user_data_unreadable", machine=machine.id, error=str(exc))
                self._exits[machine.id] = time.monotonic()  # a broken document stays broken: no busy retry
                return
        booted = _Booted(machine.id)
        booted.task = asyncio.create_task(self._boot(booted, enrolment), name=f"mock-boot-{machine.id}")
        self._booted[machine.id] = booted

    async def _boot(self, booted: _Booted, enrolment: Enrolment | None) -> None:
        directory = self.machine_dir(booted.machine_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = directory / CONFIG_NAME
        env = self._env(directory)
        attempt = 0
        while enrolment is not None and not config.exists():
            attempt += 1
            code = await self._run(
                booted,
                [self.python, "-m", "ikoma", "runner", "register", "--config", str(config)],
                {
                    **env,
                    "IKOMA_API_URL": enrolment.api_url,
                    "IKOMA_BOOTSTRAP_TOKEN": enrolment.bootstrap_token,
                    "IKOMA_INSTANCE_ID": enrolment.instance_id or "",
                },
            )
            if config.exists():
                break
            if attempt >= REGISTER_ATTEMPTS:
                log.warning("mock_boot_register_failed", machine=booted.machine_id, code=code)
                return
            await asyncio.sleep(REGISTER_RETRY_SECONDS)
        code = await self._run(booted, [self.python, "-m", "ikoma", "runner", "--config", str(config)], env)
        if not booted.stopping:
            log.warning("mock_boot_runner_exited", machine=booted.machine_id, code=code)

    def _env(self, directory: Path) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_WITHHELD_PREFIXES) or k in _PASSED_THROUGH
        }
        apps = directory / "apps"
        apps.mkdir(exist_ok=True)
        env.update(IKOMA_DATA_DIR=str(directory), IKOMA_APPS_ROOT=str(apps.resolve()))
        return env

    async def _run(self, booted: _Booted, argv: list[str], env: dict[str, str]) -> int:
        """Run one process to its end (polled: no child watcher, no await between fork and tracking)."""
        if booted.stopping:
            return -1
        directory = self.machine_dir(booted.machine_id)
        with (directory / LOG_NAME).open("ab") as output:
            preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
            # a fork, not a wait (no await between it and tracking the process); argv is ours, not input
            booted.process = subprocess.Popen(  # noqa: ASYNC220, S603
                argv,
                env=env,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,  # only prctl: no lock, no allocation in the child
            )
        # polled: Popen's exit is not an awaitable, and a child watcher would tie us to the loop's policy
        while (code := booted.process.poll()) is None:  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)
        return code

    async def _stop(self, machine_id: str, *, kill: bool) -> None:
        booted = self._booted.pop(machine_id, None)
        if booted is None:
            return
        booted.stopping = True
        if booted.task is not None:
            booted.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await booted.task
        process = booted.process
        if process is not None:
            await _end(process, grace=0.0 if kill else self.grace)
        self._exits.pop(machine_id, None)

    async def close(self) -> None:
        """Stop every process now (SIGKILL: the cloud they run in is going away)."""
        for key in list(self._booted):
            await self._stop(key, kill=True)


async def _end(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM (when there is a grace), SIGKILL to the whole group past it; reaped before returning."""
    if process.poll() is None and grace > 0:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110  # polled, as above
            await asyncio.sleep(POLL_SECONDS)
    # the group too: a step the runner started must not outlive it (the leader's pid is its group id)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    while process.poll() is None:  # noqa: ASYNC110  # polled, as above
        await asyncio.sleep(0.05)
