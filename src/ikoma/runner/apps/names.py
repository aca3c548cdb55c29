"""App and backup names: checked here, again, before anything touches the disk.

The API validates params against the catalog's JSON schema too; the runner does not rely on it
(defence in depth): a name reaching a path join must be a plain lower-case word, nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ikoma.runner.apps.errors import (
    CONFIRMATION_REQUIRED,
    INVALID_APP_NAME,
    INVALID_BACKUP_NAME,
    AppError,
)

# The catalog's pattern. `fullmatch`, never `match` with `$`: `$` also matches before a final "\n".
APP_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,62}")
BACKUP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def app_name(value: Any) -> str:
    """The app name, or :class:`AppError` ``invalid_app_name`` (`../x`, `%2e`, NUL, `/etc`, `MyApp`…)."""
    if not isinstance(value, str) or APP_NAME_RE.fullmatch(value) is None:
        shown = repr(value)[:80]
        raise AppError(
            INVALID_APP_NAME,
            f"appName {shown} is not a valid app name: lower-case letters, digits and '-', "
            "starting with a letter, at most 63 characters",
        )
    return value


def backup_name(value: Any) -> str:
    if (
        not isinstance(value, str)
        or BACKUP_NAME_RE.fullmatch(value) is None
        # dots are allowed ("myapp-20260101.dump") but not a name made of them
        or set(value) <= {"."}
    ):
        raise AppError(
            INVALID_BACKUP_NAME,
            f"backupName {repr(value)[:80]} is not valid: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 128 characters",
        )
    return value


def child_path(root: Path, name: str) -> Path:
    """`root/name`, proven to stay inside `root` even if the root itself is a symlink."""
    base = root.resolve()
    path = base / name
    if path.parent != base:  # cannot happen for a validated name; checked because it is cheap
        raise AppError(INVALID_APP_NAME, f"{name!r} does not name a directory inside {base}")
    return path


def require_confirmation(params: dict[str, Any], name: str) -> None:
    """Destructive tools run only when `confirm` repeats the app name exactly."""
    if params.get("confirm") != name:
        raise AppError(
            CONFIRMATION_REQUIRED,
            f'this tool is destructive: pass "confirm": "{name}" (the app name) to proceed',
        )


def database_name(app: str) -> str:
    """The PostgreSQL database and role of an app: its name with '-' as '_' (no quoting needed in psql).

    Injective: app names never contain '_', so two apps never share a database.
    """
    return app.replace("-", "_")
