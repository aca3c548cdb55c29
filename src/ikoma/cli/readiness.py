"""`ikoma wait`: block until the API answers ready, so a script can start it in the background."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from ikoma.cli.client import DEFAULT_API_URL, ApiUrlOption, resolve_api_url

POLL_INTERVAL_SECONDS = 0.25
# a request to a process still starting may hang on a half-open socket: never wait on one for long
PROBE_TIMEOUT_SECONDS = 2.0
EXIT_NOT_READY = 1


def probe(url: str) -> tuple[bool, str]:
    """(ready?, what the API answered or why it did not) for one GET of `<url>/readyz`."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if response.status_code == 200:
        return True, "ready"
    return False, f"HTTP {response.status_code}: {response.text.strip()[:200]}"


def running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/<pid>/stat: "pid (comm) state …"; comm may hold spaces and parentheses
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal test above is all there is


def wait(
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Give up after SECONDS (exit 1).")
    ] = 120.0,
    pid: Annotated[
        int | None,
        typer.Option("--pid", help="Give up at once when this process ends (e.g. `$!` after `make run &`)."),
    ] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
) -> None:
    """Wait until the API is ready (GET /readyz answers 200), e.g. after `make run &`.

    Follows IKOMA_API_URL, else PORT, like every other command. Exits 0 once ready; 1 at --timeout
    with the last answer (or connection error) it got, or as soon as the --pid process has ended.
    """
    url = resolve_api_url(api_url)
    deadline = time.monotonic() + timeout
    while True:
        ready, last = probe(url)
        if ready:
            typer.echo(f"ready: IKOMA answers at {url}")
            return
        if pid is not None and not running(pid):
            typer.secho(
                f"error: not_ready: process {pid} ended before {url}/readyz answered ready "
                f"(its output above says why; last: {last})",
                fg="red",
                err=True,
            )
            raise typer.Exit(EXIT_NOT_READY)
        if time.monotonic() >= deadline:
            typer.secho(
                f"error: not_ready: {url}/readyz did not answer ready within {timeout:g}s (last: {last})",
                fg="red",
                err=True,
            )
            raise typer.Exit(EXIT_NOT_READY)
        time.sleep(min(POLL_INTERVAL_SECONDS, max(0.0, deadline - time.monotonic())))
