"""The softphone's signalling: one WebSocket per page, ``/softphone/ws``, JSON text messages.

Admission, before the socket is accepted (a refused handshake gets HTTP 403 and the close
code below in the ASGI close, which the tests read):

1. the session cookie (:mod:`callbridge.softphone.auth`) must be valid (ours, unexpired, not
   signed out, under the agent's current password): else close 4401;
2. ``Origin`` must be ``[http] public_url``'s origin or one of the account's
   ``allow_origins``: else close 4403. Browsers send ``Origin`` on every WebSocket
   handshake and cookies ride along whatever page opened it, so this is what stops another
   site's page from using the agent's session (cross-site WebSocket hijacking).

While the socket is open the agent is online (:mod:`callbridge.softphone.presence`), as long
as the session lasts: a password changed or the agent removed (by the admin command, in
another process), the session signed out (``POST /softphone/signout`` with any copy of its
cookie) or the session expired signs the page out, at its next message or within
``Presence.recheck_every`` seconds, whichever comes first: ``error`` ``SIGNED_OUT``, then
close 4401 with the reason. A sign-out this process serves closes the session's pages at once,
with 4401 alone (the page that clicked Sign out needs no reason).

Every message is an object with a ``type``. Page to server:

=========  =================================================  ================================
type       fields                                              meaning
=========  =================================================  ================================
hello      ``version`` (1)                                     first message; answered hello
call       ``to_number``, ``uuid``, ``from_number``?,          place the pending call (the
           ``ticket``? (from a launch token), ``sdp``          Call click; see
                                                               :mod:`~callbridge.softphone.dialer`)
hangup     -                                                   end the current call
dtmf       ``call_id``, ``digits`` (0-9 * # A-D)               press keys on the customer leg
mute       ``muted`` (bool)                                    the agent's microphone state
answer     ``sdp``                                             WebRTC answer to our offer
offer      ``sdp``                                             WebRTC offer (renegotiation)
state      anything                                            page state; echoed (keep-alive)
=========  =================================================  ================================

Server to page:

=========  ===================================================================================
type       fields
=========  ===================================================================================
hello      ``account_id``, ``crm_username``, ``version`` (1): who the session is;
           ``ice_servers`` (``[softphone] ice_servers`` as RTCIceServer objects) when set
offer      ``sdp``, ``call_id``: the agent leg, as a WebRTC offer the page answers
answer     ``sdp``
state      ``state`` (idle, dialing, ringing, bridged, ended), ``call_id``?, ``reason``?,
           ``started_at``? (ISO-8601, for the page's timer); or an echo of the page's state
error      ``reason`` (BAD_MESSAGE, NOT_AVAILABLE, SIGNED_OUT, ...), ``message``: the page
           shows it
=========  ===================================================================================

The server answers ``hello`` and echoes ``state``; ``call`` goes to the :class:`Dialer`
(and ``dtmf``) when there is one; the other call messages are handed to a
:class:`CallSignals`: the one given, else ``Presence.calls`` (the server puts its
:class:`~callbridge.softphone.leg.BrowserPhone` there), else one that answers ``error``
``NOT_AVAILABLE``. A call rung to the page (:mod:`callbridge.softphone.leg`) adds
``incoming`` (server to page: ``call_id``, ``to_number``), ``answer`` both ways with a
``call_id`` (the page's offer in, our answer out) and ``hangup`` both ways with a ``call_id``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, Protocol
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge.api.origin import normalize_origin
from callbridge.config import IceServer
from callbridge.softphone.auth import SESSION_COOKIE, Session, SoftphoneAuth
from callbridge.softphone.presence import CLOSE_SIGNED_OUT, Presence
from callbridge.store.models import Store

__all__ = ["CLOSE_BAD_ORIGIN", "CLOSE_UNAUTHENTICATED", "CallSignals", "Signalling"]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: WebSocket close codes (RFC 6455 §7.4.2: 4000-4999 are the application's own).
CLOSE_UNAUTHENTICATED = CLOSE_SIGNED_OUT  # 4401: no session, or it ended while open
CLOSE_BAD_ORIGIN = 4403
#: RFC 6455 §7.4.1: 1009, a message too big to process. An SDP is a few kilobytes.
CLOSE_TOO_BIG = 1009
MAX_MESSAGE = 64 * 1024
CALL_TYPES = ("call", "hangup", "dtmf", "mute", "offer", "answer")

Reply = Callable[[dict[str, Any]], Awaitable[None]]


class CallSignals(Protocol):
    """What the call layer does with a page's call messages."""

    async def handle(self, session: Session, message: dict[str, Any], reply: Reply) -> None: ...

    async def closed(self, session: Session, reply: Reply) -> None:
        """The page whose messages came with ``reply`` is gone (its calls end)."""
        ...


class Dialer(Protocol):
    """Places the call a page's ``call`` message asks for (:mod:`callbridge.softphone.dialer`)."""

    async def call(self, session: Session, message: dict[str, Any], reply: Reply) -> None: ...

    async def dtmf(self, session: Session, message: dict[str, Any], reply: Reply) -> None: ...


class NoCalls:
    """Until the WebRTC leg exists: every call message is answered ``NOT_AVAILABLE``."""

    async def handle(self, session: Session, message: dict[str, Any], reply: Reply) -> None:
        # TODO(issue 6, webrtc): hand call/hangup/dtmf/mute/offer/answer to softphone.webrtc.
        await reply({"type": "error", "reason": "NOT_AVAILABLE",
                     "message": "calls from the softphone are not available yet"})  # fmt: skip

    async def closed(self, session: Session, reply: Reply) -> None:
        return None


class Signalling:
    """The ``/softphone/ws`` endpoint."""

    def __init__(self, auth: SoftphoneAuth, store: Store, presence: Presence,
                 public_url: str, calls: CallSignals | None = None,
                 dialer: Dialer | None = None,
                 ice_servers: tuple[IceServer, ...] = ()) -> None:
        self.auth = auth
        #: ``RTCIceServer`` dictionaries for the page's RTCPeerConnection (W3C WebRTC §4.2.4).
        self.ice_servers = [_ice_dict(server) for server in ice_servers]
        self.dialer = dialer
        self.store = store
        self.presence = presence
        self.own_origin = _origin_of(public_url)
        self._calls = calls

    @property
    def calls(self) -> CallSignals:
        return self._calls or self.presence.calls or NoCalls()

    async def endpoint(self, websocket: WebSocket) -> None:
        session = await self.auth.session(websocket.cookies.get(SESSION_COOKIE))
        if session is None:
            await websocket.close(CLOSE_UNAUTHENTICATED, "sign in first")
            return
        if not await self.origin_allowed(session, websocket.headers.get("origin")):
            log.warning("softphone %s/%s: refused Origin %r", session.account_id,
                        session.crm_username, websocket.headers.get("origin"))  # fmt: skip
            await websocket.close(CLOSE_BAD_ORIGIN, "origin not allowed")
            return
        await websocket.accept()

        async def reply(message: dict[str, Any]) -> None:
            await websocket.send_json(message)

        try:
            with (self.presence.signed_in(session, websocket, self.auth),
                  suppress(WebSocketDisconnect)):
                await self._serve(session, websocket, reply)
        finally:
            await self.calls.closed(session, reply)  # closing mid-call is hanging up

    async def origin_allowed(self, session: Session, origin: str | None) -> bool:
        if origin is None:
            return False
        wanted = normalize_origin(origin)
        if wanted == self.own_origin:
            return True
        account = await self.store.get_account(session.account_id)
        allowed = account.allow_origins if account else ()
        return wanted in {normalize_origin(o) for o in allowed}

    async def _serve(self, session: Session, websocket: WebSocket, reply: Reply) -> None:
        while True:
            received = await websocket.receive()
            if received["type"] == "websocket.disconnect":
                return
            text = received.get("text") or ""  # a binary frame is no message of ours
            if len(text) > MAX_MESSAGE:
                await websocket.close(CLOSE_TOO_BIG, "message too big")
                return
            message = _parse(text)
            lapsed = await self.auth.lapsed([session])  # e.g. no call after a new password
            if lapsed:
                await self.presence.sign_out(websocket, lapsed[session])
                return
            if message is None:
                await reply(_error("BAD_MESSAGE", "expected a JSON object with a 'type'"))
            else:
                await self._dispatch(session, message, reply)

    async def _dispatch(self, session: Session, message: dict[str, Any], reply: Reply) -> None:
        kind = message["type"]
        if kind == "hello":
            hello = {"type": "hello", "version": PROTOCOL_VERSION,
                     "account_id": session.account_id, "crm_username": session.crm_username}
            if self.ice_servers:  # TURN credentials go to signed-in agents only
                hello["ice_servers"] = self.ice_servers
            await reply(hello)
        elif kind == "state":
            await reply(message)
        elif kind == "call" and self.dialer is not None:
            await self.dialer.call(session, message, reply)
        elif kind == "dtmf" and self.dialer is not None:
            await self.dialer.dtmf(session, message, reply)
        elif kind in CALL_TYPES:
            await self.calls.handle(session, message, reply)
        else:
            await reply(_error("BAD_MESSAGE", f"unknown message type {kind!r}"))


def _parse(text: str) -> dict[str, Any] | None:
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    return message


def _ice_dict(server: IceServer) -> dict[str, str]:
    fields = {"urls": server.url, "username": server.username, "credential": server.credential}
    return {name: value for name, value in fields.items() if value is not None}


def _error(reason: str, text: str) -> dict[str, Any]:
    return {"type": "error", "reason": reason, "message": text}


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return normalize_origin(f"{parts.scheme}://{parts.netloc}")
