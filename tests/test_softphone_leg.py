"""BrowserPhone without a browser: ringing needs an open page; a page may only answer or hang
up its own agent's ringing call; the runner's hang-up reaches the page once; the offer of a
call the page placed leaves on every path (rung, never rung in time, the page closed,
refused), shown also over a real WebSocket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from api_support import FakeCalls
from callbridge.b2bua.call import AGENT, LegFailed
from callbridge.softphone.auth import Session
from callbridge.softphone.leg import BrowserPhone, LegState
from callbridge.softphone.presence import Presence
from test_softphone_revocation import page, receive, served


class Page:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_json(self, data: Any, mode: str = "text") -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = (code, reason)


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


# -- a placed call's offer (the page's Call button) leaves on every path ---------------------


class WaitingPage(Page):
    """A page whose test can wait (bounded) for its next message."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def send_json(self, data: Any, mode: str = "text") -> None:
        await super().send_json(data, mode)
        self.arrived.set()

    async def next(self, timeout: float = 5.0) -> Any:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()
        return self.sent[-1]


def test_a_placed_offer_nothing_rings_in_time_is_dropped_and_the_page_told() -> None:
    async def main() -> None:
        page = WaitingPage()
        phone = BrowserPhone(Presence(), placed_ttl=0.05)
        phone.expect("c1", "v=0 (offer)", page.send_json)
        assert list(phone.placed) == ["c1"]
        failed = await page.next()
        assert (failed["type"], failed["code"], failed["call_id"]) == ("error", "CALL_FAILED",
                                                                       "c1")  # fmt: skip
        assert phone.placed == {} and phone._placed_timers == {}

    asyncio.run(main())


def test_a_placed_offer_the_ring_claims_is_not_dropped_later() -> None:
    async def main() -> None:
        presence, page = Presence(), WaitingPage()
        phone = BrowserPhone(presence, placed_ttl=0.05)
        events: asyncio.Queue[Any] = asyncio.Queue()
        with presence.connected("acc", "ann", page):
            phone.expect("c1", "v=0\r\nnonsense\r\n", page.send_json)
            leg = await phone.ring("c1", "acc", "ann", "9876543100", ("127.0.0.1", 9), events)
            assert leg is not None and phone.placed == {} and phone._placed_timers == {}
            assert await asyncio.wait_for(events.get(), 5) == LegFailed(AGENT, 488,
                                                                         "NO_COMMON_CODEC")
            await asyncio.sleep(0.2)  # four times the TTL: a forgotten timer would fire now
        assert [m.get("code", m.get("reason")) for m in page.sent if m["type"] == "error"] == [
            "BAD_SDP"]  # and no CALL_FAILED

    asyncio.run(main())


def test_a_placed_offer_leaves_with_its_page_or_when_forgotten() -> None:
    async def main() -> None:
        first, second = Page(), Page()
        phone = BrowserPhone(Presence())
        phone.expect("c1", "offer 1", first.send_json)
        phone.expect("c2", "offer 2", second.send_json)
        phone.expect("c3", "offer 3", first.send_json)
        await phone.closed(session("ann"), first.send_json)
        assert list(phone.placed) == ["c2"] and list(phone._placed_timers) == ["c2"]
        assert phone.forget("c2") == ("offer 2", second.send_json)
        assert phone.forget("c2") is None  # idempotent
        assert phone.placed == {} and phone._placed_timers == {}
        assert first.sent == second.sent == []

    asyncio.run(main())


def test_every_failed_placement_over_a_real_websocket_leaves_no_offer(tmp_path: Path) -> None:
    """The page's Call message through the real server side (uvicorn, the dialer, a
    BrowserPhone; the call service records calls and never rings): a refused call keeps no
    offer, a call that never reaches its agent leg loses it and the page hears CALL_FAILED,
    and a page that closes takes its offer along."""

    async def main() -> None:
        async with served(tmp_path) as (phone, address):
            await phone.store.add_caller_id(phone.account.id, "+918069001234")
            browser = BrowserPhone(phone.presence)
            phone.presence.calls = browser
            calls = phone.app.state.ctx.calls
            assert isinstance(calls, FakeCalls)

            async def call(ws: Any, uuid: str, to_number: str = "9876543104") -> None:
                await ws.send(json.dumps({"type": "call", "to_number": to_number, "uuid": uuid,
                                          "sdp": "v=0 (the page's offer)"}))

            async with page(address) as ws:
                await call(ws, "u-1", to_number="12345")  # a validation error
                assert (await receive(ws))["code"] == "INVALID_NUMBER"
                calls.unavailable = "no SIP trunk is configured"  # the trunk is down
                await call(ws, "u-2")
                assert (await receive(ws))["code"] == "TRUNK_UNAVAILABLE"
                calls.unavailable = None
                assert browser.placed == {} and calls.started == []

                browser.placed_ttl = 0.2
                await call(ws, "u-3")  # placed, but its agent leg never starts
                failed = await receive(ws)
                assert (failed["code"], failed["call_id"]) == ("CALL_FAILED",
                                                               calls.started[0].call_id)
                assert browser.placed == {}

                browser.placed_ttl = 60.0  # from here only the page's closing can drop it
                await call(ws, "u-4")
                await ws.send(json.dumps({"type": "state", "sync": True}))
                assert await receive(ws) == {"type": "state", "sync": True}
                assert list(browser.placed) == [calls.started[1].call_id]
            for _ in range(500):  # bounded: 5 s for the server to see the close
                if not browser.placed:
                    break
                await asyncio.sleep(0.01)
            assert browser.placed == {} and browser._placed_timers == {}

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_placed_call_that_fails_to_start_drops_its_offer_at_once(tmp_path: Path) -> None:
    """The call service refusing to start a call the page placed (after its offer was kept):
    the offer goes at once, not after its TTL, and the page hears CALL_FAILED on a socket that
    stays open (so the offer was not dropped by the page's closing either)."""

    async def main() -> None:
        async with served(tmp_path) as (phone, address):
            await phone.store.add_caller_id(phone.account.id, "+918069001234")
            browser = BrowserPhone(phone.presence)  # the default 30 s TTL
            phone.presence.calls = browser
            calls = phone.app.state.ctx.calls
            assert isinstance(calls, FakeCalls)
            kept: list[list[str]] = []

            async def start(call: Any) -> None:  # the call service, failing after the insert
                kept.append(list(browser.placed))
                raise RuntimeError("the event loop is shutting down")

            calls.start = start  # type: ignore[method-assign]
            async with page(address) as ws:
                await ws.send(json.dumps({"type": "call", "to_number": "9876543104",
                                          "uuid": "u-1", "sdp": "v=0 (the page's offer)"}))
                failed = await receive(ws)
                assert (failed["type"], failed["code"]) == ("error", "CALL_FAILED")
                assert kept == [[failed["call_id"]]]  # it was kept when start was called
                assert browser.placed == {} and browser._placed_timers == {}
                await ws.send(json.dumps({"type": "state", "sync": True}))
                assert await receive(ws) == {"type": "state", "sync": True}  # still open

    asyncio.run(asyncio.wait_for(main(), 60))
