"""docker ps / system df parsers and compose grouping (composed fixtures; daemon error captured)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikoma.runner.parsers.docker import (
    compose_stacks,
    parse_docker_ps_json_lines,
    parse_size,
    parse_system_df,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "docker"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_docker_ps_lines_become_containers_with_state_health_and_exit_code() -> None:
    containers = parse_docker_ps_json_lines(_read("docker_ps_a_composed.jsonl"))
    summary = [(c["name"], c["state"], c["health"], c["exitCode"]) for c in containers]
    assert summary == [
        ("web-proxy-1", "running", "healthy", None),
        ("web-app-1", "running", "starting", None),
        ("web-db-1", "exited", None, 137),
        ("scratch", "exited", None, 0),
        ("monitoring-grafana-1", "running", "unhealthy", None),
    ]


def test_label_values_containing_commas_are_kept_whole() -> None:
    proxy = parse_docker_ps_json_lines(_read("docker_ps_a_composed.jsonl"))[0]
    labels = proxy["labels"]
    assert (
        labels["com.docker.compose.project.config_files"] == "/srv/web/compose.yml,/srv/web/compose.prod.yml"
    )
    assert labels["maintainer"] == "NGINX Docker Maintainers <docker-maint@nginx.com>"
    assert proxy["composeProject"] == "web"
    assert proxy["composeService"] == "proxy"


def test_container_without_labels_has_no_compose_project() -> None:
    scratch = parse_docker_ps_json_lines(_read("docker_ps_a_composed.jsonl"))[3]
    assert scratch["labels"] == {}
    assert scratch["composeProject"] is None


def test_captured_daemon_down_message_yields_no_containers() -> None:
    assert parse_docker_ps_json_lines(_read("docker_daemon_down_captured.txt")) == []
    assert parse_system_df(_read("docker_daemon_down_captured.txt"))["totalReclaimableBytes"] == 0


def test_compose_stacks_group_by_project_and_skip_standalone_containers() -> None:
    stacks = compose_stacks(parse_docker_ps_json_lines(_read("docker_ps_a_composed.jsonl")))
    assert [s["project"] for s in stacks] == ["monitoring", "web"]
    web = stacks[1]
    assert web["services"] == ["app", "db", "proxy"]
    assert (web["running"], web["total"]) == (2, 3)
    assert web["workingDir"] == "/srv/web"
    assert web["configFiles"] == ["/srv/web/compose.yml", "/srv/web/compose.prod.yml"]


def test_system_df_reports_reclaimable_bytes_per_type_in_decimal_units() -> None:
    df = parse_system_df(_read("docker_system_df_composed.jsonl"))
    assert df["reclaimableBytesByType"] == {
        "images": 1_717_000_000,
        "containers": 12_290,
        "localVolumes": 0,
        "buildCache": 2_530_000_000,
    }
    assert df["totalReclaimableBytes"] == sum(df["reclaimableBytesByType"].values())
    images = df["types"][0]
    assert (images["totalCount"], images["active"], images["reclaimablePercent"]) == (12, 5, 41)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0B", (0, None)), ("1.5kB", (1500, None)), ("2GB (100%)", (2_000_000_000, 100)), ("n/a", (None, None))],
)
def test_parse_size_handles_docker_human_sizes(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_size(text) == expected
