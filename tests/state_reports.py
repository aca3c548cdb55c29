"""Real v2 reports of the built-in playbooks, for the state tests.

Each one is produced by running the real playbook (apt.analyze, system.facts, system.metrics,
docker.status) against the captured/composed outputs in tests/fixtures, through fake programs
(`tests.unit.test_runner_builtins.Fakes`), and turning the result into a report exactly as the
runner agent does (`build_report`, `order_status`). `live` runs facts and metrics on this machine.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ikoma.runner.agent import build_report, order_status
from ikoma.runner.builtins import apt as apt_builtin
from ikoma.runner.execution import ExecutionContext
from ikoma.runner.playbooks import REGISTRY
from tests.unit.test_runner_builtins import FIXTURES, Fakes

DOCKER_INFO = {
    "ServerVersion": "26.1.4",
    "OperatingSystem": "Debian GNU/Linux 12",
    "Driver": "overlay2",
    "Warnings": [],
}
UP_TO_DATE = "Reading package lists...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n"


@dataclass(frozen=True)
class Produced:
    playbook_key: str
    status: str
    report: dict[str, Any]


async def _run(key: str, params: dict[str, Any] | None = None) -> Produced:
    params = params or {}
    ctx = ExecutionContext("order-state-test", params)
    result = await REGISTRY[key](ctx, params)
    return Produced(key, order_status(result, ctx), build_report(result, 1234, ctx.masker))


class ReportMaker:
    """Builds one report per call; each call gets a clean set of fake programs."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.count = 0

    def _fakes(self) -> Fakes:
        self.count += 1
        folder = self.tmp_path / f"fakes{self.count}"
        folder.mkdir()
        return Fakes(folder, self.monkeypatch)

    async def apt_analyze(
        self, fixture: str = "apt/debian12_dist_upgrade_captured.txt", *, reboot: bool = True
    ) -> Produced:
        fakes = self._fakes()
        fakes.fixture("apt-get", fixture)
        fakes.fixture("apt-mark", "apt/debian12_showhold_composed.txt")
        self._reboot(reboot)
        return await _run("apt.analyze")

    async def apt_up_to_date(self) -> Produced:
        fakes = self._fakes()
        fakes.add("apt-get", f"printf %s {shlex.quote(UP_TO_DATE)}\n")
        self._reboot(False)
        return await _run("apt.analyze")

    async def apt_failing(self) -> Produced:
        fakes = self._fakes()
        fakes.fixture("apt-get", "apt/debian12_install_unknown_package_captured.txt", exit_code=100)
        self._reboot(False)
        return await _run("apt.analyze")

    def _reboot(self, required: bool) -> None:
        root = FIXTURES / "apt" / ("reboot_required" if required else "no_reboot_required")
        self.monkeypatch.setattr(apt_builtin, "REBOOT_ROOT", root)

    async def facts(self, df: str = "system/df_captured.txt") -> Produced:
        fakes = self._fakes()
        fakes.add("systemd-detect-virt", "echo kvm\n")
        fakes.fixture("df", df)
        fakes.fixture("ip", "system/ip_addr_captured.json")
        fakes.fixture("nvidia-smi", "system/nvidia_smi_two_gpus_composed.csv")
        return await _run("system.facts")

    async def metrics(self, df: str = "system/df_captured.txt") -> Produced:
        fakes = self._fakes()
        fakes.fixture("df", df)
        return await _run("system.metrics")

    async def docker(self, *, state: str = "running") -> Produced:
        fakes = self._fakes()
        if state == "missing":
            pass
        elif state == "down":
            fakes.add(
                "docker",
                """echo '{"ServerVersion":"","ClientInfo":{}}'\n"""
                f"cat {FIXTURES / 'docker/docker_daemon_down_captured.txt'} >&2\nexit 1\n",
            )
        else:
            fakes.add(
                "docker",
                'case "$1" in\n'
                f"  info) echo {shlex.quote(json.dumps(DOCKER_INFO))} ;;\n"
                f"  ps) cat {FIXTURES / 'docker/docker_ps_a_composed.jsonl'} ;;\n"
                f"  system) cat {FIXTURES / 'docker/docker_system_df_composed.jsonl'} ;;\n"
                "esac\n",
            )
        return await _run("docker.status")


async def live(key: str) -> Produced:
    """The playbook run for real on this machine (system.facts, system.metrics)."""
    return await _run(key)
