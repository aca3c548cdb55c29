"""A private PostgreSQL cluster a test starts, stops, and puts in recovery itself (fault injection).

`initdb` and `postgres` come from Debian's /usr/lib/postgresql/<version>/bin (what CI installs). The
server runs in the foreground through tests/processes.py (a process group of its own, killed on every
path), as the `postgres` user when the tests run as root (PostgreSQL refuses to run as root). It listens
on 127.0.0.1 at a free port, with its unix socket in the cluster's own directory, trusting local users.

`stop("fast")` is `pg_ctl stop -m fast` (SIGINT), `stop("immediate")` a crash (SIGQUIT, recovery on the
next start); `start(standby=True)` starts it as a standby with no primary and `hot_standby=off`: it
stays in recovery and refuses every connection with SQLSTATE 57P03 ("cannot connect now").
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests import processes, support

STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class Cluster:
    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log_path = root / "postgres.log"
        self.port = support.free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            os.chown(root, entry.pw_uid, entry.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        argv = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]
        done = processes.run(argv, timeout=120, env=self._env(), text=True, cwd=self.root, **self._user)
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

    def start(self, *, standby: bool = False, wait: bool = True) -> None:
        signal_file = self.data / "standby.signal"
        if standby:
            signal_file.touch()
            if self._user:
                os.chown(signal_file, self._user["user"], self._user["group"])
        else:
            signal_file.unlink(missing_ok=True)
        argv = [
            str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=60",
            "-c", f"hot_standby={'off' if standby else 'on'}",
        ]  # fmt: skip
        self.process = processes.spawn(
            argv, env=self._env(), log_path=self.log_path, cwd=self.root, **self._user
        )
        if wait and not standby:
            self.wait_ready()
        if standby:
            self.wait_refusing("57P03")

    def stop(self, mode: str = "fast") -> None:
        if self.process is not None:
            processes.stop(self.process, STOP_SIGNALS[mode], grace=60)
            self.process = None

    def execute(self, sql: str, database: str = "postgres") -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.url(database), timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(run())

    def _connect_error(self) -> BaseException | None:
        try:
            self.execute("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            return exc
        return None

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while (error := self._connect_error()) is not None:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"postgres exited:\n{processes.read_tail(self.log_path)}")
            assert time.monotonic() < deadline, f"postgres not ready: {error!r}\n{self.log_tail()}"
            time.sleep(0.2)

    def wait_refusing(self, sqlstate: str, timeout: float = 120.0) -> None:
        """Until a connection is refused with `sqlstate` (the server is up, and says it cannot serve)."""
        deadline = time.monotonic() + timeout
        while True:
            error = self._connect_error()
            if getattr(error, "sqlstate", None) == sqlstate:
                return
            assert time.monotonic() < deadline, f"never refused with {sqlstate}: {error!r}\n{self.log_tail()}"
            time.sleep(0.2)

    def log_tail(self) -> str:
        return processes.read_tail(self.log_path)


@contextlib.contextmanager
def private_cluster() -> Iterator[Cluster]:
    """An initialized and started cluster of its own, stopped and deleted afterwards whatever happened.

    Skips only where PostgreSQL's server binaries are not installed (never on CI, which installs them).
    """
    bindir = binaries()
    if bindir is None:
        if support.ON_CI:
            pytest.fail("CI must install PostgreSQL's server (no /usr/lib/postgresql/*/bin/initdb)")
        pytest.skip("needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb)")
    # not under pytest's tmp_path: its parents are private to root, and the server runs as postgres
    root = Path(tempfile.mkdtemp(prefix="ikoma-pg-"))
    cluster = Cluster(bindir, root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
