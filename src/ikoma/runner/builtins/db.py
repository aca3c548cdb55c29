"""`db.*` tools: create, migrate, status, backup, restore (PostgreSQL, per app).

`db.status`, `db.backup` and `db.restore` need only a valid app name and its database: a
database kept by `apps.remove` can still be inspected, backed up and restored.
"""

from __future__ import annotations

from ikoma.runner.apps import backups, database, names
from ikoma.runner.apps.errors import INVALID_PARAMS, AppError
from ikoma.runner.apps.tool import Answer, ToolContext, tool


@tool("db.create", exclusive=True)
async def create(tc: ToolContext) -> Answer:
    app = tc.app()
    data = await database.create(app.name, app.path, tc.settings, tc.ctx.masker)
    # the password went to .env only; this answer says where, never what
    data = {"appName": app.name, **data, "envFile": str(app.path / ".env") if data["envUpdated"] else None}
    return Answer(data, data["message"])


@tool("db.migrate", exclusive=True)
async def migrate(tc: ToolContext) -> Answer:
    app = tc.app()
    sql = tc.param_str("sql")
    if sql is not None and not sql.strip():
        raise AppError(INVALID_PARAMS, "sql must not be empty")
    data = {"appName": app.name, **await database.migrate(app.name, app.path, tc.settings, sql)}
    applied = ", ".join(m["name"] for m in data["applied"]) or "nothing new"
    return Answer(data, f"{data['database']}: applied {applied} ({data['alreadyApplied']} already applied)")


@tool("db.status")
async def status(tc: ToolContext) -> Answer:
    app = tc.app_name()
    data = {"appName": app, **await database.status(app, tc.settings)}
    if not data["exists"]:
        return Answer(data, f"{app} has no database")
    return Answer(
        data,
        f"{data['database']}: {data['sizeBytes']} bytes, {len(data['appliedMigrations'])} migrations, "
        f"{data['connections']} connections",
    )


@tool("db.backup")
async def backup(tc: ToolContext) -> Answer:
    app = tc.app_name()
    data = {"appName": app, **await backups.backup(tc, app, tc.param_str("backupName"))}
    return Answer(data, f"{data['backupName']}: {data['bytes']} bytes, sha256 {data['sha256'][:12]}")


@tool("db.restore", exclusive=True)
async def restore(tc: ToolContext) -> Answer:
    app = tc.app_name()
    names.require_confirmation(tc.params, app)
    name = tc.params.get("backupName")
    if name is None:
        raise AppError(INVALID_PARAMS, "backupName is required")
    data = {"appName": app, **await backups.restore(tc, app, name)}
    return Answer(data, f"{data['database']} restored from {data['backupName']}")
