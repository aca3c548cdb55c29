"""The app manifest (`ikoma-app.yaml`): runtime, processes, the variables the app needs.

```yaml
name: myapp
runtime: process          # process | compose
database: true            # the app uses a PostgreSQL database (POSTGRES_* variables)
variables:                # what .env must provide (a bare string means required, no default)
  - NODE_ENV
  - {name: LOG_LEVEL, required: false, default: info, description: "debug|info|warning"}
processes:                # process runtime: what the supervisor runs; compose: services to health-check
  - name: web
    command: ["python3", "src/server.py"]   # argv, never a shell line; run from the app directory
    port: 8100                              # given to the process as PORT
    health: /health                         # HTTP GET on 127.0.0.1:port
    env: {GREETING: hello}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ikoma.runner.apps import names
from ikoma.runner.apps.errors import APP_NOT_FOUND, MANIFEST_INVALID, AppError

MANIFEST_FILE = "ikoma-app.yaml"
COMPOSE_FILE = "docker-compose.yml"
RUNTIMES = ("process", "compose")
POSTGRES_VARIABLES = ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_HOST", "POSTGRES_PORT")
APP_DIRS = ("config", "migrations", "seeds", "src")


@dataclass(frozen=True)
class Variable:
    name: str
    required: bool = True
    default: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    command: tuple[str, ...] = ()
    port: int | None = None
    health: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AppManifest:
    name: str
    runtime: str
    database: bool = False
    variables: tuple[Variable, ...] = ()
    processes: tuple[ProcessSpec, ...] = ()

    def required_variables(self) -> list[str]:
        required = [v.name for v in self.variables if v.required]
        if self.database:
            required += [name for name in POSTGRES_VARIABLES if name not in required]
        return required

    def process(self, name: str) -> ProcessSpec | None:
        return next((p for p in self.processes if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        def variable(v: Variable) -> dict[str, Any] | str:
            if v.required and v.default is None and v.description is None:
                return v.name
            out: dict[str, Any] = {"name": v.name, "required": v.required}
            if v.default is not None:
                out["default"] = v.default
            if v.description is not None:
                out["description"] = v.description
            return out

        def process(p: ProcessSpec) -> dict[str, Any]:
            out: dict[str, Any] = {"name": p.name}
            if p.command:
                out["command"] = list(p.command)
            if p.port is not None:
                out["port"] = p.port
            if p.health is not None:
                out["health"] = p.health
            if p.env:
                out["env"] = dict(p.env)
            return out

        return {
            "name": self.name,
            "runtime": self.runtime,
            "database": self.database,
            "variables": [variable(v) for v in self.variables],
            "processes": [process(p) for p in self.processes],
        }


def _scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _variables(raw: Any, problems: list[str]) -> list[Variable]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append("variables must be a list")
        return []
    out: list[Variable] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"variables[{i}] must be a name or an object with a name")
            continue
        name = item["name"]
        if not name.isidentifier() or not name.isascii():
            problems.append(f"variables[{i}]: {name!r} is not a variable name")
            continue
        default = item.get("default")
        if default is not None and _scalar(default) is None:
            problems.append(f"variables[{i}].default must be a string or a number")
        description = item.get("description")
        out.append(
            Variable(
                name=name,
                required=bool(item.get("required", True)),
                default=_scalar(default) if default is not None else None,
                description=str(description) if description is not None else None,
            )
        )
    return out


def _processes(raw: Any, runtime: str, problems: list[str]) -> list[ProcessSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append("processes must be a list")
        return []
    out: list[ProcessSpec] = []
    for i, item in enumerate(raw):
        where = f"processes[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object")
            continue
        name = item.get("name")
        # process names become log file names: same rule as app names
        if not isinstance(name, str) or names.APP_NAME_RE.fullmatch(name) is None:
            problems.append(f"{where}.name must match {names.APP_NAME_RE.pattern}")
            continue
        command = item.get("command", [])
        if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
            problems.append(f"{where}.command must be a list of strings (argv, not a shell line)")
            command = []
        if runtime == "process" and not command:
            problems.append(f"{where}.command is required with the process runtime")
        port = item.get("port")
        if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
            problems.append(f"{where}.port must be an integer 1-65535")
            port = None
        health = item.get("health")
        if health is not None and (not isinstance(health, str) or not health.startswith("/")):
            problems.append(f"{where}.health must be a path starting with '/'")
            health = None
        if health is not None and port is None:
            problems.append(f"{where}.health needs a port")
        env_raw = item.get("env") or {}
        env: dict[str, str] = {}
        if not isinstance(env_raw, dict):
            problems.append(f"{where}.env must be a mapping")
        else:
            for key, value in env_raw.items():
                text = _scalar(value)
                if not isinstance(key, str) or text is None:
                    problems.append(f"{where}.env.{key} must be a string or a number")
                else:
                    env[key] = text
        out.append(ProcessSpec(name=name, command=tuple(command), port=port, health=health, env=env))
    seen: set[str] = set()
    ports: set[int] = set()
    for spec in out:
        if spec.name in seen:
            problems.append(f"process {spec.name!r} is listed twice")
        seen.add(spec.name)
        if spec.port is not None:
            if spec.port in ports:
                problems.append(f"port {spec.port} is used by two processes")
            ports.add(spec.port)
    return out


def parse(data: Any, app: str) -> AppManifest:
    """A manifest from its YAML data, or ``manifest_invalid`` listing every problem found."""
    if not isinstance(data, dict):
        raise AppError(MANIFEST_INVALID, f"{MANIFEST_FILE} must hold a mapping", problems=["not a mapping"])
    problems: list[str] = []
    name = data.get("name", app)
    if name != app:
        problems.append(f"name is {name!r} but the app directory is {app!r}")
    runtime = data.get("runtime", "process")
    if runtime not in RUNTIMES:
        problems.append(f"runtime must be one of {', '.join(RUNTIMES)}")
        runtime = "process"
    database = data.get("database", False)
    if not isinstance(database, bool):
        problems.append("database must be true or false")
    variables = _variables(data.get("variables"), problems)
    processes = _processes(data.get("processes"), runtime, problems)
    if problems:
        raise AppError(
            MANIFEST_INVALID, f"{MANIFEST_FILE} is invalid: " + "; ".join(problems), problems=problems
        )
    return AppManifest(
        name=app,
        runtime=runtime,
        database=database is True,
        variables=tuple(variables),
        processes=tuple(processes),
    )


def app_dir(root: Path, app: str, *, must_exist: bool = True) -> Path:
    path = names.child_path(root, names.app_name(app))
    if must_exist and not (path / MANIFEST_FILE).is_file():
        raise AppError(APP_NOT_FOUND, f"no app {app!r} under {root} (no {MANIFEST_FILE})")
    return path


def load(path: Path) -> AppManifest:
    try:
        text = (path / MANIFEST_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AppError(APP_NOT_FOUND, f"no {MANIFEST_FILE} in {path}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AppError(
            MANIFEST_INVALID, f"{MANIFEST_FILE} is not valid YAML: {exc}", problems=[str(exc)]
        ) from None
    return parse(data, path.name)


def dump(manifest: AppManifest) -> str:
    header = (
        f"# IKOMA app manifest for {manifest.name}: read by deploy.*, apps.* and db.* tools.\n"
        "# command is an argv list (no shell); port is passed to the process as PORT.\n"
    )
    return header + yaml.safe_dump(manifest.to_dict(), sort_keys=False, default_flow_style=None)


def default_manifest(app: str, runtime: str, port: int) -> AppManifest:
    """What `apps.init` writes: one web process that serves `src/` until the real app replaces it."""
    if runtime == "process":
        command: tuple[str, ...] = (
            "python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", "src",
        )  # fmt: skip
    else:
        command = ()
    return AppManifest(
        name=app,
        runtime=runtime,
        database=True,
        variables=(Variable("APP_ENV", required=True, default="production"),),
        processes=(ProcessSpec(name="web", command=command, port=port, health="/"),),
    )


def default_compose(app: str, port: int) -> str:
    return (
        f"# docker compose file of {app}; IKOMA runs it as project ikoma-{app} (runtime: compose).\n"
        "services:\n"
        "  web:\n"
        "    image: nginx:1.27-alpine  # replace with the app's image\n"
        "    restart: unless-stopped\n"
        "    env_file:\n"
        "      - path: .env\n"
        "        required: false\n"
        "    volumes:\n"
        "      - ./src:/usr/share/nginx/html:ro\n"
        "    ports:\n"
        f'      - "127.0.0.1:{port}:80"\n'
    )


def template_variables(manifest: AppManifest) -> list[str]:
    """The variable names the template lists, in its order."""
    out = [v.name for v in manifest.variables if not (manifest.database and v.name in POSTGRES_VARIABLES)]
    return out + (list(POSTGRES_VARIABLES) if manifest.database else [])


def env_template(manifest: AppManifest, app_path: Path) -> str:
    """The `.env` template listing every variable the app needs (apps.env.example)."""
    lines = [
        f"# Environment of {manifest.name} (generated by IKOMA apps.env.example)",
        f"# Write it to {app_path / '.env'} (chmod 600) and fill in every required value.",
    ]
    if manifest.processes and manifest.runtime == "process":
        ports = ", ".join(f"{p.name}: {p.port}" for p in manifest.processes if p.port is not None)
        if ports:
            lines.append(f"# PORT is set by IKOMA for each process from the manifest ({ports}).")
    lines.append("")
    for variable in manifest.variables:
        if variable.name in POSTGRES_VARIABLES and manifest.database:
            continue  # listed in the database block below
        note = "required" if variable.required else "optional"
        lines.append(
            f"# {variable.name} ({note})" + (f": {variable.description}" if variable.description else "")
        )
        prefix = "" if variable.required else "#"
        lines.append(f"{prefix}{variable.name}={variable.default or ''}")
    process_env = sorted({key for p in manifest.processes for key in p.env})
    if process_env:
        lines.append("# set in the manifest (a value here overrides nothing: the manifest wins):")
        lines.extend(f"# {key}" for key in process_env)
    if manifest.database:
        database = names.database_name(manifest.name)
        lines += [
            "",
            "# PostgreSQL (required): db.create writes these values itself, with a generated password",
            f"POSTGRES_DB={database}",
            f"POSTGRES_USER={database}",
            "POSTGRES_PASSWORD=",
            "POSTGRES_HOST=",
            "POSTGRES_PORT=5432",
        ]
    return "\n".join(lines) + "\n"
