"""`ikoma wait`: block until the API answers ready, so a script can start it in the background."""

from __future__ import annotations

import time
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


def wait(
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Give up after SECONDS (exit 1).")
    ] = 120.0,
    api_url: ApiUrlOption = DEFAULT_API_URL,
) -> None:
    """Wait until the API is ready (GET /readyz answers 200), e.g. after `make run &`.

    Follows IKOMA_API_URL, else PORT, like every other command. Exits 0 once ready, 1 at --timeout
    with the last answer (or connection error) it got.
    """
    url = resolve_api_url(api_url)
    deadline = time.monotonic() + timeout
    while True:
        ready, last = probe(url)
        if ready:
            typer.echo(f"ready: IKOMA answers at {url}")
            return
        if time.monotonic() >= deadline:
            typer.secho(
                f"error: not_ready: {url}/readyz did not answer ready within {timeout:g}s (last: {last})",
                fg="red",
                err=True,
            )
            raise typer.Exit(EXIT_NOT_READY)
        time.sleep(min(POLL_INTERVAL_SECONDS, max(0.0, deadline - time.monotonic())))
