"""Audit chain anchors: a cut tail or a re-hashed chain is caught by signed checkpoints and the mirror."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import delete, select, update

from ikoma.services import audit
from ikoma.services.audit_anchor import Anchor, checkpoint, load_anchor, verify_anchored
from ikoma.storage.database import Database
from ikoma.storage.tables import audit_log


def _entry(n: int) -> audit.AuditEntry:
    return audit.AuditEntry(
        channel="rest",
        actor_kind="admin",
        actor_id=None,
        token_prefix=None,
        role="admin",
        action="POST /v1/servers",
        target=f"web-{n}",
        params={"name": f"web-{n}"},
        outcome="allowed",
        status_code=201,
    )


async def _chain(db: Database, count: int, mirror: Path | None = None) -> None:
    for n in range(count):
        await audit.record(db, _entry(n), mirror=mirror)


async def _verify(db: Database, anchor: Anchor | None, mirror: Path | None = None) -> audit.VerifyReport:
    return await verify_anchored(db, await audit.verify(db), anchor=anchor, mirror=mirror)


async def _rehash_from(db: Database, first_id: int) -> None:
    """What an attacker with database access does: edit an entry, then recompute every hash after it."""
    async with db.write() as tx:
        await tx.execute(update(audit_log).where(audit_log.c.id == first_id).values(target="innocent"))
        rows = (await tx.execute(select(audit_log).order_by(audit_log.c.id))).mappings().all()
        prev = audit.GENESIS
        for row in rows:
            fresh = audit._digest(prev, {**row, "prev_hash": prev})  # the attacker's own tool
            await tx.execute(
                update(audit_log).where(audit_log.c.id == row["id"]).values(prev_hash=prev, hash=fresh)
            )
            prev = fresh


async def test_an_untouched_chain_with_checkpoints_and_mirror_verifies(
    database: Database, tmp_path: Path
) -> None:
    anchor = load_anchor(None, tmp_path)
    mirror = tmp_path / "audit.jsonl"
    await _chain(database, 3, mirror)
    assert await checkpoint(database, anchor) == 3
    assert await checkpoint(database, anchor) is None  # same head: nothing new to sign
    await _chain(database, 2, mirror)

    report = await _verify(database, anchor, mirror)

    assert report.ok, report.problem
    assert report.checked == 5


async def test_a_cut_tail_is_caught_by_the_last_signed_checkpoint(database: Database, tmp_path: Path) -> None:
    anchor = load_anchor(None, tmp_path)
    await _chain(database, 5)
    await checkpoint(database, anchor)
    async with database.write() as tx:
        await tx.execute(delete(audit_log).where(audit_log.c.id >= 4))

    assert (await audit.verify(database)).ok  # the chain alone cannot see it
    report = await _verify(database, anchor)

    assert not report.ok
    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("truncated", 4)


async def test_a_re_hashed_chain_no_longer_matches_its_signed_checkpoint(
    database: Database, tmp_path: Path
) -> None:
    anchor = load_anchor(None, tmp_path)
    await _chain(database, 4)
    await checkpoint(database, anchor)
    await _rehash_from(database, 2)

    assert (await audit.verify(database)).ok  # consistent again, from the chain's point of view
    report = await _verify(database, anchor)

    assert not report.ok
    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("rehashed", 4)


async def test_a_checkpoint_written_without_the_key_is_refused(database: Database, tmp_path: Path) -> None:
    anchor = load_anchor(None, tmp_path)
    await _chain(database, 2)
    await _rehash_from(database, 1)
    async with database.read() as tx:
        head = (
            await tx.execute(select(audit_log.c.id, audit_log.c.hash).order_by(audit_log.c.id.desc()))
        ).first()
    assert head is not None
    forger = Anchor(b"a guessed key", anchor.checkpoints)
    forger.append_checkpoint(int(head.id), head.hash)

    report = await _verify(database, anchor)

    assert report.problem is not None
    assert report.problem.kind == "checkpoint_forged"


async def test_entries_cut_after_the_last_checkpoint_are_caught_by_the_mirror(
    database: Database, tmp_path: Path
) -> None:
    anchor = load_anchor(None, tmp_path)
    mirror = tmp_path / "audit.jsonl"
    await _chain(database, 3, mirror)
    await checkpoint(database, anchor)
    await _chain(database, 2, mirror)  # not checkpointed yet
    async with database.write() as tx:
        await tx.execute(delete(audit_log).where(audit_log.c.id == 5))

    assert (await _verify(database, anchor)).ok  # the checkpoint cannot know about entry 5
    report = await _verify(database, anchor, mirror)

    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("truncated", 5)


async def test_an_entry_that_differs_from_its_mirror_line_is_named(
    database: Database, tmp_path: Path
) -> None:
    mirror = tmp_path / "audit.jsonl"
    await _chain(database, 3, mirror)
    await _rehash_from(database, 3)  # only the last one: no checkpoint to catch it

    report = await _verify(database, None, mirror)

    assert report.problem is not None
    assert (report.problem.kind, report.problem.id) == ("mirror_mismatch", 3)


def test_the_audit_key_file_is_owner_only_and_the_environment_key_wins(tmp_path: Path) -> None:
    made = load_anchor(None, tmp_path)
    assert not (tmp_path / "audit.key").exists()  # made when first needed, not when configured
    assert made.key
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600
    assert load_anchor(None, tmp_path).key == made.key
    assert load_anchor("from-env", tmp_path).key == b"from-env"
    made.append_checkpoint(1, "ab" * 32)
    line = json.loads(made.checkpoints.read_text())
    assert line["mac"] == made.sign(1, "ab" * 32)
