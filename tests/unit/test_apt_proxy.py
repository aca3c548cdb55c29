"""apt's proxy on agent machines: the options apt-get gets for one run, and the claim answer's field.

The playbooks run against the fake programs of test_runner_builtins (no real apt-get is ever run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ikoma.api.schemas import ClaimedOrder
from ikoma.runner.builtins import apt as apt_builtin
from ikoma.runner.builtins import apt_proxy
from ikoma.runner.execution import ExecutionContext
from ikoma.runner.playbooks import REGISTRY, PlaybookResult
from ikoma.ssh import playbooks as ssh_playbooks
from ikoma.ssh.remote import RemoteContext
from tests.unit.test_runner_builtins import FIXTURES, Fakes

PROXY = "http://apt-cacher.example.net:3142"
PROXY_OPTIONS = ["-o", f"Acquire::http::Proxy={PROXY}", "-o", f"Acquire::https::Proxy={PROXY}"]


@pytest.fixture(autouse=True)
def no_reboot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apt_builtin, "REBOOT_ROOT", FIXTURES / "apt" / "no_reboot_required")


async def run(key: str, params: dict[str, Any], proxy: str | None) -> PlaybookResult:
    return await REGISTRY[key](ExecutionContext("order-1", params, apt_proxy_url=proxy), params)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    """An apt-get whose every call (update, simulation, the real run) prints a simulated upgrade."""
    fakes = Fakes(tmp_path, monkeypatch)
    fakes.fixture("apt-get", "apt/debian12_upgrade_captured.txt")
    fakes.fixture("apt-mark", "apt/debian12_showhold_empty_captured.txt")
    return fakes


def test_no_proxy_means_no_option() -> None:
    assert apt_proxy.options(None) == []
    assert apt_proxy.options("") == []


def test_a_proxy_sets_both_the_http_and_the_https_proxy() -> None:
    assert apt_proxy.options(PROXY) == PROXY_OPTIONS
    assert apt_proxy.options("https://[2001:db8::1]:3128/") == [
        "-o", "Acquire::http::Proxy=https://[2001:db8::1]:3128/",
        "-o", "Acquire::https::Proxy=https://[2001:db8::1]:3128/",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "url",
    [
        "ftp://proxy.example.net",
        "http://",
        "proxy.example.net:3142",
        "http://user:secret@proxy.example.net:3142",
        "http://proxy.example.net:3142 -o APT::Get::AllowUnauthenticated=true",
        "http://proxy.example.net;rm -rf /",
        'http://proxy.example.net/"x',
        "http://proxy.example.net/\nAcquire::x=1",
        "http://proxy.example.net/{x}",
    ],
)
def test_a_url_apt_must_not_be_given_is_refused(url: str) -> None:
    with pytest.raises(apt_proxy.ProxyRefused):
        apt_proxy.options(url)


def test_the_ssh_playbooks_pass_the_same_options() -> None:
    assert ssh_playbooks._proxy_options(RemoteContext("o", {}, apt_proxy_url=PROXY)) == PROXY_OPTIONS
    assert ssh_playbooks._proxy_options(RemoteContext("o", {})) == []


async def test_analyze_with_a_proxy_passes_it_to_update_and_simulation(fakes: Fakes) -> None:
    result = await run("apt.analyze", {"refresh": True}, PROXY)
    assert result.errors == [], result
    update, simulate, held = fakes.logged()
    assert update[1:] == ["apt-get", *PROXY_OPTIONS, "update"]
    assert simulate[1:] == ["apt-get", "-s", "-o", "Debug::NoLocking=1", *PROXY_OPTIONS, "dist-upgrade"]
    assert held[1:] == ["apt-mark", "showhold"]  # apt-mark fetches nothing: no proxy there


async def test_analyze_without_a_proxy_passes_no_proxy_option(fakes: Fakes) -> None:
    result = await run("apt.analyze", {"refresh": True}, None)
    assert result.errors == [], result
    assert not [arg for call in fakes.logged() for arg in call if "Proxy" in arg]
    assert fakes.logged()[0][1:] == ["apt-get", "update"]


async def test_upgrade_with_a_proxy_passes_it_to_the_plan_and_the_real_run(fakes: Fakes) -> None:
    result = await run("apt.upgrade", {"packages": ["bash"]}, PROXY)
    assert result.errors == [], result
    plan, real = fakes.logged()
    action = ["install", "--only-upgrade", "bash"]
    assert plan[1:] == ["apt-get", "-s", "-o", "Debug::NoLocking=1", *PROXY_OPTIONS, *action]
    assert real == [
        "noninteractive", "apt-get", "-y",
        "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
        *PROXY_OPTIONS, *action,
    ]  # fmt: skip


@pytest.mark.parametrize("key", ["apt.analyze", "apt.upgrade"])
async def test_a_refused_proxy_fails_the_order_before_apt_runs(fakes: Fakes, key: str) -> None:
    """Never a silent fall back to going direct: a network that only allows the proxy would see it."""
    result = await run(key, {}, "http://proxy.example.net:3142 -o Dir::Etc=/tmp")
    assert [e["code"] for e in result.errors] == ["apt_proxy_invalid"]
    assert result.steps == []
    assert fakes.logged() == []


def _claimed(**extra: Any) -> dict[str, Any]:
    now = "2026-12-07T19:00:00Z"
    return {
        "id": "0b6e5d1c-7f3a-4c2e-9a51-2d8f6c1e4b70", "status": "CLAIMED", "server_id": "s", "runner_id": "r",
        "playbook_key": "apt.analyze", "action": "run", "params": {}, "attempt": 1, "max_attempts": 1,
        "timeout_s": 60, "lease_expires_at": now, "cancel_requested": False, "created_at": now,
        "updated_at": now, "claimed_at": now, "started_at": None, "finished_at": None, "not_before": None,
        "report_version": None, "report_summary": None, "status_reason": "claimed", "lease_token": "t",
        **extra,
    }  # fmt: skip


def test_the_claim_answer_carries_the_proxy_only_when_there_is_one() -> None:
    without = json.loads(ClaimedOrder.model_validate(_claimed()).model_dump_json(by_alias=True))
    assert "aptProxyUrl" not in without
    carried = json.loads(
        ClaimedOrder.model_validate(_claimed(apt_proxy_url=PROXY)).model_dump_json(by_alias=True)
    )
    assert carried["aptProxyUrl"] == PROXY
    assert {k: v for k, v in carried.items() if k != "aptProxyUrl"} == without
