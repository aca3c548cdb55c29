"""`ikoma runner`: run the runner agent on this host; `ikoma runner register` enrolls it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Run the runner agent on this host (claims orders and runs their playbooks), or register it.",
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="JSON or TOML file with apiUrl, runnerId and token "
        "(default: $IKOMA_DATA_DIR/runner.json or ~/.config/ikoma/runner.json).",
        show_default=False,
    ),
]


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    api_url: Annotated[str | None, typer.Option(help="API base URL [env IKOMA_API_URL]")] = None,
    runner_id: Annotated[str | None, typer.Option(help="runner id [env IKOMA_RUNNER_ID]")] = None,
    token: Annotated[str | None, typer.Option(help="runner token [env IKOMA_RUNNER_TOKEN]")] = None,
    config: ConfigOption = None,
    parallel: Annotated[int, typer.Option(min=1, max=64, help="orders run at the same time")] = 1,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="where undelivered completions are spooled [env IKOMA_RUNNER_STATE_DIR]"),
    ] = None,
    kill_grace: Annotated[
        float, typer.Option(min=0, help="seconds between SIGTERM and SIGKILL when stopping a step")
    ] = 5.0,
    heartbeat_interval: Annotated[
        float, typer.Option(min=0.1, help="seconds between runner heartbeats")
    ] = 15.0,
    claim_wait: Annotated[float, typer.Option(min=0, max=30, help="long-poll wait of each claim")] = 25.0,
    spool_retry_interval: Annotated[
        float, typer.Option(min=0.1, help="seconds between retries of spooled completions")
    ] = 10.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run the agent until SIGTERM (drain, exit 0) or a second SIGTERM (kill running steps, exit 1)."""
    if ctx.invoked_subcommand is not None:
        return
    from ikoma import logs
    from ikoma.runner.agent import Agent
    from ikoma.runner.config import (
        AgentSettings,
        ConfigError,
        default_state_dir,
        lease_heartbeat_interval,
        resolve_credentials,
    )

    try:
        credentials = resolve_credentials(
            api_url=api_url, runner_id=runner_id, token=token, config_path=config
        )
        settings = AgentSettings(
            parallel=parallel,
            state_dir=state_dir or default_state_dir(),
            heartbeat_interval=heartbeat_interval,
            lease_heartbeat_interval=lease_heartbeat_interval(),
            claim_wait=claim_wait,
            kill_grace=kill_grace,
            spool_retry_interval=spool_retry_interval,
        )
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    logs.configure(log_level)
    # httpx narrates every request at INFO/DEBUG: the agent logs what matters itself
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    raise typer.Exit(asyncio.run(Agent(credentials, settings).run()))


@app.command("register")
def register(
    api_url: Annotated[str | None, typer.Option(help="API base URL [env IKOMA_API_URL]")] = None,
    bootstrap_token: Annotated[
        str | None, typer.Option(help="one-time ikb_… token [env IKOMA_BOOTSTRAP_TOKEN]", show_default=False)
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="runner name (default: the token's name or hostname)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Trade a bootstrap token for runner credentials and write them to the config file (mode 0600)."""
    from ikoma.runner.client import ApiUnreachable, RunnerApiError
    from ikoma.runner.client import register as register_runner
    from ikoma.runner.config import default_config_path, write_config_file

    api_url = api_url or os.environ.get("IKOMA_API_URL")
    bootstrap_token = bootstrap_token or os.environ.get("IKOMA_BOOTSTRAP_TOKEN")
    if not api_url or not bootstrap_token:
        typer.secho(
            "register needs --api-url and --bootstrap-token (or their env variables)", fg="red", err=True
        )
        raise typer.Exit(2)
    path = config or default_config_path()
    try:
        answer = asyncio.run(
            register_runner(api_url, bootstrap_token, name=name, hostname=socket.gethostname())
        )
    except (ApiUnreachable, RunnerApiError) as exc:
        typer.secho(f"registration failed: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    write_config_file(
        path,
        {"apiUrl": api_url.rstrip("/"), "runnerId": str(answer["runnerId"]), "token": str(answer["token"])},
    )
    typer.echo(
        f"registered runner {answer.get('name')} ({answer['runnerId']}); credentials written to {path}"
    )


if __name__ == "__main__":  # `python -m ikoma.cli.runner` until the main CLI mounts this app
    app(prog_name="ikoma runner")
