"""The SQLite schema, as numbered migrations applied in order at start-up.

Each migration is ``(version, SQL)``; the versions a database has are rows of
``schema_migrations``. Never edit a released migration: add the next one. :func:`migrate`
applies every missing version inside the caller's transaction (SQLite DDL is transactional),
so a database is either at the code's version or untouched, and refuses one from newer code.

Conventions the SQL follows, which :mod:`callbridge.store.sqlite` relies on:

- Times are ISO-8601 UTC text with microseconds (``2024-05-01T10:00:00.000000+00:00``): one
  fixed width, so text order is time order and indexes on time columns work.
- Enum columns hold the enum's value (``'INITIATED'``, ``'pending'``); no CHECK constraints,
  because SQLite cannot alter one without rebuilding the table.
- Lists (``allow_cidrs``) are JSON arrays.
- Only features of SQLite >= 3.24 (UPSERT); no STRICT tables or RETURNING, so that the
  SQLite bundled with an older Python still works.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

import aiosqlite

from callbridge.errors import StorageError


@dataclass(frozen=True)
class Migration:
    version: int
    sql: str


V1 = """
CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    callback_url    TEXT NOT NULL,
    callback_secret TEXT NOT NULL,
    allow_cidrs     TEXT NOT NULL DEFAULT '[]',
    allow_origins   TEXT NOT NULL DEFAULT '[]',
    created_at      TEXT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX api_keys_account ON api_keys (account_id, created_at);
CREATE INDEX api_keys_prefix ON api_keys (prefix);

CREATE TABLE caller_ids (
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    number      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (account_id, number)
);

CREATE TABLE agents (
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    crm_username  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (account_id, crm_username)
);

CREATE TABLE calls (
    call_id        TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    uuid           TEXT NOT NULL,
    from_number    TEXT NOT NULL,
    to_number      TEXT NOT NULL,
    agent_number   TEXT,
    crm_username   TEXT,
    recording      INTEGER NOT NULL,
    max_ring_time  INTEGER NOT NULL,
    request_hash   TEXT NOT NULL,
    call_status    TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    start_time     TEXT,
    end_time       TEXT,
    duration       INTEGER NOT NULL DEFAULT 0,
    recording_url  TEXT,
    hangup_source  TEXT
);
-- Idempotency: the CRM's uuid is unique per account, and this index is what decides between
-- two concurrent POST /calls with the same uuid.
CREATE UNIQUE INDEX calls_account_uuid ON calls (account_id, uuid);
CREATE INDEX calls_account_created ON calls (account_id, created_at);
CREATE INDEX calls_created ON calls (created_at);
-- What a crash left behind: small, because finished calls drop out of it.
CREATE INDEX calls_unfinished ON calls (created_at) WHERE end_time IS NULL;

CREATE TABLE legs (
    call_id      TEXT NOT NULL REFERENCES calls (call_id),
    leg_id       INTEGER NOT NULL,
    role         TEXT NOT NULL,
    number       TEXT NOT NULL,
    status       TEXT NOT NULL,
    sip_code     INTEGER,
    reason       TEXT,
    answered_at  TEXT,
    ended_at     TEXT,
    PRIMARY KEY (call_id, leg_id)
);

CREATE TABLE callback_outbox (
    event_id         TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    call_id          TEXT NOT NULL REFERENCES calls (call_id),
    url              TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    delivered_at     TEXT
);
-- The delivery worker's query: pending entries due by now, most overdue first.
CREATE INDEX callback_outbox_due ON callback_outbox (status, next_attempt_at);
CREATE INDEX callback_outbox_account ON callback_outbox (account_id, created_at);
CREATE INDEX callback_outbox_call ON callback_outbox (call_id);
"""

V2 = """
-- Live call control (issue 7): agent confirmation and a talk-time limit, as account defaults
-- and per call. NULL is "none" in both, which is what every call placed before had.
ALTER TABLE accounts ADD COLUMN agent_confirm TEXT;
ALTER TABLE accounts ADD COLUMN time_limit INTEGER;
ALTER TABLE calls ADD COLUMN agent_confirm TEXT;
ALTER TABLE calls ADD COLUMN time_limit INTEGER;
"""

V3 = """
-- The browser softphone (issue 6). Agents sign in with a password (scrypt, NULL: none set)
-- or a one-time link; a CRM backend may mint launch tokens with the account's launch secret
-- (NULL: launch tokens are refused). The session cookie is signed with a per-install secret
-- kept in server_secrets, made at first start, so every process of one install agrees.
ALTER TABLE agents ADD COLUMN password_hash TEXT;
ALTER TABLE accounts ADD COLUMN launch_secret TEXT;

CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- One-time sign-in links: only the token's SHA-256 is kept, used_at set once.
CREATE TABLE signin_links (
    token_hash    TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    crm_username  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    used_at       TEXT
);

-- Launch tokens seen, kept until they expire: a second use of one is a replay.
CREATE TABLE launch_tokens_used (
    token_id    TEXT PRIMARY KEY,
    expires_at  TEXT NOT NULL
);
CREATE INDEX launch_tokens_used_expiry ON launch_tokens_used (expires_at);
"""

V4 = """
-- Signing an agent out everywhere (issue 6). Every softphone session cookie carries its
-- agent's session_epoch, and one that does not carry the current epoch is refused. A new
-- password gives the agent a new random epoch (so every earlier session ends), and so does
-- adding an agent again under a removed one's name (a counter would restart at the same
-- value and revive the removed agent's cookies). Cookies made before this version carry
-- no epoch: every agent signs in once more after the upgrade.
ALTER TABLE agents ADD COLUMN session_epoch TEXT NOT NULL DEFAULT '';
UPDATE agents SET session_epoch = lower(hex(randomblob(8)));
"""

V5 = """
-- Signing one softphone session out everywhere. Every session cookie carries a random
-- session id; POST /softphone/signout records it here, and a cookie whose id is here is
-- refused (its other sessions, with other ids, go on). A row is needed only until the cookie
-- would have expired anyway, which expires_at says; sign-outs forget expired rows. Cookies
-- made before this version carry no id: every agent signs in once more after the upgrade.
CREATE TABLE revoked_sessions (
    session_id  TEXT PRIMARY KEY,
    expires_at  TEXT NOT NULL
);
CREATE INDEX revoked_sessions_expiry ON revoked_sessions (expires_at);
"""

#: Every migration, in order. The last version is the one this code reads and writes.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, V1), Migration(2, V2), Migration(3, V3), Migration(4, V4), Migration(5, V5),
)
LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    applied_at  TEXT NOT NULL
)
"""


def split_statements(sql: str) -> list[str]:
    """Cut a script into single statements, to run them with ``execute`` inside our own
    transaction (``executescript`` would COMMIT first). ``sqlite3.complete_statement`` decides
    where a statement ends, so a ``;`` inside a string literal or a trigger body is kept."""
    statements: list[str] = []
    pending = ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n\t;"):
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:60]!r}")
    return statements


async def migrate(
    db: aiosqlite.Connection,
    now: datetime,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[int]:
    """Bring ``db`` to the last of ``migrations``; return the versions applied (none when it is
    current). Raises StorageError for a database at a version newer than ``migrations`` know.

    Call it inside a ``BEGIN IMMEDIATE`` transaction: the write lock is then held before the
    version is read, so two processes starting at once cannot both apply a migration, and a
    failure leaves the database as it was. sqlite3 errors propagate to the caller to map.
    """
    await db.execute(_CREATE_VERSIONS)
    current = await _current_version(db)
    latest = migrations[-1].version
    if current > latest:
        raise StorageError(
            f"database schema is version {current}, newer than this callbridge knows "
            f"({latest}): upgrade callbridge, or point storage.database_url elsewhere"
        )
    pending = [m for m in migrations if m.version > current]
    for migration in pending:
        await _apply(db, migration, now)
    return [m.version for m in pending]


async def _current_version(db: aiosqlite.Connection) -> int:
    rows = list(await db.execute_fetchall("SELECT MAX(version) FROM schema_migrations"))
    value = rows[0][0]
    return 0 if value is None else int(value)


async def _apply(db: aiosqlite.Connection, migration: Migration, now: datetime) -> None:
    for statement in split_statements(migration.sql):
        await db.execute(statement)
    await db.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
        (migration.version, now.isoformat(timespec="microseconds")),
    )
