"""callbridge's SIP service against SIPp playing the carrier's trunk, over real loopback sockets.

Each test starts the asyncio :class:`SipService` in-process, points its trunk at a SIPp UAS
running one scenario from sipp_scenarios/, places a call and checks both sides: the events
callbridge reported, and what SIPp saw and verified (SIPp exits non-zero when we misbehave).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

from callbridge.b2bua.service import OutboundLeg, SipService
from callbridge.config import load_settings
from callbridge.sip.useragent import (
    Answered,
    Cancelled,
    EarlyMedia,
    Event,
    Failed,
    HungUp,
    MediaUpdate,
    RemoteHangup,
    Ringing,
)
from sipp import Sipp

pytestmark = pytest.mark.sipp

SDP = (
    b"v=0\r\no=callbridge 1 1 IN IP4 127.0.0.1\r\ns=callbridge\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=ptime:20\r\n"
)
T = TypeVar("T")


def run(test: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(test(), timeout)

    return asyncio.run(bounded())


@asynccontextmanager
async def service(trunk: Sipp, **keys: str) -> AsyncIterator[SipService]:
    env = {
        "CALLBRIDGE_SIP_HOST": "127.0.0.1",
        "CALLBRIDGE_SIP_PORT": "0",  # any free port: the service reports the one it bound
        "CALLBRIDGE_TRUNK_MODE": "sip",
        "CALLBRIDGE_TRUNK_HOST": trunk.address[0],
        "CALLBRIDGE_TRUNK_PORT": str(trunk.address[1]),
        "CALLBRIDGE_TRUNK_OPTIONS_INTERVAL": "0",
        **{f"CALLBRIDGE_{k.upper()}": v for k, v in keys.items()},
    }
    sip = SipService(load_settings(None, env))
    await sip.start()
    try:
        yield sip
    finally:
        await sip.stop()


async def events_until(leg: OutboundLeg, final: type, timeout: float = 10) -> list[Event]:
    """Every event of ``leg`` up to and including the first of type ``final``."""
    seen: list[Event] = []
    while not (seen and isinstance(seen[-1], final)):
        seen.append(await leg.next_event(timeout))
    return seen


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_answered_call_then_bye_from_us() -> None:
    async def scenario() -> None:
        async with Sipp("uas_answer.xml", variables={"ring_ms": 100}) as trunk:
            async with service(trunk) as sip:
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                events = await events_until(leg, Answered)
                assert kinds(events) == ["Trying", "Ringing", "Answered"]
                answered = events[-1]
                assert isinstance(answered, Answered) and b"m=audio" in answered.sdp
                leg.hangup()
                assert await leg.next_event(10) == HungUp(leg.leg_id, 200)
                assert await trunk.wait() == 0, trunk.report()
                assert sip.ua.leg_count == 0
        invite, = trunk.received("INVITE")
        assert invite.request_uri == f"sip:9812345678@127.0.0.1:{trunk.address[1]}"
        assert "sip:8000000001@" in (invite.header("From") or "")
        assert len(trunk.received("ACK")) == 1

    run(scenario)


def test_far_end_hangs_up() -> None:
    async def scenario() -> None:
        async with Sipp("uas_answer_hangup.xml", variables={"hangup_ms": 200}) as trunk:
            async with service(trunk) as sip:
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                events = await events_until(leg, RemoteHangup)
                assert kinds(events)[-2:] == ["Answered", "RemoteHangup"]
                assert await trunk.wait() == 0, trunk.report()

    run(scenario)


def test_busy() -> None:
    async def scenario() -> None:
        async with Sipp("uas_busy.xml") as trunk:
            async with service(trunk) as sip:
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                events = await events_until(leg, Failed)
                assert events[-1] == Failed(leg.leg_id, 486, "Busy Here")
                assert await trunk.wait() == 0, trunk.report()

    run(scenario)


def test_ringing_without_answer_is_cancelled() -> None:
    async def scenario() -> None:
        async with Sipp("uas_ring_cancel.xml") as trunk:
            async with service(trunk) as sip:
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                assert isinstance((await events_until(leg, Ringing))[-1], Ringing)
                leg.cancel()
                assert (await events_until(leg, Cancelled))[-1] == Cancelled(leg.leg_id)
                assert await trunk.wait() == 0, trunk.report()
        assert len(trunk.received("CANCEL")) == 1
        assert len(trunk.received("ACK")) == 1  # for the 487, built by the transaction

    run(scenario)


@pytest.mark.parametrize("scenario_file", ["uas_auth_407.xml", "uas_auth_401.xml"])
def test_trunk_challenge_is_answered(scenario_file: str) -> None:
    """uas_auth_407 stays silent for 2 s first, so the INVITE is retransmitted (Timer A)."""

    async def scenario() -> None:
        variables = {"auth_user": "alice", "auth_password": "s3cret", "realm": "trunk.example"}
        async with Sipp(scenario_file, variables=variables, recv_timeout=8) as trunk:
            async with service(trunk, trunk_username="alice", trunk_password="s3cret") as sip:
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                events = await events_until(leg, Answered, timeout=12)
                assert not any(isinstance(e, Failed) for e in events)
                leg.hangup()
                assert await leg.next_event(10) == HungUp(leg.leg_id, 200)
                assert await trunk.wait() == 0, trunk.report()
        invites = trunk.received("INVITE")
        if scenario_file == "uas_auth_407.xml":
            assert len(invites) >= 4  # the first INVITE, then Timer A's 0.5, 1.5 s resends
        credentials = invites[-1].header("Proxy-Authorization") or invites[-1].header(
            "Authorization")
        assert credentials and 'username="alice"' in credentials and "qop=auth" in credentials

    run(scenario)


def test_early_media_before_answer() -> None:
    async def scenario() -> None:
        async with Sipp("uas_early_media.xml", variables={"answer_ms": 300}) as trunk:
            async with service(trunk) as sip:
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                events = await events_until(leg, Answered)
                assert kinds(events) == ["Trying", "EarlyMedia", "Answered"]
                early = events[1]
                assert isinstance(early, EarlyMedia) and b"m=audio" in early.sdp
                leg.hangup()
                assert await leg.next_event(10) == HungUp(leg.leg_id, 200)
                assert await trunk.wait() == 0, trunk.report()

    run(scenario)


def test_reinvite_from_far_end_is_answered_with_our_sdp() -> None:
    async def scenario() -> None:
        async with Sipp("uas_reinvite.xml", variables={"reinvite_ms": 200}) as trunk:
            async with service(trunk) as sip:
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                update = (await events_until(leg, MediaUpdate))[-1]
                assert isinstance(update, MediaUpdate) and b"m=audio" in update.sdp
                leg.hangup()
                assert await leg.next_event(10) == HungUp(leg.leg_id, 200)
                assert await trunk.wait() == 0, trunk.report()
        ok_to_reinvite = [m for m in trunk.received(200) if "INVITE" in (m.header("CSeq") or "")]
        assert ok_to_reinvite and "m=audio 20000" in ok_to_reinvite[0].body

    run(scenario)


def test_trunk_that_never_answers_fails_on_timer_b() -> None:
    """T1 = 50 ms makes Timer B 3.2 s; nothing here sleeps: we wait for the event."""

    async def scenario() -> None:
        async with Sipp("uas_no_answer.xml", variables={"hold_ms": 5000}) as trunk:
            async with service(trunk, sip_t1="0.05") as sip:
                started = time.monotonic()
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                events = await events_until(leg, Failed, timeout=5)
                elapsed = time.monotonic() - started
                assert events[-1] == Failed(leg.leg_id, 408, "Request Timeout", timed_out=True)
                assert 64 * 0.05 - 0.1 <= elapsed < 64 * 0.05 + 1.5
                assert sip.ua.leg_count == 0
        assert len(trunk.received("INVITE")) >= 6  # Timer A doubled to B

    run(scenario)


def test_options_ping_marks_the_trunk_up() -> None:
    async def scenario() -> None:
        async with Sipp("uas_answer.xml") as trunk:
            async with service(trunk) as sip:
                assert await sip.ping() == 200
        assert trunk.received("OPTIONS")

    run(scenario)


def test_silent_trunk_ping_reports_no_answer() -> None:
    async def scenario() -> None:
        async with Sipp("uas_busy.xml") as trunk:
            pass  # gone: nothing answers at its address any more
        async with service(trunk, sip_t1="0.01") as sip:
            assert await sip.ping(timeout=5) == 0

    run(scenario)


def test_answered_call_over_tcp() -> None:
    """RFC 3261 §18 framing: the same call on one TCP connection, with no retransmissions."""

    async def scenario() -> None:
        async with Sipp("uas_answer.xml", extra_args=("-t", "t1")) as trunk:
            async with service(trunk, sip_transport="tcp", trunk_transport="tcp") as sip:
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                assert kinds(await events_until(leg, Answered))[-1] == "Answered"
                leg.hangup()
                assert await leg.next_event(10) == HungUp(leg.leg_id, 200)
                assert await trunk.wait() == 0, trunk.report()
        invite, = trunk.received("INVITE")
        assert "SIP/2.0/TCP" in (invite.header("Via") or "")
        assert "transport=tcp" in (invite.header("Contact") or "")

    run(scenario)


def test_outbound_proxy_gets_the_invite_with_a_route() -> None:
    """The trunk's domain stays in the Request-URI; the datagram goes to the proxy."""

    async def scenario() -> None:
        async with Sipp("uas_busy.xml") as proxy:
            async with service(proxy, trunk_host="127.0.0.77", trunk_port="5060",
                               trunk_outbound_proxy=f"127.0.0.1:{proxy.address[1]}") as sip:
                leg = sip.call("9812345678", caller="8000000001", sdp=SDP)
                assert (await events_until(leg, Failed))[-1].status == 486  # type: ignore[attr-defined]
                assert await proxy.wait() == 0, proxy.report()
        invite, = proxy.received("INVITE")
        assert invite.request_uri == "sip:9812345678@127.0.0.77"
        assert invite.header("Route") == f"<sip:127.0.0.1:{proxy.address[1]};lr>"

    run(scenario)
