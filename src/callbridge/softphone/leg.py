"""The browser softphone as leg 1 of a call: ringing the page, answering, hanging up.

:class:`BrowserPhone` is the call service's :class:`~callbridge.b2bua.calls.AgentPhone` (the
runner rings it instead of dialling SIP) and the signalling's
:class:`~callbridge.softphone.signalling.CallSignals` (the page's messages about the call
come back through it). One :class:`BrowserLeg` per ringing call::

    server -> page   {"type": "incoming", "call_id", "to_number"}     ring: Answer / Decline
    page -> server   {"type": "answer", "call_id", "sdp"}             Answer: the page's offer
    server -> page   {"type": "answer", "call_id", "sdp"}             BrowserMedia's answer
    page -> server   {"type": "hangup", "call_id"}                    Decline, or hang up
    server -> page   {"type": "state", "state": "bridged", "call_id", "started_at"}
    server -> page   {"type": "hangup", "call_id"}                    the call is over

A call the page placed itself (its Call button, :mod:`callbridge.softphone.dialer`) is not
rung: :meth:`BrowserPhone.expect` keeps the page's offer, and when the runner comes to ring
that call the leg is answered with it at once (``state`` dialing with the ``call_id``, then
``answer``). A kept offer goes on every other path too: the page closing first, the call
ending before its agent leg starts (no port for it, a failure inside callbridge, the runner
never started) or :meth:`BrowserPhone.forget`. The runner rings leg 1 within milliseconds
of the start, so an offer still kept after ``placed_ttl`` seconds belongs to a call that
ended without ringing: it is dropped and the page told (``error`` ``CALL_FAILED``), which
ends its Dialing.

The page offers (it holds the microphone and waits for ICE gathering: no trickle) and we
answer; the leg then reports into the call's queue with the call machine's own events, so
the runner treats the page like a SIP phone: :class:`LegAnswered` once the SDP is answered,
:class:`LegFailed` 603 when the agent declines (BUSY, like a SIP 603, RFC 3261 §21.6.2),
:class:`LegHungUp` when the agent hangs up or the page's WebSocket closes mid-call.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from datetime import datetime
from typing import Any

from callbridge.b2bua.call import AGENT, LegAnswered, LegFailed, LegHungUp
from callbridge.config import SoftphoneSettings, parse_ice_servers
from callbridge.media.endpoint import LegMedia
from callbridge.softphone.auth import Session
from callbridge.softphone.presence import Presence
from callbridge.softphone.signalling import Reply
from callbridge.softphone.webrtc import BrowserMedia

__all__ = ["PLACED_TTL", "BrowserLeg", "BrowserPhone", "LegState"]

log = logging.getLogger(__name__)

#: The longest a placed call's offer waits for its agent leg: far above the milliseconds the
#: runner takes, and above the store's 5 s busy timeout that a slow first write may wait.
PLACED_TTL = 30.0


class LegState(enum.Enum):
    #: The page shows Answer / Decline.
    RINGING = "ringing"
    #: The agent pressed Answer: the page's offer is being answered.
    ANSWERING = "answering"
    #: The agent answered: media negotiated, the call goes on.
    ANSWERED = "answered"
    #: Over (declined, hung up on either side, or the page went away).
    ENDED = "ended"


class BrowserLeg:
    """One call's agent leg on a softphone page."""

    def __init__(self, phone: BrowserPhone, call_id: str, account_id: str, crm_username: str,
                 media: BrowserMedia, events: asyncio.Queue[Any]) -> None:
        self.phone = phone
        self.call_id = call_id
        self.agent = (account_id, crm_username)
        self.browser = media
        self.events = events
        self.state = LegState.RINGING
        #: The page that answered: only its closing ends the call.
        self.page: Reply | None = None

    @property
    def media(self) -> LegMedia:
        return self.browser.leg_media

    async def answer(self, sdp: str, reply: Reply) -> None:
        if self.state is not LegState.RINGING:
            await reply(_error("NOT_RINGING", "this call is not ringing"))
            return
        self.state = LegState.ANSWERING  # a second tab's Answer is refused meanwhile
        try:
            answer = await self.browser.answer(sdp)
        except Exception as exc:  # ValueError: no common codec; aiortc's own on a bad offer
            if self.state is not LegState.ANSWERING:
                return  # the call ended meanwhile
            log.warning("call %s: the page's offer is unusable: %s", self.call_id, exc)
            await reply(_error("BAD_SDP", str(exc)))
            await self.end(LegFailed(AGENT, 488, "NO_COMMON_CODEC"))
            return
        if self.state is not LegState.ANSWERING:
            return  # hung up (by the call or the page) while we negotiated
        self.state, self.page = LegState.ANSWERED, reply
        await reply({"type": "answer", "call_id": self.call_id, "sdp": answer})
        self.events.put_nowait(LegAnswered(AGENT))

    async def bridged(self, started_at: datetime) -> None:
        """The customer answered: the page shows Connected and times the call from here."""
        if self.state is LegState.ANSWERED and self.page is not None:
            try:
                await self.page({"type": "state", "state": "bridged", "call_id": self.call_id,
                                 "started_at": started_at.isoformat()})  # fmt: skip
            except Exception as exc:  # a closing socket: its close hangs the call up
                log.info("call %s: page not told of the bridge: %s", self.call_id, exc)

    async def page_hangup(self) -> None:
        """Decline while ringing; hang up once answered."""
        if self.state in (LegState.RINGING, LegState.ANSWERING):
            await self.end(LegFailed(AGENT, 603, "DECLINED"))
        elif self.state is LegState.ANSWERED:
            await self.end(LegHungUp(AGENT, "AGENT_HANGUP"))

    async def hangup(self) -> None:
        """The call ended the leg: the page is told, the media closed."""
        if self.state is LegState.ENDED:
            return
        self.state = LegState.ENDED
        self.phone.legs.pop(self.call_id, None)
        await self.phone.presence.send(*self.agent, {"type": "hangup", "call_id": self.call_id})
        await self.browser.close()

    async def end(self, event: LegFailed | LegHungUp) -> None:
        """The page side ended the leg: the call hears ``event``; the media is closed."""
        self.state = LegState.ENDED
        self.phone.legs.pop(self.call_id, None)
        self.events.put_nowait(event)
        await self.browser.close()


class BrowserPhone:
    """Rings softphone pages for the call service; takes the pages' call messages."""

    def __init__(self, presence: Presence, settings: SoftphoneSettings | None = None, *,
                 placed_ttl: float = PLACED_TTL) -> None:
        self.presence = presence
        settings = settings or SoftphoneSettings()
        #: Given to each call's BrowserMedia (``[softphone]``).
        self.ice_servers = parse_ice_servers(settings.ice_servers)
        self.public_host = settings.public_host
        self.legs: dict[str, BrowserLeg] = {}
        #: Calls a page placed (its Call button), by call id: the page's offer and socket.
        self.placed: dict[str, tuple[str, Reply]] = {}
        #: Seconds a placed call's offer waits for the agent leg (see the module docstring).
        self.placed_ttl = placed_ttl
        self._placed_timers: dict[str, asyncio.TimerHandle] = {}
        self._telling: set[asyncio.Task[None]] = set()

    def expect(self, call_id: str, offer: str, page: Reply) -> None:
        """The page behind ``page`` placed ``call_id`` with ``offer``: when the call comes to
        ring its agent, the leg is answered with that offer instead (the agent is calling).
        Kept at most :attr:`placed_ttl` seconds."""
        self.forget(call_id)
        self.placed[call_id] = (offer, page)
        loop = asyncio.get_running_loop()
        self._placed_timers[call_id] = loop.call_later(self.placed_ttl, self._placed_expired,
                                                       call_id)  # fmt: skip

    def forget(self, call_id: str) -> tuple[str, Reply] | None:
        """Drop what :meth:`expect` kept for ``call_id`` (idempotent); what it was."""
        timer = self._placed_timers.pop(call_id, None)
        if timer is not None:
            timer.cancel()
        return self.placed.pop(call_id, None)

    def _placed_expired(self, call_id: str) -> None:
        placed = self.forget(call_id)
        if placed is None:
            return
        log.warning("call %s: no agent leg %.0f s after the page placed it (the call ended"
                    " before it): its offer dropped", call_id, self.placed_ttl)  # fmt: skip
        message = {"type": "error", "code": "CALL_FAILED", "reason": "CALL_FAILED",
                   "call_id": call_id, "message": "the call could not be connected"}
        task = asyncio.get_running_loop().create_task(_tell(placed[1], message, call_id))
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    async def ring(self, call_id: str, account_id: str, crm_username: str, to_number: str,
                   endpoint: tuple[str, int], events: asyncio.Queue[Any]) -> BrowserLeg | None:
        media = BrowserMedia(asyncio.get_running_loop(), ice_servers=self.ice_servers,
                             public_host=self.public_host)
        media.connect(endpoint)
        leg = BrowserLeg(self, call_id, account_id, crm_username, media, events)
        self.legs[call_id] = leg
        placed = self.forget(call_id)
        if placed is not None:
            return await self._answer_placed(leg, *placed)
        rung = await self.presence.send(account_id, crm_username, {
            "type": "incoming", "call_id": call_id, "to_number": to_number})
        if not rung:
            self.legs.pop(call_id, None)
            await media.close()
            return None
        return leg

    async def _answer_placed(self, leg: BrowserLeg, offer: str, page: Reply) -> BrowserLeg:
        try:
            await page({"type": "state", "state": "dialing", "call_id": leg.call_id})
        except Exception as exc:  # the page closed since it clicked Call
            log.info("call %s: the placing page is gone: %s", leg.call_id, exc)
            await leg.end(LegFailed(AGENT, 480, "AGENT_OFFLINE"))
            return leg
        await leg.answer(offer, page)
        return leg

    # -- CallSignals ---------------------------------------------------------------------------

    async def handle(self, session: Session, message: dict[str, Any], reply: Reply) -> None:
        kind = message["type"]
        leg = self.legs.get(str(message.get("call_id")))
        if leg is not None and leg.agent != (session.account_id, session.crm_username):
            leg = None  # another agent's call is none of this page's business
        if kind in ("answer", "hangup") and leg is None:
            await reply(_error("NO_SUCH_CALL", "no such call for this agent"))
        elif kind == "answer" and leg is not None:
            sdp = message.get("sdp")
            if not isinstance(sdp, str) or not sdp:
                await reply(_error("BAD_MESSAGE", "answer needs an 'sdp'"))
                return
            await leg.answer(sdp, reply)
        elif kind == "hangup" and leg is not None:
            await leg.page_hangup()
        else:
            await reply(_error("NOT_AVAILABLE", f"{kind!r} is not available from the softphone"))

    async def closed(self, session: Session, reply: Reply) -> None:
        """A page's WebSocket closed: a call it answered is hung up, its offer for a call it
        placed is dropped (that call's agent leg then rings like any other: the agent's other
        page, or fails offline), and a call ringing an agent who now has no page open stops
        ringing (480, RFC 3261 §21.4.18)."""
        agent = (session.account_id, session.crm_username)
        for call_id, (_offer, page) in list(self.placed.items()):
            if page == reply:  # ==: a bound method is made anew at each access
                self.forget(call_id)
        for leg in list(self.legs.values()):
            if leg.page is reply:
                await leg.page_hangup()
            elif (leg.agent == agent and leg.state is LegState.RINGING
                  and not self.presence.is_online(*agent)):
                await leg.end(LegFailed(AGENT, 480, "AGENT_OFFLINE"))


async def _tell(page: Reply, message: dict[str, Any], call_id: str) -> None:
    try:
        await page(message)
    except Exception as exc:  # the page closed meanwhile: nobody to tell
        log.info("call %s: the placing page is gone: %s", call_id, exc)


def _error(reason: str, text: str) -> dict[str, Any]:
    return {"type": "error", "reason": reason, "message": text}
