"""The console's vendored assets are exactly what VERSIONS.md says (pinned, checksummed, licensed), and
they are found through the installed package, as a wheel or an editable install serves them."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

import pytest

from ikoma.console import rendering

VENDOR = files("ikoma.console").joinpath("static", "vendor")
ROW = re.compile(r"^\| (?P<file>[^|]+?) \| (?P<sha>[0-9a-f]{64}) \|$")
PACKAGE_ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<version>[^|]+?) \| (?P<url>https://[^|]+?) \|")


def versions_md() -> str:
    return VENDOR.joinpath("VERSIONS.md").read_text()


def listed_files() -> dict[str, str]:
    return {m["file"]: m["sha"] for line in versions_md().splitlines() if (m := ROW.match(line))}


def vendored_files() -> set[str]:
    found = set()
    for directory in VENDOR.iterdir():
        if directory.is_dir():
            found |= {f"{directory.name}/{entry.name}" for entry in directory.iterdir() if entry.is_file()}
    return found


def test_every_vendored_file_is_listed_with_its_sha256_and_matches_it() -> None:
    listed = listed_files()
    assert listed, "VERSIONS.md lists no file"
    assert set(listed) == vendored_files()
    for path, sha in listed.items():
        data = VENDOR.joinpath(*path.split("/")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha, f"{path} changed since it was vendored"


def test_every_vendored_package_carries_its_licence_and_its_npm_tarball_url() -> None:
    packages = [m for line in versions_md().splitlines() if (m := PACKAGE_ROW.match(line))]
    assert {p["name"] for p in packages} >= {"htmx.org", "uplot"}
    for package in packages:
        name, version = package["name"], package["version"]
        assert package["url"] == f"https://registry.npmjs.org/{name}/-/{name}-{version}.tgz"
        licence = VENDOR.joinpath(f"{name}-{version}", "LICENSE").read_text()
        assert "Permission is hereby granted" in licence or "BSD" in licence, f"{name}: no licence text"


@pytest.mark.parametrize(("package", "pinned"), [("htmx.org", r"2\.0\.\d+"), ("uplot", r"1\.6\.\d+")])
def test_the_pinned_major_versions_are_vendored_once(package: str, pinned: str) -> None:
    versions = [
        d.name.removeprefix(f"{package}-") for d in VENDOR.iterdir() if d.name.startswith(f"{package}-")
    ]
    assert len(versions) == 1, versions
    assert re.fullmatch(pinned, versions[0]), versions


def test_pages_link_the_vendored_files_and_our_own_by_content_digest() -> None:
    url = rendering.vendor_url("uplot", "uPlot.iife.min.js")
    path, _, digest = url.removeprefix("/static/").partition("?v=")
    data = VENDOR.parent.joinpath(*path.split("/")).read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()[:16]
    for own in ("ikoma.js", "ikoma.css"):
        assert rendering.static_url(own).startswith(f"/static/{own}?v=")


def test_templates_and_static_files_are_found_through_the_installed_package() -> None:
    package = files("ikoma.console")
    for name in ("base.html", "login.html", "fleet.html", "machine.html"):
        assert package.joinpath("templates", name).is_file(), name
    assert rendering.static_file("ikoma.js") is not None
    assert rendering.environment().get_template("base.html") is not None


@pytest.mark.parametrize(
    "path", ["../rendering.py", "vendor/../../pages.py", ".hidden", "", "a//b", "nope.js"]
)
def test_a_static_path_outside_the_static_folder_or_missing_is_not_served(path: str) -> None:
    assert rendering.static_file(path) is None
