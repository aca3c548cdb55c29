"""API clients (scenario 16) and the hash-chained audit log (scenario 20), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text, update

from ikoma.domain.errors import Invalid, NotFound, Unauthorized
from ikoma.domain.roles import Role
from ikoma.services import api_clients, audit, servers
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import api_clients as api_clients_table
from tests.integration.helpers import server_fields


async def test_api_client_token_is_shown_once_and_only_its_hash_and_prefix_are_stored(
    database: Database,
) -> None:
    created = await api_clients.create_api_client(database, name="ci", role=Role.BUILDER, created_by="admin")
    token = created["token"]
    async with database.read() as tx:
        stored = (await tx.execute(text("SELECT * FROM api_clients"))).mappings().one()
    assert token not in json.dumps({k: str(v) for k, v in stored.items()})
    assert stored["token_prefix"] == token[:14]
    assert "token" not in (await api_clients.list_api_clients(database))[0]

    principal = await api_clients.authenticate(database, token)
    assert (principal.kind, principal.role, principal.token_prefix) == (
        "api_client",
        Role.BUILDER,
        token[:14],
    )
    assert (await api_clients.get_api_client(database, created["id"]))["last_used_at"] is not None


async def test_revoked_client_is_refused_at_its_next_request(database: Database) -> None:
    created = await api_clients.create_api_client(database, name="ci", role=Role.OPERATOR, created_by="admin")
    await api_clients.authenticate(database, created["token"])
    revoked = await api_clients.revoke_api_client(database, created["id"])
    assert revoked["revoked_at"] is not None
    with pytest.raises(Unauthorized):
        await api_clients.authenticate(database, created["token"])
    again = await api_clients.revoke_api_client(database, created["id"])
    assert again["revoked_at"] == revoked["revoked_at"]
    with pytest.raises(NotFound):
        await api_clients.revoke_api_client(database, "00000000-0000-0000-0000-000000000000")


async def test_expired_client_is_refused_by_the_database_clock(database: Database) -> None:
    created = await api_clients.create_api_client(
        database, name="ci", role=Role.OBSERVER, created_by="admin", expires_in_s=3600
    )
    await api_clients.authenticate(database, created["token"])
    async with database.write() as tx:
        await tx.execute(
            update(api_clients_table)
            .where(api_clients_table.c.id == created["id"])
            .values(expires_at=db_now(-1))
        )
    with pytest.raises(Unauthorized):
        await api_clients.authenticate(database, created["token"])


async def test_unknown_or_malformed_tokens_are_refused_alike(database: Database) -> None:
    for presented in ("ikoma_" + "A" * 38, "not-a-token", ""):
        with pytest.raises(Unauthorized) as refused:
            await api_clients.authenticate(database, presented)
        assert refused.value.message == "credential is missing or invalid"


async def test_server_scope_must_name_existing_servers(database: Database) -> None:
    server = await servers.create_server(database, server_fields("web-1"))
    scoped = await api_clients.create_api_client(
        database,
        name="deployer",
        role=Role.OPERATOR,
        created_by="admin",
        server_ids=[str(server["id"])],
    )
    principal = await api_clients.authenticate(database, scoped["token"])
    assert principal.server_ids == frozenset({str(server["id"])})
    with pytest.raises(Invalid) as refused:
        await api_clients.create_api_client(
            database,
            name="bad",
            role=Role.OPERATOR,
            created_by="admin",
            server_ids=["00000000-0000-0000-0000-000000000001"],
        )
    assert refused.value.reason == "unknown_server"


# --- audit ---------------------------------------------------------------------------------------------
def _entry(n: int, **overrides: object) -> audit.AuditEntry:
    fields: dict[str, object] = {
        "channel": "execute",
        "actor_kind": "api_client",
        "actor_id": f"client-{n}",
        "token_prefix": "ikoma_abcdefgh",
        "role": "operator",
        "action": "execute:deploy.up",
        "target": "myapp",
        "params": {"appName": "myapp", "n": n},
        "outcome": "allowed",
    }
    fields.update(overrides)
    return audit.AuditEntry(**fields)  # type: ignore[arg-type]


async def _chain(database: Database, count: int) -> None:
    for n in range(count):
        await audit.record(database, _entry(n))


async def test_audit_chain_verifies_when_untouched(database: Database) -> None:
    await _chain(database, 5)
    report = await audit.verify(database)
    assert (report.ok, report.checked, report.problem) == (True, 5, None)
    assert report.head["id"] == 5


async def test_audit_verify_names_an_entry_edited_by_sql(database: Database) -> None:
    await _chain(database, 5)
    async with database.write() as tx:
        await tx.execute(text("UPDATE audit_log SET outcome = 'denied' WHERE id = 3"))
    report = await audit.verify(database)
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.id, report.problem.kind) == (3, "edited")


async def test_audit_verify_names_a_deleted_entry(database: Database) -> None:
    await _chain(database, 5)
    async with database.write() as tx:
        await tx.execute(text("DELETE FROM audit_log WHERE id = 2"))
    report = await audit.verify(database)
    assert report.problem is not None
    assert (report.problem.id, report.problem.kind, report.checked) == (2, "deleted", 1)


async def test_audit_verify_names_reordered_entries(database: Database) -> None:
    await _chain(database, 5)
    async with database.write() as tx:
        await tx.execute(text("UPDATE audit_log SET id = 100 WHERE id = 2"))
        await tx.execute(text("UPDATE audit_log SET id = 2 WHERE id = 4"))
        await tx.execute(text("UPDATE audit_log SET id = 4 WHERE id = 100"))
    report = await audit.verify(database)
    assert report.problem is not None
    assert (report.problem.id, report.problem.kind) == (2, "reordered")


async def test_audit_params_are_masked_and_mirrored_to_jsonl(database: Database, tmp_path: Path) -> None:
    mirror = tmp_path / "audit.jsonl"
    sql = "CREATE ROLE x PASSWORD 'hunter2'"
    entry = _entry(
        1, params={"appName": "myapp", "sql": sql, "password": "hunter2", "nested": {"token": "t"}}
    )
    await audit.record(database, entry, mirror=mirror)
    page = await audit.list_entries(database)
    stored = page["items"][0]["params"]
    assert "hunter2" not in json.dumps(page)
    assert stored["password"] == "***"
    assert stored["nested"] == {"token": "***"}
    assert stored["sql"]["masked"] is True
    assert stored["appName"] == "myapp"
    line = json.loads(mirror.read_text().strip())
    assert line["hash"] == page["items"][0]["hash"]
    assert line["result"] == "allowed"
    assert "hunter2" not in mirror.read_text()


async def test_failed_audit_write_rolls_back_the_action_in_its_transaction(database: Database) -> None:
    class Boom(Exception):
        pass

    async def act_then_fail() -> None:
        async with database.write() as tx:
            await audit.append(tx, _entry(1))
            raise Boom  # the action failed: its audit entry goes with it, and vice versa

    with pytest.raises(Boom):
        await act_then_fail()
    assert (await audit.verify(database)).checked == 0


async def test_audit_list_filters_and_pages_newest_first(database: Database) -> None:
    await _chain(database, 3)
    await audit.record(database, _entry(9, outcome="denied", action="mcp:deploy.up"))
    denied = await audit.list_entries(database, outcome="denied")
    assert [e["action"] for e in denied["items"]] == ["mcp:deploy.up"]
    first = await audit.list_entries(database, limit=2)
    assert [e["id"] for e in first["items"]] == [4, 3]
    second = await audit.list_entries(database, limit=2, cursor=first["nextCursor"])
    assert [e["id"] for e in second["items"]] == [2, 1]
    assert second["nextCursor"] is None
