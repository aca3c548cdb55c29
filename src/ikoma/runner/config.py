"""Runner settings: flags win over the environment, which wins over the config file."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_API_URL = "IKOMA_API_URL"
ENV_RUNNER_ID = "IKOMA_RUNNER_ID"
ENV_TOKEN = "IKOMA_RUNNER_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_DATA_DIR = "IKOMA_DATA_DIR"
ENV_STATE_DIR = "IKOMA_RUNNER_STATE_DIR"
ENV_CLAIM_LEASE = "IKOMA_CLAIM_LEASE"
ENV_CONTAINMENT = "IKOMA_RUNNER_CONTAINMENT"

# Also how often a running order learns of its cancel: with the default kill grace (5 s, SIGTERM to
# SIGKILL) a cancelled step is dead within 10 s of the cancel.
DEFAULT_LEASE_HEARTBEAT = 4.0
DEFAULT_KILL_GRACE = 5.0
CONTAINMENT_MODES = ("auto", "cgroup", "session")


class ConfigError(Exception):
    """The runner cannot start: settings are missing or malformed (the message says which)."""


@dataclass(frozen=True)
class Credentials:
    api_url: str
    runner_id: str
    token: str


@dataclass(frozen=True)
class AgentSettings:
    """Tuning of the agent loop; defaults are the production values, tests shorten them."""

    parallel: int = 1
    state_dir: Path = Path(".")
    heartbeat_interval: float = 15.0
    lease_heartbeat_interval: float = DEFAULT_LEASE_HEARTBEAT
    claim_wait: float = 25.0
    kill_grace: float = DEFAULT_KILL_GRACE
    backoff_cap: float = 30.0
    spool_retry_interval: float = 10.0
    containment: str = field(default_factory=lambda: containment_mode())


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_DATA_DIR):
        return Path(env[ENV_DATA_DIR]) / "runner.json"
    return Path.home() / ".config" / "ikoma" / "runner.json"


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_STATE_DIR):
        return Path(env[ENV_STATE_DIR])
    if env.get(ENV_DATA_DIR):
        return Path(env[ENV_DATA_DIR]) / "runner-state"
    return Path.home() / ".local" / "state" / "ikoma" / "runner"


def lease_heartbeat_interval(env: Mapping[str, str] | None = None) -> float:
    """A third of the server's lease, so two heartbeats may be lost before the lease runs out."""
    env = os.environ if env is None else env
    raw = env.get(ENV_CLAIM_LEASE)
    if not raw:
        return DEFAULT_LEASE_HEARTBEAT
    try:
        lease = float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_CLAIM_LEASE} must be a number of seconds, got {raw!r}") from None
    if lease <= 0:
        raise ConfigError(f"{ENV_CLAIM_LEASE} must be > 0, got {raw!r}")
    return min(DEFAULT_LEASE_HEARTBEAT, lease / 3)


def containment_mode(env: Mapping[str, str] | None = None) -> str:
    """How steps are contained: `auto` (a cgroup v2 leaf when writable, else the session sweep),
    `cgroup` (refuse to start without it) or `session`."""
    env = os.environ if env is None else env
    raw = env.get(ENV_CONTAINMENT, "").strip() or "auto"
    if raw not in CONTAINMENT_MODES:
        raise ConfigError(f"{ENV_CONTAINMENT} must be one of {', '.join(CONTAINMENT_MODES)}, got {raw!r}")
    return raw


def read_config_file(path: Path) -> dict[str, Any]:
    """A JSON or TOML file with apiUrl/runnerId/token (TOML when the name ends in .toml)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read runner config {path}: {exc.strerror}") from None
    try:
        data: Any = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"runner config {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"runner config {path} must hold an object with apiUrl, runnerId and token")
    return data


def resolve_credentials(
    *,
    api_url: str | None,
    runner_id: str | None,
    token: str | None,
    config_path: Path | None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    env = os.environ if env is None else env
    file_values: dict[str, Any] = {}
    path = config_path or default_config_path(env)
    if config_path is not None or path.exists():
        # an explicit --config must exist; the default path is only read when it is there
        file_values = read_config_file(path)

    def pick(flag: str | None, env_name: str, key: str) -> str | None:
        for value in (flag, env.get(env_name), file_values.get(key)):
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    resolved = {
        "api_url": pick(api_url, ENV_API_URL, "apiUrl"),
        "runner_id": pick(runner_id, ENV_RUNNER_ID, "runnerId"),
        "token": pick(token, ENV_TOKEN, "token"),
    }
    missing = [
        f"{flag} / {env_name} / {key}"
        for (name, flag, env_name, key) in (
            ("api_url", "--api-url", ENV_API_URL, "apiUrl"),
            ("runner_id", "--runner-id", ENV_RUNNER_ID, "runnerId"),
            ("token", "--token", ENV_TOKEN, "token"),
        )
        if resolved[name] is None
    ]
    if missing:
        raise ConfigError(
            "runner settings are incomplete; missing (flag / environment / config key): "
            + ", ".join(missing)
            + f" (config file: {path}; create it with `ikoma runner register`)"
        )
    return Credentials(
        api_url=str(resolved["api_url"]).rstrip("/"),
        runner_id=str(resolved["runner_id"]),
        token=str(resolved["token"]),
    )


def write_config_file(path: Path, values: Mapping[str, str]) -> None:
    """Write credentials readable by the owner only, atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".toml":
        text = "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    else:
        text = json.dumps(dict(values), indent=2) + "\n"
    # O_CREAT with 0600: the token is never readable by others, not even for an instant
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
