"""DTMF at the media edge over real UDP on 127.0.0.1: digits sent into a leg as RFC 4733
events on its own stream, digits from a leg reported once per keypress, the agent's
confirmation prompt.

RtpPeers stand in for the phones. Every wait is on a condition (packets received, digits
reported) with a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import numpy as np
import pytest

from callbridge.media.bridge import Bridge
from callbridge.media.conference import Conference
from callbridge.media.dtmf import TelephoneEvent
from callbridge.media.endpoint import LegMedia
from callbridge.media.player import Player
from callbridge.media.rtp import RtpPacket, seq_diff, ts_diff
from callbridge.media.tones import CONFIRM_PROMPT, ToneGenerator, prompt_plan, sine_plan
from rtp_peer import DECODE, Lab, RtpPeer, dominant_frequency, media_for, run_lab

EVENT_PT = 101
#: A 100 ms keypress at 8 kHz, one packet per 20 ms, the final one three times (§2.5.1.4).
DURATIONS_100_MS = [160, 320, 480, 640, 800, 800, 800]
ENDS = [False, False, False, False, True, True, True]
MARKERS = [True, False, False, False, False, False, False]


class Digits:
    """An ``on_digit`` handler that keeps what it is told and can be waited on."""

    def __init__(self) -> None:
        self.pressed: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, leg_key: str, digit: str) -> None:
        self.pressed.append((leg_key, digit))
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async def enough() -> None:
            while len(self.pressed) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), timeout)


def event_groups(peer: RtpPeer, pt: int = EVENT_PT) -> list[list[RtpPacket]]:
    """The received telephone-event packets, one list per event (by RTP timestamp)."""
    groups: dict[int, list[RtpPacket]] = {}
    for packet in peer.packets(pt):
        groups.setdefault(packet.timestamp, []).append(packet)
    return list(groups.values())


def describe(group: list[RtpPacket]) -> tuple[set[str | None], list[int], list[bool], list[bool]]:
    """(digits, durations, E bits, markers) of one event's packets."""
    events = [TelephoneEvent.parse(p.payload) for p in group]
    return (
        {e.digit for e in events},
        [e.duration for e in events],
        [e.end for e in events],
        [p.marker for p in group],
    )


def assert_one_line(packets: list[RtpPacket], ssrc: int) -> None:
    """One SSRC, sequence numbers +1 each: events and audio on one unbroken stream."""
    assert {p.ssrc for p in packets} == {ssrc}
    for before, after in itertools.pairwise(packets):
        assert seq_diff(after.sequence_number, before.sequence_number) == 1


def count(peer: RtpPeer, pt: int) -> Callable[[], int]:
    return lambda: len(peer.packets(pt))


# --- digits into a leg -------------------------------------------------------------------------


def test_digits_sent_into_a_bridged_leg_are_rfc4733_on_its_stream_audio_held_meanwhile() -> None:
    async def scenario(lab: Lab) -> None:
        loop = asyncio.get_running_loop()
        agent, carrier = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        c = await lab.leg("customer", carrier)
        Bridge(a, c)
        carrier.send_tone(c.local_address, 1000)
        await agent.wait_for_packets(5)

        began = loop.time()
        await a.send_dtmf("1#")
        took = loop.time() - began
        await agent.wait_until(lambda: count(agent, EVENT_PT)() == 14)
        before_resume = len(agent.received)
        await agent.wait_for_packets(before_resume + 5)  # the customer is heard again
        carrier.stop_sending()

        packets = agent.packets()
        assert_one_line(packets, a.tx.ssrc)
        kinds = [p.payload_type for p in packets]
        first, last = kinds.index(EVENT_PT), len(kinds) - kinds[::-1].index(EVENT_PT) - 1
        assert kinds[first : last + 1] == [EVENT_PT] * 14  # no audio among the events
        assert first >= 5 and kinds[last + 1 :] == [0] * (len(kinds) - last - 1)

        one, pound = event_groups(agent)
        assert describe(one) == ({"1"}, DURATIONS_100_MS, ENDS, MARKERS)
        assert describe(pound) == ({"#"}, DURATIONS_100_MS, ENDS, MARKERS)
        # Timestamps on the audio clock (RFC 4733 §2.5.1.2): the first event starts where
        # the next audio frame would have; the second 100 + 60 ms later.
        audio_before, audio_after = packets[first - 1], packets[last + 1]
        lead = ts_diff(one[0].timestamp, audio_before.timestamp)
        assert 0 < lead <= 3 * 160 and lead % 160 == 0, lead
        assert ts_diff(pound[0].timestamp, one[0].timestamp) == 1280
        # The audio resumes after the last end packet, as a new talkspurt.
        assert ts_diff(audio_after.timestamp, pound[0].timestamp) >= 800 + 3 * 160
        assert audio_after.marker
        # Paced in real time: one packet per 20 ms, the last of "#" 300 ms after the start.
        arrivals = [r.arrival for r in agent.received if r.packet.payload_type == EVENT_PT]
        assert arrivals[6] - arrivals[0] >= 0.12 - 0.005
        assert arrivals[13] - arrivals[0] >= 0.28 - 0.005
        assert took >= 0.30 - 0.005
        assert a.tx.held > 0 and not a.tx.holding

    run_lab(scenario)


def test_a_playing_prompt_is_held_back_during_the_event_and_carries_on_after() -> None:
    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        a = await lab.leg("agent", agent, event_pt=96)
        Player(a, ToneGenerator(sine_plan(400))).start()
        await agent.wait_for_packets(3)
        await a.send_dtmf("9", duration_ms=60)
        await agent.wait_until(lambda: count(agent, 96)() == 5)
        await agent.wait_for_packets(len(agent.received) + 3)

        packets = agent.packets()
        assert_one_line(packets, a.tx.ssrc)
        kinds = [p.payload_type for p in packets]
        first = kinds.index(96)
        assert kinds[first : first + 5] == [96] * 5
        assert set(kinds[:first]) == set(kinds[first + 5 :]) == {0}
        (nine,) = event_groups(agent, 96)
        assert describe(nine) == (
            {"9"},
            [160, 320, 480, 480, 480],
            [False, False, True, True, True],
            [True, False, False, False, False],
        )
        resumed = packets[first + 5]
        assert ts_diff(resumed.timestamp, nine[0].timestamp) >= 480 + 3 * 160

    run_lab(scenario)


def test_without_telephone_event_or_with_a_bad_digit_nothing_is_sent() -> None:
    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        plain = await lab.leg("plain", agent, event_pt=None)
        with pytest.raises(ValueError, match="leg plain negotiated no telephone-event"):
            await plain.send_dtmf("1")
        unset = await lab.leg("unset")
        with pytest.raises(ValueError, match="negotiated no telephone-event"):
            await unset.send_dtmf("1")
        a = await lab.leg("agent", agent)
        with pytest.raises(ValueError, match="not a DTMF digit: 'x'"):
            await a.send_dtmf("12x")
        with pytest.raises(ValueError, match="no DTMF digits"):
            await a.send_dtmf("")
        with pytest.raises(ValueError, match="duration must be positive"):
            await a.send_dtmf("1", duration_ms=0)
        with pytest.raises(ValueError, match="gap between DTMF digits"):
            await a.send_dtmf("1", gap_ms=-1)
        assert plain.tx.sent == unset.tx.sent == a.tx.sent == 0
        assert not a.tx.holding

    run_lab(scenario)


def test_two_digit_strings_at_once_go_out_one_after_the_other() -> None:
    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        a = await lab.leg("agent", agent)
        await asyncio.gather(a.send_dtmf("12", duration_ms=40), a.send_dtmf("3", duration_ms=40))
        await agent.wait_until(lambda: count(agent, EVENT_PT)() == 12)
        assert_one_line(agent.packets(), a.tx.ssrc)
        assert [describe(group)[0] for group in event_groups(agent)] == [{"1"}, {"2"}, {"3"}]

    run_lab(scenario)


def test_cancelling_stops_the_events_and_releases_the_leg() -> None:
    async def scenario(lab: Lab) -> None:
        agent, carrier = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        c = await lab.leg("customer", carrier)
        Bridge(a, c)
        carrier.send_tone(c.local_address, 1000)
        sending = asyncio.create_task(a.send_dtmf("5", duration_ms=5000))
        await agent.wait_until(lambda: count(agent, EVENT_PT)() >= 2)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert not a.tx.holding
        events = count(agent, EVENT_PT)()
        await agent.wait_until(lambda: agent.packets()[-1].payload_type == 0)
        carrier.stop_sending()
        assert count(agent, EVENT_PT)() == events
        assert_one_line(agent.packets(), a.tx.ssrc)

    run_lab(scenario)


def test_a_leg_closed_while_sending_ends_the_digits_quietly() -> None:
    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        a = await lab.leg("agent", agent)
        sending = asyncio.create_task(a.send_dtmf("123", duration_ms=5000))
        await agent.wait_until(lambda: count(agent, EVENT_PT)() >= 1)
        a.close()
        await asyncio.wait_for(sending, 1.0)
        assert not a.tx.holding

    run_lab(scenario)


# --- digits from a leg -------------------------------------------------------------------------


def test_keypresses_from_an_unconnected_leg_are_reported_once_each() -> None:
    """While the agent hears a prompt, before the customer is dialled: nothing is bridged."""

    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        digits = Digits()
        a = await lab.leg("agent", agent)
        a.set_digit_handler(digits)
        await agent.press(a.local_address, "1211#")
        await digits.wait_for(5)
        # A last keypress, sent after every redundant end packet of the others: when it is
        # reported, any duplicate would have been reported before it.
        await agent.press(a.local_address, "D", duration_ms=40)
        await digits.wait_for(6)
        assert digits.pressed == [("agent", d) for d in "1211#D"]
        assert a.handler is None

    run_lab(scenario)


def test_keypresses_from_a_bridged_leg_are_forwarded_and_reported() -> None:
    async def scenario(lab: Lab) -> None:
        agent, carrier = await lab.peer(), await lab.peer()
        digits = Digits()
        a = await lab.leg("agent", agent, event_pt=96)
        c = await lab.leg("customer", carrier, event_pt=101)
        c.on_digit = digits
        Bridge(a, c)
        carrier.send_tone(c.local_address, 1000)
        await carrier.press(c.local_address, "5")
        await agent.wait_until(lambda: count(agent, 96)() == 7)
        carrier.stop_sending()
        await digits.wait_for(1)
        # The forwarded packets were read after the reports were queued: none is missing.
        assert digits.pressed == [("customer", "5")]
        (five,) = event_groups(agent, 96)
        assert describe(five) == ({"5"}, DURATIONS_100_MS, ENDS, MARKERS)
        assert_one_line(agent.packets(), a.tx.ssrc)

    run_lab(scenario)


def test_keypresses_in_a_conference_are_reported_though_not_mixed() -> None:
    async def scenario(lab: Lab) -> None:
        peers = [await lab.peer() for _ in range(3)]
        legs = [await lab.leg(f"leg{i}", peer) for i, peer in enumerate(peers)]
        digits = Digits()
        for leg in legs:
            leg.set_digit_handler(digits)
        conference = Conference(legs)
        await peers[2].press(legs[2].local_address, "7")
        await peers[1].press(legs[1].local_address, "8", duration_ms=40)
        await digits.wait_for(2)
        conference.close()
        assert digits.pressed == [("leg2", "7"), ("leg1", "8")]
        assert conference.events_dropped >= 8
        assert all(p.packets(EVENT_PT) == [] for p in peers)

    run_lab(scenario)


def test_a_new_source_starts_afresh_even_at_the_same_event_timestamp() -> None:
    """A forked answer: the early-media source and the answering one number independently,
    so an event timestamp seen from one says nothing about the other."""

    async def scenario(lab: Lab) -> None:
        early, answer = await lab.peer(), await lab.peer()
        digits = Digits()
        c = await lab.leg("customer", early)
        c.set_digit_handler(digits)
        answer.ts = early.ts
        await early.press(c.local_address, "3", duration_ms=40)
        await digits.wait_for(1)
        c.set_media(media_for(answer))
        await answer.press(c.local_address, "3", duration_ms=40)
        await digits.wait_for(2)
        assert digits.pressed == [("customer", "3"), ("customer", "3")]

    run_lab(scenario)


def test_no_handler_no_reports_and_the_handler_can_be_removed() -> None:
    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        digits = Digits()
        a = await lab.leg("agent", agent)
        await agent.press(a.local_address, "4", duration_ms=40)
        a.set_digit_handler(digits)
        await agent.press(a.local_address, "6", duration_ms=40)
        await digits.wait_for(1)
        a.set_digit_handler(None)
        await agent.press(a.local_address, "9", duration_ms=40)
        a.set_digit_handler(digits)
        await agent.press(a.local_address, "0", duration_ms=40)
        await digits.wait_for(2)
        assert digits.pressed == [("agent", "6"), ("agent", "0")]

    run_lab(scenario)


# --- the confirmation prompt -----------------------------------------------------------------


def test_prompt_cadence_is_two_short_beeps_every_two_seconds() -> None:
    assert prompt_plan() is CONFIRM_PROMPT
    assert CONFIRM_PROMPT.frequencies == (1400.0,)
    assert CONFIRM_PROMPT.cycle_ms == 2000
    generator = ToneGenerator(prompt_plan())
    sounding = [bool(np.any(generator.next_frame())) for _ in range(200)]
    beeps = set(range(0, 10)) | set(range(20, 30))
    assert sounding[:100] == [i in beeps for i in range(100)]
    assert sounding[100:] == sounding[:100]


def test_prompt_plays_1400_hz_into_a_leg_and_stops() -> None:
    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        a = await lab.leg("agent", agent, codec="PCMA")
        player = Player(a, ToneGenerator(prompt_plan())).start()
        await agent.wait_for_packets(30)
        player.stop()
        await player.done
        assert a.player is None

        frames = [DECODE["PCMA"](p.payload) for p in agent.packets(8)[:30]]
        first_beep, pause, second_beep = (np.concatenate(frames[i : i + 10]) for i in (0, 10, 20))
        assert dominant_frequency(first_beep) == pytest.approx(1400, abs=10)
        assert dominant_frequency(second_beep) == pytest.approx(1400, abs=10)
        assert np.abs(pause).max() < 16  # G.711 silence, not a tone

    run_lab(scenario)


def test_media_without_telephone_event_is_still_fine_to_receive_on() -> None:
    """Digits are only ever read from the negotiated event payload type."""

    async def scenario(lab: Lab) -> None:
        agent, watcher = await lab.peer(), await lab.peer()
        digits = Digits()
        a = await lab.leg("agent")
        a.set_media(LegMedia(*agent.address, 0, "PCMU"))
        a.set_digit_handler(digits)
        w = await lab.leg("watcher", watcher)
        Bridge(a, w)
        await agent.press(a.local_address, "1", duration_ms=40)
        agent.send_audio(a.local_address, bytes(160), 0)
        await watcher.wait_for_packets(1)
        assert digits.pressed == []
        assert a.unknown_payload == 4

    run_lab(scenario)
