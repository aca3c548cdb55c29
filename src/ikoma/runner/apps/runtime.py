"""One interface, two runtimes: `process` (IKOMA's own supervisor) and `compose` (docker compose)."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Protocol

from ikoma.runner.apps.tool import App, ToolContext

MAX_LOG_LINES = 5000


class Runtime(Protocol):
    name: str

    async def start(self, tc: ToolContext, app: App) -> None:
        """Run the app as its files are now (restarting what runs, so new code is picked up)."""

    async def stop(self, tc: ToolContext, app: App) -> dict[str, Any]:
        """Stop everything the app runs; `{"wasRunning": bool}` and runtime details."""

    async def restart(self, tc: ToolContext, app: App) -> None: ...

    async def status(self, tc: ToolContext, app: App) -> dict[str, Any]:
        """`{state, running, dockerRunning, processes: [...]}`; each process has name, pid, port,
        running, uptimeSeconds, restarts and status."""

    async def running(self, tc: ToolContext, app: App) -> dict[str, bool]:
        """Process (or service) name → runs now."""

    async def logs(self, tc: ToolContext, app: App, lines: int, process: str | None) -> list[dict[str, Any]]:
        """`[{process, lines: [...]}]`, the last `lines` of each."""


def tail_lines(path: Path, count: int, block: int = 65536) -> list[str]:
    """The last `count` lines of a file, read from its end (logs grow to megabytes)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return []
    with handle:
        handle.seek(0, 2)
        position = handle.tell()
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(block, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    text = data.decode("utf-8", errors="replace")
    return list(deque(text.splitlines(), maxlen=count))


def for_app(app: App) -> Runtime:
    # imported here: each runtime module imports this one for the Protocol and helpers
    from ikoma.runner.apps.compose import ComposeRuntime
    from ikoma.runner.apps.process import ProcessRuntime

    return ComposeRuntime() if app.manifest.runtime == "compose" else ProcessRuntime()
