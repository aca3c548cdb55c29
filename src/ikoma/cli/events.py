"""`ikoma events`: what happens in the fleet, from the event log; `--follow` keeps printing it live."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ikoma.cli import output, sse
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiUrlOption, JsonObject
from ikoma.cli.output import Column, JsonOption, WideOption

STREAM_PATH = "/v1/events/stream"
COLUMNS: list[Column] = [
    ("id", "ID"),
    ("ts", "AT"),
    ("kind", "KIND"),
    ("server", "SERVER"),
    ("orderId", "ORDER"),
    ("actor", "ACTOR"),
    ("data", "DATA"),
]
KIND_WIDTH = 24


def _filters(kinds: list[str] | None, server_id: str | None, order_id: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {"kind": kinds or None, "serverId": server_id, "orderId": order_id}
    return {name: value for name, value in found.items() if value is not None}


def _row(event: JsonObject, names: dict[str, str]) -> JsonObject:
    server = event.get("serverId")
    return {**event, "server": names.get(server, server) if server else None}


def _line(event: JsonObject, names: dict[str, str], wide: bool) -> str:
    """One followed event as one line: the table's columns, left to right, never folded."""
    row = _row(event, names)
    cells = [output.table_cell(row.get(field), wide=wide) for field, _ in COLUMNS]
    cells[0] = f"#{cells[0]}"
    cells[2] = cells[2].ljust(KIND_WIDTH)
    return "  ".join(cells)


def _echo_event(event: JsonObject, names: dict[str, str], *, as_json: bool, wide: bool) -> None:
    # plain echo (flushed per line), not a Rich table: a followed stream is read as it comes, or piped
    typer.echo(json.dumps(event, ensure_ascii=False) if as_json else _line(event, names, wide))


def _retrying(why: str, delay: float, last_id: str | None) -> None:
    where = f"after event {last_id}" if last_id else "from now"
    output.notice(f"{why}; reconnecting in {delay:.1f}s, resuming {where}")


def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events (Ctrl-C to stop).")
    ] = False,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", help="Kind or prefix: order, order.failed, runner. Repeat for several."),
    ] = None,
    server: Annotated[str | None, typer.Option("--server", help="Only this server (name or id).")] = None,
    order: Annotated[str | None, typer.Option("--order", help="Only this order's events.")] = None,
    after: Annotated[
        int | None,
        typer.Option("--after", min=0, help="Start after this event id (default: the first; --follow: now)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Events per page.")] = 100,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """Events in id order: orders moving, runners coming and going, messages, tool calls.

    --follow streams them as they happen and, after a network cut or a server restart, resumes
    exactly after the last one printed. --json prints one event per line (JSON lines).
    """
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        server_id = client.resolve("server", server) if server else None
        order_id = client.resolve("order", order) if order else None
        filters = _filters(kind, server_id, order_id)
        names = {} if as_json else {str(s["id"]): str(s["name"]) for s in client.list_servers()}
        if not follow:
            page = client.list_events({**filters, "after": after or 0, "limit": limit})
            found: list[JsonObject] = page["events"]
            if as_json:
                for event in found:
                    _echo_event(event, names, as_json=True, wide=wide)
            else:
                rows = [_row(event, names) for event in found]
                output.show_list(rows, COLUMNS, as_json=False, empty="no events", wide=wide)
            if len(found) == limit:
                output.notice(f"more events: add --after {page['next']}")
            return
        params = filters if after is None else {**filters, "after": after}
        try:
            for message in sse.follow(client, STREAM_PATH, params, on_retry=_retrying):
                _echo_event(json.loads(message.data), names, as_json=as_json, wide=wide)
        except KeyboardInterrupt:
            return
