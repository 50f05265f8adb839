"""Helpers for the store's tests."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from callbridge.store.migrations import MIGRATIONS, migrate


def database_at(path: Path, version: int, now: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
    """A database file as callbridge at schema ``version`` left it: migrations up to it, no rows."""

    async def main() -> None:
        async with aiosqlite.connect(path, isolation_level=None) as db:
            await db.execute("BEGIN IMMEDIATE")
            await migrate(db, now, migrations=MIGRATIONS[:version])
            await db.execute("COMMIT")

    asyncio.run(main())
