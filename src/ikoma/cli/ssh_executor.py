"""`ikoma ssh-executor`: the SSH executor as a process of its own (issue 14), for scale.

It needs the server's database and keys (`DATABASE_URL`, `IKOMA_DATA_DIR` or `IKOMA_ENCRYPTION_KEYS`,
`IKOMA_MASTER_KEY_FILE`), like `ikoma serve`. Run the API with `IKOMA_SSH_EXECUTOR=false` to leave the
ssh servers to these processes (several may run: a claim is a compare-and-set, one wins). Orders
created by the API reach it within a second (the claim doorbell reads the database every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import typer

from ikoma import logs

app = typer.Typer(help="Run the SSH executor on its own (the API then runs with IKOMA_SSH_EXECUTOR=false).")


@app.callback(invoke_without_command=True)
def run() -> None:
    """Claim and run the orders of every ssh server until SIGTERM/SIGINT."""
    from ikoma import bootstrap
    from ikoma.cli.database import settings_for_reading
    from ikoma.ssh.executor import from_context, stop

    settings = settings_for_reading("run the SSH executor")
    logs.configure(settings.log_level)
    ctx = bootstrap.build(settings)

    async def main() -> None:
        task = asyncio.create_task(from_context(ctx).run_forever(), name="ssh-executor")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stop(task)
        await ctx.dispatcher.close()
        await ctx.db.dispose()

    asyncio.run(main())
