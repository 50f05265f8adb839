"""BrowserPhone without a browser: ringing needs an open page; a page may only answer or hang
up its own agent's ringing call; the runner's hang-up reaches the page once."""

from __future__ import annotations

import asyncio
from typing import Any

from callbridge.b2bua.call import AGENT, LegFailed
from callbridge.softphone.auth import Session
from callbridge.softphone.leg import BrowserPhone, LegState
from callbridge.softphone.presence import Presence


class Page:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_json(self, data: Any, mode: str = "text") -> None:
        self.sent.append(data)


def session(user: str) -> Session:
    return Session(account_id="acc", crm_username=user, expires=2**40)


def test_ring_answer_rules_and_hangup() -> None:
    async def main() -> None:
        presence, page, replies = Presence(), Page(), Page()
        phone = BrowserPhone(presence)
        events: asyncio.Queue[Any] = asyncio.Queue()
        assert await phone.ring("c1", "acc", "ann", "9876543100", ("127.0.0.1", 9), events) is None
        assert phone.legs == {}  # nobody online: nothing rings
        with presence.connected("acc", "ann", page):
            leg = await phone.ring("c1", "acc", "ann", "9876543100", ("127.0.0.1", 9), events)
            assert leg is not None and leg.media.payload_type == 0
            assert page.sent == [{"type": "incoming", "call_id": "c1", "to_number": "9876543100"}]
            await phone.handle(session("bob"), {"type": "hangup", "call_id": "c1"},
                               replies.send_json)  # another agent: not theirs to decline
            await phone.handle(session("ann"), {"type": "answer", "call_id": "c1"},
                               replies.send_json)  # no SDP
            await phone.handle(session("ann"), {"type": "call", "to_number": "1"},
                               replies.send_json)
            assert [m["reason"] for m in replies.sent] == ["NO_SUCH_CALL", "BAD_MESSAGE",
                                                           "NOT_AVAILABLE"]
            assert events.empty() and leg.state is LegState.RINGING
            await phone.handle(session("ann"), {"type": "hangup", "call_id": "c1"},
                               replies.send_json)
            assert events.get_nowait() == LegFailed(AGENT, 603, "DECLINED")
            assert leg.state is LegState.ENDED and phone.legs == {} and leg.browser.closed
            leg2 = await phone.ring("c2", "acc", "ann", "9876543100", ("127.0.0.1", 9), events)
            assert leg2 is not None
            await leg2.hangup()
            await leg2.hangup()  # idempotent: the page is told once
            assert page.sent[-1] == {"type": "hangup", "call_id": "c2"}
            assert sum(m["type"] == "hangup" for m in page.sent) == 1
            assert events.empty() and phone.legs == {}

    asyncio.run(main())


def test_a_bad_offer_fails_the_leg_and_the_page_is_told() -> None:
    async def main() -> None:
        presence, page, replies = Presence(), Page(), Page()
        phone = BrowserPhone(presence)
        events: asyncio.Queue[Any] = asyncio.Queue()
        with presence.connected("acc", "ann", page):
            leg = await phone.ring("c1", "acc", "ann", "9876543100", ("127.0.0.1", 9), events)
            assert leg is not None
            await phone.handle(session("ann"), {"type": "answer", "call_id": "c1",
                                                "sdp": "v=0\r\nnonsense\r\n"}, replies.send_json)
            assert [m["reason"] for m in replies.sent] == ["BAD_SDP"]
            assert events.get_nowait() == LegFailed(AGENT, 488, "NO_COMMON_CODEC")
            assert leg.state is LegState.ENDED and leg.browser.closed and phone.legs == {}

    asyncio.run(main())


def test_a_ringing_call_stops_when_the_agents_last_page_closes() -> None:
    async def main() -> None:
        presence, first, second = Presence(), Page(), Page()
        phone = BrowserPhone(presence)
        events: asyncio.Queue[Any] = asyncio.Queue()
        with presence.connected("acc", "ann", first):
            with presence.connected("acc", "ann", second):
                leg = await phone.ring("c1", "acc", "ann", "9876543100", ("127.0.0.1", 9),
                                       events)
                assert leg is not None
            await phone.closed(session("ann"), second.send_json)
            assert events.empty() and leg.state is LegState.RINGING  # one tab is still open
        await phone.closed(session("ann"), first.send_json)
        assert events.get_nowait() == LegFailed(AGENT, 480, "AGENT_OFFLINE")
        assert leg.state is LegState.ENDED and phone.legs == {}

    asyncio.run(main())
