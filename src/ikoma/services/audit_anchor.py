"""Anchors for the audit chain outside the database: signed checkpoints and the JSONL mirror.

The hash chain alone cannot see two attacks by someone who can write the database: the last entries cut
off, or the whole chain re-hashed after an edit. Both leave the chain consistent. What they cannot forge
is a record kept elsewhere:

- **checkpoints**: every `IKOMA_AUDIT_CHECKPOINT_INTERVAL` seconds the reconciler's leader appends the
  chain's head (`id`, `hash`) to a checkpoint file, signed with HMAC-SHA256 under a key that is not in the
  database (`IKOMA_AUDIT_KEY`, or `<data dir>/audit.key` made 0600 on first use). A re-hashed chain no
  longer matches a signed hash; a cut tail ends before a checkpoint's id. Entries after the last
  checkpoint are covered by the next one.
- **mirror** (`IKOMA_AUDIT_LOG`, optional): every entry as written; `verify` compares each line with the
  database row of the same id, so even the entries since the last checkpoint are covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ikoma.services.audit import Problem, VerifyReport, public
from ikoma.storage.database import Database
from ikoma.storage.tables import audit_log

KEY_FILE = "audit.key"
CHECKPOINT_FILE = "audit.checkpoints"


class Anchor:
    """Where the checkpoints go and the key that signs them (read, or made, on first use)."""

    def __init__(self, key: bytes | None, checkpoints: Path, key_file: Path | None = None) -> None:
        if key is None and key_file is None:
            raise ValueError("an anchor needs a key or a key file")
        self._key = key
        self.key_file = key_file
        self.checkpoints = checkpoints
        # the file is read once for its last line; after that, what this process wrote is known
        self._last: dict[str, Any] | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            assert self.key_file is not None
            self._key = _read_or_make_key(self.key_file)
        return self._key

    def sign(self, entry_id: int, entry_hash: str) -> str:
        return hmac.new(self.key, f"{entry_id}:{entry_hash}".encode(), hashlib.sha256).hexdigest()

    def last_checkpoint(self) -> dict[str, Any] | None:
        if self._last is None:
            *_, self._last = [None, *self.read_checkpoints()]
        return self._last

    def read_checkpoints(self) -> Iterator[dict[str, Any]]:
        if not self.checkpoints.exists():
            return
        with self.checkpoints.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    yield {
                        "line": number,
                        "id": int(item["id"]),
                        "hash": str(item["hash"]),
                        "mac": item["mac"],
                    }
                except (ValueError, KeyError, TypeError):
                    yield {"line": number, "id": 0, "hash": "", "mac": ""}

    def append_checkpoint(self, entry_id: int, entry_hash: str) -> None:
        line = json.dumps(
            {
                "id": entry_id,
                "hash": entry_hash,
                "at": datetime.now(UTC).isoformat(),
                "mac": self.sign(entry_id, entry_hash),
            }
        )
        self.checkpoints.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.checkpoints, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
        self._last = {"id": entry_id, "hash": entry_hash, "mac": self.sign(entry_id, entry_hash)}


def load_anchor(env_key: str | None, data_dir: Path, checkpoints: Path | None = None) -> Anchor:
    """The anchor from `IKOMA_AUDIT_KEY`, else from the data dir's key file (made when first needed)."""
    path = checkpoints or data_dir / CHECKPOINT_FILE
    if env_key:
        return Anchor(env_key.encode(), path)
    return Anchor(None, path, key_file=data_dir / KEY_FILE)


def _read_or_make_key(key_path: Path) -> bytes:
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True)
        aside = key_path.with_name(f".{key_path.name}.{os.getpid()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first: its key stands
                os.link(aside, key_path)
        finally:
            aside.unlink(missing_ok=True)
    return key_path.read_text().strip().encode()


async def checkpoint(db: Database, anchor: Anchor) -> int | None:
    """Sign the chain's head into the checkpoint file, unless it is the one already there."""
    async with db.read() as tx:
        head = (
            await tx.execute(
                select(audit_log.c.id, audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)
            )
        ).first()
    if head is None:
        return None
    last = await asyncio.to_thread(anchor.last_checkpoint)
    if last is not None and last["id"] == head.id and last["hash"] == head.hash:
        return None
    await asyncio.to_thread(anchor.append_checkpoint, int(head.id), head.hash)
    return int(head.id)


async def verify_anchored(
    db: Database, chain: VerifyReport, *, anchor: Anchor | None, mirror: Path | None
) -> VerifyReport:
    """The chain's own verdict, then the checkpoints and the mirror: the first disagreement is reported."""
    if not chain.ok:
        return chain
    head_id = int(chain.head.get("id", 0))
    if anchor is not None:
        problem = await _check_checkpoints(db, anchor, head_id)
        if problem is not None:
            return VerifyReport(False, chain.checked, problem, chain.head)
    if mirror is not None:
        problem = await _check_mirror(db, mirror, head_id)
        if problem is not None:
            return VerifyReport(False, chain.checked, problem, chain.head)
    return chain


async def _hashes(db: Database, ids: set[int]) -> dict[int, Mapping[Any, Any]]:
    if not ids:
        return {}
    rows: dict[int, Mapping[Any, Any]] = {}
    ordered = sorted(ids)
    async with db.read() as tx:
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            result = await tx.execute(select(audit_log).where(audit_log.c.id.in_(chunk)))
            rows.update({int(r["id"]): r for r in result.mappings().all()})
    return rows


async def _check_checkpoints(db: Database, anchor: Anchor, head_id: int) -> Problem | None:
    checkpoints = await asyncio.to_thread(lambda: list(anchor.read_checkpoints()))
    rows = await _hashes(db, {c["id"] for c in checkpoints if c["id"] <= head_id})
    for cp in checkpoints:
        if not hmac.compare_digest(str(cp["mac"]), anchor.sign(cp["id"], cp["hash"])):
            return Problem(
                cp["id"],
                "checkpoint_forged",
                f"checkpoint line {cp['line']} is not signed with the audit key",
            )
        if cp["id"] > head_id:
            return Problem(
                head_id + 1,
                "truncated",
                f"the chain ends at {head_id} but a signed checkpoint saw entry {cp['id']}: "
                "entries were cut off",
            )
        row = rows.get(cp["id"])
        if row is None or row["hash"] != cp["hash"]:
            return Problem(
                cp["id"],
                "rehashed",
                "its hash differs from the signed checkpoint: the chain was rewritten from here or before",
            )
    return None


def _read_mirror(mirror: Path) -> dict[int, dict[str, Any]]:
    lines: dict[int, dict[str, Any]] = {}
    if not mirror.exists():
        return lines
    with mirror.open(encoding="utf-8") as source:
        for line in source:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                item = json.loads(line)
                lines[int(item["id"])] = item
    return lines


async def _check_mirror(db: Database, mirror: Path, head_id: int) -> Problem | None:
    lines = await asyncio.to_thread(_read_mirror, mirror)
    rows = await _hashes(db, {i for i in lines if i <= head_id})
    for entry_id in sorted(lines):
        if entry_id > head_id:
            return Problem(
                head_id + 1,
                "truncated",
                f"the chain ends at {head_id} but the mirror holds entry {entry_id}: entries were cut off",
            )
        row = rows.get(entry_id)
        if row is None or json.loads(json.dumps(public(row), default=str)) != lines[entry_id]:
            return Problem(entry_id, "mirror_mismatch", "the database row differs from its mirror line")
    return None
