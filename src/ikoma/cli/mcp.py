"""`ikoma mcp`: IKOMA's tools for a desktop assistant, as an MCP server on stdio.

The command only; the server is in `cli/mcp_proxy.py`, imported when the command runs, because the
MCP SDK takes longer to import than the rest of the CLI and every other `ikoma` command (the runner
included) would pay for it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ikoma.cli.client import DEFAULT_API_URL, ApiUrlOption, resolve_api_url

# show_default stays off so the key never lands in --help output.
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="IKOMA_API_KEY",
        help="API client key (or the admin key), sent as Authorization: Bearer. Prefer the env var: "
        "a command-line argument is visible to other users of the machine.",
        show_default=False,
    ),
]
RoleOption = Annotated[
    str | None,
    typer.Option(
        "--role",
        envvar="IKOMA_ROLE",
        help="Act with a lower role than the key's (sent as X-Role): observer for a read-only assistant.",
        show_default=False,
    ),
]


def mcp(
    api_url: ApiUrlOption = DEFAULT_API_URL,
    api_key: ApiKeyOption = None,
    role: RoleOption = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error (on stderr)")] = "warning",
) -> None:
    """Serve IKOMA's tools to an AI assistant over MCP on stdio, through the API with an API key.

    Runs until the assistant closes stdin. Configure it with IKOMA_API_URL and IKOMA_API_KEY.
    """
    if not api_key:
        typer.secho("an API key is needed: set IKOMA_API_KEY (or pass --api-key)", fg="red", err=True)
        raise typer.Exit(2)
    import anyio

    from ikoma import logs
    from ikoma.cli.mcp_proxy import serve_stdio

    logs.configure(log_level)
    anyio.run(serve_stdio, resolve_api_url(api_url), api_key, role)
