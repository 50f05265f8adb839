"""One call leg's RTP socket: who may send to it, where it sends, and the stream it sends.

A :class:`LegEndpoint` owns one leased UDP port, read through the loop's reactor
(``reactor.py``: one epoll set for all legs, not an asyncio transport each). It knows the
leg's negotiated media (:class:`LegMedia`, converted from SDP by the call layer: media does
not import ``sip``) and does three things with every datagram:

1. **Source check.** Only the remote address from SDP may send. With ``symmetric`` (NAT), the
   endpoint instead latches to the first source it hears (symmetric RTP, RFC 4961 §3) and
   sends there; a packet from exactly the SDP address may always take the latch over. Any
   other source is dropped and counted: that is the "RTP Bleed" defence.
2. **Classification.** RTCP (RFC 5761) and malformed datagrams are counted and dropped; audio
   and telephone-events (the negotiated payload types) go to the leg's :class:`RtpHandler`, the
   bridge or conference it is connected to; anything else is counted.
3. **Liveness.** The arrival time is kept, and a timer raises :class:`MediaTimeout` when no
   RTP arrived for ``inactivity_timeout`` seconds.

What the leg hears goes out through its :class:`TxStream`, which owns the leg's outgoing SSRC,
sequence numbers and timestamps. Whoever produces audio for the leg (the other leg of a
bridge, a conference mixer, a tone player) sends through it, so a receiver sees one unbroken
stream (RFC 3550 §5.1) across early media, answer, re-INVITE, bridge changes and playouts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from callbridge.media.reactor import Reactor, reactor_for
from callbridge.media.rtp import (
    HEADER_SIZE,
    RtpError,
    RtpPacket,
    is_rtcp,
    rewrite_header,
    unpack_header,
)

__all__ = [
    "CLOCK_RATE",
    "CODECS",
    "LegEndpoint",
    "LegMedia",
    "MediaTimeout",
    "RtpHandler",
    "TxStream",
    "audio_payload",
    "payload_span",
]

log = logging.getLogger(__name__)

#: G.711 and telephone-events both run an 8 kHz RTP clock (RFC 3551 §4.5.14, RFC 4733 §2.1).
CLOCK_RATE: Final = 8000
#: The codecs a leg may negotiate.
CODECS: Final = ("PCMU", "PCMA")
#: Bytes read per datagram: ``recvfrom`` allocates this much and shrinks it, so a large size
#: (asyncio's 256 KiB) costs time per packet. 2048 covers any RTP packet a G.711 call carries.
MAX_DATAGRAM: Final = 2048
#: RFC 3550 Appendix A.1: a forward jump larger than this, or a step back larger than
#: MAX_MISORDER, means the source restarted its numbering; the outgoing stream re-anchors.
MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100

_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class LegMedia:
    """What SDP negotiated for one leg (RFC 3264): where to send, and which payload types.

    ``host`` is an IP literal; ``telephone_event_pt`` is None when the leg did not offer
    RFC 4733 events.
    """

    host: str
    port: int
    payload_type: int
    codec: str
    telephone_event_pt: int | None = None
    ptime: int = 20

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unsupported codec {self.codec!r}, expected one of {CODECS}")
        if not 0 < self.port < 65536:
            raise ValueError(f"RTP port must be 1-65535, got {self.port}")
        if self.payload_type == self.telephone_event_pt:
            raise ValueError("audio and telephone-event payload types must differ")
        try:
            canonical = ipaddress.ip_address(self.host).compressed
        except ValueError as exc:
            raise ValueError(f"media host must be an IP address, got {self.host!r}") from exc
        # The form recvfrom reports, so a source check is a plain string compare.
        object.__setattr__(self, "host", canonical)

    @property
    def samples_per_frame(self) -> int:
        return CLOCK_RATE * self.ptime // 1000


@dataclass(frozen=True, slots=True)
class MediaTimeout:
    """No RTP reached leg ``leg_key`` for ``silent_for`` seconds (raised once per silence)."""

    leg_key: str
    silent_for: float


class RtpHandler(Protocol):
    """Takes a leg's accepted packets: a bridge direction or a conference participant.

    ``data`` is the whole datagram; the header fields are unpacked already.
    """

    def on_audio(
        self, data: bytes, marker: bool, seq: int, ts: int, ssrc: int, now: float
    ) -> None: ...

    def on_telephone_event(
        self, data: bytes, marker: bool, seq: int, ts: int, ssrc: int, now: float
    ) -> None: ...

    def media_changed(self) -> None:
        """The leg's negotiated media changed (re-INVITE): recompute payload types."""


def payload_span(data: bytes) -> tuple[int, int]:
    """``(start, end)`` of an RTP packet's payload, past CSRCs and extension, before padding."""
    if data[0] == 0x80:  # V=2, no padding, extension or CSRCs: nearly every packet
        return HEADER_SIZE, len(data)
    packet = RtpPacket.parse(data)
    end = len(data) - packet.padding
    return end - len(packet.payload), end


def audio_payload(data: bytes) -> bytes | None:
    """The payload of an RTP packet (a copy), or None if its CSRC/extension/padding lengths
    are malformed."""
    if data[0] == 0x80:
        return data[HEADER_SIZE:]
    try:
        start, end = payload_span(data)
    except RtpError:
        return None
    return data[start:end]


class TxStream:
    """The RTP stream a leg hears: one SSRC, sequence and timestamp line for the whole call.

    Forwarded packets keep their source's spacing (so losses stay visible and telephone-event
    timestamps stay right) through per-source offsets; when the source changes (new SSRC,
    numbering restart, :meth:`reset_source`) the offsets are re-anchored so the sequence
    continues by one and the timestamp by the wall-clock time since the last packet sent.
    Generated frames (:meth:`send_generated`) continue the same line.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        #: RFC 3550 §5.1, §8: random SSRC and initial sequence number and timestamp.
        self.ssrc = rng.getrandbits(32)
        self.seq = rng.getrandbits(16)
        self.ts = rng.getrandbits(32)
        self.sent = 0
        #: Datagrams the kernel refused (a full send buffer, an unreachable host): dropped,
        #: as late audio is worthless.
        self.send_errors = 0
        #: The socket's ``sendto``; None until the leg is started and after it is closed.
        self.sendto: Callable[[memoryview, tuple[str, int]], int] | None = None
        self.address: tuple[str, int] | None = None
        self._last_at: float | None = None
        self._src_ssrc = -1
        self._src_seq = 0
        self._seq_off = 0
        self._ts_off = 0
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._view_len = 0
        self._sized = self._view[:0]

    def reset_source(self) -> None:
        """The next forwarded packet starts a new source: re-anchor on it."""
        self._src_ssrc = -1

    def forward(
        self,
        data: bytes,
        payload_type: int,
        marker: bool,
        seq: int,
        ts: int,
        ssrc: int,
        now: float,
        table: bytes | None = None,
    ) -> None:
        """Send a received packet on this stream, with ``payload_type`` and the payload
        translated through ``table`` (mu-law <-> A-law) when given."""
        gap = (seq - self._src_seq) & 0xFFFF
        if ssrc != self._src_ssrc or MAX_DROPOUT < gap < 0x10000 - MAX_MISORDER:
            self._anchor(seq, ts, ssrc, now)
            marker = True  # RFC 3551 §4.1: the marker flags the start of a talkspurt
            gap = 1
        if gap < 0x8000:  # not a late packet: it extends the line
            self._src_seq = seq
        out_seq = (seq + self._seq_off) & 0xFFFF
        out_ts = (ts + self._ts_off) & 0xFFFFFFFF
        try:
            length = rewrite_header(
                self._buf,
                data,
                payload_type=payload_type,
                sequence_number=out_seq,
                timestamp=out_ts,
                ssrc=self.ssrc,
                marker=marker,
            )
        except RtpError:
            return  # longer than any G.711 packet: not ours to relay
        if table is not None:
            try:
                start, end = payload_span(data)
            except RtpError:
                return
            self._buf[start:end] = data[start:end].translate(table)
        if gap < 0x8000:
            self.seq, self.ts = out_seq, out_ts
        self._last_at = now
        self._send(length)

    def send_generated(
        self, payload: bytes, payload_type: int, samples: int, now: float, marker: bool = False
    ) -> None:
        """Send one generated frame (tone, announcement, mix) of ``samples`` samples."""
        self.reset_source()
        if self._last_at is None:
            marker = True
        else:
            self.ts = (self.ts + self._advance(now, samples)) & 0xFFFFFFFF
        self.seq = (self.seq + 1) & 0xFFFF
        self._last_at = now
        b1 = payload_type | 0x80 if marker else payload_type
        _HEADER.pack_into(self._buf, 0, 0x80, b1, self.seq, self.ts, self.ssrc)
        end = HEADER_SIZE + len(payload)
        self._buf[HEADER_SIZE:end] = payload
        self._send(end)

    def _anchor(self, seq: int, ts: int, ssrc: int, now: float) -> None:
        if self._last_at is None:
            # First packet of the stream: the source's seq/ts map onto our random start.
            next_seq, next_ts = self.seq, self.ts
        else:
            next_seq = (self.seq + 1) & 0xFFFF
            next_ts = (self.ts + self._advance(now, CLOCK_RATE // 50)) & 0xFFFFFFFF
        self._seq_off = next_seq - seq
        self._ts_off = next_ts - ts
        self._src_ssrc = ssrc

    def _advance(self, now: float, frame: int) -> int:
        """Timestamp step for the next packet: at least one frame, more after a pause, in
        whole frames, so the timestamp tracks the time the receiver waited (RFC 3550 §5.1)."""
        assert self._last_at is not None
        frames = round((now - self._last_at) * CLOCK_RATE / frame)
        return max(frames, 1) * frame

    def _send(self, length: int) -> None:
        sendto, address = self.sendto, self.address
        if sendto is None or address is None:
            return
        if length != self._view_len:  # nearly always the same size: keep one view
            self._sized = self._view[:length]
            self._view_len = length
        try:
            sendto(self._sized, address)
        except OSError:
            self.send_errors += 1
            return
        self.sent += 1


class LegEndpoint:
    """One leg's RTP socket (see the module docstring). Open through ``PortAllocator``.

    ``sock`` is a bound, non-blocking UDP socket the endpoint owns from :meth:`start` on;
    ``on_close`` runs once when it is closed (the allocator's lease release).
    """

    def __init__(
        self,
        key: str,
        sock: socket.socket,
        *,
        symmetric: bool = False,
        inactivity_timeout: float | None = None,
        on_event: Callable[[MediaTimeout], None] | None = None,
        advertised_host: str = "",
        on_close: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.key = key
        self.symmetric = symmetric
        self.on_event = on_event
        self.tx = TxStream(rng)
        self.media: LegMedia | None = None
        #: Whoever plays into this leg (see ``player.Player``); forwarding yields to it.
        self.player: object | None = None
        #: When the last RTP packet was accepted, on the loop's clock; None before the first.
        self.last_received: float | None = None
        self.received = 0
        self.strangers = 0
        self.rtcp = 0
        self.malformed = 0
        self.unknown_payload = 0
        self.errors = 0
        self.closed = False
        self._sock = sock
        self._recvfrom = sock.recvfrom
        self._local: tuple[str, int] = sock.getsockname()[:2]
        self._advertised_host = advertised_host
        self._on_close = on_close
        self._log = logging.LoggerAdapter(log, {"leg": key})
        self._handler: RtpHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reactor: Reactor | None = None
        self._time: Callable[[], float] = _no_clock
        self._host = ""  # the accepted source; "" accepts nothing
        self._port = 0
        self._latched = False
        self._audio_pt = -1
        self._event_pt = -1
        self._timeout = inactivity_timeout
        self._watch_from = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out = False

    def start(self) -> None:
        """Start reading, on the running loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._time = loop.time
        self._reactor = reactor_for(loop)
        self._reactor.add(self._sock.fileno(), self._read)
        self.tx.sendto = self._sock.sendto
        self.set_inactivity_timeout(self._timeout)

    # -- the packet path --------------------------------------------------------------------

    def _read(self) -> None:
        try:
            data, addr = self._recvfrom(MAX_DATAGRAM)
        except OSError:  # nothing after all (BlockingIOError), or an ICMP error report
            self.errors += 1
            return
        if (addr[1] != self._port or addr[0] != self._host) and not self._new_source(addr):
            self.strangers += 1
            return
        now = self._time()
        self.last_received = now
        self.received += 1
        try:
            pt, marker, seq, ts, ssrc = unpack_header(data)
        except RtpError:
            self._bad_datagram(data)
            return
        handler = self._handler
        if handler is None:
            return
        if pt == self._audio_pt:
            handler.on_audio(data, marker, seq, ts, ssrc, now)
        elif pt == self._event_pt:
            handler.on_telephone_event(data, marker, seq, ts, ssrc, now)
        else:
            self.unknown_payload += 1

    # -- the call layer's controls ----------------------------------------------------------

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound address (host, port)."""
        return self._local

    @property
    def advertised_address(self) -> tuple[str, int]:
        """What to write in SDP: the public host (or the bound one) and the port."""
        host, port = self.local_address
        return self._advertised_host or host, port

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """Where this leg's audio is sent: the latched source, else the SDP address."""
        return self.tx.address

    @property
    def codec(self) -> str | None:
        return None if self.media is None else self.media.codec

    def set_media(self, media: LegMedia | None) -> None:
        """Apply a (re-)negotiated SDP answer; None stops sending and accepting."""
        previous, self.media = self.media, media
        self._audio_pt = -1 if media is None else media.payload_type
        self._event_pt = -1
        if media is not None and media.telephone_event_pt is not None:
            self._event_pt = media.telephone_event_pt
        if media is None:
            self._accept("", 0)
            self._latched = False
        elif not (self._latched and _same_address(previous, media)):
            # A new SDP address (a new device, a transfer) starts afresh; the same one
            # re-offered keeps a latch, which is the address that actually works behind NAT.
            self._accept(media.host, media.port)
            self._latched = False
        if self._handler is not None:
            self._handler.media_changed()

    def connect(self, handler: RtpHandler | None) -> None:
        """Hand this leg's packets to ``handler`` (None: drop them)."""
        self._handler = handler

    @property
    def handler(self) -> RtpHandler | None:
        return self._handler

    def set_inactivity_timeout(self, seconds: float | None) -> None:
        """Raise :class:`MediaTimeout` after ``seconds`` without RTP, counted from now or the
        last packet, whichever is later. None disables (a call on hold sends nothing)."""
        self._timeout = seconds
        self._timed_out = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if seconds is not None and self._loop is not None and not self.closed:
            self._watch_from = self._time()
            self._arm(self._watch_from + seconds)

    def close(self) -> None:
        """Stop reading and sending, close the socket and give the port back. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._handler = None
        self.tx.sendto = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reactor is not None:
            self._reactor.remove(self._sock.fileno())
        self._sock.close()
        if self._on_close is not None:
            self._on_close()

    async def aclose(self) -> None:
        """:meth:`close`, for callers that close things by awaiting."""
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _accept(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self.tx.address = (host, port) if host else None

    def _new_source(self, addr: tuple[str, int]) -> bool:
        """Latch to ``addr`` if symmetric RTP allows it (RFC 4961 §3)."""
        media = self.media
        if not self.symmetric or media is None:
            return False
        if self._latched and (addr[0], addr[1]) != (media.host, media.port):
            return False
        self._accept(addr[0], addr[1])
        self._latched = True
        self._log.info("rtp %s latched to %s:%d", self.key, addr[0], addr[1])
        return True

    def _bad_datagram(self, data: bytes) -> None:
        if is_rtcp(data):
            self.rtcp += 1  # RTCP on the RTP port (RFC 5761); reports are not relayed
        else:
            self.malformed += 1

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_at(when, self._check_inactivity)

    def _check_inactivity(self) -> None:
        self._timer = None
        if self._timeout is None:
            return
        now = self._time()
        quiet_since = max(self.last_received or 0.0, self._watch_from)
        if now - quiet_since < self._timeout:
            self._timed_out = False
            self._arm(quiet_since + self._timeout)
            return
        if not self._timed_out:
            self._timed_out = True
            self._log.info("rtp %s: no media for %.1f s", self.key, now - quiet_since)
            if self.on_event is not None:
                self.on_event(MediaTimeout(self.key, now - quiet_since))
        # Keep watching, so media resuming re-arms the timeout for a later silence.
        self._arm(now + self._timeout)


def _same_address(a: LegMedia | None, b: LegMedia) -> bool:
    return a is not None and (a.host, a.port) == (b.host, b.port)


def _no_clock() -> float:
    raise RuntimeError("endpoint not started")
