"""Which agents have a softphone page connected, and a way to reach them.

An agent is online while at least one of their pages holds the signalling WebSocket open
(two tabs are two connections; closing one leaves the agent online). The call layer asks
:meth:`Presence.is_online` before it rings a ``crm_username`` agent, so a call to an offline
agent fails at once (``AGENT_OFFLINE``) instead of after the ring timeout, and reaches the
page with :meth:`Presence.send`, which goes to the newest connection: the page the agent
opened last is the one in front of them.

State lives in this process only: presence is a fact about open sockets, which a restart
closes anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from callbridge.softphone.signalling import CallSignals

__all__ = ["Connection", "Presence"]

log = logging.getLogger(__name__)

_Agent = tuple[str, str]  #: (account_id, crm_username)


class Connection(Protocol):
    """What presence needs of a page's connection (Starlette's WebSocket is one)."""

    async def send_json(self, data: Any, mode: str = "text") -> None: ...


class Presence:
    """The registry of connected softphone pages, by (account_id, crm_username)."""

    def __init__(self) -> None:
        self._pages: dict[_Agent, list[Connection]] = {}
        #: Where the pages' call messages go (the server's BrowserPhone); None: nowhere.
        self.calls: CallSignals | None = None

    def is_online(self, account_id: str, crm_username: str) -> bool:
        return bool(self._pages.get((account_id, crm_username)))

    def online(self, account_id: str) -> list[str]:
        """The account's online agents, sorted."""
        return sorted(user for (account, user), pages in self._pages.items()
                      if account == account_id and pages)  # fmt: skip

    async def send(self, account_id: str, crm_username: str, message: dict[str, Any]) -> bool:
        """Send ``message`` (JSON) to the agent's newest page; False if none is connected or
        the send failed (the page is going away; its handler unregisters it)."""
        pages = self._pages.get((account_id, crm_username))
        if not pages:
            return False
        try:
            await pages[-1].send_json(message)
        except Exception as exc:  # a closing socket: Starlette raises several kinds
            log.info("softphone %s/%s: send failed: %s", account_id, crm_username, exc)
            return False
        return True

    @contextmanager
    def connected(self, account_id: str, crm_username: str, page: Connection) -> Iterator[None]:
        """The agent is online (through ``page``) inside the block."""
        key = (account_id, crm_username)
        self._pages.setdefault(key, []).append(page)
        log.info("softphone %s/%s: online (%d pages)", *key, len(self._pages[key]))
        try:
            yield
        finally:
            pages = self._pages.get(key, [])
            if page in pages:
                pages.remove(page)
            if not pages:
                self._pages.pop(key, None)
            log.info("softphone %s/%s: %d pages left", *key, len(pages))
