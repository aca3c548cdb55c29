"""`ikoma orders`: run a playbook on a server, then follow, inspect or cancel the order."""

import json
import time
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.text import Text

from ikoma.cli import output, sse
from ikoma.cli.client import (
    DEFAULT_API_URL,
    AdminClient,
    AdminKeyOption,
    ApiError,
    ApiUrlOption,
    JsonObject,
    OrderFilters,
)
from ikoma.cli.output import Column, JsonOption, WideOption
from ikoma.domain.lifecycle import TERMINAL, OrderStatus

app = typer.Typer(help="Create orders (a playbook run on a server) and follow them.", no_args_is_help=True)


# The CLI speaks the domain's statuses; an order is followed until one of the terminal ones.
TERMINAL_STATUSES = frozenset(status.value for status in TERMINAL)
POLL_INTERVAL_SECONDS = 0.5
# Exit codes of `create --wait`: 0 SUCCEEDED, 1 any other end (or an API error), 3 still running at --timeout.
EXIT_NOT_SUCCEEDED = 1
EXIT_WAIT_TIMEOUT = 3

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("status", "STATUS"),
    ("playbookKey", "PLAYBOOK"),
    ("serverName", "SERVER"),
    ("attempt", "ATTEMPT"),
    ("createdAt", "CREATED"),
    ("statusReason", "REASON"),
]
ATTEMPT_COLUMNS: list[Column] = [
    ("attempt", "#"),
    ("runnerId", "RUNNER"),
    ("claimedAt", "CLAIMED"),
    ("startedAt", "STARTED"),
    ("endedAt", "ENDED"),
    ("outcome", "OUTCOME"),
    ("reason", "REASON"),
]
STEP_COLUMNS: list[Column] = [
    ("name", "STEP"),
    ("status", "STATUS"),
    ("durationMs", "MS"),
    ("exitCode", "EXIT"),
]
EVENT_COLUMNS: list[Column] = [
    ("at", "AT"),
    ("fromStatus", "FROM"),
    ("toStatus", "TO"),
    ("reason", "REASON"),
    ("attempt", "ATTEMPT"),
    ("actor", "ACTOR"),
]

OrderIdArg = Annotated[
    str, typer.Argument(help="Order id, or its first characters as tables show them.", show_default=False)
]


def parse_param_value(text: str) -> Any:
    """JSON when it parses (`3`, `true`, `null`, `[1]`, `"3"`), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(pairs: Sequence[str], params_json: str | None = None) -> dict[str, Any]:
    """Order params: the `--params-json` object, then each `--param KEY=VALUE` set over it."""
    params: dict[str, Any] = {}
    if params_json is not None:
        try:
            base = json.loads(params_json)
        except ValueError as exc:
            raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--params-json") from exc
        if not isinstance(base, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--params-json")
        params.update(base)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        params[key] = parse_param_value(value)
    return params


def wait_for_end(client: AdminClient, order_id: str, timeout: float | None) -> tuple[JsonObject, bool]:
    """Poll the order until its status is terminal or `timeout` seconds pass, with a live status line.

    Returns the last order seen and whether it ended.
    """
    started = time.monotonic()
    with output.live_status(f"order {order_id}") as line:
        while True:
            order = client.get_order(order_id)
            elapsed = time.monotonic() - started
            if order["status"] in TERMINAL_STATUSES:
                return order, True
            if timeout is not None and elapsed >= timeout:
                return order, False
            line.update(
                Text(
                    f"order {order_id}: {order['status']}, attempt {order['attempt']}/{order['maxAttempts']},"
                    f" {elapsed:.1f}s"
                )
            )
            pause = (
                POLL_INTERVAL_SECONDS if timeout is None else min(POLL_INTERVAL_SECONDS, timeout - elapsed)
            )
            time.sleep(pause)


def waiting_line(waiting: JsonObject) -> str:
    """`waitingFor` as one line: the reason, its sentence, and when it ends or started."""
    parts = [f"{waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")]
    if waiting.get("until"):
        parts.append(f"until {waiting['until']}")
    elif waiting.get("since"):
        parts.append(f"since {waiting['since']}")
    if waiting.get("busyWith"):
        parts.append("with " + ", ".join(str(o["id"]) for o in waiting["busyWith"]))
    if waiting.get("ordersAhead"):
        parts.append(f"{waiting['ordersAhead']} order(s) ahead")
    estimate = waiting.get("estimate")
    if estimate:
        parts.append(f"starts in about {estimate['startsInSeconds']:.0f}s")
    return "; ".join(parts)


def readable(order: JsonObject) -> JsonObject:
    """The order for a table: `waitingFor` (when it waits) as one line."""
    waiting = order.get("waitingFor")
    return {**order, "waitingFor": waiting_line(waiting)} if waiting else order


def show_order_detail(order: JsonObject) -> None:
    """The order's fields (why it waits, if it does), then its attempts, then a summary of its report."""
    output.show_object(readable(order), as_json=False, skip=["report", "attempts"])
    output.show_heading("Attempts")
    output.show_list(order.get("attempts") or [], ATTEMPT_COLUMNS, as_json=False, empty="no attempts yet")
    output.show_heading("Report")
    report: JsonObject | None = order.get("report")
    if not report:
        output.show_absent("no report yet")
        return
    summary = {key: report.get(key) for key in ("version", "summary", "durationMs")}
    summary["errors"] = [error.get("message") for error in report.get("errors") or []] or None
    output.show_object(summary, as_json=False)
    if report.get("steps"):
        output.show_list(report["steps"], STEP_COLUMNS, as_json=False, empty="")


@app.command("list")
def list_orders(
    status: Annotated[OrderStatus | None, typer.Option("--status", case_sensitive=False)] = None,
    server: Annotated[str | None, typer.Option("--server", help="Server name or id.")] = None,
    runner: Annotated[str | None, typer.Option("--runner", help="Runner name or id.")] = None,
    playbook: Annotated[str | None, typer.Option("--playbook", help="Playbook key.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=500, help="Orders per page (API default 50).")
    ] = None,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Start after this page cursor.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow nextCursor through every page.")] = False,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """List orders, newest first. --json prints {"items", "nextCursor"}."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        filters = OrderFilters(
            status=status,
            server_id=client.resolve("server", server) if server else None,
            runner_id=client.resolve("runner", runner) if runner else None,
            playbook_key=client.resolve("playbook", playbook) if playbook else None,
        )
        page: JsonObject
        if all_pages:
            page = {"items": list(client.iter_orders(filters, cursor, page_size=limit)), "nextCursor": None}
        else:
            page = client.list_orders(filters, cursor=cursor, limit=limit)
        names = {} if as_json else {str(s["id"]): str(s["name"]) for s in client.list_servers()}
    if as_json:
        output.print_json(page)
        return
    # a deleted server is no longer listed: its orders show its (short) id instead of its name
    rows = [{**item, "serverName": names.get(item["serverId"], item["serverId"])} for item in page["items"]]
    output.show_list(rows, COLUMNS, as_json=False, empty="no orders", wide=wide)
    if page.get("nextCursor"):
        output.notice(f"more orders: add --all, or --cursor {page['nextCursor']}")


@app.command("show")
def show_order(
    order_id: OrderIdArg,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an order with its attempts and report."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        order = client.get_order(client.resolve("order", order_id))
    if as_json:
        output.print_json(order)
    else:
        show_order_detail(order)


@app.command("events")
def order_events(
    order_id: OrderIdArg,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the status transitions of an order, oldest first."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        events = client.order_events(client.resolve("order", order_id))
    output.show_list(events, EVENT_COLUMNS, as_json=as_json, empty="no events")


@app.command("logs")
def order_logs(
    order_id: OrderIdArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the order ends.")
    ] = False,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
) -> None:
    """Print an order's log as the runner streamed it (stderr lines go to stderr).

    --follow reads the live log stream (Server-Sent Events) until the order ends, resuming after the
    last line printed if the connection breaks.
    """
    after_seq = -1
    with output.api_errors(False), AdminClient(api_url, admin_key) as client:
        order_id = client.resolve("order", order_id)
        if follow:
            path = f"/v1/orders/{order_id}/logs/stream"
            for message in sse.follow(client, path, {}, on_retry=_log_retrying):
                if message.event == "end":
                    return
                chunk = json.loads(message.data)
                typer.echo(chunk["data"], nl=False, err=chunk["stream"] == "stderr")
            return
        while True:
            page = client.order_logs(order_id, after_seq=after_seq)
            for chunk in page["items"]:
                typer.echo(chunk["data"], nl=False, err=chunk["stream"] == "stderr")
            after_seq = int(page["nextSeq"]) - 1
            if page["done"] or not page["items"]:
                return


def _log_retrying(why: str, delay: float, last_seq: str | None) -> None:
    output.notice(f"{why}; reconnecting in {delay:.1f}s")


@app.command("cancel")
def cancel_order(
    order_id: OrderIdArg,
    reason: Annotated[str | None, typer.Option("--reason", help="Why, kept in the order's events.")] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel an order: at once if not started yet, else the runner is asked to stop."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        output.show_object(client.cancel_order(client.resolve("order", order_id), reason), as_json=as_json)


@app.command("rerun")
def rerun_order(
    order_id: OrderIdArg,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Replaying the same key returns the same order.")
    ] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run an order again: same playbook, server, params (secrets included, never shown), timeout.

    --json prints {"order", "reportContract"}; the new order names the original in rerunOf.
    """
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        made = client.rerun_order(client.resolve("order", order_id), idempotency_key=idempotency_key)
    output.show_object(made if as_json else readable(made["order"]), as_json=as_json)


@app.command("create")
def create_order(
    server: Annotated[str, typer.Option("--server", help="Server (name or id) to run on.")],
    playbook: Annotated[str, typer.Option("--playbook", help="Playbook key to run.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="KEY=VALUE", help="Param; VALUE is read as JSON when it parses."),
    ] = None,
    params_json: Annotated[
        str | None, typer.Option("--params-json", metavar="JSON", help="Params as one JSON object.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Replaying the same key returns the same order.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the order until it ends.")] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, help="With --wait: give up after SECONDS (exit 3).")
    ] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Order a playbook run on a server.

    --json prints {"order", "reportContract"}, or with --wait the final order.

    --wait exits 0 when the order SUCCEEDED, 1 when it ended otherwise, 3 when --timeout came first.
    """
    if timeout is not None and not wait:
        raise typer.BadParameter("only bounds --wait; add --wait", param_hint="--timeout")
    params = parse_params(param or [], params_json)
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        fields = {
            "serverId": client.resolve("server", server),
            "playbookKey": client.resolve("playbook", playbook),
            "params": params,
        }
        created = client.create_order(fields, idempotency_key=idempotency_key)
        if not wait:
            output.show_object(created if as_json else created["order"], as_json=as_json)
            return
        order, ended = wait_for_end(client, created["order"]["id"], timeout)
    if as_json:
        output.print_json(order)
    else:
        show_order_detail(order)
    if not ended:
        message = f"order {order['id']} is still {order['status']} after {timeout}s"
        output.print_error(ApiError(0, "wait_timeout", message), as_json=as_json)
        raise typer.Exit(EXIT_WAIT_TIMEOUT)
    raise typer.Exit(0 if order["status"] == OrderStatus.SUCCEEDED else EXIT_NOT_SUCCEEDED)
