"""Persistence: schema, migrations and repositories (SQLite by default).

``open_store(settings.storage.database_url)`` gives the :class:`~callbridge.store.models.Store`
the rest of callbridge uses; the backend is chosen by the URL's scheme. Only SQLite exists
today (:mod:`callbridge.store.sqlite`); a PostgreSQL backend would add its scheme here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callbridge.errors import ConfigError

if TYPE_CHECKING:
    from callbridge.store.models import Store

_KEY = "storage.database_url"
_SQLITE = "sqlite:///"


def sqlite_path(database_url: str) -> str:
    """The file path in a ``sqlite:///`` URL: ``sqlite:///callbridge.db`` is relative to the
    working directory, ``sqlite:////var/lib/callbridge.db`` absolute (four slashes), and
    ``sqlite:///:memory:`` a private in-memory database (for tests: it dies with the process).
    Raises ConfigError for any other URL."""
    if not database_url.startswith(_SQLITE):
        scheme = database_url.partition(":")[0]
        if database_url.startswith("sqlite:"):
            raise ConfigError(_KEY, f"write sqlite:///PATH (three slashes), got {database_url!r}")
        raise ConfigError(_KEY, f"only sqlite:/// databases are supported, not {scheme!r}")
    path = database_url[len(_SQLITE) :]
    if not path or path.endswith("/"):
        raise ConfigError(_KEY, f"no database file named in {database_url!r}")
    if "?" in path or "#" in path:
        raise ConfigError(_KEY, f"URL parameters are not supported: {database_url!r}")
    return path


async def open_store(database_url: str) -> Store:
    """Open (creating and migrating it if need be) the database ``database_url`` names.

    Raises ConfigError for a URL callbridge cannot use, StorageError when the database
    cannot be opened or has a schema newer than this code.
    """
    path = sqlite_path(database_url)
    # Imported here so that importing callbridge.store.models needs no database driver.
    from callbridge.store.sqlite import SqliteStore

    return await SqliteStore.open(path)
