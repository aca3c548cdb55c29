"""The README's "A first order in one minute" block, pasted as written into a fresh copy of the project.

The block runs under `bash -e` in a temporary directory holding the files a clone would hold (tracked,
and new files not ignored: what the next commit would carry), in a process group of its own that is
killed on every path (its `make run &` included). What the test sets around the block, never in it:
- `PORT`: a free port, so the block runs beside anything on 3000 (the block must follow it everywhere);
- no `IKOMA_*`, `DATABASE_URL` or `MAKE*` variable from the calling environment;
- `.venv`: its `bin/` is the test's own virtual environment and its install stamp is fresh, so the
  block's `make install` has nothing to do (a real install takes a minute and needs the network).
  `IKOMA_TEST_README_INSTALL=1` lets `make install` build a real `.venv` in the copy instead.
After the block, while its server still runs, the test reads the fleet with the key the block made.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import processes, support

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## A first order in one minute"
FULL_INSTALL = os.environ.get("IKOMA_TEST_README_INSTALL") == "1"
BLOCK_TIMEOUT = 900.0 if FULL_INSTALL else 300.0
KEY_FILE = ".first-run-admin-key"
PENDING = {"QUEUED", "CLAIMED", "RUNNING"}


def readme_block(readme: str) -> str:
    """The first ```bash block after the heading, exactly as a reader copies it."""
    section = readme.split(HEADING, 1)[1]
    found = re.search(r"^```bash\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    assert found, f"no ```bash block under {HEADING!r} in README.md"
    return found.group(1)


def fresh_copy(target: Path) -> None:
    """The files a clone of this checkout would get, with their modes."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():  # deleted in the working tree
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)


def reuse_virtualenv(target: Path) -> None:
    """A `.venv` whose bin/ is this interpreter's, stamped as installed after pyproject.toml."""
    venv = target / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.prefix) / "bin", target_is_directory=True)
    (venv / ".installed").touch()


def block_env(port: int) -> dict[str, str]:
    env = support.clean_env(PORT=str(port))
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def get(port: int, key: str, path: str) -> Any:
    answer = httpx.get(
        f"http://127.0.0.1:{port}{path}", headers={"X-Api-Key": key}, timeout=30, trust_env=False
    )
    assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text}"
    return answer.json()


def test_the_readme_first_order_block_passes_in_a_fresh_copy(tmp_path: Path) -> None:
    clone = tmp_path / "ikoma"
    clone.mkdir()
    fresh_copy(clone)
    if not FULL_INSTALL:
        reuse_virtualenv(clone)
    port = support.free_port()
    block = readme_block((clone / "README.md").read_text())
    # after the block, in the same shell: keep the key it generated, to look at what it left behind
    script = f'{block}\nprintf %s "$IKOMA_ADMIN_KEY" > {KEY_FILE}\n'
    log_path = tmp_path / "block.log"
    shell = processes.spawn(
        ["bash", "-e", "-c", script],
        env=block_env(port),
        log_path=log_path,
        cwd=clone,
        stdin=subprocess.DEVNULL,
    )
    try:
        try:
            code = shell.wait(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the block did not end in {BLOCK_TIMEOUT:g}s:\n{processes.read_tail(log_path, 200)}")
        output = log_path.read_text(errors="replace")
        assert code == 0, f"the block failed (exit {code}); its output and the server's:\n{output}"
        key = (clone / KEY_FILE).read_text()
        check_what_the_block_left(port, key, output)
    finally:
        processes.kill(shell)  # the whole group: `make run &`, `ikoma up` and its local runner


def check_what_the_block_left(port: int, key: str, output: str) -> None:
    """The order ran, the smoke passed and left nothing in the fleet, `/` leads to the docs."""
    assert "smoke: all" in output, output
    assert f"ready: IKOMA answers at http://127.0.0.1:{port}\n" in output, output  # `ikoma wait`
    assert "; orders for server local-" in output, output  # `ikoma up`'s own ready line

    servers = get(port, key, "/v1/servers")
    local = [s for s in servers if s["labels"].get("ikoma") == "local"]
    assert len(local) == 1, servers
    # the order the block created by the local server's name ran on this machine and succeeded
    pings = get(port, key, f"/v1/orders?serverId={local[0]['id']}&playbookKey=system.test_ping")["items"]
    assert [(o["status"], o["params"]) for o in pings] == [("SUCCEEDED", {"message": "hi"})], pings

    # the smoke left nothing in the fleet: no server, no attention item, no pending order, no live runner
    assert [s["name"] for s in servers if s["name"].startswith("smoke-")] == [], servers
    fleet = get(port, key, "/v1/fleet/summary")
    assert [i["serverName"] for i in fleet["items"]] == [local[0]["name"]], fleet
    live_ids = {s["id"] for s in servers}
    orders = get(port, key, "/v1/orders?limit=500")["items"]
    orphans = [o for o in orders if o["serverId"] not in live_ids]
    assert orphans, "the smoke's order should stay as history"
    assert [o for o in orphans if o["status"] in PENDING] == [], orphans
    smoke_runners = [r for r in get(port, key, "/v1/runners") if r["name"].startswith("smoke-")]
    assert smoke_runners, "the smoke's runner should stay as history, revoked"
    assert all(r["revokedAt"] and r["serverId"] is None for r in smoke_runners), smoke_runners

    # a browser opening the address is asked to sign in to the console; the API documentation stays public
    root = httpx.get(
        f"http://127.0.0.1:{port}/", headers={"Accept": "text/html"}, follow_redirects=False, trust_env=False
    )
    assert (root.status_code, root.headers["location"]) == (303, "/login")
    assert httpx.get(f"http://127.0.0.1:{port}/docs", trust_env=False).status_code == 200
