"""Completions that could not be delivered yet, kept on disk so a restart loses none of them."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Completion:
    order_id: str
    lease_token: str
    status: str
    report: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "leaseToken": self.lease_token,
            "status": self.status,
            "report": self.report,
            "spooledAt": datetime.now(UTC).isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(
            order_id=str(data["orderId"]),
            lease_token=str(data["leaseToken"]),
            status=str(data["status"]),
            report=dict(data["report"]),
        )


class Spool:
    """One JSON file per order in `<state dir>/spool/`; unreadable files move to `rejected/`."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "spool"
        self.rejected = self.directory / "rejected"

    def _path(self, order_id: str) -> Path:
        return self.directory / f"{_SAFE_NAME.sub('_', order_id)}.json"

    def write(self, completion: Completion) -> Path:
        """tmp file + fsync + rename + fsync(dir): after a crash the file is whole or absent."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(completion.order_id)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # lease tokens are fencing secrets
        try:
            os.write(fd, json.dumps(completion.to_json()).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
        return path

    def pending(self) -> list[Completion]:
        """Every spooled completion, oldest first; a corrupt file is set aside rather than retried forever."""
        if not self.directory.is_dir():
            return []
        paths = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        found: list[Completion] = []
        for path in paths:
            try:
                found.append(Completion.from_json(json.loads(path.read_text())))
            except (ValueError, KeyError, TypeError, OSError):
                self.reject(path)
        return found

    def delete(self, order_id: str) -> None:
        self._path(order_id).unlink(missing_ok=True)

    def reject(self, path_or_order: Path | str) -> None:
        path = path_or_order if isinstance(path_or_order, Path) else self._path(path_or_order)
        if not path.exists():
            return
        self.rejected.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(path, self.rejected / path.name)
