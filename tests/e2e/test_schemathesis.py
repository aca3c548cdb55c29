"""Scenario 21: schemathesis against the live OpenAPI document finds no 5xx and no answer the document
does not describe (status, content type, body), for every role, on both backends.

A real `ikoma serve` per backend, this module's own (fuzzing creates, patches and deletes what it
finds); schemathesis loads the document from its `/openapi.json`. Every operation gets a bounded number
of generated cases, valid and invalid, derandomized (the same cases every run: a fixed seed), so a run is
reproducible; a failure prints schemathesis's report, a curl line per failing case included.

schemathesis runs as its own process (`python -m schemathesis.cli run`, through tests/processes.py):
its pytest integration for a schema loaded from a fixture (`schemathesis.pytest.from_fixture`) reads
`Node._nodeid`, which pytest 9 no longer has.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import processes, support

pytestmark = [pytest.mark.e2e]

MAX_EXAMPLES = 8  # per operation and phase; the coverage phase adds its boundary cases
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
RUN_TIMEOUT = 600.0
RUNNER_TAG = "runner"
CLAIM_NEXT = "/v1/runner/orders/claim-next"
ACCEPT = {"accept": "application/json, text/event-stream"}  # what MCP's transport asks for


def config(headers: dict[str, str]) -> str:
    """schemathesis.toml for one role's run."""
    header_lines = "\n".join(f"{name} = {json.dumps(value)}" for name, value in headers.items())
    return f"""
workers = 1
[generation]
mode = "all"
max-examples = {MAX_EXAMPLES}
# derandomized: the same cases every run (the fixed seed), so a failure is reproducible
deterministic = true
database = "none"
# credentials are the role's (headers below), never generated ones
with-security-parameters = false
[headers]
{header_lines}
# A runner's claim may be held up to `wait` seconds (30) when nothing is queued: fuzzing it would spend
# minutes waiting. The wait is tested in tests/e2e/test_runner_reliability.py; its bounds still are here
# (the admin and observer runs, which are refused before any wait).
[[operations]]
include-path = "{CLAIM_NEXT}"
parameters = {{ wait = 0 }}
# The SSE streams answer for as long as the client listens: fuzzing would wait on the first one
# forever. Their answers, refusals included, are tested in tests/e2e/test_event_stream.py.
[[operations]]
include-path-regex = "/stream$"
enabled = false
"""


@pytest.fixture(scope="module", params=support.BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    """This module's own server per backend: destructive fuzzing must not reach another module."""
    live = None
    for live in support.live_server_per_module(request, tmp_path_factory):
        yield live
    log = live.read_log() if live else ""
    assert "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def credentials(server: support.LiveServer) -> dict[str, dict[str, str]]:
    """Headers per role: the admin key, an observer API client's token, a registered runner's pair."""
    with server.admin() as admin:
        observer = admin.post(
            "/v1/api-clients", json={"name": f"fuzz-observer-{uuid.uuid4().hex[:8]}", "role": "observer"}
        )
        assert observer.status_code == 201, observer.text
        runner = admin.post("/v1/runners", json={"name": f"fuzz-runner-{uuid.uuid4().hex[:8]}"})
        assert runner.status_code == 201, runner.text
    return {
        "admin": {"X-Api-Key": server.admin_key},
        "observer": {"Authorization": f"Bearer {observer.json()['token']}"},
        "runner": {"x-runner-id": runner.json()["id"], "x-runner-token": runner.json()["token"]},
    }


def schemathesis_run(server: support.LiveServer, headers: dict[str, str], work: Path, *filters: str) -> str:
    """Run schemathesis against `server`; its report when anything failed, else ''."""
    config_file = work / "schemathesis.toml"
    config_file.write_text(config(headers))
    report = work / "report.json"
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config_file),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        CHECKS,
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--output-truncate",
        "true",
        "--no-color",
        *filters,
    ]
    done = processes.run(argv, timeout=RUN_TIMEOUT, text=True, cwd=work, env=support.clean_env())
    if done.returncode == 0:
        return ""
    return f"exit {done.returncode}\n{done.stdout[-20000:]}\n{done.stderr[-5000:]}"


@pytest.mark.parametrize("role", ["admin", "observer"])
def test_every_answer_is_one_the_openapi_document_describes(
    server: support.LiveServer, credentials: dict[str, dict[str, str]], role: str, tmp_path: Path
) -> None:
    """No 5xx, and every status, content type and body as documented, for a caller with this role.

    The runner routes are included: with these credentials they answer 401, which must be documented.
    """
    failures = schemathesis_run(server, credentials[role], tmp_path)
    assert not failures, failures


def test_runner_routes_answer_a_runner_as_documented(
    server: support.LiveServer, credentials: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    """The runner routes, fuzzed with a registered runner's credentials (so bodies are read and checked)."""
    failures = schemathesis_run(server, credentials["runner"], tmp_path, "--include-tag", RUNNER_TAG)
    assert not failures, failures


@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_an_mcp_message_not_sent_as_json_is_415_in_the_one_error_shape(
    server: support.LiveServer, content_type: str | None
) -> None:
    """MCP's transport would answer a bare-text 400 without a Content-Type; the guard answers first."""
    headers = {"content-type": content_type} if content_type else {}
    with server.admin() as admin:
        response = admin.post(
            "/mcp", content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', headers=headers
        )
    assert response.status_code == 415, response.text
    assert response.json()["reason"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/orders", '{"serverId": "%s", "playbookKey": "system.test_ping", "params": {"n": %d}}'),
        ("/mcp", '{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"n": %d}}'),
    ],
)
def test_an_integer_past_64_bits_is_422_not_a_server_error(
    server: support.LiveServer, path: str, body: str
) -> None:
    """Found by this fuzzing: such an integer reached orjson (fingerprint, stored JSON) and was a 500."""
    huge = -5575179562534913966080
    values: tuple[Any, ...] = (str(uuid.uuid4()), huge) if path == "/v1/orders" else (huge,)
    with server.admin() as admin:
        response = admin.post(
            path, content=(body % values).encode(), headers={"content-type": "application/json", **ACCEPT}
        )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["type"] == "integer_out_of_range"
