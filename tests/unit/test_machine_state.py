"""Deriving machine state, hardware, metrics, messages and rendered reports from real playbook reports."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ikoma.domain import machine_state as ms
from ikoma.domain.important import fingerprint, messages_from, normalise
from ikoma.domain.report_markdown import render
from ikoma.domain.retention import Retention
from tests.state_reports import Produced, ReportMaker, live

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def maker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReportMaker:
    return ReportMaker(tmp_path, monkeypatch)


class Folder:
    """Turns reports into numbered snapshots, the way ingestion does, and folds them."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.snapshots: list[ms.Snapshot] = []
        self.state = ms.MachineState()
        self.notices: list[ms.Notice] = []

    def add(self, produced: Produced) -> ms.Snapshot:
        snap_id = next(self.ids)
        extract = ms.extract(produced.playbook_key, produced.status, produced.report)
        snap = ms.Snapshot(
            id=snap_id,
            kind=produced.playbook_key,
            status=produced.status,
            order_id=f"order-{snap_id}",
            at=T0 + timedelta(minutes=snap_id),
            payload=extract.payload,
        )
        before = self.state
        self.state = ms.apply(before, snap)
        self.notices += ms.notices(before, self.state)
        self.snapshots.append(snap)
        return snap


async def test_apt_analyze_of_a_captured_debian_upgrade_counts_updates_security_and_reboot(
    maker: ReportMaker,
) -> None:
    produced = await maker.apt_analyze()
    assert produced.status == "SUCCEEDED"
    folder = Folder()
    folder.add(produced)
    state = folder.state
    assert state.apt_status == "updates_available"
    assert state.apt_updates == 124
    assert 0 < state.apt_security < 124
    assert state.apt_reboot_required is True
    assert state.apt_analyzed_at == T0 + timedelta(minutes=1)
    assert state.health == "warning"
    assert [n.type for n in folder.notices] == ["state.reboot_required", "state.security_updates"]
    important = ms.extract(produced.playbook_key, produced.status, produced.report).important
    reboot = [line for line in important if line["category"] == "reboot_required"]
    assert reboot == [
        {
            "source": "apt",
            "category": "reboot_required",
            "severity": "warning",
            "message": "reboot required by linux-image-6.1.0-18-amd64, libc6",
        }
    ]


async def test_up_to_date_apt_clears_counts_and_reboot_and_says_so(maker: ReportMaker) -> None:
    folder = Folder()
    folder.add(await maker.apt_analyze())
    folder.add(await maker.apt_up_to_date())
    state = folder.state
    assert (state.apt_status, state.apt_updates, state.apt_security) == ("up_to_date", 0, 0)
    assert state.apt_reboot_required is False
    assert state.health == "ok"
    assert "state.reboot_cleared" in [n.type for n in folder.notices]


async def test_failed_apt_run_records_last_error_and_keeps_the_last_counts(maker: ReportMaker) -> None:
    folder = Folder()
    folder.add(await maker.apt_analyze())
    failing = await maker.apt_failing()
    assert failing.status == "FAILED"
    snap = folder.add(failing)
    state = folder.state
    assert state.apt_status == "error"
    assert state.apt_updates == 124  # the last analysis that worked still stands
    assert state.last_error_order_id == snap.order_id
    assert state.last_error_playbook == "apt.analyze"
    assert state.last_error_message is not None
    assert "E: Unable to locate package" in state.last_error_message
    assert state.health == "error"
    assert folder.notices[-1].type == "state.error"
    important = ms.extract(failing.playbook_key, failing.status, failing.report).important
    assert important[-1]["source"] == "order"
    assert important[-1]["category"] == "error"
    # a later success of the same playbook clears the error; one of another playbook does not
    folder.add(await maker.metrics())
    assert folder.state.last_error_order_id == snap.order_id
    folder.add(await maker.apt_up_to_date())
    assert folder.state.last_error_order_id is None
    assert folder.notices[-1].type == "state.error_cleared"


async def test_facts_give_hardware_with_gpus_network_and_disk_warnings(maker: ReportMaker) -> None:
    produced = await maker.facts(df="system/df_full_disks_composed.txt")
    folder = Folder()
    snap = folder.add(produced)
    hardware = ms.hardware(snap)
    assert hardware is not None
    assert hardware["virtualization"] == "kvm"
    assert hardware["machine_kind"] == "vm"
    assert hardware["cpu_cores"]
    assert hardware["cpu_cores"] >= 1
    assert [g["name"] for g in hardware["gpus"]] == ["NVIDIA GeForce RTX 3090", "NVIDIA A100-SXM4-40GB"]
    assert hardware["network"]
    assert "/mnt/media disk is 96% full" in hardware["warnings"]
    assert folder.state.hardware_warnings == len(hardware["warnings"]) == 3
    categories = {
        m.category for m in messages_from(ms.extract("system.facts", "SUCCEEDED", produced.report).important)
    }
    assert categories == {"disk_full"}


async def test_metrics_fill_the_state_and_one_history_point(maker: ReportMaker) -> None:
    folder = Folder()
    snap = folder.add(await maker.metrics(df="system/df_full_disks_composed.txt"))
    state = folder.state
    point = ms.metrics_point(snap)
    assert point is not None
    assert point["samples"] == 1
    assert state.load1 == point["load1"] is not None
    assert state.memory_used_percent is not None
    assert state.root_used_percent == 92.0
    assert state.disk_warnings == 3
    assert state.health == "error"  # one disk is past the critical level
    assert folder.notices[0].type == "state.disk_warning"
    assert "/mnt/media disk is 96% full" in folder.notices[0].message
    # metrics never make messages: they come back every few minutes and would undo every ack
    assert ms.extract("system.metrics", "SUCCEEDED", snap.payload).important == []


async def test_docker_running_down_and_missing(maker: ReportMaker) -> None:
    folder = Folder()
    folder.add(await maker.docker())
    state = folder.state
    assert (state.docker_installed, state.docker_status) == (True, "running")
    assert state.docker_stacks >= 1
    assert state.docker_unhealthy >= 1
    assert state.docker_prunable_bytes
    assert state.docker_prunable_bytes > 0
    folder.add(await maker.docker(state="down"))
    assert (folder.state.docker_installed, folder.state.docker_status) == (True, "down")
    assert folder.state.health == "error"
    assert "state.docker_down" in [n.type for n in folder.notices]
    folder.add(await maker.docker(state="missing"))
    assert (folder.state.docker_installed, folder.state.docker_status) == (False, "not_installed")


async def test_rebuild_equals_folding_one_by_one_and_survives_pruning(maker: ReportMaker) -> None:
    folder = Folder()
    folder.add(await maker.apt_analyze())
    folder.add(await maker.metrics())
    folder.add(await maker.facts())
    folder.add(await maker.apt_failing())
    folder.add(await maker.docker())
    folder.add(await maker.metrics(df="system/df_full_disks_composed.txt"))
    folder.add(await maker.apt_failing())
    assert ms.rebuild(folder.snapshots) == folder.state
    assert ms.rebuild(list(reversed(folder.snapshots))) == folder.state  # id order, not list order
    # what the sweeper keeps: the newest, and the newest successful, snapshot per playbook
    kept: dict[int, ms.Snapshot] = {}
    for kind in {s.kind for s in folder.snapshots}:
        same = [s for s in folder.snapshots if s.kind == kind]
        kept[same[-1].id] = same[-1]
        ok = [s for s in same if s.succeeded]
        if ok:
            kept[ok[-1].id] = ok[-1]
    assert len(kept) < len(folder.snapshots)
    assert ms.rebuild(list(kept.values())) == folder.state


async def test_live_facts_and_metrics_of_this_machine_derive_state() -> None:
    folder = Folder()
    facts = folder.add(await live("system.facts"))
    metrics = folder.add(await live("system.metrics"))
    hardware = ms.hardware(facts)
    assert hardware is not None
    assert hardware["cpu_cores"]
    assert hardware["cpu_cores"] >= 1
    assert hardware["memory_bytes"]
    assert hardware["memory_bytes"] > 0
    assert ms.metrics_point(metrics) is not None
    assert folder.state.load1 is not None
    assert folder.state.facts_collected_at is not None


def test_fingerprint_ignores_numbers_and_case_but_not_server_or_category() -> None:
    assert normalise("/ is 91%  full") == normalise("/ IS 93% full")
    one = fingerprint("s1", "system", "disk_full", "/ is 91% full")
    assert one == fingerprint("s1", "system", "disk_full", "/ is 97% full")
    assert one != fingerprint("s2", "system", "disk_full", "/ is 91% full")
    assert one != fingerprint("s1", "system", "warning", "/ is 91% full")
    assert one != fingerprint("s1", "system", "disk_full", "/srv is 91% full")


def test_messages_keep_one_per_normalised_text_and_clamp_unknown_severity() -> None:
    found = messages_from(
        [
            {"source": "apt", "category": "warning", "severity": "warning", "message": "W: key 1 expired"},
            {"source": "apt", "category": "warning", "severity": "warning", "message": "W: key 2 expired"},
            {"source": "apt", "category": "error", "severity": "loud", "message": "E: broken"},
            {"source": "apt", "category": "error", "severity": "error", "message": "   "},
        ]
    )
    assert [(m.category, m.severity, m.message) for m in found] == [
        ("warning", "warning", "W: key 1 expired"),
        ("error", "warning", "E: broken"),
    ]


async def test_report_markdown_has_summary_steps_errors_and_raw_log(maker: ReportMaker) -> None:
    failing = await maker.apt_failing()
    order = {
        "id": "o-1",
        "attempt": 1,
        "status": failing.status,
        "playbook_key": failing.playbook_key,
        "params": {"refresh": False},
        "report": failing.report,
        "started_at": T0,
        "finished_at": T0,
    }
    important = ms.extract(failing.playbook_key, failing.status, failing.report).important
    artifact = {"id": "a-1", "bytes": 10, "sha256": "ab" * 32, "retention_policy": "failed"}
    rendered = render(order, server_name="web-1", important=important, artifact=artifact)
    assert rendered.title == "apt.analyze on web-1: FAILED"
    text = rendered.markdown
    assert text.startswith("# apt.analyze on web-1: FAILED\n")
    assert "## Summary" in text
    assert failing.report["summary"] in text
    assert "| 1 | simulate | FAILED | 100 |" in text
    assert "## Errors" in text
    assert "step_failed" in text
    assert "## Important messages" in text
    assert "retention `failed`" in text
    nothing = render({**order, "report": {"summary": "```"}}, server_name="x", important=[], artifact=None)
    assert "_no log was recorded for this order_" in nothing.markdown


def test_retention_keeps_failed_logs_longer_and_pinned_ones_forever() -> None:
    retention = Retention(default_days=30, failed_days=90, short_days=7)
    assert retention.policy_for(status="FAILED", playbook_key="system.metrics") == "failed"
    assert retention.policy_for(status="SUCCEEDED", playbook_key="system.metrics") == "short"
    assert retention.policy_for(status="SUCCEEDED", playbook_key="apt.analyze") == "default"
    lifetimes = [retention.lifetime_seconds(p) for p in ("short", "default", "failed")]
    assert lifetimes == sorted(lifetimes)
    assert retention.lifetime_seconds("pinned") is None
