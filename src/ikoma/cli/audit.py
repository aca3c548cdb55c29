"""`ikoma audit`: read the audit log through the API, or verify its hash chain on the database itself."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ikoma.cli import output
from ikoma.cli.client import DEFAULT_API_URL, AdminClient, AdminKeyOption, ApiUrlOption, JsonObject
from ikoma.cli.output import Column, JsonOption, WideOption

app = typer.Typer(help="The audit log: who did what, allowed or refused, and whether it was tampered with.")

COLUMNS: list[Column] = [
    ("id", "ID"),
    ("at", "AT"),
    ("actor", "ACTOR"),
    ("tokenPrefix", "KEY"),
    ("role", "ROLE"),
    ("action", "ACTION"),
    ("target", "TARGET"),
    ("outcome", "OUTCOME"),
    ("statusCode", "STATUS"),
    ("reason", "REASON"),
    ("orderId", "ORDER"),
]


@app.command("list")
def list_entries(
    actor: Annotated[str | None, typer.Option("--actor", help="Actor id or token prefix.")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Action prefix: execute:, mcp:deploy., POST /v1/")
    ] = None,
    outcome: Annotated[str | None, typer.Option("--outcome", help="allowed, denied or error.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Exact target, e.g. web-1/myapp.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 time (exclusive).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Entries per page.")] = 100,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Continue after this page cursor.")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow nextCursor through every page.")] = False,
    api_url: ApiUrlOption = DEFAULT_API_URL,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
) -> None:
    """Audit entries, newest first (admin key). --json prints {"items", "nextCursor"}."""
    filters: dict[str, str | int | None] = {
        "actor": actor,
        "action": action,
        "outcome": outcome,
        "target": target,
        "since": since,
        "until": until,
        "limit": limit,
    }
    with output.api_errors(as_json), AdminClient(api_url, admin_key) as client:
        page = client.list_audit(filters, cursor)
        items: list[JsonObject] = list(page["items"])
        while all_pages and page.get("nextCursor"):
            page = client.list_audit(filters, page["nextCursor"])
            items += page["items"]
    page = {"items": items, "nextCursor": page.get("nextCursor")}
    if as_json:
        output.print_json(page)
        return
    rows = [{**item, "actor": f"{item['actorKind']}:{item['actorId'] or '-'}"} for item in items]
    output.show_list(rows, COLUMNS, as_json=False, empty="no audit entries", wide=wide)
    if page["nextCursor"]:
        output.notice(f"more entries: add --all, or --cursor {page['nextCursor']}")


@app.command("verify")
def verify() -> None:
    """Walk the hash chain on the database (DATABASE_URL); exit 1 naming the first broken entry.

    Then compares the chain with what is kept outside the database: the signed checkpoints
    (IKOMA_AUDIT_CHECKPOINTS, default <data dir>/audit.checkpoints, key IKOMA_AUDIT_KEY or
    <data dir>/audit.key) and the JSONL mirror (IKOMA_AUDIT_LOG) when configured: a cut tail or a
    re-hashed chain is named too.

    Runs on the database directly, like `ikoma db check`: a verifier that asked the API would trust
    the very process whose records it checks.
    """
    from ikoma.cli.database import settings_for_reading
    from ikoma.services import audit, audit_anchor
    from ikoma.storage.database import Database

    settings = settings_for_reading("verify the audit log")
    configured = audit_anchor.load_anchor(
        settings.audit_key.get_secret_value() if settings.audit_key else None,
        settings.data_dir,
        settings.audit_checkpoints,
    )
    anchor: audit_anchor.Anchor | None = configured
    if configured.key_file is not None and not configured.key_file.exists():
        if configured.checkpoints.exists():  # signed checkpoints without their key: someone removed it
            typer.secho(
                f"problem: {configured.checkpoints} holds signed checkpoints but the audit key "
                f"{configured.key_file} is missing (set IKOMA_AUDIT_KEY or restore the file)",
                fg="red",
                err=True,
            )
            raise typer.Exit(1)
        anchor = None  # nothing was ever signed here; a read command creates no key

    async def run() -> audit.VerifyReport:
        db = Database(settings.resolved_database_url)
        try:
            chain = await audit.verify(db)
            return await audit_anchor.verify_anchored(db, chain, anchor=anchor, mirror=settings.audit_log)
        finally:
            await db.dispose()

    try:
        report = asyncio.run(run())
    except Exception as exc:  # unreachable, not migrated, wrong credentials: say which, no traceback
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.secho(f"cannot verify the audit log: {type(exc).__name__}: {first}", fg="red", err=True)
        raise typer.Exit(2) from None
    if report.ok:
        head = report.head
        where = f", head #{head['id']} {str(head['hash'])[:16]}…" if report.checked else ""
        anchors = [
            name
            for name, present in (
                ("signed checkpoints", anchor is not None and anchor.checkpoints.exists()),
                (
                    f"mirror {settings.audit_log}",
                    settings.audit_log is not None and settings.audit_log.exists(),
                ),
            )
            if present
        ]
        checked_against = f"; agrees with {' and '.join(anchors)}" if anchors else ""
        typer.echo(f"ok: {report.checked} audit entries, hash chain intact{where}{checked_against}")
        return
    problem = report.problem
    assert problem is not None
    typer.secho(
        f"problem: audit entry #{problem.id} was {problem.kind}: {problem.detail} "
        f"({report.checked} entries before it are intact)",
        fg="red",
        err=True,
    )
    raise typer.Exit(1)
