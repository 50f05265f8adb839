"""Which agents have a softphone page connected, and a way to reach them.

An agent is online while at least one of their pages holds the signalling WebSocket open
(two tabs are two connections; closing one leaves the agent online). The call layer asks
:meth:`Presence.is_online` before it rings a ``crm_username`` agent, so a call to an offline
agent fails at once (``AGENT_OFFLINE``) instead of after the ring timeout, and reaches the
page with :meth:`Presence.send`, which goes to the newest connection: the page the agent
opened last is the one in front of them.

A page is connected under a session (:meth:`Presence.signed_in`), and stays only while that
session lasts. The admin command that changes an agent's password (or removes the agent) is
another process, so nothing tells this one, and neither does a sign-out of the session served
by another process of the same install: while any page is open, one task re-checks every
open page's session each ``recheck_every`` seconds, in two store queries
(:meth:`~callbridge.softphone.auth.SoftphoneAuth.lapsed`), and signs out the pages whose
session is over: an ``error`` ``SIGNED_OUT`` message with the reason, then close code 4401
(the code a handshake without a session gets), after which the page asks
``/softphone/session``, is answered 401 and shows the sign-in form. A page that sends a
message is checked then too (:mod:`callbridge.softphone.signalling`), so a revoked agent
cannot place a call in the seconds before the next round. A sign-out this process serves
closes the session's pages here at once, without a reason (:meth:`Presence.end_session`).

State lives in this process only: presence is a fact about open sockets, which a restart
closes anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from callbridge.softphone.auth import Session

if TYPE_CHECKING:
    from callbridge.softphone.signalling import CallSignals

__all__ = ["CLOSE_SIGNED_OUT", "RECHECK_SECONDS", "Connection", "Presence", "SessionCheck"]

log = logging.getLogger(__name__)

_Agent = tuple[str, str]  #: (account_id, crm_username)

#: How often open pages' sessions are checked again: the most a revoked page stays open.
RECHECK_SECONDS = 5.0
#: RFC 6455 §7.4.2 (4000-4999 are the application's): the session is over, sign in again.
CLOSE_SIGNED_OUT = 4401


class Connection(Protocol):
    """What presence needs of a page's connection (Starlette's WebSocket is one)."""

    async def send_json(self, data: Any, mode: str = "text") -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class SessionCheck(Protocol):
    """Which sessions are over, and why (:class:`~callbridge.softphone.auth.SoftphoneAuth`)."""

    async def lapsed(self, sessions: Collection[Session]) -> dict[Session, str]: ...


class Presence:
    """The registry of connected softphone pages, by (account_id, crm_username)."""

    def __init__(self, recheck_every: float = RECHECK_SECONDS) -> None:
        self._pages: dict[_Agent, list[Connection]] = {}
        #: Where the pages' call messages go (the server's BrowserPhone); None: nowhere.
        self.calls: CallSignals | None = None
        #: Seconds between two checks of the open pages' sessions (tests make it short).
        self.recheck_every = recheck_every
        #: The session each signed-in page was admitted under.
        self._sessions: dict[Connection, Session] = {}
        self._watch: asyncio.Task[None] | None = None

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
            self._unregister(key, page)
            log.info("softphone %s/%s: %d pages left", *key, len(self._pages.get(key, [])))

    def _unregister(self, key: _Agent, page: Connection) -> None:
        pages = self._pages.get(key, [])
        if page in pages:
            pages.remove(page)
        if not pages:
            self._pages.pop(key, None)

    # -- sessions --------------------------------------------------------------------------

    @contextmanager
    def signed_in(self, session: Session, page: Connection,
                  check: SessionCheck) -> Iterator[None]:
        """:meth:`connected` under ``session``: the page is signed out once ``check`` finds
        the session over (checked every :attr:`recheck_every` seconds)."""
        with self.connected(session.account_id, session.crm_username, page):
            self._sessions[page] = session
            self._start_watch(check)
            try:
                yield
            finally:
                self._sessions.pop(page, None)

    async def recheck(self, check: SessionCheck) -> int:
        """Sign out every open page whose session ``check`` finds over; how many."""
        lapsed = await check.lapsed(set(self._sessions.values()))
        doomed = [(page, lapsed[session]) for page, session in list(self._sessions.items())
                  if session in lapsed]  # fmt: skip
        for page, reason in doomed:
            await self.sign_out(page, reason)
        return len(doomed)

    async def end_session(self, session: Session) -> int:
        """Sign out every page open under ``session`` (by its id), which was signed out in
        this process just now; how many. Without a reason: the page whose Sign out click it
        was is usually among them, and the agent needs no notice about their own click."""
        doomed = [page for page, open_under in list(self._sessions.items())
                  if open_under.sid == session.sid]  # fmt: skip
        for page in doomed:
            await self.sign_out(page, None)
        return len(doomed)

    async def sign_out(self, page: Connection, reason: str | None) -> None:
        """Offline at once (nothing rings a page that is going), then the page is told why
        (unless ``reason`` is None) and closed; its handler's clean-up (hanging up its call)
        follows the close."""
        session = self._sessions.pop(page, None)
        if session is not None:
            self._unregister(session.agent, page)
            log.info("softphone %s/%s: signed out: %s", *session.agent,
                     reason or "its session was signed out here")  # fmt: skip
        try:
            if reason is not None:
                await page.send_json({"type": "error", "reason": "SIGNED_OUT",
                                      "message": reason})  # fmt: skip
            await page.close(CLOSE_SIGNED_OUT, reason)
        except Exception as exc:  # closed already: Starlette raises several kinds
            log.info("softphone: page gone before its sign-out: %s", exc)

    def _start_watch(self, check: SessionCheck) -> None:
        """One watch task per event loop while any page is open; it ends with the last."""
        loop = asyncio.get_running_loop()
        watch = self._watch
        if watch is not None and not watch.done() and watch.get_loop() is loop:
            return
        self._watch = loop.create_task(self._watch_sessions(check), name="softphone-sessions")

    async def _watch_sessions(self, check: SessionCheck) -> None:
        while self._sessions:
            await asyncio.sleep(self.recheck_every)
            try:
                await self.recheck(check)
            except Exception:  # a database hiccup (StorageError): the next round tries again
                log.exception("softphone: could not re-check the open pages' sessions")
