"""The playbook catalog: what orders may run, with their params schema and execution policy."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from ikoma.domain.errors import Conflict
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import playbooks


async def list_playbooks(db: Database) -> list[dict[str, Any]]:
    async with db.read() as tx:
        return [dict(r) for r in (await tx.execute(select(playbooks).order_by(playbooks.c.key))).mappings()]


async def find_playbook(tx: Tx, key: str) -> dict[str, Any] | None:
    row = (await tx.execute(select(playbooks).where(playbooks.c.key == key))).mappings().first()
    return None if row is None else dict(row)


async def create_playbook(db: Database, fields: dict[str, Any]) -> dict[str, Any]:
    playbook_id = str(uuid.uuid4())
    try:
        async with db.write() as tx:
            await tx.execute(insert(playbooks).values(id=playbook_id, builtin=False, **fields))
            row = (await tx.execute(select(playbooks).where(playbooks.c.id == playbook_id))).mappings().one()
    except IntegrityError:
        raise Conflict(f"a playbook with key {fields['key']!r} already exists", field="key") from None
    return dict(row)


async def apply_playbook(db: Database, fields: dict[str, Any]) -> dict[str, Any]:
    """Create the playbook, or replace the definition of an existing one that is not built in."""
    async with db.write() as tx:
        existing = await find_playbook(tx, fields["key"])
        if existing is None:
            await tx.execute(insert(playbooks).values(id=str(uuid.uuid4()), builtin=False, **fields))
        elif existing["builtin"]:
            raise Conflict("built-in playbooks come with IKOMA and cannot be replaced", key=fields["key"])
        else:
            await tx.execute(
                update(playbooks)
                .where(playbooks.c.key == fields["key"])
                .values(**fields, updated_at=db_now())
            )
        row = (await tx.execute(select(playbooks).where(playbooks.c.key == fields["key"]))).mappings().one()
    return dict(row)
