"""A test phone on 127.0.0.1: sends a tone as G.711 RTP every 20 ms, records what it hears.

It also keys digits as RFC 4733 telephone-events (:meth:`RtpPeer.press`, paced like a phone)
and decodes the events it hears (:meth:`RtpPeer.events`).

Tests wait on what a peer received (``await peer.wait_until(predicate)``), never on a sleep:
the predicate is checked as each packet arrives, with a timeout as the only clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from callbridge.media.dtmf import DtmfSender, TelephoneEvent
from callbridge.media.endpoint import LegEndpoint, LegMedia
from callbridge.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.media.ports import PortAllocator
from callbridge.media.rtp import RtpPacket, is_rtcp, ts_add, ts_newer
from callbridge.media.tones import SAMPLE_RATE, ToneGenerator, sine_plan

FRAME_SECONDS = 0.02
ENCODE = {"PCMU": ulaw_encode, "PCMA": alaw_encode}
DECODE = {"PCMU": ulaw_decode, "PCMA": alaw_decode}
STATIC_PT = {"PCMU": 0, "PCMA": 8}


@dataclass(frozen=True)
class Received:
    packet: RtpPacket
    source: tuple[str, int]
    arrival: float


class RtpPeer(asyncio.DatagramProtocol):
    """One far end (agent phone, carrier) with its own UDP socket."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.rtcp = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.sent = 0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._sender: asyncio.TimerHandle | None = None
        self._presser: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> RtpPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if is_rtcp(data):
            self.rtcp += 1
            return
        now = asyncio.get_running_loop().time()
        self.received.append(Received(RtpPacket.parse(data), (addr[0], addr[1]), now))
        self._check_waiters()

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def close(self) -> None:
        self.stop_sending()
        if self._presser is not None:
            self._presser.cancel()
        if self.transport is not None:
            self.transport.close()

    # -- sending ----------------------------------------------------------------------------

    def send_packet(self, to: tuple[str, int], packet: RtpPacket) -> None:
        assert self.transport is not None
        self.transport.sendto(packet.serialize(), to)
        self.sent += 1

    def send_audio(
        self, to: tuple[str, int], payload: bytes, payload_type: int, *, marker: bool = False
    ) -> RtpPacket:
        """One audio packet on this peer's stream (next seq, timestamp + frame)."""
        packet = RtpPacket(
            payload_type=payload_type,
            sequence_number=self.seq,
            timestamp=self.ts,
            ssrc=self.ssrc,
            marker=marker,
            payload=payload,
        )
        self.send_packet(to, packet)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + len(payload)) & 0xFFFFFFFF
        return packet

    def send_tone(
        self,
        to: tuple[str, int],
        freq: float,
        *,
        codec: str = "PCMU",
        payload_type: int | None = None,
        frames: int | None = None,
    ) -> None:
        """Send ``freq`` Hz every 20 ms, paced by the loop, until ``frames`` or stop."""
        self.send_frames(
            to,
            ToneGenerator(sine_plan(freq)),
            codec=codec,
            payload_type=payload_type,
            frames=frames,
        )

    def send_frames(
        self,
        to: tuple[str, int],
        source: Iterable[Any],
        *,
        codec: str = "PCMU",
        payload_type: int | None = None,
        frames: int | None = None,
    ) -> None:
        self.stop_sending()
        pt = STATIC_PT[codec] if payload_type is None else payload_type
        encode = ENCODE[codec]
        loop = asyncio.get_running_loop()
        iterator = iter(source)
        start = loop.time()
        state = {"n": 0}

        def tick() -> None:
            if frames is not None and state["n"] >= frames:
                self._sender = None
                return
            self.send_audio(to, encode(next(iterator)), pt, marker=state["n"] == 0)
            state["n"] += 1
            self._sender = loop.call_at(start + state["n"] * FRAME_SECONDS, tick)

        tick()

    def press(
        self,
        to: tuple[str, int],
        digits: str,
        *,
        payload_type: int = 101,
        duration_ms: int = 100,
        gap_ms: int = 60,
    ) -> asyncio.Future[None]:
        """Key ``digits`` as RFC 4733 events on this peer's stream, one packet per 20 ms
        (final packets three times), paced by the loop; the future resolves after the last.
        Audio sent meanwhile goes alongside, as RFC 4733 §2.5.1.2 allows."""
        loop = asyncio.get_running_loop()
        base, start = self.ts, loop.time()
        packets = list(DtmfSender().sequence(digits, duration_ms, gap_ms))
        done: asyncio.Future[None] = loop.create_future()

        def tick() -> None:
            packet = packets.pop(0)
            self.send_packet(
                to,
                RtpPacket(
                    payload_type=payload_type,
                    sequence_number=self.seq,
                    timestamp=ts_add(base, packet.timestamp),
                    ssrc=self.ssrc,
                    marker=packet.marker,
                    payload=packet.payload,
                ),
            )
            self.seq = (self.seq + 1) & 0xFFFF
            clock = ts_add(base, packet.timestamp + packet.send_at)
            if ts_newer(clock, self.ts):
                self.ts = clock  # audio after the events continues past them
            if packets:
                due = packets[0].timestamp + packets[0].send_at
                self._presser = loop.call_at(start + due / SAMPLE_RATE, tick)
            else:
                self._presser = None
                done.set_result(None)

        first = packets[0].timestamp + packets[0].send_at
        self._presser = loop.call_at(start + first / SAMPLE_RATE, tick)
        return done

    def stop_sending(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None

    # -- waiting and analysing --------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once ``predicate()`` holds (checked now and on every packet received)."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not future]

    async def wait_for_packets(self, count: int, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: len(self.received) >= count, timeout)

    def _check_waiters(self) -> None:
        for predicate, future in self._waiters:
            if not future.done() and predicate():
                future.set_result(None)

    def packets(self, payload_type: int | None = None) -> list[RtpPacket]:
        return [
            r.packet
            for r in self.received
            if payload_type is None or r.packet.payload_type == payload_type
        ]

    def events(self, payload_type: int = 101) -> list[tuple[RtpPacket, TelephoneEvent]]:
        """The telephone-events received, each packet with its (first) event block."""
        return [(p, TelephoneEvent.parse(p.payload)) for p in self.packets(payload_type)]

    def audio(self, codec: str, payload_type: int | None = None, skip: int = 0) -> np.ndarray:
        """The received audio, decoded, in arrival order (``skip`` packets left out)."""
        pt = STATIC_PT[codec] if payload_type is None else payload_type
        payloads = [p.payload for p in self.packets(pt)[skip:]]
        return DECODE[codec](b"".join(payloads))


def spectrum(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    windowed = samples.astype(np.float64) * np.hanning(samples.size)
    return np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE), np.abs(np.fft.rfft(windowed))


def dominant_frequency(samples: np.ndarray) -> float:
    """The strongest frequency in ``samples`` (8 kHz), DC excluded."""
    freqs, mags = spectrum(samples)
    mags[freqs < 50] = 0
    return float(freqs[int(np.argmax(mags))])


def level_at(samples: np.ndarray, hz: float, width: float = 20.0) -> float:
    """Peak spectral magnitude within ``width`` Hz of ``hz``, relative to the strongest peak."""
    freqs, mags = spectrum(samples)
    mags[freqs < 50] = 0
    band = np.abs(freqs - hz) <= width
    return float(mags[band].max() / mags.max())


class Lab:
    """A scenario's sockets: peers and relay legs, all closed at the end whatever happens."""

    def __init__(self, allocator: PortAllocator) -> None:
        self.allocator = allocator
        self.peers: list[RtpPeer] = []
        self.legs: list[LegEndpoint] = []

    async def peer(self) -> RtpPeer:
        peer = await RtpPeer.open()
        self.peers.append(peer)
        return peer

    async def leg(
        self,
        key: str,
        peer: RtpPeer | None = None,
        *,
        codec: str = "PCMU",
        event_pt: int | None = 101,
        **options: Any,
    ) -> LegEndpoint:
        """A relay leg; with ``peer``, its media already negotiated towards that peer."""
        endpoint = await self.allocator.open(key, **options)
        self.legs.append(endpoint)
        if peer is not None:
            endpoint.set_media(media_for(peer, codec, event_pt))
        return endpoint

    async def close(self) -> None:
        for peer in self.peers:
            peer.close()
        for endpoint in self.legs:
            if endpoint.player is not None:
                endpoint.player.stop()  # type: ignore[attr-defined]
            endpoint.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (on the loop) until ``condition()``; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.002)


def media_for(peer: RtpPeer, codec: str = "PCMU", event_pt: int | None = 101) -> LegMedia:
    return LegMedia(*peer.address, STATIC_PT[codec], codec, telephone_event_pt=event_pt)


def run_lab(
    scenario: Callable[[Lab], Awaitable[None]],
    allocator: PortAllocator | None = None,
    *,
    port_min: int = 42000,
    port_max: int = 42999,
    timeout: float = 15.0,
) -> PortAllocator:
    """Run one scenario on a fresh loop; every port must be back in the pool afterwards."""
    allocator = allocator or PortAllocator("127.0.0.1", port_min, port_max)

    async def main() -> None:
        lab = Lab(allocator)
        try:
            await asyncio.wait_for(scenario(lab), timeout)
        finally:
            await lab.close()

    asyncio.run(main())
    assert allocator.leased == 0
    return allocator
