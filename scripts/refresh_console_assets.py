#!/usr/bin/env python3
"""Vendor the console's third-party assets from the npm registry, pinned, with their licences.

    python3 scripts/refresh_console_assets.py

For each pin below: read the version's registry metadata, download its tarball, check the tarball
against the registry's `dist.integrity` (sha512), extract only the files the console uses and the
licence into `src/ikoma/console/static/vendor/<name>-<version>/`, remove other versions of that
package, and rewrite `vendor/VERSIONS.md` (name, version, tarball URL, checksums of the tarball and of
every vendored file; tests/unit/test_console_assets.py holds the files to it). Standard library only:
no Node, no build step. To move to another version, change its pin and run this again.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
VENDOR = Path(__file__).resolve().parent.parent / "src" / "ikoma" / "console" / "static" / "vendor"
TIMEOUT = 60


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    files: dict[str, str]  # path in the package -> name in the vendored directory
    licence: str  # the licence file's path in the package

    @property
    def directory(self) -> str:
        return f"{self.name}-{self.version}"


PINS = (
    # htmx 2.0.x: partial page updates (hx-get of fragments); 4.x is another API
    Pin("htmx.org", "2.0.11", {"dist/htmx.min.js": "htmx.min.js"}, "LICENSE"),
    # uPlot 1.6.x: the machine page's time series charts
    Pin(
        "uplot",
        "1.6.32",
        {"dist/uPlot.iife.min.js": "uPlot.iife.min.js", "dist/uPlot.min.css": "uPlot.min.css"},
        "LICENSE",
    ),
)


def fetch(url: str) -> bytes:
    if not url.startswith("https://"):
        raise SystemExit(f"refusing a non-https URL: {url}")
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:  # noqa: S310 - https only, checked above
        data: bytes = answer.read()
        return data


def checked_tarball(pin: Pin) -> tuple[bytes, str, str]:
    """The tarball, its URL and its integrity string, once its sha512 matches the registry's."""
    meta = json.loads(fetch(f"{REGISTRY}/{pin.name}/{pin.version}"))
    dist = meta["dist"]
    url, integrity = dist["tarball"], dist["integrity"]
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise SystemExit(f"{pin.name}@{pin.version}: unexpected integrity algorithm {algorithm}")
    data = fetch(url)
    if base64.b64encode(hashlib.sha512(data).digest()).decode() != expected:
        raise SystemExit(f"{pin.name}@{pin.version}: tarball does not match the registry's sha512")
    return data, url, integrity


def extract(pin: Pin, tarball: bytes) -> dict[str, bytes]:
    wanted = {**pin.files, pin.licence: "LICENSE"}
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive.getmembers():
            inner = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if inner in wanted and member.isfile():
                handle = archive.extractfile(member)
                if handle is not None:
                    found[wanted[inner]] = handle.read()
    missing = sorted(set(wanted.values()) - found.keys())
    if missing:
        raise SystemExit(f"{pin.name}@{pin.version}: not in the tarball: {missing}")
    return found


def main() -> int:
    VENDOR.mkdir(parents=True, exist_ok=True)
    packages, files = [], []
    for pin in PINS:
        tarball, url, integrity = checked_tarball(pin)
        contents = extract(pin, tarball)
        for old in VENDOR.glob(f"{pin.name}-*"):
            if old.is_dir() and old.name != pin.directory:
                shutil.rmtree(old)
        target = VENDOR / pin.directory
        target.mkdir(exist_ok=True)
        for name, data in sorted(contents.items()):
            (target / name).write_bytes(data)
            files.append((f"{pin.directory}/{name}", hashlib.sha256(data).hexdigest()))
        packages.append((pin, url, integrity, hashlib.sha256(tarball).hexdigest()))
        print(f"vendored {pin.name}@{pin.version}: {', '.join(sorted(contents))}", file=sys.stderr)
    lines = [
        "# Vendored console assets",
        "",
        "Written by `scripts/refresh_console_assets.py` (do not edit by hand): each package is the npm",
        "registry's tarball of that version, checked against the registry's sha512 `dist.integrity`; only",
        "the files the console uses and the licence are kept. `tests/unit/test_console_assets.py` checks",
        "every file below against its sha256.",
        "",
        "| name | version | tarball | tarball sha256 | npm integrity |",
        "|---|---|---|---|---|",
        *[f"| {p.name} | {p.version} | {url} | {sha} | {integ} |" for p, url, integ, sha in packages],
        "",
        "| file | sha256 |",
        "|---|---|",
        *[f"| {path} | {sha} |" for path, sha in files],
        "",
    ]
    (VENDOR / "VERSIONS.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
