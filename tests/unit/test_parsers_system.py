"""System probe parsers against /proc and command output captured on Debian 12 plus composed cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikoma.runner.parsers.system import (
    detect_virtualization,
    machine_kind,
    parse_cpuinfo,
    parse_df,
    parse_ip_addr_json,
    parse_loadavg,
    parse_meminfo,
    parse_nvidia_smi_csv,
    parse_os_release,
    read_device_tree_model,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "system"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def test_captured_debian12_os_release_gives_debian_family_and_codename() -> None:
    info = parse_os_release(_read("os-release.debian12_captured"))
    assert info["family"] == "debian"
    assert info["versionId"] == "12"
    assert info["version"] == "12 (bookworm)"
    assert info["codename"] == "bookworm"
    assert info["prettyName"] == "Debian GNU/Linux 12 (bookworm)"


def test_ubuntu_stays_ubuntu_even_though_it_is_debian_like() -> None:
    info = parse_os_release(_read("os-release.ubuntu2204_composed"))
    assert (info["family"], info["codename"], info["idLike"]) == ("ubuntu", "jammy", ["debian"])


@pytest.mark.parametrize(
    ("fixture", "family"),
    [("os-release.rocky9_composed", "rhel"), ("os-release.raspios12_composed", "debian")],
)
def test_derivatives_map_to_their_family(fixture: str, family: str) -> None:
    assert parse_os_release(_read(fixture))["family"] == family


def test_unknown_distribution_uses_id_like_then_falls_back_to_unknown() -> None:
    mint = parse_os_release('ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_CODENAME=virginia\n')
    assert mint["family"] == "ubuntu"
    assert parse_os_release("ID=plan9\n")["family"] == "unknown"
    assert parse_os_release("")["family"] == "unknown"


def test_captured_meminfo_converts_kib_to_bytes_and_uses_memavailable() -> None:
    mem = parse_meminfo(_read("meminfo_captured"))
    assert mem["totalBytes"] == 24684084 * 1024
    assert mem["availableBytes"] == 23910600 * 1024
    assert mem["usedBytes"] == mem["totalBytes"] - mem["availableBytes"]
    assert mem["usedPercent"] is not None
    assert 0 <= mem["usedPercent"] <= 100


def test_meminfo_without_memavailable_estimates_from_free_buffers_cached() -> None:
    mem = parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n")
    assert mem["availableBytes"] == 400 * 1024
    assert mem["usedBytes"] == 600 * 1024
    assert mem["usedPercent"] == 60.0


def test_captured_loadavg_gives_three_loads_and_process_counts() -> None:
    load = parse_loadavg(_read("loadavg_captured"))
    assert (load["load1"], load["load5"], load["load15"]) == (0.29, 0.82, 1.14)
    assert (load["runnable"], load["processes"]) == (2, 137)


def test_malformed_loadavg_is_rejected() -> None:
    with pytest.raises(ValueError, match="loadavg"):
        parse_loadavg("")


def test_captured_cpuinfo_counts_logical_and_physical_cores() -> None:
    cpu = parse_cpuinfo(_read("cpuinfo_captured"))
    assert cpu == {"model": "AMD EPYC", "cores": 2, "physicalCores": 2, "sockets": 1, "boardModel": None}


def test_raspberry_pi_cpuinfo_exposes_soc_and_board_model() -> None:
    cpu = parse_cpuinfo(_read("cpuinfo.raspberrypi4_composed"))
    assert cpu["cores"] == 4
    assert cpu["model"] == "BCM2835"
    assert cpu["boardModel"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert cpu["physicalCores"] is None


def test_captured_df_reports_root_usage_without_warning() -> None:
    df = parse_df(_read("df_captured.txt"))
    assert [fs["mountpoint"] for fs in df["filesystems"]] == ["/"]
    root = df["filesystems"][0]
    assert root["device"] == "/dev/vda"
    assert root["sizeBytes"] == 270553174016
    assert df["rootUsedPercent"] == root["usedPercent"] == 23
    assert root["warning"] is None
    assert df["warnings"] == []


def test_df_flags_warning_at_85_and_critical_at_95_percent() -> None:
    df = parse_df(_read("df_full_disks_composed.txt"))
    levels = {fs["mountpoint"]: fs["warning"] for fs in df["filesystems"]}
    assert levels == {
        "/": "warning",
        "/boot/efi": None,
        "/srv/backup": "warning",
        "/mnt/media disk": "critical",
    }
    assert [(w["mountpoint"], w["severity"]) for w in df["warnings"]] == [
        ("/", "warning"),
        ("/srv/backup", "warning"),
        ("/mnt/media disk", "critical"),
    ]
    assert df["rootUsedPercent"] == 92


@pytest.mark.parametrize(
    ("percent", "level"), [(84, None), (85, "warning"), (94, "warning"), (95, "critical")]
)
def test_df_thresholds_are_inclusive(percent: int, level: str | None) -> None:
    # French header on purpose: the header row is skipped by position, never by wording.
    header = "Sys. de fichiers blocs-1B Utilisé Disponible Capacité Monté sur"
    text = f"{header}\n/dev/x 100 {percent} 1 {percent}% /data\n"
    assert parse_df(text)["filesystems"][0]["warning"] == level


def test_captured_systemd_detect_virt_docker_is_a_container() -> None:
    virt = detect_virtualization(_read("systemd_detect_virt_captured.txt"))
    assert virt == {"virtualization": "docker", "type": "container"}
    assert machine_kind(virt) == "container"


@pytest.mark.parametrize(
    ("output", "dmi", "expected_kind"),
    [
        ("none\n", None, "physical"),
        ("kvm\n", None, "vm"),
        ("lxc\n", None, "lxc"),
        ("", "Standard PC (Q35 + ICH9, 2009)", "vm"),
        ("", "VMware Virtual Platform", "vm"),
        (None, "PowerEdge R640", "unknown"),
    ],
)
def test_machine_kind_from_virtualization(output: str | None, dmi: str | None, expected_kind: str) -> None:
    assert machine_kind(detect_virtualization(output, dmi)) == expected_kind


def test_proxmox_flag_on_bare_metal_gives_proxmox_host() -> None:
    assert machine_kind(detect_virtualization("none"), proxmox_host=True) == "proxmox_host"


def test_raspberry_pi_board_model_from_device_tree_wins() -> None:
    board = read_device_tree_model(FIXTURES / "rpi_root")
    assert board == "Raspberry Pi 4 Model B Rev 1.4"
    assert machine_kind(detect_virtualization("none"), board_model=board) == "raspberry_pi"
    assert read_device_tree_model(FIXTURES) is None


def test_captured_ip_addr_json_lists_interfaces_macs_and_addresses() -> None:
    interfaces = {i["name"]: i for i in parse_ip_addr_json(_read("ip_addr_captured.json"))}
    assert interfaces["lo"]["mac"] is None
    assert [a["address"] for a in interfaces["lo"]["addresses"]] == ["127.0.0.1", "::1"]
    eth0 = interfaces["eth0"]
    assert eth0["state"] == "UP"
    assert eth0["mac"] == "02:fc:00:00:00:01"
    assert {a["family"] for a in eth0["addresses"]} == {"inet", "inet6"}
    assert all(a["prefixLen"] is not None for a in eth0["addresses"])


def test_ip_addr_json_rejects_non_array() -> None:
    with pytest.raises(ValueError, match="JSON array"):
        parse_ip_addr_json('{"ifname": "eth0"}')


def test_nvidia_smi_csv_converts_mib_to_bytes() -> None:
    probe = parse_nvidia_smi_csv(_read("nvidia_smi_two_gpus_composed.csv"))
    assert probe["error"] is None
    assert [g["name"] for g in probe["gpus"]] == ["NVIDIA GeForce RTX 3090", "NVIDIA A100-SXM4-40GB"]
    assert probe["gpus"][0]["memoryTotalBytes"] == 24576 * 1024 * 1024
    assert probe["gpus"][1]["driverVersion"] == "535.129.03"


def test_nvidia_smi_driver_failure_is_reported_as_error_without_gpus() -> None:
    probe = parse_nvidia_smi_csv(_read("nvidia_smi_no_driver_composed.txt"))
    assert probe["gpus"] == []
    assert probe["error"] is not None
    assert probe["error"].startswith("NVIDIA-SMI has failed")


def test_nvidia_smi_not_available_memory_becomes_none() -> None:
    (gpu,) = parse_nvidia_smi_csv("GRID T4-4Q, [N/A], [N/A]\n")["gpus"]
    assert gpu["memoryTotalBytes"] is None
    assert gpu["driverVersion"] is None
