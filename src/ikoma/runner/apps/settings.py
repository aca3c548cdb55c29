"""Runner-side settings of the operations tools, read from the environment in this one place.

Read at each tool call, not at import: the runner inherits them from its service unit (or from
`ikoma up`), and tests set them per test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ikoma.runner.apps.errors import INVALID_PARAMS, AppError

ENV_APPS_ROOT = "IKOMA_APPS_ROOT"
ENV_APPS_DATABASE_URL = "IKOMA_APPS_DATABASE_URL"
ENV_BACKUPS_DIR = "IKOMA_BACKUPS_DIR"
ENV_RELEASES_KEEP = "IKOMA_RELEASES_KEEP"
ENV_DATA_DIR = "IKOMA_DATA_DIR"

DEFAULT_APPS_ROOT = Path("/srv/apps")
DEFAULT_RELEASES_KEEP = 5


@dataclass(frozen=True)
class AppsSettings:
    apps_root: Path
    database_url: str | None
    backups_dir: Path
    releases_keep: int = DEFAULT_RELEASES_KEEP


def load(env: Mapping[str, str] | None = None) -> AppsSettings:
    env = os.environ if env is None else env
    root = Path(env.get(ENV_APPS_ROOT) or DEFAULT_APPS_ROOT)
    if env.get(ENV_BACKUPS_DIR):
        backups = Path(env[ENV_BACKUPS_DIR])
    elif env.get(ENV_DATA_DIR):
        backups = Path(env[ENV_DATA_DIR]) / "backups"
    else:
        backups = Path.home() / ".local" / "state" / "ikoma" / "backups"
    raw_keep = env.get(ENV_RELEASES_KEEP) or str(DEFAULT_RELEASES_KEEP)
    try:
        keep = int(raw_keep)
    except ValueError:
        keep = 0
    if keep < 1:
        # a misconfigured runner must say so rather than silently keep no rollback target
        raise AppError(INVALID_PARAMS, f"{ENV_RELEASES_KEEP} must be an integer >= 1, got {raw_keep!r}")
    return AppsSettings(
        apps_root=root.absolute(),
        database_url=env.get(ENV_APPS_DATABASE_URL) or None,
        backups_dir=backups.absolute(),
        releases_keep=keep,
    )
