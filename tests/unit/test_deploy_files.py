"""The deployment files under deploy/ hold together: what they reference exists and is documented.

There is no Docker engine (nor systemd as PID 1) on the machines that run this suite, so nothing here
starts a container or a unit. What can be checked is: every file parses (YAML, JSON, BuildKit's
Dockerfile parser, PromQL, `caddy adapt`, `systemd-analyze verify`, `shellcheck`), and every variable,
metric, path and service name one file uses is defined by the file, the code or the doc it points to.
Two files are also run: the image's HEALTHCHECK command against a /readyz stand-in, and the Caddyfile's
site block in a real Caddy (plain HTTP) in front of two stand-ins for the API replicas.
The external tools are installed by .ci/run; locally a missing one skips its test and says which.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dockerfile
import httpx
import promql_parser
import pytest
import yaml
from pydantic import AliasChoices

from ikoma.settings import Settings
from tests import processes, support
from tests.support import ON_CI

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
UNITS = ("ikoma-serve.service", "ikoma-runner.service")

# metrics other issue-12 work adds under exactly these names (webhook delivery, SSE); the dashboard
# may query them before they exist in src/
PENDING_METRICS = {"ikoma_webhook_deliveries_total", "ikoma_sse_subscribers"}
# series every Prometheus scrape has without the target defining them
BUILTIN_SERIES = {"up"}


def require_tool(name: str) -> str:
    """The tool's path; a missing tool skips the test locally and fails it on CI (.ci/run installs it)."""
    path = shutil.which(name)
    if path is None:
        if ON_CI:
            pytest.fail(f"{name} is required on CI (.ci/run installs it) and is not on PATH")
        pytest.skip(f"{name} is not installed (apt-get install it, or run .ci/run)")
    return path


# --- what the code and the docs define ---------------------------------------------------------------


def setting_names() -> set[str]:
    """Every environment variable Settings reads (validation aliases)."""
    names: set[str] = set()
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return names


def documented_names() -> set[str]:
    """Every `NAME` in capitals written as code in docs/configuration.md."""
    return set(re.findall(r"`([A-Z][A-Z0-9_]*)`", CONFIGURATION_DOC.read_text()))


def defined_series() -> set[str]:
    """The series names the metrics declared in src/ expose (a counter `x` is scraped as `x_total`)."""
    declared = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
    series: set[str] = set()
    for path in (ROOT / "src").rglob("*.py"):
        for kind, name in declared.findall(path.read_text()):
            if kind == "Counter":
                base = name.removesuffix("_total")
                series |= {base + "_total", base + "_created"}
            elif kind in ("Histogram", "Summary"):
                series |= {name + suffix for suffix in ("_bucket", "_sum", "_count", "_created")}
            else:
                series.add(name)
    return series


def test_settings_and_metrics_are_found_where_these_tests_look() -> None:
    """The helpers above see the real definitions (else every check below would pass on nothing)."""
    assert {"DATABASE_URL", "IKOMA_ADMIN_KEY", "IKOMA_LOG_LEVEL", "LOG_LEVEL"} <= setting_names()
    assert {"ikoma_orders", "ikoma_claims_total", "ikoma_claim_to_start_seconds_bucket"} <= defined_series()
    assert {"DATABASE_URL", "IKOMA_AUDIT_KEY"} <= documented_names()


# --- compose.yml and .env.example -------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def strings_in(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def compose_variables() -> set[str]:
    """Every ${VAR} (with or without :-default / :?error) compose interpolates; $$ is a literal $."""
    found: set[str] = set()
    for text in strings_in(compose()):
        found.update(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    return found


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value
    return values


def test_compose_runs_postgres_with_a_volume_two_api_replicas_and_caddy() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "api-1", "api-2", "caddy"}
    volumes = set(compose()["volumes"])

    postgres = services["postgres"]
    assert any(
        v.endswith(":/var/lib/postgresql/data") and v.split(":")[0] in volumes for v in postgres["volumes"]
    )
    assert "healthcheck" in postgres

    image_data_dir = dockerfile_env()["IKOMA_DATA_DIR"]
    for name in ("api-1", "api-2"):
        api = services[name]
        assert api["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert (DEPLOY / api["build"]["context"] / api["build"]["dockerfile"]).is_file()
        assert "command" not in api, "the image's CMD (ikoma serve) is what runs"
        assert api["environment"]["DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in api["environment"]["DATABASE_URL"]
        assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
        # keys a replica would otherwise generate on its own, unknown to the other replica
        assert {"IKOMA_ADMIN_KEY", "IKOMA_ENCRYPTION_KEYS", "IKOMA_AUDIT_KEY"} <= set(api["environment"])
    # one data dir (artifacts, audit checkpoints) shared by both replicas
    data_mounts = {
        next(v for v in services[name]["volumes"] if v.endswith(":" + image_data_dir))
        for name in ("api-1", "api-2")
    }
    assert len(data_mounts) == 1
    assert data_mounts.pop().split(":")[0] in volumes

    caddy = services["caddy"]
    assert {"80:80", "443:443"} <= set(caddy["ports"])
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]


def test_every_compose_variable_is_in_env_example_and_documented() -> None:
    used = compose_variables()
    assert {"POSTGRES_PASSWORD", "IKOMA_ADMIN_KEY", "DOMAIN"} <= used
    example = env_example()
    documented = documented_names()
    assert sorted(used - set(example)) == [], "missing from deploy/.env.example"
    assert sorted(used - documented) == [], "not documented in docs/configuration.md"


def test_env_example_holds_only_variables_compose_uses_and_no_secret() -> None:
    example = env_example()
    assert sorted(set(example) - compose_variables()) == [], "deploy/.env.example lists what compose ignores"
    for secret in ("POSTGRES_PASSWORD", "IKOMA_ADMIN_KEY", "IKOMA_ENCRYPTION_KEYS", "IKOMA_AUDIT_KEY"):
        assert example[secret] == "", f"{secret} must be generated by the operator, not shipped"


def test_every_ikoma_variable_in_deploy_files_is_a_setting_or_documented() -> None:
    known = setting_names() | documented_names()
    used: dict[str, set[str]] = {}
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            for name in re.findall(r"\bIKOMA_[A-Z0-9_]+\b", path.read_text()):
                used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert {"IKOMA_ADMIN_KEY", "IKOMA_DATA_DIR", "IKOMA_API_URL"} <= set(used)
    unknown = {name: sorted(files) for name, files in used.items() if name not in known}
    assert unknown == {}, "neither a setting (settings.py) nor documented (docs/configuration.md)"


# --- Caddyfile --------------------------------------------------------------------------------------


@dataclass
class Block:
    """One Caddyfile line (its tokens) and the block it opens, if any."""

    tokens: list[str]
    children: list[Block] = field(default_factory=list)

    def find(self, first: str) -> list[Block]:
        """Every block below this one, at any depth, whose first token is `first`."""
        found = []
        for child in self.children:
            if child.tokens and child.tokens[0] == first:
                found.append(child)
            found.extend(child.find(first))
        return found


def parse_caddyfile(text: str) -> Block:
    """Caddyfile lines into nested blocks: enough to check its structure (caddy adapt checks the rest)."""
    root = Block([])
    stack = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        if tokens == ["}"]:
            assert len(stack) > 1, f"Caddyfile line {number}: '}}' closes nothing"
            stack.pop()
            continue
        opens = tokens[-1] == "{"
        block = Block(tokens[:-1] if opens else tokens)
        stack[-1].children.append(block)
        if opens:
            stack.append(block)
    assert len(stack) == 1, "Caddyfile: a block is never closed"
    return root


def test_caddyfile_serves_domain_over_https_balancing_both_replicas_without_buffering_streams() -> None:
    text = (DEPLOY / "Caddyfile").read_text()
    root = parse_caddyfile(text)
    services = compose()["services"]

    globals_block = next(b for b in root.children if b.tokens == [])
    assert ["email", "{$ACME_EMAIL}"] in [b.tokens for b in globals_block.children]
    site = next(b for b in root.children if b.tokens == ["{$DOMAIN}"])
    # a bare domain as the site address is what makes Caddy get a certificate and redirect HTTP
    assert not any(t.startswith("http://") for b in root.children for t in b.tokens)

    snippet = next(b for b in root.children if b.tokens == ["(ikoma_upstreams)"])
    settings = {b.tokens[0]: b.tokens[1:] for b in snippet.children}
    upstreams = settings["to"]
    assert sorted(upstreams) == ["api-1:3000", "api-2:3000"]
    assert {u.split(":")[0] for u in upstreams} <= set(services)
    assert settings["health_uri"] == ["/readyz"]
    assert "lb_policy" in settings

    proxies = site.find("reverse_proxy")
    assert len(proxies) == 2
    assert all(["import", "ikoma_upstreams"] in [c.tokens for c in p.children] for p in proxies)
    matcher = next(b for b in site.children if b.tokens and b.tokens[0] == "@streams")
    assert matcher.tokens[1] == "path"
    assert "/v1/events/stream" in matcher.tokens[2:]
    streams = next(p for p in proxies if p.tokens[1:] == ["@streams"])
    assert ["flush_interval", "-1"] in [c.tokens for c in streams.children]
    # the metrics (public on the API) are not published on the internet
    assert ["respond", "/metrics", "404"] in [b.tokens for b in site.children]

    # every {$VAR} the Caddyfile reads is in the caddy service's environment
    assert set(re.findall(r"\{\$([A-Z_][A-Z0-9_]*)", text)) <= set(services["caddy"]["environment"])


def test_caddyfile_adapts_with_caddy_and_flushes_event_streams_at_once() -> None:
    caddy = require_tool("caddy")
    env = {**os.environ, "DOMAIN": "ikoma.example.net", "ACME_EMAIL": "ops@example.net"}
    result = subprocess.run(
        [caddy, "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    server = next(iter(config["apps"]["http"]["servers"].values()))
    assert server["listen"] == [":443"]
    site = server["routes"][0]
    assert site["match"] == [{"host": ["ikoma.example.net"]}]
    routes = site["handle"][0]["routes"]
    streams = next(
        r for r in routes if any("/v1/events/stream" in m.get("path", []) for m in r.get("match", []))
    )
    proxy = streams["handle"][0]
    assert proxy["handler"] == "reverse_proxy"
    assert proxy["flush_interval"] == -1
    assert [u["dial"] for u in proxy["upstreams"]] == ["api-1:3000", "api-2:3000"]
    assert proxy["health_checks"]["active"]["uri"] == "/readyz"
    # routes apply in order: /metrics is answered 404 before any proxy sees it
    assert routes[0]["match"] == [{"path": ["/metrics"]}]
    assert routes[0]["handle"] == [{"handler": "static_response", "status_code": 404}]


class ReplicaStub(http.server.ThreadingHTTPServer):
    """A stand-in for one API replica behind Caddy: /readyz answers `readyz_status`, /who its name,
    /metrics 200 (as the API does), /v1/events/stream one event at once and a second only once
    `release` is set, anything else 404."""

    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), ReplicaHandler)
        self.name = name
        self.readyz_status = 200
        self.release = threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class ReplicaHandler(http.server.BaseHTTPRequestHandler):
    server: ReplicaStub

    def do_GET(self) -> None:
        if self.path == "/v1/events/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b"data: first\n\n")
            self.wfile.flush()
            self.server.release.wait(60)
            self.wfile.write(b"data: second\n\n")
            return
        status, body = {
            "/readyz": (self.server.readyz_status, b""),
            "/who": (200, self.server.name.encode()),
            "/metrics": (200, b"ikoma_runners_online 1\n"),
        }.get(self.path, (404, b""))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def local_caddyfile(port: int, upstreams: list[str]) -> str:
    """deploy/Caddyfile served over plain HTTP on `port`, proxying to local stand-ins of the replicas."""
    text = (DEPLOY / "Caddyfile").read_text()
    for old, new in (
        ("{$DOMAIN} {", f"http://127.0.0.1:{port} {{"),
        ("to api-1:3000 api-2:3000", "to " + " ".join(upstreams)),
        # no admin endpoint (a fixed port shared by every Caddy on the machine), no certificates
        ("\temail {$ACME_EMAIL}\n", "\temail {$ACME_EMAIL}\n\tadmin off\n\tauto_https off\n"),
    ):
        assert text.count(old) == 1, f"deploy/Caddyfile no longer holds {old!r}: update this test"
        text = text.replace(old, new)
    return text


def test_caddy_balances_both_replicas_hides_metrics_streams_events_unbuffered_and_skips_an_unready_one(
    tmp_path: Path,
) -> None:
    """The Caddyfile's site block run by a real Caddy, in front of two stand-ins for the replicas."""
    caddy = require_tool("caddy")
    replicas = [ReplicaStub("api-1"), ReplicaStub("api-2")]
    port = support.free_port()
    config = tmp_path / "Caddyfile"
    config.write_text(local_caddyfile(port, [r.address for r in replicas]))
    log = tmp_path / "caddy.log"
    env = support.clean_env(
        ACME_EMAIL="ops@example.net",
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path),
    )
    proc = processes.spawn(
        [caddy, "run", "--config", str(config), "--adapter", "caddyfile"], env=env, log_path=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        processes.wait_ready(proc, f"{base}/readyz", log_path=log, what="caddy", timeout=60)
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as client:
            assert client.get("/metrics").status_code == 404
            assert {client.get("/who").text for _ in range(10)} == {"api-1", "api-2"}

            with client.stream("GET", "/v1/events/stream") as stream:
                events = (line for line in stream.iter_lines() if line)
                # the replica holds the response open until released: only an unbuffered proxy
                # delivers the first event now
                assert next(events) == "data: first"
                for replica in replicas:
                    replica.release.set()
                assert list(events) == ["data: second"]

            # a replica whose /readyz fails gets no more requests once Caddy's health check sees it
            replicas[1].readyz_status = 503
            deadline = time.monotonic() + 60
            while {client.get("/who").text for _ in range(6)} != {"api-1"}:
                assert time.monotonic() < deadline, f"api-2 kept getting requests; {processes.read_tail(log)}"
                time.sleep(0.5)
    finally:
        processes.stop(proc)
        for replica in replicas:
            replica.close()


# --- Dockerfile -------------------------------------------------------------------------------------


def dockerfile_commands() -> list[Any]:
    return list(dockerfile.parse_file(str(DEPLOY / "Dockerfile")))


def final_stage() -> list[Any]:
    commands = dockerfile_commands()
    last_from = max(i for i, c in enumerate(commands) if c.cmd.upper() == "FROM")
    return commands[last_from:]


def dockerfile_env() -> dict[str, str]:
    """ENV of the final stage (key value pairs, as BuildKit's parser gives them)."""
    env: dict[str, str] = {}
    for command in final_stage():
        if command.cmd.upper() == "ENV":
            env.update(zip(command.value[::2], command.value[1::2], strict=True))
    return env


def test_dockerfile_builds_a_wheel_then_runs_ikoma_serve_as_a_non_root_user() -> None:
    commands = dockerfile_commands()
    froms = [c for c in commands if c.cmd.upper() == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    assert [v.lower() for v in froms[0].value[1:]] == ["as", "build"]
    build_stage = commands[commands.index(froms[0]) : commands.index(froms[1])]
    assert any(c.cmd.upper() == "RUN" and "pip wheel" in " ".join(c.value) for c in build_stage)
    # the build stage copies what the wheel is made of, and those exist
    for command in build_stage:
        if command.cmd.upper() == "COPY":
            for source in command.value[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"

    runtime = final_stage()
    # the runtime takes the wheels from the build stage, and nothing is compiled there
    assert any(
        "from=build" in " ".join((*c.flags, *c.value)) for c in runtime if c.cmd.upper() in ("RUN", "COPY")
    )
    users = [c for c in runtime if c.cmd.upper() == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].value[0].split(":")[0]
    assert user not in ("root", "0")

    healthchecks = [c for c in runtime if c.cmd.upper() == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/readyz" in healthchecks[0].original
    cmd = next(c for c in reversed(runtime) if c.cmd.upper() == "CMD")
    assert cmd.json, "exec form: ikoma is PID 1 and gets SIGTERM itself"
    assert list(cmd.value) == ["ikoma", "serve"]

    env = dockerfile_env()
    assert env["HOST"] == "0.0.0.0"  # noqa: S104 - in a container the API listens on every interface
    volumes = [v for c in runtime if c.cmd.upper() == "VOLUME" for v in c.value]
    assert env["IKOMA_DATA_DIR"] in volumes, "the data dir is a volume"


class ReadinessStub(http.server.ThreadingHTTPServer):
    """A stand-in for the API: GET /readyz answers `readyz_status`, anything else 404."""

    readyz_status = 200

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReadinessHandler)


class ReadinessHandler(http.server.BaseHTTPRequestHandler):
    server: ReadinessStub

    def do_GET(self) -> None:
        self.send_response(self.server.readyz_status if self.path == "/readyz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_dockerfile_healthcheck_command_is_healthy_only_when_readyz_answers_200(
    status: int, healthy: bool
) -> None:
    """The image's HEALTHCHECK command, run as Docker would, against a stand-in for the API on PORT."""
    (healthcheck,) = [c for c in final_stage() if c.cmd.upper() == "HEALTHCHECK"]
    assert healthcheck.value[0] == "CMD"
    argv = json.loads(healthcheck.original[healthcheck.original.index("[") :])
    assert argv[0] == "python"
    stub = ReadinessStub()
    stub.readyz_status = status
    thread = threading.Thread(target=stub.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "PORT": str(stub.server_address[1])}
        result = subprocess.run(
            [sys.executable, *argv[1:]], capture_output=True, text=True, env=env, timeout=30, check=False
        )
    finally:
        stub.shutdown()
        stub.server_close()
    assert (result.returncode == 0) is healthy, result.stderr


def test_dockerignore_lets_the_wheel_sources_into_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "everything out by default: .venv and data never reach the builder"
    for needed in ("pyproject.toml", "README.md", "src/"):
        assert f"!{needed}" in patterns


# --- install.sh and the systemd units ---------------------------------------------------------------


def test_install_script_is_strict_and_installs_the_shipped_units() -> None:
    script = (DEPLOY / "install.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in script
    assert os.access(DEPLOY / "install.sh", os.X_OK)
    for unit in UNITS:
        assert unit in script
        assert (DEPLOY / "systemd" / unit).is_file()
    # every secret file it makes is created with mode 0600 before anything is written to it
    assert 'new_file "$ETC/admin.key" 0600' in script
    assert 'new_file "$ETC/secrets.env" 0600' in script
    assert 'new_file "$ETC/runner.env" 0600' in script
    # the runner token and the admin key travel in the environment, never on a command line
    assert "--bootstrap-token" not in script
    assert "--admin-key" not in script
    result = subprocess.run(
        ["bash", "-n", str(DEPLOY / "install.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_install_script_passes_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "--severity=style", str(DEPLOY / "install.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (a key may repeat, e.g. EnvironmentFile)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_units_run_serve_unprivileged_and_keep_apps_across_a_runner_restart() -> None:
    script = (DEPLOY / "install.sh").read_text()
    serve = unit("ikoma-serve.service")["Service"]
    assert serve["ExecStart"] == ["/opt/ikoma/venv/bin/ikoma serve"]
    assert serve["User"] not in (["root"], ["0"])
    assert serve["NoNewPrivileges"] == ["yes"]
    runner = unit("ikoma-runner.service")["Service"]
    assert runner["ExecStart"] == ["/opt/ikoma/venv/bin/ikoma runner"]
    # apps' supervisors stay in the runner's cgroup: only the runner's own process is stopped
    assert runner["KillMode"] == ["process"]
    assert runner["Delegate"] == ["yes"]
    # install.sh makes each file the units read, and the venv they run
    for service in (serve, runner):
        for path in service["EnvironmentFile"]:
            assert path.replace("/etc/ikoma", "$ETC") in script, f"install.sh does not write {path}"
    assert 'VENV="$PREFIX/venv"' in script
    assert "PREFIX=/opt/ikoma" in script


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified in a scratch root holding the system's units and a stand-in for the venv's `ikoma`."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd): the units are not verified")
    system_units = Path("/lib/systemd/system")
    if not (system_units / "sysinit.target").exists():
        pytest.skip(
            f"no systemd unit library at {system_units}: verify cannot resolve the units' dependencies"
        )
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "lib/systemd/system", symlinks=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    for name in UNITS:
        shutil.copy(DEPLOY / "systemd" / name, unit_dir / name)
    for name in UNITS:
        executable = Path(unit(name)["Service"]["ExecStart"][0].split()[0])
        stand_in = root / executable.relative_to("/")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    result = subprocess.run(
        [analyze, "verify", f"--root={root}", "--man=no", *UNITS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # unknown keys and unparsable values are only warnings (exit 0): any output is a failure
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# --- Grafana dashboard and Prometheus ---------------------------------------------------------------


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "ikoma.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def as_promql(expr: str) -> str:
    """A Grafana query with its variables replaced by what Grafana sends Prometheus."""
    return expr.replace("$__rate_interval", "1m").replace("$job", ".*")


def selectors(node: Any) -> Iterator[Any]:
    """Every vector selector of a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from selectors(arg)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from selectors(node.lhs)
        yield from selectors(node.rhs)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from selectors(node.expr)
        if node.param is not None:
            yield from selectors(node.param)
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        yield from selectors(node.expr)


def test_grafana_dashboard_loads_with_unique_panels() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "ikoma.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all({"x", "y", "w", "h"} <= set(panel["gridPos"]) for panel in dashboard["panels"])
    assert all(panel.get("targets") for panel in dashboard["panels"])
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables


def test_grafana_dashboard_queries_parse_and_use_only_defined_metrics() -> None:
    known = defined_series() | PENDING_METRICS | BUILTIN_SERIES
    queried: dict[str, list[list[tuple[str, str]]]] = {}
    for expr in dashboard_queries():
        parsed = promql_parser.parse(as_promql(expr))  # raises ValueError on a syntax error
        found = list(selectors(parsed))
        assert found, f"queries no metric: {expr}"
        for selector in found:
            matchers = [(m.name, m.value) for m in selector.matchers.matchers]
            queried.setdefault(selector.name, []).append(matchers)
    assert sorted(set(queried) - known) == [], "queried but defined nowhere in src/"
    # what issue 12 asks the dashboard to show
    assert {
        "ikoma_orders",
        "ikoma_claim_to_start_seconds_bucket",
        "ikoma_runners_online",
        "ikoma_webhook_deliveries_total",
        "ikoma_sse_subscribers",
    } <= set(queried)
    assert any(("outcome", "failed") in m for m in queried["ikoma_webhook_deliveries_total"])


def test_prometheus_example_scrapes_both_replicas_metrics() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ikoma"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    replicas = {f"{name}:3000" for name in compose()["services"] if name.startswith("api-")}
    assert targets == replicas


# --- docs -------------------------------------------------------------------------------------------


def test_operations_doc_says_how_to_use_each_deploy_file() -> None:
    text = OPERATIONS_DOC.read_text()
    assert "## Deploying on a VPS" in text
    section = text.split("## Deploying on a VPS", 1)[1].split("\n## ", 1)[0]
    for path in sorted(DEPLOY.rglob("*")):
        # .env is the operator's own copy (ignored by git), .gitignore says so
        if path.is_file() and path.name not in (".env", ".gitignore"):
            assert f"deploy/{path.relative_to(DEPLOY)}" in section, f"{path.name} is not explained"
