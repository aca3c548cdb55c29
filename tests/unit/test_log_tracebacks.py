"""A logged exception carries its frames but never their local variables (they may hold secrets)."""

from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from ikoma import logs


def test_a_logged_exception_shows_frames_but_no_local_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    structlog.reset_defaults()  # loggers cached by earlier tests wrote to the old stderr
    logs.configure("info")
    log = structlog.get_logger("test")

    def open_credentials() -> None:
        password = "hunter2-secret-password"  # noqa: F841 - the local a traceback must not show
        raise RuntimeError("connection failed")

    try:
        open_credentials()
    except RuntimeError:
        log.exception("step raised")

    line = out.getvalue().strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["exception"][0]["exc_type"] == "RuntimeError"
    assert entry["exception"][0]["frames"], "the frames are still there"
    assert "hunter2-secret-password" not in line
    structlog.reset_defaults()
