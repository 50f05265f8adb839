"""The two-leg bridge over real UDP on 127.0.0.1: tones, transcoding, events, continuity,
source checks, recording tap, playout, inactivity.

Two RtpPeers stand in for the agent's phone and the carrier. Every wait is on a condition
(packets received, an event) with a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import wave
from pathlib import Path

import pytest

from callbridge.media.bridge import Bridge
from callbridge.media.dtmf import DtmfSender
from callbridge.media.endpoint import LegMedia, MediaTimeout
from callbridge.media.g711 import ALAW_TO_ULAW
from callbridge.media.player import Player, wav_frames
from callbridge.media.rtp import RtpPacket, seq_diff, ts_diff
from callbridge.media.tones import INDIA_BUSY, ToneGenerator, sine
from rtp_peer import Lab, dominant_frequency, level_at, media_for, run_lab


def assert_continuous(packets: list[RtpPacket], ssrc: int) -> None:
    """One SSRC; sequence numbers +1 each; timestamps forward by whole 20 ms frames."""
    assert {p.ssrc for p in packets} == {ssrc}
    for before, after in itertools.pairwise(packets):
        assert seq_diff(after.sequence_number, before.sequence_number) == 1
        step = ts_diff(after.timestamp, before.timestamp)
        assert step > 0 and step % 160 == 0, step


class Recorder:
    """A FrameSink that keeps everything."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes, str, float]] = []

    def on_audio(self, leg_key: str, payload: bytes, codec: str, arrival: float) -> None:
        self.frames.append((leg_key, payload, codec, arrival))


def test_bridge_exchanges_tones_each_side_hears_only_the_other() -> None:
    async def scenario(lab: Lab) -> None:
        agent, customer = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        c = await lab.leg("customer", customer)
        Bridge(a, c)
        agent.send_tone(a.local_address, 440)
        customer.send_tone(c.local_address, 1000)
        await agent.wait_for_packets(25)
        await customer.wait_for_packets(25)

        assert dominant_frequency(agent.audio("PCMU")) == pytest.approx(1000, abs=10)
        assert dominant_frequency(customer.audio("PCMU")) == pytest.approx(440, abs=10)
        assert level_at(agent.audio("PCMU"), 440) < 0.01
        assert level_at(customer.audio("PCMU"), 1000) < 0.01
        # Each receiver sees the relay's own stream, from the port it was told about.
        assert_continuous(agent.packets(), a.tx.ssrc)
        assert_continuous(customer.packets(), c.tx.ssrc)
        assert {r.source for r in agent.received} == {a.local_address}
        assert a.tx.ssrc != agent.ssrc
        assert a.strangers == c.strangers == 0

    run_lab(scenario)


def test_pcmu_and_pcma_legs_are_transcoded() -> None:
    async def scenario(lab: Lab) -> None:
        agent, carrier = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent, codec="PCMU")
        c = await lab.leg("customer", carrier, codec="PCMA")
        Bridge(a, c)
        agent.send_tone(a.local_address, 440, codec="PCMU")
        carrier.send_tone(c.local_address, 1000, codec="PCMA")
        await agent.wait_for_packets(25)
        await carrier.wait_for_packets(25)

        assert {p.payload_type for p in agent.packets()} == {0}
        assert {p.payload_type for p in carrier.packets()} == {8}
        assert dominant_frequency(agent.audio("PCMU")) == pytest.approx(1000, abs=10)
        assert dominant_frequency(carrier.audio("PCMA")) == pytest.approx(440, abs=10)
        # Read with the wrong law the tone would be buried in distortion.
        assert level_at(agent.audio("PCMU"), 1000) == 1.0

    run_lab(scenario)


def test_transcoding_is_the_g711_byte_translation() -> None:
    async def scenario(lab: Lab) -> None:
        agent, carrier = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent, codec="PCMU")
        c = await lab.leg("customer", carrier, codec="PCMA")
        Bridge(a, c)
        payload = bytes(range(256))[:160]
        carrier.send_audio(c.local_address, payload, 8)
        await agent.wait_for_packets(1)
        assert agent.packets()[0].payload == payload.translate(ALAW_TO_ULAW)

    run_lab(scenario)


def test_telephone_events_take_the_other_legs_payload_type() -> None:
    async def scenario(lab: Lab) -> None:
        agent, carrier = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent, event_pt=101)
        c = await lab.leg("customer", carrier, event_pt=96)
        Bridge(a, c)
        carrier.send_audio(c.local_address, bytes(160), 0)
        start = carrier.ts
        sent = DtmfSender().packets("5", 100, start)
        for event in sent:
            carrier.send_packet(
                c.local_address,
                RtpPacket(
                    payload_type=96,
                    sequence_number=carrier.seq,
                    timestamp=event.timestamp,
                    ssrc=carrier.ssrc,
                    marker=event.marker,
                    payload=event.payload,
                ),
            )
            carrier.seq = (carrier.seq + 1) & 0xFFFF
        await agent.wait_for_packets(1 + len(sent))

        audio, *events = agent.packets()
        assert [e.payload_type for e in events] == [101] * len(sent)
        assert [e.payload for e in events] == [e.payload for e in sent]
        assert events[0].marker
        # RFC 4733 §2.5.1.2: every packet of the event carries its start time, on the audio's
        # clock: 160 samples after the audio packet, as sent.
        assert {ts_diff(e.timestamp, audio.timestamp) for e in events} == {160}
        assert_continuous_seq([audio, *events])

    run_lab(scenario)


def assert_continuous_seq(packets: list[RtpPacket]) -> None:
    for before, after in itertools.pairwise(packets):
        assert seq_diff(after.sequence_number, before.sequence_number) == 1


def test_telephone_events_are_dropped_for_a_leg_without_them() -> None:
    async def scenario(lab: Lab) -> None:
        agent, carrier = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent, event_pt=None)
        c = await lab.leg("customer", carrier, event_pt=101)
        bridge = Bridge(a, c)
        event = DtmfSender().packets("1", 60, carrier.ts)[0]
        carrier.send_audio(c.local_address, event.payload, 101, marker=True)
        carrier.send_audio(c.local_address, bytes(160), 0)
        await agent.wait_for_packets(1)
        assert [p.payload_type for p in agent.packets()] == [0]
        assert bridge.events_dropped == 1

    run_lab(scenario)


def test_stream_stays_continuous_when_early_media_gives_way_to_the_answer() -> None:
    """Forking: the 183's media comes from one address, the 200's from another, each with its
    own SSRC, sequence and timestamps. The agent must hear one unbroken stream."""

    async def scenario(lab: Lab) -> None:
        agent, early, answer = await lab.peer(), await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        c = await lab.leg("customer", early)
        Bridge(a, c)
        early.send_tone(c.local_address, 1000, frames=10)
        await agent.wait_for_packets(10)

        c.set_media(media_for(answer))  # the 200 OK's SDP
        answer.send_tone(c.local_address, 700)
        early.send_tone(c.local_address, 1000, frames=5)  # the loser keeps talking a while
        await agent.wait_for_packets(30)
        answer.stop_sending()

        packets = agent.packets()
        assert_continuous(packets, a.tx.ssrc)
        assert dominant_frequency(agent.audio("PCMU", skip=10)) == pytest.approx(700, abs=10)
        assert c.strangers == 5

    run_lab(scenario)


def test_stream_stays_continuous_when_the_bridge_swaps_a_leg() -> None:
    async def scenario(lab: Lab) -> None:
        agent, first, second = await lab.peer(), await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        b1 = await lab.leg("first", first)
        b2 = await lab.leg("second", second)
        bridge = Bridge(a, b1)
        first.send_tone(b1.local_address, 1000)
        second.send_tone(b2.local_address, 600)
        await agent.wait_for_packets(8)
        bridge.replace(b1, b2)
        first.stop_sending()
        await agent.wait_for_packets(30)
        assert bridge.legs == (a, b2)
        assert_continuous(agent.packets(), a.tx.ssrc)
        assert dominant_frequency(agent.audio("PCMU", skip=12)) == pytest.approx(600, abs=10)

    run_lab(scenario)


def test_packets_from_a_stranger_are_dropped_and_counted() -> None:
    async def scenario(lab: Lab) -> None:
        agent, carrier, stranger = await lab.peer(), await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        c = await lab.leg("customer", carrier)
        Bridge(a, c)
        stranger.send_audio(c.local_address, b"\x01" * 160, 0)  # RTP Bleed: inject first
        carrier.send_audio(c.local_address, b"\x02" * 160, 0)
        await agent.wait_for_packets(1)
        # The stranger's datagram was queued on the socket first, so it has been handled.
        assert [p.payload for p in agent.packets()] == [b"\x02" * 160]
        assert c.strangers == 1
        assert c.received == 1
        assert stranger.received == []

    run_lab(scenario)


def test_symmetric_rtp_latches_to_the_first_source() -> None:
    """Behind NAT the SDP names a private address; the media comes from the public one."""

    async def scenario(lab: Lab) -> None:
        agent, phone, stranger = await lab.peer(), await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        c = await lab.leg("customer", symmetric=True)
        c.set_media(LegMedia("127.0.0.1", 9, 0, "PCMU"))  # discard port: nobody there
        Bridge(a, c)
        phone.send_audio(c.local_address, b"\x03" * 160, 0)
        await agent.wait_for_packets(1)
        assert c.remote_address == phone.address
        agent.send_audio(a.local_address, b"\x04" * 160, 0)
        await phone.wait_for_packets(1)
        assert phone.packets()[0].payload == b"\x04" * 160
        # Latched: a third party cannot take the stream over.
        stranger.send_audio(c.local_address, b"\x05" * 160, 0)
        phone.send_audio(c.local_address, b"\x06" * 160, 0)
        await agent.wait_for_packets(2)
        assert [p.payload[0] for p in agent.packets()] == [3, 6]
        assert c.strangers == 1
        assert c.remote_address == phone.address
        # A re-INVITE repeating the same (private) SDP address keeps the latch.
        c.set_media(LegMedia("127.0.0.1", 9, 0, "PCMU"))
        assert c.remote_address == phone.address

    run_lab(scenario)


def test_without_symmetric_rtp_the_sdp_address_is_the_only_source() -> None:
    async def scenario(lab: Lab) -> None:
        agent, in_sdp, elsewhere = await lab.peer(), await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        c = await lab.leg("customer", in_sdp)
        Bridge(a, c)
        elsewhere.send_audio(c.local_address, b"\x03" * 160, 0)  # no latching: dropped
        agent.send_audio(a.local_address, b"\x04" * 160, 0)
        await in_sdp.wait_for_packets(1)
        in_sdp.send_audio(c.local_address, b"\x05" * 160, 0)
        await agent.wait_for_packets(1)
        assert [p.payload[0] for p in agent.packets()] == [5]
        assert elsewhere.received == []
        assert c.strangers == 1
        assert c.remote_address == in_sdp.address

    run_lab(scenario)


def test_recording_sink_gets_every_audio_packet_of_both_legs_whole() -> None:
    async def scenario(lab: Lab) -> None:
        agent, carrier = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent, codec="PCMU")
        c = await lab.leg("customer", carrier, codec="PCMA")
        recorder = Recorder()
        Bridge(a, c, recorder)
        loop = asyncio.get_running_loop()
        before = loop.time()
        agent.send_audio(a.local_address, b"\x11" * 160, 0)
        carrier.send_audio(c.local_address, b"\x22" * 160, 8)
        event = DtmfSender().packets("9", 60, carrier.ts)[0]
        carrier.send_audio(c.local_address, event.payload, 101, marker=True)
        carrier.send_audio(c.local_address, b"\x33" * 160, 8)
        await carrier.wait_for_packets(1)
        await agent.wait_for_packets(3)
        # The datagram as it came (header included: the recorder places it by its timestamp).
        keyed = sorted((key, RtpPacket.parse(packet).payload[0], codec)
                       for key, packet, codec, _ in recorder.frames)
        assert keyed == [
            ("agent", 0x11, "PCMU"),
            ("customer", 0x22, "PCMA"),
            ("customer", 0x33, "PCMA"),
        ]
        assert all(len(packet) == 12 + 160 for _, packet, _, _ in recorder.frames)
        assert all(before <= arrival <= loop.time() for *_, arrival in recorder.frames)

    run_lab(scenario)


def test_tone_playout_into_a_leg_is_400_hz() -> None:
    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        a = await lab.leg("agent", agent, codec="PCMA")
        player = Player(a, ToneGenerator(INDIA_BUSY)).start()
        await agent.wait_for_packets(30)
        player.stop()
        await player.done
        assert a.player is None
        assert {p.payload_type for p in agent.packets()} == {8}
        assert_continuous(agent.packets(), a.tx.ssrc)
        assert dominant_frequency(agent.audio("PCMA")) == pytest.approx(400, abs=10)

    run_lab(scenario)


def test_playout_holds_the_leg_then_the_bridge_takes_over_the_same_stream() -> None:
    """Ringback while the customer rings without early media, then their voice."""

    async def scenario(lab: Lab) -> None:
        agent, carrier = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        c = await lab.leg("customer", carrier)
        Bridge(a, c)
        player = Player(a, ToneGenerator(INDIA_BUSY)).start()
        carrier.send_tone(c.local_address, 1000)
        await agent.wait_for_packets(15)
        assert dominant_frequency(agent.audio("PCMU")) == pytest.approx(400, abs=10)
        player.stop()
        await agent.wait_for_packets(40)
        carrier.stop_sending()
        assert_continuous(agent.packets(), a.tx.ssrc)
        assert dominant_frequency(agent.audio("PCMU", skip=16)) == pytest.approx(1000, abs=10)

    run_lab(scenario)


def test_a_player_stops_when_its_leg_is_closed() -> None:
    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        a = await lab.leg("agent", agent)
        player = Player(a, ToneGenerator(INDIA_BUSY)).start()  # endless
        await agent.wait_for_packets(2)
        a.close()
        await player.done
        assert a.player is None

    run_lab(scenario)


def test_wav_playout(tmp_path: Path) -> None:
    path = tmp_path / "announcement.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(sine(800, 8000 // 2 + 37).astype("<i2").tobytes())  # 0.5 s, ragged

    async def scenario(lab: Lab) -> None:
        agent = await lab.peer()
        a = await lab.leg("agent", agent)
        player = Player(a, wav_frames(path)).start()
        await player.done
        await agent.wait_for_packets(26)
        assert player.frames_sent == 26  # 4037 samples: 25 frames and a padded one
        assert dominant_frequency(agent.audio("PCMU")) == pytest.approx(800, abs=10)

    run_lab(scenario)


def test_wav_in_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wideband.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(bytes(640))
    with pytest.raises(ValueError, match="need 8000 Hz mono 16-bit PCM, got 16000 Hz"):
        next(wav_frames(path))
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(ValueError, match="not a PCM WAV file"):
        next(wav_frames(tmp_path / "junk.wav"))


def test_inactivity_raises_an_event_once_rtp_stops() -> None:
    async def scenario(lab: Lab) -> None:
        loop = asyncio.get_running_loop()
        events: list[MediaTimeout] = []
        fired: asyncio.Future[None] = loop.create_future()

        def on_event(event: MediaTimeout) -> None:
            events.append(event)
            if not fired.done():
                fired.set_result(None)

        carrier, watcher = await lab.peer(), await lab.peer()
        c = await lab.leg("customer", inactivity_timeout=0.1, on_event=on_event)
        c.set_media(media_for(carrier))
        w = await lab.leg("watcher", watcher)
        Bridge(c, w)
        # 0.3 s of RTP: three timeouts' worth, and no event while it flows.
        carrier.send_tone(c.local_address, 1000, frames=15)
        await watcher.wait_for_packets(15)
        assert events == []
        last = c.last_received
        await fired
        assert last is not None and loop.time() - last >= 0.1
        assert events[0].leg_key == "customer"
        assert events[0].silent_for >= 0.1

    run_lab(scenario)


def test_inactivity_counts_from_when_it_is_enabled_if_nothing_ever_arrived() -> None:
    async def scenario(lab: Lab) -> None:
        loop = asyncio.get_running_loop()
        fired: asyncio.Future[MediaTimeout] = loop.create_future()
        c = await lab.leg("customer", on_event=fired.set_result)
        enabled = loop.time()
        c.set_inactivity_timeout(0.05)
        event = await fired
        assert loop.time() - enabled >= 0.05
        assert event.silent_for >= 0.05
        c.set_inactivity_timeout(None)  # on hold: no more events

    run_lab(scenario)


def test_rtcp_and_garbage_are_counted_not_forwarded() -> None:
    async def scenario(lab: Lab) -> None:
        agent, carrier = await lab.peer(), await lab.peer()
        a = await lab.leg("agent", agent)
        c = await lab.leg("customer", carrier)
        Bridge(a, c)
        assert carrier.transport is not None
        rtcp_rr = bytes([0x80, 201, 0, 1]) + (1234).to_bytes(4, "big")
        carrier.transport.sendto(rtcp_rr, c.local_address)
        carrier.transport.sendto(b"\x00\x01junk", c.local_address)
        carrier.send_audio(c.local_address, bytes(160), 18)  # G.729: not negotiated
        carrier.send_audio(c.local_address, bytes(160), 0)
        await agent.wait_for_packets(1)
        assert (c.rtcp, c.malformed, c.unknown_payload, c.received) == (1, 1, 1, 4)
        assert len(agent.received) == 1

    run_lab(scenario)


def test_media_must_name_an_ip_and_a_g711_codec() -> None:
    with pytest.raises(ValueError, match="media host must be an IP address"):
        LegMedia("carrier.example", 4000, 0, "PCMU")
    with pytest.raises(ValueError, match="unsupported codec"):
        LegMedia("127.0.0.1", 4000, 18, "G729")
    # Stored as recvfrom reports it, so the per-packet source check is a string compare.
    assert LegMedia("0:0:0:0:0:0:0:1", 4000, 0, "PCMU").host == "::1"
