"""Conference mode over real UDP: everyone hears both others and never themselves; a Room
switches bridge -> conference -> bridge live without breaking anybody's stream."""

from __future__ import annotations

import itertools

import pytest

from callbridge.media.conference import Conference
from callbridge.media.dtmf import DtmfSender
from callbridge.media.player import Player
from callbridge.media.relay import Room, RoomMode
from callbridge.media.rtp import RtpPacket, seq_diff, ts_diff
from callbridge.media.tones import INDIA_BUSY, ToneGenerator
from rtp_peer import Lab, RtpPeer, dominant_frequency, level_at, run_lab

TONES = {"agent": 440.0, "customer": 1000.0, "third": 1700.0}


def assert_continuous(packets: list[RtpPacket], ssrc: int) -> None:
    assert {p.ssrc for p in packets} == {ssrc}
    for before, after in itertools.pairwise(packets):
        assert seq_diff(after.sequence_number, before.sequence_number) == 1
        step = ts_diff(after.timestamp, before.timestamp)
        assert step > 0 and step % 160 == 0, step


def hears(peer: RtpPeer, codec: str, skip: int) -> dict[str, float]:
    """Relative level of each participant's tone in what ``peer`` received after ``skip``."""
    audio = peer.audio(codec, skip=skip)
    return {name: level_at(audio, hz) for name, hz in TONES.items()}


def test_three_legs_each_hear_both_others_and_not_themselves() -> None:
    async def scenario(lab: Lab) -> None:
        codecs = {"agent": "PCMU", "customer": "PCMA", "third": "PCMU"}
        peers = {name: await lab.peer() for name in TONES}
        legs = {name: await lab.leg(name, peers[name], codec=codecs[name]) for name in TONES}
        conference = Conference(legs.values())
        for name, peer in peers.items():
            peer.send_tone(legs[name].local_address, TONES[name], codec=codecs[name])
        for peer in peers.values():
            await peer.wait_for_packets(40)
        conference.close()

        for name, peer in peers.items():
            levels = hears(peer, codecs[name], skip=10)  # past the jitter buffers' prefetch
            others = [other for other in TONES if other != name]
            assert all(levels[other] > 0.5 for other in others), (name, levels)
            assert levels[name] < 0.02, (name, levels)
            assert {p.payload_type for p in peer.packets()} == {0 if codecs[name] == "PCMU" else 8}
            assert_continuous(peer.packets(), legs[name].tx.ssrc)

    run_lab(scenario)


def test_a_room_switches_bridge_to_conference_and_back_in_a_live_call() -> None:
    async def scenario(lab: Lab) -> None:
        peers = {name: await lab.peer() for name in TONES}
        legs = {name: await lab.leg(name, peers[name]) for name in TONES}
        for name, peer in peers.items():
            peer.send_tone(legs[name].local_address, TONES[name])
        agent = peers["agent"]

        room = Room()
        room.add(legs["agent"])
        assert room.mode is RoomMode.IDLE
        room.add(legs["customer"])
        assert room.mode is RoomMode.BRIDGE
        await agent.wait_for_packets(15)
        bridged = len(agent.received)
        assert dominant_frequency(agent.audio("PCMU")) == pytest.approx(1000, abs=10)

        room.add(legs["third"])  # add-leg answered
        assert room.mode is RoomMode.CONFERENCE
        await agent.wait_for_packets(bridged + 40)
        conferenced = len(agent.received)
        levels = hears(agent, "PCMU", skip=bridged + 10)
        assert levels["customer"] > 0.5 and levels["third"] > 0.5 and levels["agent"] < 0.02

        room.remove(legs["customer"])  # the customer hangs up; agent and third go on
        assert room.mode is RoomMode.BRIDGE
        await agent.wait_for_packets(conferenced + 25)
        assert dominant_frequency(agent.audio("PCMU", skip=conferenced + 5)) == pytest.approx(
            1700, abs=10
        )
        # One stream from first packet to last, through both switches.
        assert_continuous(agent.packets(), legs["agent"].tx.ssrc)
        room.close()
        assert room.mode is RoomMode.IDLE
        assert all(leg.handler is None for leg in legs.values())

    run_lab(scenario)


def test_conference_records_every_leg_and_counts_dropped_events() -> None:
    class Sink:
        def __init__(self) -> None:
            self.keys: list[str] = []

        def on_audio(self, leg_key: str, payload: bytes, codec: str, arrival: float) -> None:
            self.keys.append(leg_key)

    async def scenario(lab: Lab) -> None:
        peers = {name: await lab.peer() for name in TONES}
        legs = {name: await lab.leg(name, peers[name]) for name in TONES}
        sink = Sink()
        room = Room(sink)
        for leg in legs.values():
            room.add(leg)
        customer, agent = peers["customer"], peers["agent"]
        customer.send_audio(legs["customer"].local_address, bytes(160), 0)
        event = DtmfSender().packets("4", 60, customer.ts)[0]
        customer.send_audio(legs["customer"].local_address, event.payload, 101, marker=True)
        peers["third"].send_audio(legs["third"].local_address, bytes(160), 0)
        agent.send_audio(legs["agent"].local_address, bytes(160), 0)
        # The mix goes out every 20 ms whatever arrives: wait for two ticks past the sends.
        await agent.wait_for_packets(2)
        assert sorted(sink.keys) == ["agent", "customer", "third"]
        assert isinstance(room.link, Conference)
        assert room.link.events_dropped == 1
        room.close()

    run_lab(scenario)


def test_a_player_holds_its_leg_inside_a_conference() -> None:
    async def scenario(lab: Lab) -> None:
        peers = {name: await lab.peer() for name in TONES}
        legs = {name: await lab.leg(name, peers[name]) for name in TONES}
        for name, peer in peers.items():
            peer.send_tone(legs[name].local_address, TONES[name])
        conference = Conference(legs.values())
        player = Player(legs["agent"], ToneGenerator(INDIA_BUSY)).start()
        await peers["agent"].wait_for_packets(20)
        await peers["customer"].wait_for_packets(20)
        player.stop()
        conference.close()
        assert dominant_frequency(peers["agent"].audio("PCMU")) == pytest.approx(400, abs=10)
        # The agent still talks into the conference while hearing the announcement.
        assert hears(peers["customer"], "PCMU", skip=10)["agent"] > 0.5

    run_lab(scenario)
