"""Parsers for the hardware/metrics probe: os-release, /proc files, df, ip, nvidia-smi.

All functions take the text a command printed (or a file's content) and return plain typed
dicts with camelCase keys, ready to be embedded in a JSON report.  Only
:func:`read_device_tree_model` touches the filesystem, under an explicit root.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Literal, TypedDict

DISK_WARNING_PERCENT = 85
DISK_CRITICAL_PERCENT = 95


class OsRelease(TypedDict):
    id: str | None
    idLike: list[str]
    family: str
    version: str | None
    versionId: str | None
    codename: str | None
    prettyName: str | None


class MemInfo(TypedDict):
    totalBytes: int | None
    availableBytes: int | None
    usedBytes: int | None
    usedPercent: float | None
    swapTotalBytes: int | None
    swapFreeBytes: int | None


class LoadAvg(TypedDict):
    load1: float
    load5: float
    load15: float
    runnable: int | None
    processes: int | None


class CpuInfo(TypedDict):
    model: str | None
    cores: int
    physicalCores: int | None
    sockets: int | None
    boardModel: str | None


DiskLevel = Literal["warning", "critical"]


class Filesystem(TypedDict):
    device: str
    mountpoint: str
    sizeBytes: int
    usedBytes: int
    availableBytes: int
    usedPercent: int
    warning: DiskLevel | None


class DiskWarning(TypedDict):
    mountpoint: str
    usedPercent: int
    severity: DiskLevel
    message: str


class DfResult(TypedDict):
    filesystems: list[Filesystem]
    rootUsedPercent: int | None
    warnings: list[DiskWarning]


class Virtualization(TypedDict):
    virtualization: str
    type: Literal["vm", "container", "none", "unknown"]


class IpAddress(TypedDict):
    family: str
    address: str
    prefixLen: int | None
    scope: str | None


class NetInterface(TypedDict):
    name: str
    mac: str | None
    state: str | None
    mtu: int | None
    linkType: str | None
    addresses: list[IpAddress]


class Gpu(TypedDict):
    index: int
    name: str
    memoryTotalBytes: int | None
    driverVersion: str | None


class GpuProbe(TypedDict):
    gpus: list[Gpu]
    error: str | None


# os-release ID (and ID_LIKE tokens) -> the family IKOMA's playbooks branch on.
_FAMILIES: dict[str, str] = {
    "ubuntu": "ubuntu",
    "debian": "debian",
    "raspbian": "debian",
    "rhel": "rhel",
    "centos": "rhel",
    "rocky": "rhel",
    "almalinux": "rhel",
    "ol": "rhel",
    "fedora": "fedora",
    "sles": "suse",
    "suse": "suse",
    "opensuse": "suse",
    "opensuse-leap": "suse",
    "opensuse-tumbleweed": "suse",
    "arch": "arch",
    "alpine": "alpine",
}


def parse_os_release(text: str) -> OsRelease:
    """Parse /etc/os-release into family (debian/ubuntu/rhel/...), version, codename, prettyName."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            # The file is shell-quoted by specification; shlex handles both quote styles.
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        values[key.strip()] = parts[0] if parts else ""
    os_id = values.get("ID", "").lower() or None
    id_like = values.get("ID_LIKE", "").lower().split()
    # ID wins (Ubuntu has ID_LIKE=debian but must stay "ubuntu"); derivatives such as Mint
    # (ID_LIKE="ubuntu debian") take the first family their ID_LIKE names.
    family = "unknown"
    for candidate in ([os_id] if os_id else []) + id_like:
        if candidate in _FAMILIES:
            family = _FAMILIES[candidate]
            break
    return OsRelease(
        id=os_id,
        idLike=id_like,
        family=family,
        version=values.get("VERSION") or None,
        versionId=values.get("VERSION_ID") or None,
        codename=values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME") or None,
        prettyName=values.get("PRETTY_NAME") or None,
    )


def _proc_kv(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values.setdefault(key.strip(), value.strip())
    return values


def _kib(values: dict[str, str], key: str) -> int | None:
    raw = values.get(key)
    if raw is None:
        return None
    number = raw.split()[0]
    return int(number) * 1024 if number.isdigit() else None


def parse_meminfo(text: str) -> MemInfo:
    """Parse /proc/meminfo into bytes; used = total - available (what `free` calls used)."""
    values = _proc_kv(text)
    total = _kib(values, "MemTotal")
    available = _kib(values, "MemAvailable")
    if available is None:
        # Kernels before 3.14 lack MemAvailable; free+buffers+cached is the classic estimate.
        parts = [_kib(values, k) for k in ("MemFree", "Buffers", "Cached")]
        available = sum(p for p in parts if p is not None) if any(p is not None for p in parts) else None
    used = total - available if total is not None and available is not None else None
    used_percent = round(used * 100 / total, 1) if used is not None and total else None
    return MemInfo(
        totalBytes=total,
        availableBytes=available,
        usedBytes=used,
        usedPercent=used_percent,
        swapTotalBytes=_kib(values, "SwapTotal"),
        swapFreeBytes=_kib(values, "SwapFree"),
    )


def parse_loadavg(text: str) -> LoadAvg:
    """Parse /proc/loadavg (``0.28 0.84 1.15 2/138 21857``) into load1/5/15 and process counts."""
    fields = text.split()
    if len(fields) < 3:
        raise ValueError(f"unexpected /proc/loadavg content: {text!r}")
    runnable: int | None = None
    processes: int | None = None
    if len(fields) >= 4 and "/" in fields[3]:
        left, _, right = fields[3].partition("/")
        if left.isdigit() and right.isdigit():
            runnable, processes = int(left), int(right)
    return LoadAvg(
        load1=float(fields[0]),
        load5=float(fields[1]),
        load15=float(fields[2]),
        runnable=runnable,
        processes=processes,
    )


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse /proc/cpuinfo into CPU model and core counts (x86 and ARM/Raspberry Pi layouts)."""
    model: str | None = None
    board: str | None = None
    logical = 0
    physical: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    current_socket = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            logical += 1
            current_socket = ""
        elif key in ("model name", "cpu model") and model is None:
            model = value
        elif key == "Hardware" and model is None:
            # Older Raspberry Pi kernels only name the SoC (e.g. BCM2835) on ARM.
            model = value
        elif key == "Model":
            # ARM boards print a board-level "Model : Raspberry Pi 4 Model B Rev 1.4".
            board = value
        elif key == "physical id":
            current_socket = value
            sockets.add(value)
        elif key == "core id":
            physical.add((current_socket, value))
    return CpuInfo(
        model=model,
        cores=logical,
        physicalCores=len(physical) or None,
        sockets=len(sockets) or None,
        boardModel=board,
    )


def _disk_level(percent: int) -> DiskLevel | None:
    if percent >= DISK_CRITICAL_PERCENT:
        return "critical"
    if percent >= DISK_WARNING_PERCENT:
        return "warning"
    return None


def parse_df(text: str) -> DfResult:
    """Parse ``df -P -B1`` output into filesystems with usedPercent and a warning level (85 %/95 %)."""
    filesystems: list[Filesystem] = []
    warnings: list[DiskWarning] = []
    lines = text.splitlines()
    # The header is localised ("Sys. de fichiers ..."), so it is skipped by position.
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < 6 or not fields[4].endswith("%"):
            continue
        device, size, used, avail, capacity = fields[:5]
        # -P guarantees one line per filesystem, but mount points may contain spaces.
        mountpoint = " ".join(fields[5:])
        if not (size.isdigit() and used.isdigit() and avail.isdigit()):
            continue
        percent_text = capacity.rstrip("%")
        percent = int(percent_text) if percent_text.isdigit() else 0
        level = _disk_level(percent)
        filesystems.append(
            Filesystem(
                device=device,
                mountpoint=mountpoint,
                sizeBytes=int(size),
                usedBytes=int(used),
                availableBytes=int(avail),
                usedPercent=percent,
                warning=level,
            )
        )
        if level is not None:
            warnings.append(
                DiskWarning(
                    mountpoint=mountpoint,
                    usedPercent=percent,
                    severity=level,
                    message=f"{mountpoint} is {percent}% full",
                )
            )
    root = next((fs["usedPercent"] for fs in filesystems if fs["mountpoint"] == "/"), None)
    return DfResult(filesystems=filesystems, rootUsedPercent=root, warnings=warnings)


# systemd-detect-virt identifiers (man systemd-detect-virt) grouped by what they mean for us.
_CONTAINERS = frozenset(
    {"lxc", "lxc-libvirt", "docker", "podman", "openvz", "systemd-nspawn", "rkt", "wsl", "proot", "pouch"}
)
_VMS = frozenset(
    {
        "qemu",
        "kvm",
        "amazon",
        "zvm",
        "vmware",
        "microsoft",
        "oracle",
        "powervm",
        "xen",
        "bochs",
        "uml",
        "parallels",
        "bhyve",
        "qnx",
        "acrn",
        "apple",
        "sre",
        "google",
    }
)
# DMI product names seen on common hypervisors, for hosts without systemd-detect-virt.
_DMI_HINTS: tuple[tuple[str, str], ...] = (
    ("kvm", "kvm"),
    ("standard pc (", "qemu"),
    ("vmware", "vmware"),
    ("virtualbox", "oracle"),
    ("virtual machine", "microsoft"),
    ("hvm domu", "xen"),
    ("google compute engine", "google"),
    ("bochs", "bochs"),
    ("parallels", "parallels"),
    ("bhyve", "bhyve"),
)


def detect_virtualization(
    systemd_detect_virt_output: str | None, dmi_product_name: str | None = None
) -> Virtualization:
    """Classify virtualization from ``systemd-detect-virt`` output, falling back to the DMI product name."""
    detected = (systemd_detect_virt_output or "").strip().lower()
    if detected:
        detected = detected.splitlines()[0].strip()
        if detected == "none":
            return Virtualization(virtualization="none", type="none")
        if detected in _CONTAINERS:
            return Virtualization(virtualization=detected, type="container")
        if detected in _VMS:
            return Virtualization(virtualization=detected, type="vm")
        # A newer systemd may know hypervisors we do not; it still said "not none".
        return Virtualization(virtualization=detected, type="vm")
    product = (dmi_product_name or "").strip().lower()
    for needle, name in _DMI_HINTS:
        if needle in product:
            return Virtualization(virtualization=name, type="vm")
    # Without systemd-detect-virt, a bare-metal product name is not proof of "none".
    return Virtualization(virtualization="unknown", type="unknown")


def machine_kind(
    virtualization: Virtualization,
    *,
    board_model: str | None = None,
    proxmox_host: bool = False,
) -> str:
    """Derive physical | vm | lxc | container | raspberry_pi | proxmox_host | unknown."""
    if board_model and "raspberry pi" in board_model.lower():
        return "raspberry_pi"
    if virtualization["type"] == "container":
        return "lxc" if virtualization["virtualization"].startswith("lxc") else "container"
    if virtualization["type"] == "vm":
        return "vm"
    if virtualization["type"] == "none":
        # A Proxmox node is bare metal too, but playbooks must treat it with more care.
        return "proxmox_host" if proxmox_host else "physical"
    return "unknown"


def read_device_tree_model(root: str | Path = "/") -> str | None:
    """Read ``proc/device-tree/model`` under ``root`` (ARM boards); None when absent."""
    path = Path(root) / "proc" / "device-tree" / "model"
    if not path.is_file():
        return None
    # The kernel exposes the string NUL-terminated.
    return path.read_bytes().rstrip(b"\x00").decode("utf-8", errors="replace").strip() or None


def parse_ip_addr_json(text: str) -> list[NetInterface]:
    """Parse ``ip -j addr`` into interfaces with name, mac, state, mtu and addresses."""
    data: Any = json.loads(text) if text.strip() else []
    interfaces: list[NetInterface] = []
    if not isinstance(data, list):
        raise ValueError("ip -j addr did not return a JSON array")
    for item in data:
        if not isinstance(item, dict) or "ifname" not in item:
            continue
        addresses: list[IpAddress] = []
        for addr in item.get("addr_info") or []:
            if not isinstance(addr, dict) or "local" not in addr:
                continue
            prefix = addr.get("prefixlen")
            addresses.append(
                IpAddress(
                    family=str(addr.get("family", "")),
                    address=str(addr["local"]),
                    prefixLen=int(prefix) if isinstance(prefix, int) else None,
                    scope=str(addr["scope"]) if "scope" in addr else None,
                )
            )
        link_type = item.get("link_type")
        mac = item.get("address")
        mtu = item.get("mtu")
        interfaces.append(
            NetInterface(
                name=str(item["ifname"]),
                # Loopback and tunnels report a placeholder or no hardware address.
                mac=str(mac) if mac and link_type not in ("loopback", "none") else None,
                state=str(item["operstate"]) if "operstate" in item else None,
                mtu=mtu if isinstance(mtu, int) else None,
                linkType=str(link_type) if link_type is not None else None,
                addresses=addresses,
            )
        )
    return interfaces


def parse_nvidia_smi_csv(text: str) -> GpuProbe:
    """Parse ``nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits``."""
    gpus: list[Gpu] = []
    error: str | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3:
            # nvidia-smi prints prose instead of CSV when the driver is not loaded
            # ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver...").
            error = error or line
            continue
        name, memory, driver = fields
        gpus.append(
            Gpu(
                index=len(gpus),
                name=name,
                # nounits => memory.total is in MiB; "[N/A]" happens on some vGPU/MIG setups.
                memoryTotalBytes=int(memory) * 1024 * 1024 if memory.isdigit() else None,
                driverVersion=driver if driver and not driver.startswith("[") else None,
            )
        )
    return GpuProbe(gpus=gpus, error=error)
