"""`ikoma users`: console accounts, on the database directly (run where the server runs, on its data).

Like `ikoma keys`, these commands need no running server: they are how an operator gets back in when
no admin can sign in (a lost password, a disabled last admin's colleague). A password is generated
unless `--password-stdin` is given, and printed once; nothing else ever shows it again.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from ikoma.cli import output
from ikoma.cli.output import JsonOption

app = typer.Typer(help="Console users (on the database directly; no server needed).", no_args_is_help=True)

T = TypeVar("T")
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="read the password from stdin instead of generating one")
]
COLUMNS = [
    ("id", "ID"),
    ("username", "USERNAME"),
    ("email", "EMAIL"),
    ("role", "ROLE"),
    ("disabled", "DISABLED"),
    ("totpEnabled", "TOTP"),
    ("createdAt", "CREATED"),
]


def _run(what: str, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action(db)` on the configured database; a refusal is printed with its reason, exit 1."""
    from ikoma.cli.database import settings_for_reading
    from ikoma.domain.errors import DomainError
    from ikoma.storage.database import Database

    settings = settings_for_reading(what)

    async def run() -> T:
        db = Database(settings.resolved_database_url)
        try:
            return await action(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except DomainError as refusal:
        typer.secho(f"{refusal.message} ({refusal.reason})", fg="red", err=True)
        raise typer.Exit(1) from None


def _wire(user: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it (camelCase, no secret)."""
    from ikoma.api.user_schemas import UserPublic

    wire: dict[str, Any] = UserPublic.model_validate(user).model_dump(mode="json", by_alias=True)
    return wire


def _password(from_stdin: bool) -> tuple[str, bool]:
    """(password, generated)."""
    from ikoma.domain import passwords

    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    return passwords.generate(), True


@app.command("create")
def create(
    username: str,
    email: Annotated[str, typer.Option(help="unique, case-insensitive")],
    role: Annotated[str, typer.Option(help="observer, builder, operator or admin")] = "observer",
    first_name: Annotated[str, typer.Option()] = "",
    last_name: Annotated[str, typer.Option()] = "",
    password_stdin: PasswordStdin = False,
    as_json: JsonOption = False,
) -> None:
    """Create a user; the generated password is printed this once."""
    from ikoma.domain.roles import Role
    from ikoma.services import users

    password, generated = _password(password_stdin)
    created = _run(
        "create a user",
        lambda db: users.create_user(
            db,
            username=username,
            email=email,
            password=password,
            role=Role.parse(role),
            first_name=first_name,
            last_name=last_name,
            actor="cli",
        ),
    )
    shown = {**_wire(created), "password": password} if generated else _wire(created)
    output.show_object(shown, as_json=as_json)
    if generated and not as_json:
        typer.echo("the password is shown this once")


@app.command("list")
def list_users(as_json: JsonOption = False) -> None:
    """Every user (never a password or TOTP secret)."""
    from ikoma.services import users

    rows = [_wire(u) for u in _run("list users", users.list_users)]
    output.show_list(rows, COLUMNS, as_json=as_json, empty="no users")


@app.command("disable")
def disable(
    user: Annotated[str, typer.Argument(help="id, username or email")], as_json: JsonOption = False
) -> None:
    """Disable a user: their sessions end at once (the last enabled admin cannot be disabled)."""
    from ikoma.services import users

    async def action(db: Any) -> dict[str, Any]:
        found = await users.find_user(db, user)
        return await users.update_user(db, str(found["id"]), {"disabled": True}, actor="cli")

    output.show_object(_wire(_run("disable a user", action)), as_json=as_json)


@app.command("reset-password")
def reset_password(
    user: Annotated[str, typer.Argument(help="id, username or email")],
    password_stdin: PasswordStdin = False,
    as_json: JsonOption = False,
) -> None:
    """Set a new password (generated, printed once) and end the user's sessions."""
    from ikoma.services import users

    password, generated = _password(password_stdin)

    async def action(db: Any) -> dict[str, Any]:
        found = await users.find_user(db, user)
        return await users.update_user(db, str(found["id"]), {"password": password}, actor="cli")

    updated = _run("reset a password", action)
    if as_json:
        output.print_json(
            {
                "id": updated["id"],
                "username": updated["username"],
                **({"password": password} if generated else {}),
            }
        )
        return
    typer.echo(f"{updated['username']}: password reset, sessions ended")
    if generated:
        typer.echo(f"new password (shown this once): {password}")
