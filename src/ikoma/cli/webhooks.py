"""`ikoma webhooks`: endpoints that receive the fleet's events, signed; their delivery log (admin)."""

from typing import Annotated

import typer

from ikoma.cli import output
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiUrlOption, without_unset
from ikoma.cli.output import Column, JsonOption, WideOption

app = typer.Typer(
    help="Manage webhooks: signed deliveries of events to your endpoints.", no_args_is_help=True
)

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("url", "URL"),
    ("events", "EVENTS"),
    ("enabled", "ENABLED"),
    ("disabledReason", "DISABLED BECAUSE"),
    ("consecutiveFailures", "FAILURES"),
    ("lastEventId", "LAST EVENT"),
]
DELIVERY_COLUMNS: list[Column] = [
    ("id", "DELIVERY"),
    ("eventId", "EVENT"),
    ("kind", "KIND"),
    ("status", "STATUS"),
    ("attempts", "ATTEMPTS"),
    ("statusCode", "CODE"),
    ("durationMs", "MS"),
    ("error", "ERROR"),
    ("nextAttemptAt", "NEXT ATTEMPT"),
    ("createdAt", "CREATED"),
]
WebhookArgument = Annotated[
    str, typer.Argument(help="The webhook's id (or its first characters).", show_default=False)
]


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--label")
        labels[key] = value
    return labels


@app.command("create")
def create_webhook(
    url: Annotated[str, typer.Argument(help="The http(s) URL the events are POSTed to.", show_default=False)],
    events: Annotated[
        list[str],
        typer.Option("--event", "-e", help="An event kind or prefix (order.failed, message, *); repeatable."),
    ],
    servers: Annotated[
        list[str] | None,
        typer.Option("--server", help="Only events of this server (name or id); repeatable."),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option("--label", help="Only events of servers with this label, key=value; repeatable."),
    ] = None,
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a webhook and print its signing secret, which the API never shows again."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        server_ids = [client.resolve("server", server) for server in servers or []]
        fields = without_unset(
            url=url,
            events=events,
            serverIds=server_ids or None,
            labels=_labels(labels) if labels else None,
            description=description,
        )
        created = client.create_webhook(fields)
    output.show_object(created, as_json=as_json, skip=["secret"])
    if not as_json:
        # alone on its line so it can be copied or piped as is
        typer.echo(f"\nsecret: {created['secret']}")
    output.notice("Save this secret now: it will not be shown again. It signs every delivery (docs/api.md).")


@app.command("list")
def list_webhooks(
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """List webhooks (never their secrets): events, whether enabled, failures in a row."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.list_webhooks()
    output.show_list(found, COLUMNS, as_json=as_json, empty="no webhooks", wide=wide)


@app.command("show")
def show_webhook(
    webhook: WebhookArgument,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one webhook."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.get_webhook(client.resolve("webhook", webhook))
    output.show_object(found, as_json=as_json)


@app.command("disable")
def disable_webhook(
    webhook: WebhookArgument,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop deliveries until it is enabled again."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        changed = client.set_webhook_enabled(client.resolve("webhook", webhook), False)
    output.show_object(changed, as_json=as_json)


@app.command("enable")
def enable_webhook(
    webhook: WebhookArgument,
    skip_backlog: Annotated[
        bool, typer.Option("--skip-backlog", help="Send only new events, not those of the disabled time.")
    ] = False,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume deliveries where they stopped (or, with --skip-backlog, from the next new event)."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        changed = client.set_webhook_enabled(
            client.resolve("webhook", webhook), True, skip_backlog=skip_backlog
        )
    output.show_object(changed, as_json=as_json)


@app.command("delete")
def delete_webhook(
    webhook: WebhookArgument,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete a webhook and its delivery log."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        webhook_id = client.resolve("webhook", webhook)
        client.delete_webhook(webhook_id)
    if as_json:
        output.print_json({"id": webhook_id, "deleted": True})
    else:
        typer.echo(f"webhook {webhook_id} deleted")


@app.command("deliveries")
def list_deliveries(
    webhook: WebhookArgument,
    status: Annotated[str | None, typer.Option(help="pending, delivered or failed.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 50,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """The delivery log, newest first: status, attempts, last status code, duration, error."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        found = client.webhook_deliveries(client.resolve("webhook", webhook), limit=limit, status=status)
    output.show_list(found, DELIVERY_COLUMNS, as_json=as_json, empty="no deliveries", wide=wide)


@app.command("redeliver")
def redeliver(
    webhook: WebhookArgument,
    delivery: Annotated[str, typer.Argument(help="The delivery's id.", show_default=False)],
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a delivery's event again, as a new delivery."""
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        queued = client.redeliver(client.resolve("webhook", webhook), delivery)
    output.show_object(queued, as_json=as_json)
