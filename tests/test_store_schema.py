"""Opening the SQLite store: database URLs, the pragmas, schema migrations (applied once,
recorded, refused when newer, rolled back when broken), durability across close/reopen, and a
second process reading what the first committed."""

import asyncio
import functools
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from callbridge.errors import ConfigError, StorageError
from callbridge.store import open_store, sqlite_path
from callbridge.store import sqlite as sqlite_backend
from callbridge.store.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    migrate,
    split_statements,
)
from callbridge.store.models import Account, Call, Leg, LegRole, LegStatus
from callbridge.store.sqlite import SqliteStore
from store_support import database_at

TABLES = {
    "schema_migrations", "accounts", "api_keys", "caller_ids", "agents", "calls", "legs",
    "callback_outbox", "server_secrets", "signin_links", "launch_tokens_used",
    "revoked_sessions",
}  # fmt: skip


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the file with plain sqlite3, as an operator (or another process) would."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


def open_and_close(path: Path | str) -> None:
    async def main() -> None:
        store = await SqliteStore.open(path)
        await store.close()

    asyncio.run(main())


def a_call(account_id: str) -> Call:
    leg = Leg("call-1", 1, LegRole.AGENT, "+919876543210", LegStatus.DIALING)
    return Call("call-1", account_id, "crm-1", "+918041234567", "+919812345678",
                "+919876543210", None, True, 30, "h" * 64, legs=(leg,))  # fmt: skip


# -- database URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///callbridge.db", "callbridge.db"),
        ("sqlite:///data/callbridge.db", "data/callbridge.db"),
        ("sqlite:////var/lib/callbridge/cb.db", "/var/lib/callbridge/cb.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://cb:pw@db/callbridge", "only sqlite:/// databases are supported"),
        ("mysql:///callbridge", "not 'mysql'"),
        ("sqlite://callbridge.db", "three slashes"),
        ("sqlite:///", "no database file"),
        ("sqlite:///data/", "no database file"),
        ("sqlite:///cb.db?mode=ro", "URL parameters are not supported"),
    ],
)
def test_other_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        sqlite_path(url)
    assert info.value.key == "storage.database_url"


def test_open_store_relative_path_creates_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        store = await open_store("sqlite:///var/data/cb.db")
        try:
            await store.create_account("acme", "https://crm/cb", "whsec_x")
        finally:
            await store.close()

    asyncio.run(main())
    assert query(tmp_path / "var/data/cb.db", "SELECT name FROM accounts") == [("acme",)]


def test_open_store_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "abs" / "cb.db"
    asyncio.run(_open_close_url(f"sqlite:///{path}"))  # tmp_path is absolute: four slashes
    assert path.exists()


async def _open_close_url(url: str) -> None:
    store = await open_store(url)
    await store.close()


def test_memory_database_works_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        store = await open_store("sqlite:///:memory:")
        try:
            account = await store.create_account("acme", "https://crm/cb", "whsec_x")
            _, inserted = await store.create_call(a_call(account.id))
            assert inserted and await store.get_call("call-1") is not None
        finally:
            await store.close()

    asyncio.run(main())
    assert list(tmp_path.iterdir()) == []


# -- pragmas and files -------------------------------------------------------------------------


def test_wal_mode_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "cb.db"

    async def main() -> None:
        store = await SqliteStore.open(path)
        try:
            assert (tmp_path / "cb.db-wal").exists()  # the write-ahead log, beside the file
            with pytest.raises(StorageError, match="FOREIGN KEY constraint failed"):
                await store.add_caller_id("no-such-account", "+918041234567")
        finally:
            await store.close()

    asyncio.run(main())
    assert query(path, "PRAGMA journal_mode") == [("wal",)]  # WAL is a property of the file


def test_synchronous_must_be_normal_or_full(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        asyncio.run(SqliteStore.open(tmp_path / "cb.db", synchronous="OFF"))
    assert not (tmp_path / "cb.db").exists()


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "cb.db"

    async def write() -> str:
        async with await SqliteStore.open(path) as store:
            account = await store.create_account("acme", "https://crm/cb", "whsec_x")
            await store.create_call(a_call(account.id))
            return account.id

    async def read() -> tuple[object, ...]:
        async with await SqliteStore.open(path) as store:
            return await store.find_account("acme"), await store.get_call("call-1")

    account_id = asyncio.run(write())
    account, call = asyncio.run(read())
    assert account is not None and account.id == account_id
    assert isinstance(call, Call) and call.legs == a_call(account_id).legs


def test_another_process_sees_committed_data_while_the_store_is_open(tmp_path: Path) -> None:
    path = tmp_path / "cb.db"
    reader = textwrap.dedent(
        f"""
        import asyncio
        from callbridge.store.sqlite import SqliteStore

        async def main():
            async with await SqliteStore.open({str(path)!r}) as store:
                call = await store.get_call("call-1")
                print(call.call_status.value, len(call.legs), call.account_id)

        asyncio.run(main())
        """
    )

    async def main() -> tuple[str, str]:
        async with await SqliteStore.open(path) as store:
            account = await store.create_account("acme", "https://crm/cb", "whsec_x")
            await store.create_call(a_call(account.id))
            done = await asyncio.create_subprocess_exec(
                sys.executable, "-c", reader, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            out, err = await done.communicate()
            assert done.returncode == 0, err.decode()
            return out.decode().strip(), account.id

    out, account_id = asyncio.run(main())
    assert out == f"INITIATED 1 {account_id}"


def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "cb.db"
    path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    with pytest.raises(StorageError, match="file is not a database") as info:
        open_and_close(path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_a_directory_that_cannot_be_made_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the directory should be")
    with pytest.raises(StorageError, match="cannot create"):
        open_and_close(tmp_path / "blocker" / "cb.db")


# -- migrations --------------------------------------------------------------------------------


def test_migrations_are_applied_once_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "cb.db"
    open_and_close(path)
    tables = {row[0] for row in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == TABLES
    recorded = query(path, "SELECT version, applied_at FROM schema_migrations")
    assert [row[0] for row in recorded] == [m.version for m in MIGRATIONS] == [1, 2, 3, 4, 5]
    assert all(str(row[1]).endswith("+00:00") for row in recorded)
    schema = query(path, "SELECT sql FROM sqlite_master ORDER BY name")

    open_and_close(path)  # reopening is a no-op
    assert query(path, "SELECT version, applied_at FROM schema_migrations") == recorded
    assert query(path, "SELECT sql FROM sqlite_master ORDER BY name") == schema


def test_the_v1_indexes_exist(tmp_path: Path) -> None:
    path = tmp_path / "cb.db"
    open_and_close(path)
    indexes = {
        row[0]: row[1]
        for row in query(path, "SELECT name, sql FROM sqlite_master WHERE type = 'index'")
    }
    assert "UNIQUE INDEX calls_account_uuid ON calls (account_id, uuid)" in str(
        indexes["calls_account_uuid"]
    )
    assert "(status, next_attempt_at)" in str(indexes["callback_outbox_due"])


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "cb.db"
    open_and_close(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, '2030-01-01T00:00:00+00:00')")
    conn.close()
    with pytest.raises(StorageError, match=r"schema is version 99, newer than .* \(5\)"):
        open_and_close(path)
    assert [r[0] for r in query(path, "SELECT version FROM schema_migrations")] == [1, 2, 3, 4,
                                                                                     5, 99]


def test_a_failing_migration_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cb.db"
    open_and_close(path)
    broken = Migration(LATEST_VERSION + 1,
                       "CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1);")
    monkeypatch.setattr(
        sqlite_backend, "migrate", functools.partial(migrate, migrations=(*MIGRATIONS, broken))
    )
    with pytest.raises(StorageError, match="no such table: nowhere"):
        open_and_close(path)
    assert query(path, "SELECT version FROM schema_migrations") == [(1,), (2,), (3,), (4,), (5,)]
    assert query(path, "SELECT name FROM sqlite_master WHERE name = 'extra'") == []


def test_a_new_migration_is_applied_on_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cb.db"
    open_and_close(path)
    newer = Migration(LATEST_VERSION + 1, "ALTER TABLE calls ADD COLUMN notes TEXT;")
    monkeypatch.setattr(
        sqlite_backend, "migrate", functools.partial(migrate, migrations=(*MIGRATIONS, newer))
    )
    open_and_close(path)
    assert [r[0] for r in query(path, "SELECT version FROM schema_migrations")] == [
        *range(1, LATEST_VERSION + 2)]
    assert "notes" in {row[1] for row in query(path, "PRAGMA table_info(calls)")}


def make_v1_database(path: Path) -> None:
    """A database as callbridge with only migration 1 left it, with an account and a call."""

    database_at(path, 1)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO accounts (id, name, callback_url, callback_secret, created_at)"
                     " VALUES ('a1', 'acme', 'https://crm/cb', 'whsec_x', '2026-01-01T00:00:00"
                     ".000000+00:00')")
        conn.execute("INSERT INTO calls (call_id, account_id, uuid, from_number, to_number,"
                     " agent_number, recording, max_ring_time, request_hash, call_status,"
                     " created_at) VALUES ('call-1', 'a1', 'crm-1', '+918041234567',"
                     " '+919812345678', '+919876543210', 1, 30, 'hhhh', 'INITIATED',"
                     " '2026-01-01T00:00:00.000000+00:00')")
    conn.close()


def test_a_v1_database_is_migrated_to_v2_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "cb.db"
    make_v1_database(path)
    assert "agent_confirm" not in {row[1] for row in query(path, "PRAGMA table_info(calls)")}

    async def main() -> tuple[Account | None, Call | None, Call]:
        async with await SqliteStore.open(path) as store:
            account = await store.find_account("acme")
            old = await store.get_call("call-1")
            leg = Leg("call-2", 1, LegRole.AGENT, "+919876543210", LegStatus.DIALING)
            new, _ = await store.create_call(replace(
                a_call("a1"), call_id="call-2", uuid="crm-2", legs=(leg,), agent_confirm="dtmf",
                time_limit=600))
            return account, old, new

    account, old, new = asyncio.run(main())
    versions = [r[0] for r in query(path, "SELECT version FROM schema_migrations")]
    assert versions == [1, 2, 3, 4, 5]
    for table in ("accounts", "calls"):
        columns = {row[1]: row[2] for row in query(path, f"PRAGMA table_info({table})")}
        assert (columns["agent_confirm"], columns["time_limit"]) == ("TEXT", "INTEGER")
    # What existed before reads back with "none" for both.
    assert account is not None and (account.agent_confirm, account.time_limit) == (None, None)
    assert old is not None and (old.uuid, old.agent_confirm, old.time_limit) == (
        "crm-1", None, None)
    assert query(path, "SELECT agent_confirm, time_limit FROM calls WHERE call_id = 'call-2'") \
        == [("dtmf", 600)]
    assert (new.agent_confirm, new.time_limit) == ("dtmf", 600)


def test_a_v3_database_gives_each_agent_its_own_session_epoch(tmp_path: Path) -> None:
    path = tmp_path / "cb.db"

    database_at(path, 3)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO accounts (id, name, callback_url, callback_secret, created_at)"
                     " VALUES ('a1', 'acme', 'https://crm/cb', 'whsec_x', '2026-01-01T00:00:00"
                     ".000000+00:00')")
        for name, password in (("priya", "scrypt$kept"), ("arjun", None)):
            conn.execute("INSERT INTO agents (account_id, crm_username, created_at,"
                         " password_hash) VALUES ('a1', ?, '2026-01-01T00:00:00.000000+00:00',"
                         " ?)", (name, password))
    conn.close()
    assert "session_epoch" not in {row[1] for row in query(path, "PRAGMA table_info(agents)")}

    async def epochs() -> dict[tuple[str, str], str]:
        async with await SqliteStore.open(path) as store:
            assert await store.get_agent_password("a1", "priya") == "scrypt$kept"
            return await store.agent_session_epochs([("a1", "priya"), ("a1", "arjun"),
                                                     ("a1", "nobody")])

    found = asyncio.run(epochs())
    assert [r[0] for r in query(path, "SELECT version FROM schema_migrations")] == [1, 2, 3, 4, 5]
    assert set(found) == {("a1", "priya"), ("a1", "arjun")}  # no such agent: absent
    assert all(len(epoch) == 16 for epoch in found.values())
    assert len(set(found.values())) == 2


def test_split_statements_keeps_semicolons_in_strings_and_triggers() -> None:
    sql = """
        -- a comment; with a semicolon
        INSERT INTO t VALUES ('a;b');
        CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END;
    """
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[0].endswith("INSERT INTO t VALUES ('a;b');")
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete SQL statement"):
        split_statements("SELECT 1; SELECT 'unterminated")
