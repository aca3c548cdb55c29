"""Releases: what `deploy.up` deployed, as a sha256 manifest of the app's files plus a copy of them.

Kept under `<app>/.ikoma/releases/<id>/` (`manifest.json` and `files/`), the last N of them, with
`<app>/.ikoma/releases/current` naming the release the app should match. `.env` is hashed (a
changed secret is a changed configuration) but its content is never copied: a rollback restores
code and config files and leaves the secrets as they are now.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ikoma.runner.apps.errors import RELEASE_NOT_FOUND, AppError
from ikoma.runner.apps.supervisor import STATE_DIR

RELEASES = "releases"
CURRENT = "current"
MANIFEST = "manifest.json"
FILES = "files"
# Runtime state and caches change while the app runs; they are not part of what was deployed.
EXCLUDED_DIRS = frozenset({STATE_DIR, "__pycache__", ".git"})
EXCLUDED_SUFFIXES = (".pyc",)
NOT_COPIED = frozenset({".env"})  # hashed only: secrets are never stored twice
RELEASE_ID_RE = re.compile(r"(?P<seq>\d{4,})-\d{8}T\d{6}Z")

FileEntry = dict[str, Any]


def releases_dir(app_dir: Path) -> Path:
    return app_dir / STATE_DIR / RELEASES


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _excluded(parts: tuple[str, ...]) -> bool:
    return any(part in EXCLUDED_DIRS for part in parts[:-1]) or parts[-1].endswith(EXCLUDED_SUFFIXES)


def scan(app_dir: Path) -> tuple[dict[str, FileEntry], list[str]]:
    """Every deployed file (path → sha256, size, mode or symlink target) and every directory."""
    files: dict[str, FileEntry] = {}
    dirs: list[str] = []
    for current, subdirs, filenames in os.walk(app_dir):
        base = Path(current)
        rel_base = base.relative_to(app_dir)
        subdirs[:] = sorted(d for d in subdirs if d not in EXCLUDED_DIRS)
        for name in list(subdirs):
            if (base / name).is_symlink():  # os.walk does not descend into links; record them as links
                subdirs.remove(name)
                filenames.append(name)
            else:
                dirs.append((rel_base / name).as_posix())
        for name in sorted(filenames):
            rel = (rel_base / name).as_posix()
            if _excluded(Path(rel).parts):
                continue
            path = base / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                files[rel] = {
                    "symlink": target,
                    "sha256": hashlib.sha256(f"symlink:{target}".encode()).hexdigest(),
                }
            elif stat.S_ISREG(info.st_mode):
                files[rel] = {
                    "sha256": _sha256_file(path),
                    "size": info.st_size,
                    "mode": stat.S_IMODE(info.st_mode),
                }
    return files, sorted(dirs)


def fingerprint(files: dict[str, FileEntry]) -> str:
    canonical = json.dumps(
        {path: entry["sha256"] for path, entry in sorted(files.items())}, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def diff(expected: dict[str, FileEntry], actual: dict[str, FileEntry]) -> list[dict[str, str | None]]:
    """Files that differ: `expected`/`actual` are sha256 digests, None for a missing or an extra file."""
    out: list[dict[str, str | None]] = []
    for path in sorted(set(expected) | set(actual)):
        want = expected.get(path, {}).get("sha256")
        have = actual.get(path, {}).get("sha256")
        if want != have:
            out.append({"path": path, "expected": want, "actual": have})
    return out


def _ids(app_dir: Path) -> list[str]:
    try:
        entries = [p.name for p in releases_dir(app_dir).iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []
    found = [name for name in entries if RELEASE_ID_RE.fullmatch(name)]
    return sorted(found, key=lambda name: int(name.split("-", 1)[0]))


def load(app_dir: Path, release_id: str) -> dict[str, Any]:
    if release_id not in _ids(app_dir):  # also what keeps a hostile id away from the path join
        raise AppError(RELEASE_NOT_FOUND, f"no release {release_id!r} for {app_dir.name}")
    data: dict[str, Any] = json.loads((releases_dir(app_dir) / release_id / MANIFEST).read_text())
    return data


def summary(release: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": release["id"],
        "createdAt": release["createdAt"],
        "fingerprint": release["fingerprint"],
        "files": len(release["files"]),
    }


def current_id(app_dir: Path) -> str | None:
    try:
        value = (releases_dir(app_dir) / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    return value if value in _ids(app_dir) else None


def current(app_dir: Path) -> dict[str, Any] | None:
    release_id = current_id(app_dir)
    return load(app_dir, release_id) if release_id else None


def list_summaries(app_dir: Path) -> list[dict[str, Any]]:
    return [summary(load(app_dir, release_id)) for release_id in _ids(app_dir)]


def _set_current(app_dir: Path, release_id: str) -> None:
    path = releases_dir(app_dir) / CURRENT
    tmp = path.with_name(".current.tmp")
    tmp.write_text(release_id + "\n")
    os.replace(tmp, path)


def _copy_entry(source_root: Path, target_root: Path, rel: str, entry: FileEntry) -> None:
    target = target_root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    if "symlink" in entry:
        os.symlink(entry["symlink"], target)
    else:
        shutil.copy2(source_root / rel, target, follow_symlinks=False)


def record(app_dir: Path, keep: int, *, healthy: bool | None = None) -> dict[str, Any]:
    """Snapshot the app as a new current release; drop the oldest ones beyond `keep`."""
    files, dirs = scan(app_dir)
    ids = _ids(app_dir)
    seq = int(ids[-1].split("-", 1)[0]) + 1 if ids else 1
    now = datetime.now(UTC)
    release_id = f"{seq:04d}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    target = releases_dir(app_dir) / release_id
    staging = releases_dir(app_dir) / f".{release_id}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / FILES).mkdir(parents=True)
    for rel, entry in files.items():
        if rel not in NOT_COPIED:
            _copy_entry(app_dir, staging / FILES, rel, entry)
    release = {
        "id": release_id,
        "app": app_dir.name,
        "createdAt": now.isoformat(),
        "fingerprint": fingerprint(files),
        "healthy": healthy,
        "files": files,
        "dirs": dirs,
    }
    (staging / MANIFEST).write_text(json.dumps(release, indent=1, sort_keys=True))
    os.replace(staging, target)  # a release appears whole or not at all
    _set_current(app_dir, release_id)
    for old in _ids(app_dir)[:-keep]:
        shutil.rmtree(releases_dir(app_dir) / old, ignore_errors=True)
    return release


def mark_health(app_dir: Path, release_id: str, healthy: bool) -> None:
    path = releases_dir(app_dir) / release_id / MANIFEST
    data = json.loads(path.read_text())
    data["healthy"] = healthy
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def verify(app_dir: Path) -> dict[str, Any]:
    release = current(app_dir)
    if release is None:
        return {"verified": False, "release": None, "differences": [], "reason": "no release recorded"}
    files, _ = scan(app_dir)
    differences = diff(release["files"], files)
    return {"verified": not differences, "release": summary(release), "differences": differences}


def previous_id(app_dir: Path) -> str | None:
    """The release before the current one (what a rollback without a `release` param restores)."""
    ids = _ids(app_dir)
    now = current_id(app_dir)
    if now is None:
        return ids[-1] if ids else None
    index = ids.index(now)
    return ids[index - 1] if index > 0 else None


def restore(app_dir: Path, release_id: str) -> dict[str, Any]:
    """Make the app's files exactly the release's (`.env` excepted) and make it the current one."""
    release = load(app_dir, release_id)
    stored = releases_dir(app_dir) / release_id / FILES
    wanted: dict[str, FileEntry] = release["files"]
    actual, _ = scan(app_dir)
    removed = [rel for rel in actual if rel not in wanted and rel not in NOT_COPIED]
    for rel in removed:
        (app_dir / rel).unlink()
    restored = []
    for rel, entry in wanted.items():
        if rel in NOT_COPIED:
            continue
        if actual.get(rel, {}).get("sha256") != entry["sha256"] or actual.get(rel, {}).get(
            "mode"
        ) != entry.get("mode"):
            _copy_entry(stored, app_dir, rel, entry)
            restored.append(rel)
    for rel in release.get("dirs", []):
        (app_dir / rel).mkdir(parents=True, exist_ok=True)
    _set_current(app_dir, release_id)
    return {"release": summary(release), "restored": sorted(restored), "removed": sorted(removed)}
