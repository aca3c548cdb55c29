"""Importing the API stays cheap: what only some commands need is imported where it is used.

Issue 9: on a loaded machine importing the API took 46 s, long enough to expire the tests' start-up
deadlines. What is measured here is which packages come with `import ikoma.api.app`, not a duration.
"""

from __future__ import annotations

import subprocess
import sys

# alembic and mako: migrations (applied by `ikoma serve` before the app is built, and by `ikoma db`);
# mcp: the /mcp endpoint, built on its first request; uvicorn: only `ikoma serve` runs a server
LAZY = ("alembic", "mako", "mcp", "uvicorn")


def test_importing_the_api_leaves_migrations_mcp_and_uvicorn_unimported() -> None:
    code = "import sys, ikoma.api.app; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    imported = set(done.stdout.split())
    assert "fastapi" in imported  # the probe saw the import happen
    assert sorted(imported & set(LAZY)) == []
