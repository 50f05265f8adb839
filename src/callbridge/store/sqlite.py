"""The SQLite backend of :class:`callbridge.store.models.Store`, through aiosqlite.

One connection, opened by :meth:`SqliteStore.open`: WAL journal (readers never block the
writer, and another process can read the file while we write), foreign keys on, a busy
timeout for a second process holding the write lock, and ``synchronous=NORMAL``. In WAL mode
NORMAL still commits atomically and survives a crash of the process (SIGKILL included); only
an OS crash or power cut can roll back the last few commits, never corrupt the file. FULL
would fsync the WAL on every commit, a disk flush per POST /calls; pass
``synchronous="FULL"`` for that guarantee.

Every method runs under one ``asyncio.Lock``: aiosqlite runs statements one at a time on its
own thread, and the lock keeps one coroutine's transaction from interleaving with another's.
Writes take ``BEGIN IMMEDIATE`` (the write lock up front, so a transaction never fails
half-way on a lock upgrade) and COMMIT before the method returns. sqlite3 errors become
:class:`~callbridge.errors.StorageError` in one place, :func:`map_sqlite_errors`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import sqlite3
import types
import typing
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from callbridge.errors import StorageError
from callbridge.store.migrations import migrate
from callbridge.store.models import (
    Account,
    Agent,
    ApiKey,
    Call,
    Leg,
    OutboxEntry,
    OutboxStatus,
)

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
#: How many call ids go into one ``IN (...)`` when legs are loaded (SQLite < 3.32 allows 999).
_CHUNK = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def map_sqlite_errors(action: str) -> Iterator[None]:
    """Turn a ``sqlite3.Error`` raised inside the block into a ``StorageError``.

    ``action`` says what was being done: ``"create call: UNIQUE constraint failed: ..."``.
    aiosqlite raises the sqlite3 exceptions themselves, so this one clause covers both.
    """
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageError(f"{action}: {exc}") from exc


# -- values to and from columns ------------------------------------------------------------


def _ts(value: datetime | None) -> str | None:
    """An aware datetime as fixed-width ISO-8601 UTC text, so text order is time order."""
    if value is None:
        return None
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: callbridge stores aware UTC times")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _utc(value: datetime) -> datetime:
    """``value`` as stored: UTC, microseconds (what reading it back gives)."""
    result = _dt(_ts(value))
    assert result is not None
    return result


_Encode = Callable[[Any], Any]


def _enum_value(value: enum.Enum) -> Any:
    return value.value


def _json_tuple(text: str) -> tuple[Any, ...]:
    return tuple(json.loads(text))


def _field_codec(hint: Any) -> tuple[_Encode, _Encode]:
    """(to column, from column) for a dataclass field of type ``hint``; None stays None."""
    base = hint
    if isinstance(hint, types.UnionType):  # X | None
        base = next(t for t in typing.get_args(hint) if t is not type(None))
    if base is datetime:
        return _ts, _dt
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return _enum_value, base
    if base is bool:
        return int, bool
    if typing.get_origin(base) is tuple:
        return json.dumps, _json_tuple
    return _same, _same


def _same(value: Any) -> Any:
    return value


class _Table:
    """A dataclass stored as one row: its fields are the columns, except ``skip``."""

    def __init__(self, name: str, cls: type[Any], skip: tuple[str, ...] = ()) -> None:
        hints = typing.get_type_hints(cls)
        self.name = name
        self.cls = cls
        self.columns = tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)
        self._codecs = {c: _field_codec(hints[c]) for c in self.columns}

    def params(self, value: Any) -> dict[str, Any]:
        return {
            c: None if (v := getattr(value, c)) is None else self._codecs[c][0](v)
            for c in self.columns
        }

    def load(self, row: sqlite3.Row, **extra: Any) -> Any:
        values = {c: None if (v := row[c]) is None else self._codecs[c][1](v) for c in self.columns}
        return self.cls(**values, **extra)

    def insert_sql(self, *extra: str) -> str:
        names = [*self.columns, *extra]
        marks = ", ".join(f":{name}" for name in names)
        return f"INSERT INTO {self.name} ({', '.join(names)}) VALUES ({marks})"


_ACCOUNTS = _Table("accounts", Account)
_API_KEYS = _Table("api_keys", ApiKey)
_AGENTS = _Table("agents", Agent)
_CALLS = _Table("calls", Call, skip=("legs",))
_LEGS = _Table("legs", Leg)
_OUTBOX = _Table("callback_outbox", OutboxEntry)

#: What update_call and finish_call write: all but the identity (and the body's hash).
_CALL_IDENTITY = ("call_id", "account_id", "uuid", "request_hash", "created_at")
_CALL_MUTABLE = tuple(c for c in _CALLS.columns if c not in _CALL_IDENTITY)
_INSERT_CALL = _CALLS.insert_sql() + " ON CONFLICT (account_id, uuid) DO NOTHING"
_UPDATE_CALL = (
    f"UPDATE calls SET {', '.join(f'{c} = :{c}' for c in _CALL_MUTABLE)} WHERE call_id = :call_id"
)
_UPSERT_LEG = (
    _LEGS.insert_sql()
    + " ON CONFLICT (call_id, leg_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _LEGS.columns[2:])
)


#: A fresh session epoch, made by SQLite: 64 random bits as hex.
_NEW_EPOCH = "lower(hex(randomblob(8)))"
#: How many expired revocations one sign-out forgets: each sign-out adds one row, so the
#: table shrinks back to the live revocations, and no sign-out waits on a long delete.
_PRUNE_REVOCATIONS = 100




async def _forget_signin_links(db: aiosqlite.Connection, account_id: str,
                               crm_username: str) -> None:
    """A sign-in link printed before a password change (or removal) is a credential from
    before it: it stops working too."""
    await db.execute("DELETE FROM signin_links WHERE account_id = ? AND crm_username = ?",
                     [account_id, crm_username])  # fmt: skip


def _check_legs(call: Call) -> None:
    for leg in call.legs:
        if leg.call_id != call.call_id:
            raise ValueError(f"leg {leg.leg_id} belongs to call {leg.call_id}, not {call.call_id}")


class SqliteStore:
    """:class:`~callbridge.store.models.Store` on one SQLite file (or ``:memory:``)."""

    def __init__(self, db: aiosqlite.Connection, path: str, clock: Callable[[], datetime]):
        self._db = db
        self.path = path
        self._clock = clock
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> SqliteStore:
        """Open (creating it and its directory if need be) and migrate the database at
        ``path``. Raises StorageError when it cannot be opened, is not a database, or has a
        schema newer than this code."""
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        path = str(path)
        if path != MEMORY:
            _make_parent(path)
        with map_sqlite_errors(f"open {path}"):
            db = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout)
        try:
            db.row_factory = sqlite3.Row
            with map_sqlite_errors(f"open {path}"):
                await _configure(db, path, synchronous.upper(), busy_timeout)
            store = cls(db, path, clock)
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            with map_sqlite_errors(f"close {self.path}"):
                await self._db.close()

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ping(self) -> None:
        """Raise StorageError unless the database answers a query (for the health check)."""
        async with self._session("ping") as db:
            await db.execute_fetchall("SELECT 1")

    # -- sessions and transactions ----------------------------------------------------------

    @asynccontextmanager
    async def _session(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, to this coroutine alone; one statement commits by itself."""
        async with self._lock:
            if self._closed:
                raise StorageError(f"{action}: the store is closed")
            with map_sqlite_errors(action):
                yield self._db

    @asynccontextmanager
    async def _transaction(
        self, action: str, *, write: bool = True
    ) -> AsyncIterator[aiosqlite.Connection]:
        """Everything in the block commits together, or (on any exception) not at all."""
        async with self._session(action) as db:
            try:
                # Inside the try: a cancel while BEGIN is queued must still roll back, since
                # aiosqlite's thread runs the BEGIN anyway.
                await db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield db
                await db.execute("COMMIT")
            except BaseException:
                # The original exception is what matters: SQLite may already have rolled the
                # transaction back itself (SQLITE_FULL, SQLITE_IOERR), and then ROLLBACK fails.
                with suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise

    async def _migrate(self) -> None:
        async with self._transaction(f"migrate {self.path}") as db:
            applied = await migrate(db, self._now())
        if applied:
            logger.info("%s: schema migrations %s applied", self.path, applied)

    def _now(self) -> datetime:
        return _utc(self._clock())

    async def _query(self, action: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._session(action) as db:
            return list(await db.execute_fetchall(sql, params))

    async def _write(self, action: str, sql: str, params: Any = ()) -> int:
        """Run one statement, committed; return how many rows it changed."""
        async with self._session(action) as db:
            cursor = await db.execute(sql, params)
            return cursor.rowcount

    # -- accounts and credentials ------------------------------------------------------------

    async def create_account(
        self,
        name: str,
        callback_url: str,
        callback_secret: str,
        *,
        allow_cidrs: tuple[str, ...] = (),
        allow_origins: tuple[str, ...] = (),
        agent_confirm: str | None = None,
        time_limit: int | None = None,
    ) -> Account:
        account = Account(
            uuid.uuid4().hex, name, callback_url, callback_secret, tuple(allow_cidrs),
            tuple(allow_origins), created_at=self._now(), agent_confirm=agent_confirm,
            time_limit=time_limit,
        )  # fmt: skip
        await self._write("create account", _ACCOUNTS.insert_sql(), _ACCOUNTS.params(account))
        return account

    async def get_account(self, account_id: str) -> Account | None:
        rows = await self._query("get account", "SELECT * FROM accounts WHERE id = ?", [account_id])
        return _ACCOUNTS.load(rows[0]) if rows else None

    async def find_account(self, name_or_id: str) -> Account | None:
        """The account with this id or, failing that, this name."""
        rows = await self._query(
            "find account",
            "SELECT * FROM accounts WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1",
            [name_or_id],
        )
        return _ACCOUNTS.load(rows[0]) if rows else None

    async def list_accounts(self) -> list[Account]:
        rows = await self._query("list accounts", "SELECT * FROM accounts ORDER BY name")
        return [_ACCOUNTS.load(row) for row in rows]

    async def add_api_key(self, account_id: str, key_hash: str, prefix: str) -> ApiKey:
        key = ApiKey(uuid.uuid4().hex, account_id, prefix, created_at=self._now())
        sql = _API_KEYS.insert_sql("key_hash")
        await self._write("add api key", sql, {**_API_KEYS.params(key), "key_hash": key_hash})
        return key

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not: the caller checks ``active``."""
        sql = "SELECT * FROM api_keys WHERE key_hash = ?"
        rows = await self._query("find api key", sql, [key_hash])
        return _API_KEYS.load(rows[0]) if rows else None

    async def list_api_keys(self, account_id: str) -> list[ApiKey]:
        sql = "SELECT * FROM api_keys WHERE account_id = ? ORDER BY created_at, rowid"
        rows = await self._query("list api keys", sql, [account_id])
        return [_API_KEYS.load(row) for row in rows]

    async def revoke_api_key(self, key_id_or_prefix: str) -> bool:
        """Revoke the one active key with this id or prefix. False when none or several
        active keys match (a revoked key is not revoked again)."""
        async with self._transaction("revoke api key") as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT id FROM api_keys WHERE (id = ?1 OR prefix = ?1) AND revoked_at IS NULL",
                    [key_id_or_prefix],
                )
            )
            if len(rows) != 1:
                return False
            sql = "UPDATE api_keys SET revoked_at = ? WHERE id = ?"
            await db.execute(sql, [_ts(self._now()), rows[0]["id"]])
        return True

    async def add_caller_id(self, account_id: str, number: str) -> bool:
        """True if added, False if the account had it already."""
        return await self._add_pair("caller_ids", "number", account_id, number)

    async def remove_caller_id(self, account_id: str, number: str) -> bool:
        return await self._remove_pair("caller_ids", "number", account_id, number)

    async def list_caller_ids(self, account_id: str) -> list[str]:
        sql = "SELECT number FROM caller_ids WHERE account_id = ? ORDER BY number"
        return [row["number"] for row in await self._query("list caller ids", sql, [account_id])]

    async def has_caller_id(self, account_id: str, number: str) -> bool:
        sql = "SELECT 1 FROM caller_ids WHERE account_id = ? AND number = ?"
        return bool(await self._query("has caller id", sql, [account_id, number]))

    async def add_agent(self, account_id: str, crm_username: str) -> bool:
        """True if added, False if the account had this agent already."""
        sql = (
            "INSERT INTO agents (account_id, crm_username, created_at, session_epoch)"
            f" VALUES (?, ?, ?, {_NEW_EPOCH}) ON CONFLICT (account_id, crm_username) DO NOTHING"
        )
        params = [account_id, crm_username, _ts(self._now())]
        return await self._write("add agent", sql, params) == 1

    async def remove_agent(self, account_id: str, crm_username: str) -> bool:
        async with self._transaction("remove agent") as db:
            cursor = await db.execute(
                "DELETE FROM agents WHERE account_id = ? AND crm_username = ?",
                [account_id, crm_username],
            )
            await _forget_signin_links(db, account_id, crm_username)
            return cursor.rowcount == 1

    async def get_agent(self, account_id: str, crm_username: str) -> Agent | None:
        sql = "SELECT * FROM agents WHERE account_id = ? AND crm_username = ?"
        rows = await self._query("get agent", sql, [account_id, crm_username])
        return _AGENTS.load(rows[0]) if rows else None

    async def list_agents(self, account_id: str) -> list[Agent]:
        sql = "SELECT * FROM agents WHERE account_id = ? ORDER BY crm_username"
        return [_AGENTS.load(row) for row in await self._query("list agents", sql, [account_id])]

    # -- the softphone's credentials ------------------------------------------------------

    async def set_agent_password(
        self, account_id: str, crm_username: str, password_hash: str | None
    ) -> bool:
        async with self._transaction("set agent password") as db:
            cursor = await db.execute(
                f"UPDATE agents SET password_hash = ?, session_epoch = {_NEW_EPOCH}"
                " WHERE account_id = ? AND crm_username = ?",
                [password_hash, account_id, crm_username],
            )
            await _forget_signin_links(db, account_id, crm_username)
            return cursor.rowcount == 1

    async def agent_session_epochs(
        self, agents: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        pairs = sorted(set(agents))
        found: dict[tuple[str, str], str] = {}
        for start in range(0, len(pairs), _CHUNK // 2):  # two parameters a pair
            chunk = pairs[start:start + _CHUNK // 2]
            # A join, not "(a, b) IN (VALUES ...)": SQLite scans the table for the latter
            # and searches the primary key once a pair for the former.
            sql = (
                "SELECT a.account_id, a.crm_username, a.session_epoch"
                f" FROM (VALUES {', '.join(['(?, ?)'] * len(chunk))}) AS wanted"
                " JOIN agents AS a ON a.account_id = wanted.column1"
                " AND a.crm_username = wanted.column2"
            )
            params = [value for pair in chunk for value in pair]
            for row in await self._query("agent session epochs", sql, params):
                found[row["account_id"], row["crm_username"]] = row["session_epoch"]
        return found

    async def get_agent_password(self, account_id: str, crm_username: str) -> str | None:
        sql = "SELECT password_hash FROM agents WHERE account_id = ? AND crm_username = ?"
        rows = await self._query("get agent password", sql, [account_id, crm_username])
        return rows[0]["password_hash"] if rows else None

    async def set_launch_secret(self, account_id: str, secret: str | None) -> bool:
        sql = "UPDATE accounts SET launch_secret = ? WHERE id = ?"
        return await self._write("set launch secret", sql, [secret, account_id]) == 1

    async def server_secret(self, name: str, candidate: str) -> str:
        async with self._transaction("server secret") as db:
            await db.execute(
                "INSERT INTO server_secrets (name, value, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                [name, candidate, _ts(self._now())],
            )
            rows = list(await db.execute_fetchall(
                "SELECT value FROM server_secrets WHERE name = ?", [name]))  # fmt: skip
        return str(rows[0]["value"])

    async def add_signin_link(
        self, token_hash: str, account_id: str, crm_username: str, expires_at: datetime
    ) -> None:
        sql = (
            "INSERT INTO signin_links (token_hash, account_id, crm_username, expires_at)"
            " VALUES (?, ?, ?, ?)"
        )
        params = [token_hash, account_id, crm_username, _ts(expires_at)]
        await self._write("add sign-in link", sql, params)

    async def use_signin_link(self, token_hash: str, now: datetime) -> tuple[str, str] | None:
        async with self._transaction("use sign-in link") as db:
            cursor = await db.execute(
                "UPDATE signin_links SET used_at = ?1 WHERE token_hash = ?2"
                " AND used_at IS NULL AND expires_at > ?1",
                [_ts(now), token_hash],
            )
            if cursor.rowcount != 1:
                return None
            rows = list(await db.execute_fetchall(
                "SELECT account_id, crm_username FROM signin_links WHERE token_hash = ?",
                [token_hash]))  # fmt: skip
        return rows[0]["account_id"], rows[0]["crm_username"]

    async def use_launch_token(self, token_id: str, expires_at: datetime, now: datetime) -> bool:
        async with self._transaction("use launch token") as db:
            await db.execute("DELETE FROM launch_tokens_used WHERE expires_at <= ?", [_ts(now)])
            cursor = await db.execute(
                "INSERT INTO launch_tokens_used (token_id, expires_at) VALUES (?, ?)"
                " ON CONFLICT (token_id) DO NOTHING",
                [token_id, _ts(expires_at)],
            )
            return cursor.rowcount == 1

    async def revoke_session(self, session_id: str, expires_at: datetime,
                             now: datetime) -> None:
        async with self._transaction("revoke session") as db:
            await db.execute(
                "INSERT INTO revoked_sessions (session_id, expires_at) VALUES (?, ?)"
                " ON CONFLICT (session_id) DO NOTHING",
                [session_id, _ts(expires_at)],
            )
            # Oldest first, through the expiry index; SQLite's DELETE has no LIMIT unless
            # compiled with one.
            await db.execute(
                "DELETE FROM revoked_sessions WHERE rowid IN (SELECT rowid FROM revoked_sessions"
                " WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
                [_ts(now), _PRUNE_REVOCATIONS],
            )

    async def revoked_sessions(self, session_ids: Collection[str]) -> set[str]:
        ids = sorted(set(session_ids))
        found: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT session_id FROM revoked_sessions WHERE session_id IN ({marks})"
            rows = await self._query("revoked sessions", sql, chunk)
            found.update(row["session_id"] for row in rows)
        return found

    async def _add_pair(self, table: str, column: str, account_id: str, value: str) -> bool:
        sql = (
            f"INSERT INTO {table} (account_id, {column}, created_at) VALUES (?, ?, ?)"
            f" ON CONFLICT (account_id, {column}) DO NOTHING"
        )
        return await self._write(f"add {table}", sql, [account_id, value, _ts(self._now())]) == 1

    async def _remove_pair(self, table: str, column: str, account_id: str, value: str) -> bool:
        sql = f"DELETE FROM {table} WHERE account_id = ? AND {column} = ?"
        return await self._write(f"remove {table}", sql, [account_id, value]) == 1

    # -- calls -------------------------------------------------------------------------------

    async def create_call(self, call: Call) -> tuple[Call, bool]:
        """Insert ``call`` and its legs; if (account_id, uuid) exists, write nothing and return
        the existing call with False. The unique index decides, so this holds between
        processes too. ``created_at`` None is set to now."""
        _check_legs(call)
        call = replace(call, created_at=_utc(call.created_at or self._clock()))
        async with self._transaction("create call") as db:
            cursor = await db.execute(_INSERT_CALL, _CALLS.params(call))
            if cursor.rowcount == 0:
                where = "account_id = ? AND uuid = ?"
                existing = await _load_calls(db, where, [call.account_id, call.uuid])
                return existing[0], False
            await db.executemany(_UPSERT_LEG, [_LEGS.params(leg) for leg in call.legs])
        return call, True

    async def get_call(self, call_id: str) -> Call | None:
        async with self._transaction("get call", write=False) as db:
            calls = await _load_calls(db, "call_id = ?", [call_id])
        return calls[0] if calls else None

    async def find_call(self, account_id: str, uuid: str) -> Call | None:
        async with self._transaction("find call", write=False) as db:
            calls = await _load_calls(db, "account_id = ? AND uuid = ?", [account_id, uuid])
        return calls[0] if calls else None

    async def list_calls(self, account_id: str | None = None, limit: int = 50) -> list[Call]:
        """Newest first."""
        where = "?1 IS NULL OR account_id = ?1"
        async with self._transaction("list calls", write=False) as db:
            return await _load_calls(db, where, [account_id], "created_at DESC, rowid DESC", limit)

    async def save_leg(self, leg: Leg) -> None:
        """Insert or replace one leg (call_id, leg_id)."""
        await self._write("save leg", _UPSERT_LEG, _LEGS.params(leg))

    async def update_call(self, call: Call) -> None:
        """Write the call's own fields (not its legs, nor its identity: call_id, account_id,
        uuid, request_hash, created_at). StorageError if there is no such call."""
        async with self._transaction("update call") as db:
            await _update_call(db, call)

    async def finish_call(self, call: Call, outbox: OutboxEntry) -> None:
        """The final state, every leg, and the callback in ONE transaction. The entry's
        ``created_at`` None becomes now, and a PENDING entry with no ``next_attempt_at`` is
        due at once."""
        _check_legs(call)
        if outbox.call_id != call.call_id:
            raise ValueError(f"callback {outbox.event_id} is for call {outbox.call_id}")
        created = _utc(outbox.created_at or self._clock())
        due = outbox.next_attempt_at
        if due is None and outbox.status is OutboxStatus.PENDING:
            due = created
        outbox = replace(outbox, created_at=created, next_attempt_at=due)
        async with self._transaction("finish call") as db:
            await _update_call(db, call)
            await db.executemany(_UPSERT_LEG, [_LEGS.params(leg) for leg in call.legs])
            await db.execute(_OUTBOX.insert_sql(), _OUTBOX.params(outbox))

    async def unfinished_calls(self) -> list[Call]:
        """Calls with no end_time, oldest first: what a crash left behind."""
        async with self._transaction("unfinished calls", write=False) as db:
            return await _load_calls(db, "end_time IS NULL", [], "created_at, rowid")

    # -- the callback outbox -----------------------------------------------------------------

    async def due_callbacks(self, now: datetime, limit: int = 100) -> list[OutboxEntry]:
        """PENDING entries due by ``now``, the longest overdue first."""
        rows = await self._query(
            "due callbacks",
            "SELECT * FROM callback_outbox WHERE status = ? AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, created_at LIMIT ?",
            [OutboxStatus.PENDING.value, _ts(now), limit],
        )
        return [_OUTBOX.load(row) for row in rows]

    async def get_callback(self, event_id: str) -> OutboxEntry | None:
        sql = "SELECT * FROM callback_outbox WHERE event_id = ?"
        rows = await self._query("get callback", sql, [event_id])
        return _OUTBOX.load(rows[0]) if rows else None

    async def list_callbacks(
        self,
        account_id: str | None = None,
        status: OutboxStatus | None = None,
        limit: int = 100,
    ) -> list[OutboxEntry]:
        """Newest first, optionally of one account and/or in one status."""
        rows = await self._query(
            "list callbacks",
            "SELECT * FROM callback_outbox WHERE (?1 IS NULL OR account_id = ?1)"
            " AND (?2 IS NULL OR status = ?2) ORDER BY created_at DESC, rowid DESC LIMIT ?3",
            [account_id, None if status is None else status.value, limit],
        )
        return [_OUTBOX.load(row) for row in rows]

    async def record_attempt(
        self,
        event_id: str,
        *,
        delivered: bool,
        attempts: int,
        next_attempt_at: datetime | None,
        error: str | None,
        at: datetime,
    ) -> None:
        """After one delivery attempt: DELIVERED (``delivered_at`` = ``at``), or still
        PENDING until ``next_attempt_at``, or FAILED when that is None. StorageError if there
        is no such entry."""
        if delivered:
            status, due, delivered_at = OutboxStatus.DELIVERED, None, _ts(at)
        else:
            status = OutboxStatus.PENDING if next_attempt_at else OutboxStatus.FAILED
            due, delivered_at = _ts(next_attempt_at), None
        changed = await self._write(
            "record attempt",
            "UPDATE callback_outbox SET status = ?, attempts = ?, next_attempt_at = ?,"
            " last_error = ?, delivered_at = ? WHERE event_id = ?",
            [status.value, attempts, due, error, delivered_at, event_id],
        )
        if changed != 1:
            raise StorageError(f"record attempt: no callback {event_id}")

    async def requeue_callback(self, event_id: str, now: datetime) -> bool:
        """Make a FAILED or DELIVERED entry PENDING again, due ``now``, attempts 0 (its last
        error is kept until the next attempt). False for an unknown or still PENDING one."""
        changed = await self._write(
            "requeue callback",
            "UPDATE callback_outbox SET status = ?, attempts = 0, next_attempt_at = ?,"
            " delivered_at = NULL WHERE event_id = ? AND status IN (?, ?)",
            [OutboxStatus.PENDING.value, _ts(now), event_id,
             OutboxStatus.FAILED.value, OutboxStatus.DELIVERED.value],
        )  # fmt: skip
        return changed == 1


async def _update_call(db: aiosqlite.Connection, call: Call) -> None:
    params = {c: v for c, v in _CALLS.params(call).items() if c in _CALL_MUTABLE}
    cursor = await db.execute(_UPDATE_CALL, {**params, "call_id": call.call_id})
    if cursor.rowcount != 1:
        raise StorageError(f"update call: no call {call.call_id}")


async def _load_calls(
    db: aiosqlite.Connection,
    where: str,
    params: list[Any],
    order: str = "rowid",
    limit: int = -1,
) -> list[Call]:
    """The calls ``WHERE where``, each with its legs (loaded by one query per 500 calls)."""
    sql = f"SELECT * FROM calls WHERE {where} ORDER BY {order} LIMIT {int(limit)}"
    rows = list(await db.execute_fetchall(sql, params))
    legs: dict[str, list[Leg]] = {row["call_id"]: [] for row in rows}
    ids = list(legs)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        sql = f"SELECT * FROM legs WHERE call_id IN ({', '.join('?' * len(chunk))}) ORDER BY leg_id"
        for leg_row in await db.execute_fetchall(sql, chunk):
            legs[leg_row["call_id"]].append(_LEGS.load(leg_row))
    return [_CALLS.load(row, legs=tuple(legs[row["call_id"]])) for row in rows]


def _make_parent(path: str) -> None:
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"open {path}: cannot create {parent}: {exc}") from exc


async def _configure(
    db: aiosqlite.Connection, path: str, synchronous: str, busy_timeout: float
) -> None:
    # The busy timeout first: switching to WAL needs a moment of the write lock.
    await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    rows = list(await db.execute_fetchall("PRAGMA journal_mode = WAL"))
    mode = str(rows[0][0]).lower()
    if mode != "wal" and path != MEMORY:
        logger.warning("%s: journal_mode is %s, not wal (a network filesystem?)", path, mode)
    await db.execute("PRAGMA foreign_keys = ON")
    await db.execute(f"PRAGMA synchronous = {synchronous}")
