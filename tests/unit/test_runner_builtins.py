"""Built-in playbooks against fake programs (shell scripts printing parser fixtures).

The step environment is cleaned, so fakes cannot be put first on PATH; the playbooks resolve
programs through `_common.which` and run absolute paths, and these tests monkeypatch that.
No real apt upgrade and no real docker command is ever run here.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ikoma.runner.builtins import _common
from ikoma.runner.builtins import apt as apt_builtin
from ikoma.runner.execution import ExecutionContext
from ikoma.runner.playbooks import REGISTRY, PlaybookResult, capabilities

PYTHON = shlex.quote(sys.executable)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUILTIN_KEYS = {
    "system.facts",
    "system.metrics",
    "apt.analyze",
    "apt.upgrade",
    "docker.status",
    "docker.prune",
}


class Fakes:
    """Writes fake programs into a tmp dir and makes `_common.which` find only those (and `env`)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dir = tmp_path / "bin"
        self.dir.mkdir()
        self.calls = tmp_path / "calls.log"
        self.programs: dict[str, str] = {}
        monkeypatch.setattr(_common, "which", self.which)

    def which(self, program: str) -> str | None:
        if program == "env":
            return "/usr/bin/env"
        return self.programs.get(program)

    def add(self, name: str, body: str) -> None:
        """`body` is sh; every call first logs its argv (and DEBIAN_FRONTEND) as one JSON line."""
        path = self.dir / name
        log = shlex.quote(str(self.calls))
        path.write_text(
            "#!/bin/sh\n"
            f'printf \'%s\\n\' "$DEBIAN_FRONTEND" "$0" "$@" | {PYTHON} -I -c '
            f"'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))' >> {log}\n" + body
        )
        path.chmod(0o755)
        self.programs[name] = str(path)

    def fixture(self, name: str, fixture: str, exit_code: int = 0) -> None:
        self.add(name, f"cat {shlex.quote(str(FIXTURES / fixture))}\nexit {exit_code}\n")

    def logged(self) -> list[list[str]]:
        """[DEBIAN_FRONTEND, program name, args...] per call, in order."""
        if not self.calls.exists():
            return []
        rows = [json.loads(line) for line in self.calls.read_text().splitlines()]
        return [[row[0], Path(row[1]).name, *row[2:]] for row in rows]


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    return Fakes(tmp_path, monkeypatch)


async def run(key: str, params: dict[str, Any] | None = None) -> PlaybookResult:
    params = params or {}
    return await REGISTRY[key](ExecutionContext("order-1", params), params)


def data(result: PlaybookResult, step: str | None = None) -> dict[str, Any]:
    chosen = result.steps[-1] if step is None else next(s for s in result.steps if s.name == step)
    assert chosen.data is not None
    return chosen.data


def assert_succeeded(result: PlaybookResult) -> None:
    assert result.errors == [], result
    assert {s.status for s in result.steps} <= {"SUCCEEDED", "SKIPPED"}, result


def test_builtins_are_registered_and_announced() -> None:
    assert set(REGISTRY) >= BUILTIN_KEYS
    assert set(capabilities()) >= BUILTIN_KEYS


async def test_run_captured_returns_full_merged_output(fakes: Fakes) -> None:
    fakes.add(
        "many", "i=0\nwhile [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done\necho oops >&2\nexit 3\n"
    )
    step, text = await _common.run_captured(ExecutionContext("o", {}), "many", [fakes.programs["many"]])
    assert step.status == "FAILED"
    assert step.exit_code == 3  # the wrapper passes the program's exit code through
    assert "line-0\n" in text
    assert "line-2999\n" in text
    assert "oops" in text
    assert "line-0\n" not in step.output  # the report keeps only the tail


# --- system ---------------------------------------------------------------------------------


async def test_facts_on_this_machine_with_real_programs() -> None:
    result = await run("system.facts")
    assert_succeeded(result)
    facts = data(result, "facts")
    assert result.steps[-1].name == "facts"
    assert facts["cpu"]["cores"] >= 1
    assert facts["memory"]["totalBytes"] > 0
    assert facts["disks"], facts
    assert facts["kernel"]
    assert facts["arch"]
    assert facts["os"]["family"] != ""
    assert facts["machineKind"] in {
        "physical",
        "vm",
        "lxc",
        "container",
        "raspberry_pi",
        "proxmox_host",
        "unknown",
    }
    assert f"{facts['cpu']['cores']} cores" in result.summary
    assert "GiB" in result.summary


async def test_facts_without_any_program_still_succeeds_and_says_what_is_missing(fakes: Fakes) -> None:
    result = await run("system.facts")
    assert_succeeded(result)
    assert [s.name for s in result.steps] == ["facts"]
    facts = data(result)
    assert facts["disks"] == []
    assert facts["network"] == {"interfaces": []}
    assert facts["gpus"] == []
    assert "df unavailable" in facts["problems"]
    assert "ip not found" in facts["problems"]
    assert facts["virtualization"]["type"] in {"unknown", "vm"}  # only DMI is left to decide


async def test_facts_virt_none_exit_1_is_an_answer_and_gpus_are_parsed(fakes: Fakes) -> None:
    fakes.add("systemd-detect-virt", "echo none\nexit 1\n")
    fakes.fixture("df", "system/df_captured.txt")
    fakes.fixture("ip", "system/ip_addr_captured.json")
    fakes.fixture("nvidia-smi", "system/nvidia_smi_two_gpus_composed.csv")
    result = await run("system.facts")
    assert_succeeded(result)
    virt = next(s for s in result.steps if s.name == "virtualization")
    assert virt.exit_code == 1  # kept in the report: nothing hidden
    facts = data(result)
    assert facts["virtualization"] == {"virtualization": "none", "type": "none"}
    assert facts["machineKind"] in {"physical", "proxmox_host"}
    assert [g["name"] for g in facts["gpus"]] == ["NVIDIA GeForce RTX 3090", "NVIDIA A100-SXM4-40GB"]
    assert facts["network"]["interfaces"]
    assert facts["disks"]
    assert result.summary.endswith("2 GPUs")
    assert [
        "",
        "nvidia-smi",
        "--query-gpu=name,memory.total,driver_version",
        "--format=csv,noheader,nounits",
    ] in (fakes.logged())


async def test_facts_nvidia_smi_without_driver_is_a_problem_not_a_failure(fakes: Fakes) -> None:
    fakes.fixture("nvidia-smi", "system/nvidia_smi_no_driver_composed.txt", exit_code=9)
    result = await run("system.facts")
    assert_succeeded(result)
    facts = data(result)
    assert facts["gpus"] == []
    assert any(p.startswith("nvidia-smi: NVIDIA-SMI has failed") for p in facts["problems"])


async def test_metrics_on_this_machine() -> None:
    result = await run("system.metrics")
    assert_succeeded(result)
    metrics = data(result, "metrics")
    assert set(metrics["load"]) >= {"load1", "load5", "load15"}
    assert metrics["memory"]["availableBytes"] > 0
    assert metrics["filesystems"]
    assert result.summary.startswith("load ")


async def test_metrics_full_disks_are_named_in_the_summary(fakes: Fakes) -> None:
    fakes.fixture("df", "system/df_full_disks_composed.txt")
    result = await run("system.metrics")
    assert_succeeded(result)
    metrics = data(result)
    assert {w["mountpoint"] for w in metrics["warnings"]} == {"/", "/srv/backup", "/mnt/media disk"}
    assert "/mnt/media disk is 96% full" in result.summary
    assert fakes.logged()[0][2:] == ["-P", "-B1", "-x", "tmpfs", "-x", "devtmpfs", "-x", "overlay"]


async def test_metrics_df_exit_1_with_output_is_tolerated(fakes: Fakes) -> None:
    # a stale NFS mount makes df exit 1 but every other filesystem is still printed
    fakes.add(
        "df",
        f"cat {FIXTURES / 'system/df_captured.txt'}\necho 'df: /mnt/nfs: Stale file handle' >&2\nexit 1\n",
    )
    result = await run("system.metrics")
    assert_succeeded(result)
    assert data(result)["filesystems"]


# --- apt ------------------------------------------------------------------------------------


@pytest.fixture
def reboot_root(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    def point(name: str) -> None:
        monkeypatch.setattr(apt_builtin, "REBOOT_ROOT", FIXTURES / "apt" / name)

    return point


async def test_apt_analyze_without_apt_is_not_applicable(fakes: Fakes) -> None:
    result = await run("apt.analyze")
    assert_succeeded(result)
    assert result.summary == "not applicable: no apt"
    assert data(result) == {"applicable": False, "reason": "apt not found"}


async def test_apt_analyze_parses_simulation_holds_and_reboot(
    fakes: Fakes, reboot_root: Callable[[str], None]
) -> None:
    reboot_root("reboot_required")
    fakes.fixture("apt-get", "apt/debian12_dist_upgrade_captured.txt")
    fakes.fixture("apt-mark", "apt/debian12_showhold_composed.txt")
    result = await run("apt.analyze")
    assert_succeeded(result)
    analysis = data(result, "analysis")
    assert analysis["applicable"] is True
    assert analysis["refreshed"] is False
    assert len(analysis["upgrades"]) == 124 == analysis["counts"]["upgradable"]  # more than the 4 KiB tail
    assert analysis["counts"]["security"] == sum(u["security"] for u in analysis["upgrades"]) > 0
    assert analysis["held"] == ["docker-ce", "docker-ce-cli", "linux-image-amd64"]
    assert analysis["rebootRequired"] is True
    assert analysis["rebootPackages"] == ["linux-image-6.1.0-18-amd64", "libc6"]
    assert isinstance(analysis["importantLines"], list)
    assert result.summary.startswith("124 upgrades (")
    assert result.summary.endswith("3 held, reboot required")
    calls = fakes.logged()
    assert calls[0][1:] == ["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"]  # no update
    assert calls[1][1:] == ["apt-mark", "showhold"]


async def test_apt_analyze_refresh_runs_update_first(
    fakes: Fakes, reboot_root: Callable[[str], None]
) -> None:
    reboot_root("no_reboot_required")
    fakes.add(
        "apt-get",
        f'if [ "$1" = update ]; then cat {FIXTURES / "apt/apt_update_messages_composed.txt"}; exit 0; fi\n'
        f"cat {FIXTURES / 'apt/debian12_upgrade_held_keptback_composed.txt'}\n",
    )
    fakes.fixture("apt-mark", "apt/debian12_showhold_empty_captured.txt")
    result = await run("apt.analyze", {"refresh": True})
    assert_succeeded(result)
    assert [s.name for s in result.steps] == ["update", "simulate", "held", "analysis"]
    analysis = data(result)
    assert analysis["rebootRequired"] is False
    assert analysis["refreshed"] is True
    assert analysis["keptBack"]
    categories = {line["category"] for line in analysis["importantLines"]}
    assert {"error", "future_major_change"} <= categories  # update's notices are kept
    assert [c[2] for c in fakes.logged()][:2] == ["update", "-s"]


async def test_apt_analyze_refresh_must_be_boolean(fakes: Fakes) -> None:
    result = await run("apt.analyze", {"refresh": "yes"})
    assert result.errors[0]["code"] == "invalid_params"
    assert fakes.logged() == []


async def test_apt_analyze_simulation_failure_is_reported_with_apts_error(fakes: Fakes) -> None:
    fakes.fixture("apt-get", "apt/debian12_install_unknown_package_captured.txt", exit_code=100)
    result = await run("apt.analyze")
    assert result.errors
    assert result.errors[0]["step"] == "simulate"
    assert result.summary.startswith("apt simulation failed: E:")


@pytest.mark.parametrize(
    "params",
    [
        {"packages": ["-oAPT::Get::Trivial-Only=false"]},
        {"packages": ["Bash"]},
        {"packages": "bash"},
        {"packages": [1]},
        {"dryRun": "true"},
    ],
)
async def test_apt_upgrade_rejects_bad_params_before_running_anything(
    fakes: Fakes, params: dict[str, Any]
) -> None:
    fakes.fixture("apt-get", "apt/debian12_upgrade_captured.txt")
    result = await run("apt.upgrade", params)
    assert result.errors[0]["code"] == "invalid_params"
    assert fakes.logged() == []


async def test_apt_upgrade_dry_run_only_simulates(fakes: Fakes, reboot_root: Callable[[str], None]) -> None:
    reboot_root("no_reboot_required")
    fakes.fixture("apt-get", "apt/debian12_upgrade_captured.txt")
    result = await run("apt.upgrade", {"dryRun": True, "packages": ["bash", "libc6:amd64"]})
    assert_succeeded(result)
    assert [s.name for s in result.steps] == ["plan", "result"]
    assert fakes.logged() == [
        ["", "apt-get", "-s", "-o", "Debug::NoLocking=1", "install", "--only-upgrade", "bash", "libc6:amd64"]
    ]
    outcome = data(result)
    assert outcome["dryRun"] is True
    assert outcome["applied"] is False
    assert result.summary.startswith("dry run: 124 upgrades")


async def test_apt_upgrade_real_run_is_noninteractive_and_reports_reboot(
    fakes: Fakes, reboot_root: Callable[[str], None]
) -> None:
    reboot_root("reboot_required")
    # a fake apt-get: the "upgrade" only prints; nothing on this machine is changed
    fakes.add(
        "apt-get",
        f'if [ "$1" = -s ]; then cat {FIXTURES / "apt/debian12_upgrade_captured.txt"}; exit 0; fi\n'
        "echo 'Setting up bash (5.2.15-2+b13) ...'\n",
    )
    result = await run("apt.upgrade", {})
    assert_succeeded(result)
    assert [s.name for s in result.steps] == ["plan", "upgrade", "result"]
    real = fakes.logged()[1]
    assert real == [
        "noninteractive", "apt-get", "-y",
        "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", "upgrade",
    ]  # fmt: skip
    outcome = data(result)
    assert outcome["applied"] is True
    assert outcome["rebootRequired"] is True
    assert result.summary == "upgraded: 124 upgrades (" + result.summary.split("(", 1)[1]
    assert result.summary.endswith("reboot required")


async def test_apt_upgrade_failure_names_the_dpkg_error(
    fakes: Fakes, reboot_root: Callable[[str], None]
) -> None:
    reboot_root("no_reboot_required")
    fakes.add(
        "apt-get",
        f'if [ "$1" = -s ]; then cat {FIXTURES / "apt/debian12_upgrade_captured.txt"}; exit 0; fi\n'
        f"cat {FIXTURES / 'apt/dpkg_configure_errors_composed.txt'}\nexit 100\n",
    )
    result = await run("apt.upgrade", {"packages": ["nginx"]})
    assert result.errors
    assert result.errors[0]["step"] == "upgrade"
    assert result.summary.startswith("apt upgrade failed")
    assert data(result)["applied"] is False
    assert any(line["packageName"] == "nginx" for line in data(result)["importantLines"])


async def test_apt_upgrade_with_nothing_to_do_skips_the_real_run(
    fakes: Fakes, reboot_root: Callable[[str], None]
) -> None:
    reboot_root("no_reboot_required")
    fakes.add("apt-get", "echo '0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.'\n")
    result = await run("apt.upgrade", {})
    assert_succeeded(result)
    assert result.summary == "nothing to upgrade"
    assert len(fakes.logged()) == 1


# --- docker ---------------------------------------------------------------------------------

DOCKER_INFO = {"ServerVersion": "26.1.4", "OperatingSystem": "Debian GNU/Linux 12", "Driver": "overlay2"}


def fake_docker(fakes: Fakes, prune_output: str = "Total reclaimed space: 1.5GB") -> None:
    fakes.add(
        "docker",
        'case "$1" in\n'
        f"  info) echo {shlex.quote(json.dumps(DOCKER_INFO))} ;;\n"
        f"  ps) cat {FIXTURES / 'docker/docker_ps_a_composed.jsonl'} ;;\n"
        f'  system) if [ "$2" = df ]; then cat {FIXTURES / "docker/docker_system_df_composed.jsonl"}; '
        f"else echo 'Deleted Containers:'; echo {shlex.quote(prune_output)}; fi ;;\n"
        "esac\n",
    )


@pytest.mark.parametrize("key", ["docker.status", "docker.prune"])
async def test_docker_missing_is_not_applicable(fakes: Fakes, key: str) -> None:
    result = await run(key)
    assert_succeeded(result)
    assert data(result) == {"applicable": False, "reason": "docker not found"}
    assert result.summary == "not applicable: no docker"


@pytest.mark.parametrize("key", ["docker.status", "docker.prune"])
async def test_docker_engine_down_is_not_applicable(fakes: Fakes, key: str) -> None:
    fakes.add(
        "docker",
        f'echo \'{{"ServerVersion":"","ClientInfo":{{}}}}\'\n'
        f"cat {FIXTURES / 'docker/docker_daemon_down_captured.txt'} >&2\nexit 1\n",
    )
    result = await run(key)
    assert_succeeded(result)
    info = result.steps[0]
    assert info.name == "info"
    assert info.exit_code == 1
    outcome = data(result)
    assert outcome["applicable"] is False
    assert outcome["reason"] == "engine not running"
    assert outcome["error"].startswith("Cannot connect to the Docker daemon")
    assert result.summary == "not applicable: docker engine not running"
    assert len(fakes.logged()) == 1  # nothing else was tried, prune least of all


async def test_docker_status_reports_containers_stacks_and_reclaimable(fakes: Fakes) -> None:
    fake_docker(fakes)
    result = await run("docker.status")
    assert_succeeded(result)
    status = data(result, "status")
    assert status["applicable"] is True
    assert status["engine"]["serverVersion"] == "26.1.4"
    assert status["counts"]["total"] == len(status["containers"]) > 0
    assert "web" in [s["project"] for s in status["stacks"]]
    assert status["reclaimableBytes"] == status["systemDf"]["totalReclaimableBytes"] > 0
    assert result.summary.startswith("docker 26.1.4: ")
    assert "reclaimable" in result.summary
    assert [c[2:4] for c in fakes.logged()] == [["info", "--format"], ["ps", "-a"], ["system", "df"]]


@pytest.mark.parametrize(("all_images", "flags"), [(False, ["-f"]), (True, ["-f", "-a"])])
async def test_docker_prune_passes_all_and_parses_reclaimed(
    fakes: Fakes, all_images: bool, flags: list[str]
) -> None:
    fake_docker(fakes)
    result = await run("docker.prune", {"all": all_images})
    assert_succeeded(result)
    assert fakes.logged()[-1][2:] == ["system", "prune", *flags]
    assert data(result) == {"applicable": True, "all": all_images, "reclaimedBytes": 1_500_000_000}
    assert result.summary.startswith("reclaimed 1.5 GB")


async def test_docker_prune_all_must_be_boolean(fakes: Fakes) -> None:
    fake_docker(fakes)
    result = await run("docker.prune", {"all": "yes"})
    assert result.errors[0]["code"] == "invalid_params"
    assert fakes.logged() == []
