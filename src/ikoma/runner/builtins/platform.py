"""`platform.check`: can this machine run apps? `{healthy, checks: {docker, postgres, appsRoot, disk}}`.

`healthy` needs postgres, appsRoot and disk; docker counts only when an app under the root uses
the compose runtime (a host without Docker runs process apps perfectly well). `details` says why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ikoma.runner.apps import database, names
from ikoma.runner.apps import manifest as manifests
from ikoma.runner.apps.errors import AppError
from ikoma.runner.apps.tool import Answer, ToolContext, tool
from ikoma.runner.builtins.apps import docker_engine_answers

MIN_FREE_BYTES = 1024**3
MAX_USED_PERCENT = 90.0


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_check(root: Path) -> tuple[bool, dict[str, Any]]:
    where = _existing(root)
    usage = shutil.disk_usage(where)
    used = round(100.0 * (usage.total - usage.free) / usage.total, 1) if usage.total else 100.0
    ok = usage.free >= MIN_FREE_BYTES and used < MAX_USED_PERCENT
    return ok, {
        "path": str(where),
        "freeBytes": usage.free,
        "totalBytes": usage.total,
        "usedPercent": used,
        "minFreeBytes": MIN_FREE_BYTES,
        "maxUsedPercent": MAX_USED_PERCENT,
    }


def compose_apps(root: Path) -> list[str]:
    found = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if names.APP_NAME_RE.fullmatch(entry.name) and (entry / manifests.MANIFEST_FILE).is_file():
                try:
                    if manifests.load(entry).runtime == "compose":
                        found.append(entry.name)
                except AppError:
                    continue
    return found


@tool("platform.check")
async def check(tc: ToolContext) -> Answer:
    root = tc.settings.apps_root
    docker = await docker_engine_answers(tc)
    postgres, pg_detail = await database.ping(tc.settings)
    root_ok = root.is_dir() and os.access(root, os.W_OK | os.X_OK)
    disk, disk_detail = disk_check(root)
    needs_docker = compose_apps(root)
    healthy = postgres and root_ok and disk and (docker or not needs_docker)
    checks = {"docker": docker, "postgres": postgres, "appsRoot": root_ok, "disk": disk}
    data: dict[str, Any] = {
        "healthy": healthy,
        "checks": checks,
        "details": {
            "docker": {"required": bool(needs_docker), "composeApps": needs_docker},
            "postgres": pg_detail,
            "appsRoot": {"path": str(root), "exists": root.is_dir(), "writable": root_ok},
            "disk": disk_detail,
        },
    }
    failing = [name for name, ok in checks.items() if not ok]
    return Answer(
        data,
        ("healthy" if healthy else "unhealthy") + (f"; failing: {', '.join(failing)}" if failing else ""),
    )
