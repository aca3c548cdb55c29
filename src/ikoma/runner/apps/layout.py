"""Creating an app (`apps.init`) and checking one (`apps.validate`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
from pathlib import Path
from typing import Any

import yaml

from ikoma.runner.apps import envfile, names
from ikoma.runner.apps import manifest as manifests
from ikoma.runner.apps.errors import APP_EXISTS, MANIFEST_INVALID, AppError
from ikoma.runner.execution import child_env

FIRST_PORT = 8100
LAST_PORT = 8999


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def used_ports(root: Path) -> set[int]:
    """Ports declared by the other apps' manifests (they may be stopped now and start later)."""
    ports: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            if names.APP_NAME_RE.fullmatch(entry.name) and (entry / manifests.MANIFEST_FILE).is_file():
                with contextlib.suppress(AppError):
                    ports.update(p.port for p in manifests.load(entry).processes if p.port is not None)
    return ports


def allocate_port(root: Path) -> int:
    taken = used_ports(root)
    for port in range(FIRST_PORT, LAST_PORT + 1):
        if port not in taken and _port_free(port):
            return port
    raise AppError("no_free_port", f"no free port between {FIRST_PORT} and {LAST_PORT} for a new app")


def init(root: Path, app: str, runtime: str) -> dict[str, Any]:
    """Create `<root>/<app>` with its directories, manifest and compose file; refuse an existing app."""
    root.mkdir(parents=True, exist_ok=True)
    path = names.child_path(root, app)
    if path.exists() or path.is_symlink():
        raise AppError(APP_EXISTS, f"app {app} already exists at {path}")
    port = allocate_port(root)
    manifest = manifests.default_manifest(app, runtime, port)
    # built aside and renamed: a crash never leaves half an app that init would then refuse
    staging = names.child_path(root, f".{app}.init")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    created = []
    for directory in manifests.APP_DIRS:
        (staging / directory).mkdir()
        created.append(f"{directory}/")
    (staging / manifests.COMPOSE_FILE).write_text(manifests.default_compose(app, port))
    (staging / manifests.MANIFEST_FILE).write_text(manifests.dump(manifest))
    created += [manifests.COMPOSE_FILE, manifests.MANIFEST_FILE]
    try:
        os.rename(staging, path)  # fails if the app appeared meanwhile (another init): never merged
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise AppError(APP_EXISTS, f"app {app} already exists at {path}") from None
    return {
        "appName": app,
        "path": str(path),
        "runtime": runtime,
        "port": port,
        "manifest": manifests.MANIFEST_FILE,
        "created": created,
    }


def _resolvable(app_dir: Path, program: str, env: dict[str, str]) -> bool:
    if "/" in program:
        candidate = app_dir / program
        return candidate.is_file() and os.access(candidate, os.X_OK)
    return shutil.which(program, path=env.get("PATH", os.defpath)) is not None


def validate(app_dir: Path) -> dict[str, Any]:
    """`{valid, runtime, errors, missing, warnings}`: manifest and compose file present and parseable,
    every required variable set (in `.env` or the manifest's env), every command found."""
    errors: list[str] = []
    missing: list[str] = []
    warnings: list[str] = []
    try:
        manifest = manifests.load(app_dir)
    except AppError as exc:
        if exc.code != MANIFEST_INVALID:
            raise
        problems = exc.details.get("problems") or [exc.message]
        return {"valid": False, "runtime": None, "errors": list(problems), "missing": [], "warnings": []}
    compose_path = app_dir / manifests.COMPOSE_FILE
    if compose_path.is_file():
        try:
            compose = yaml.safe_load(compose_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            errors.append(f"{manifests.COMPOSE_FILE} is not valid YAML: {exc}")
        else:
            services = compose.get("services") if isinstance(compose, dict) else None
            if manifest.runtime == "compose" and (not isinstance(services, dict) or not services):
                errors.append(f"{manifests.COMPOSE_FILE} has no services")
    elif manifest.runtime == "compose":
        errors.append(f"{manifests.COMPOSE_FILE} is missing (runtime: compose)")
    else:
        warnings.append(f"{manifests.COMPOSE_FILE} is missing (not needed by the process runtime)")

    env_path = app_dir / envfile.ENV_FILE
    values = envfile.read(env_path)
    if env_path.exists() and stat.S_IMODE(env_path.stat().st_mode) & 0o077:
        warnings.append(".env is readable by other users: chmod 600 it (it holds secrets)")
    provided_by_manifest = {key for p in manifest.processes for key in p.env}
    for variable in manifest.required_variables():
        if not values.get(variable) and variable not in provided_by_manifest:
            missing.append(variable)

    if manifest.runtime == "process":
        if not manifest.processes:
            errors.append("the manifest lists no process to run")
        base = child_env()
        for spec in manifest.processes:
            if spec.command and not _resolvable(app_dir, spec.command[0], base):
                errors.append(f"process {spec.name}: {spec.command[0]!r} is not found (or not executable)")
    return {
        "valid": not errors and not missing,
        "runtime": manifest.runtime,
        "errors": errors,
        "missing": missing,
        "warnings": warnings,
    }
