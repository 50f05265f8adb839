"""The stream a leg hears: one SSRC, sequence and timestamp line for the whole call.

Whoever produces audio for a leg (the other leg of a bridge, a conference mixer, a tone
player) sends through the leg's :class:`TxStream`, so the receiver sees one unbroken RTP
stream (RFC 3550 §5.1) across early media, answer, re-INVITE, bridge changes and playouts.
A phone or carrier that sees the SSRC change, or the sequence jump, may reset its jitter
buffer, mute for a moment or drop the stream.

This is the per-packet send path: each forwarded datagram is copied into one preallocated
buffer per leg, its fixed header written over, and sent from there: no allocation when no
transcoding is needed.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Final

from callbridge.media.dtmf import DtmfPacket
from callbridge.media.rtp import HEADER_SIZE, RtpError, RtpPacket

__all__ = ["CLOCK_RATE", "MAX_DATAGRAM", "TxStream", "audio_payload", "payload_span"]

#: G.711 and telephone-events both run an 8 kHz RTP clock (RFC 3551 §4.5.14, RFC 4733 §2.1).
CLOCK_RATE: Final = 8000
#: Bytes read per datagram: ``recvfrom`` allocates this much and shrinks it, so a large size
#: (asyncio's 256 KiB) costs time per packet. 2048 covers any RTP packet a G.711 call carries.
MAX_DATAGRAM: Final = 2048
#: RFC 3550 Appendix A.1: a forward jump larger than this, or a step back larger than
#: MAX_MISORDER, means the source restarted its numbering; the outgoing stream re-anchors.
MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100

#: A packet sent within this many frame times of the previous one continues it directly.
_FOLLOW_ON_FRAMES: Final = 2

_HEADER = struct.Struct("!BBHII")
#: Second octets that read as RTCP (RFC 5761 §4): a payload type 64-95 with the marker set.
_RTCP_FIRST: Final = 192
_RTCP_LAST: Final = 223


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

    The leg's own telephone-events (``LegEndpoint.send_dtmf``) go out on it too
    (:meth:`send_event`), stamped on the same audio clock, while a hold (:meth:`hold`) keeps
    every forwarded or generated packet off the stream, so the receiver gets the events alone.
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
        #: The socket's ``send`` while it is connected to ``address`` (the faster way: no
        #: address per packet); None otherwise, and ``sendto`` is used.
        self.send: Callable[[memoryview], int] | None = None
        #: True while our own telephone-events play (:meth:`hold`): forwarded and generated
        #: packets are dropped. RFC 4733 §2.5.1.2 would allow audio alongside an event, but a
        #: receiver then gets two sources' packets interleaved on one sequence line.
        self.holding = False
        #: Packets dropped by a hold.
        self.held = 0
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
        if self.holding:
            self.held += 1
            return
        gap = (seq - self._src_seq) & 0xFFFF
        if ssrc != self._src_ssrc or MAX_DROPOUT < gap < 0x10000 - MAX_MISORDER:
            self._anchor(seq, ts, ssrc, now)
            marker = True  # RFC 3551 §4.1: the marker flags the start of a talkspurt
            gap = 1
        if gap < 0x8000:  # not a late packet: it extends the line
            self._src_seq = seq
        out_seq = (seq + self._seq_off) & 0xFFFF
        out_ts = (ts + self._ts_off) & 0xFFFFFFFF
        length = len(data)
        b1 = payload_type | 0x80 if marker else payload_type
        if length > MAX_DATAGRAM or _RTCP_FIRST <= b1 <= _RTCP_LAST:
            return  # longer than any G.711 packet, or PT 64-95 + marker (reads as RTCP)
        # rtp.rewrite_header, inlined for the per-packet path: the endpoint checked the
        # version and length already. The whole datagram is copied (a same-size slice
        # assignment: no allocation), then the fixed header is written over it.
        buf = self._buf
        buf[0:length] = data
        _HEADER.pack_into(buf, 0, data[0], b1, out_seq, out_ts, self.ssrc)
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
        if self.holding:
            self.held += 1
            return
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

    # -- our own telephone-events (RFC 4733) --------------------------------------------------

    def hold(self) -> None:
        """Keep forwarded and generated packets off the stream until :meth:`release`."""
        self.holding = True

    def release(self) -> None:
        """End a hold: the next forwarded packet re-anchors (the events used sequence
        numbers and moved the clock on), a generated frame simply follows on."""
        self.holding = False
        self.reset_source()

    def clock(self, now: float) -> int:
        """The RTP timestamp a frame starting ``now`` takes: where the line continues.

        An event's timestamp is its start on the audio clock (RFC 4733 §2.5.1.2).
        """
        if self._last_at is None:
            return self.ts
        return (self.ts + self._advance(now, CLOCK_RATE // 50)) & 0xFFFFFFFF

    def send_event(self, packet: DtmfPacket, payload_type: int, now: float) -> None:
        """Send one telephone-event packet: the next sequence number, the event's start as
        timestamp (every packet of an event carries it), the marker as the sender built it.

        The stream's clock moves on to the event's start plus ``packet.send_at``: the audio
        that resumes after the event continues from there, in step with the wall clock.
        """
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (packet.timestamp + packet.send_at) & 0xFFFFFFFF
        self._last_at = now
        b1 = payload_type | 0x80 if packet.marker else payload_type
        _HEADER.pack_into(self._buf, 0, 0x80, b1, self.seq, packet.timestamp, self.ssrc)
        end = HEADER_SIZE + len(packet.payload)
        self._buf[HEADER_SIZE:end] = packet.payload
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
        """Timestamp step for the next packet: one frame when it follows on (timer jitter is
        not a gap: a larger step would play as a click of silence), else the pause in whole
        frames, so the timestamp tracks the time the receiver waited (RFC 3550 §5.1)."""
        assert self._last_at is not None
        frames = round((now - self._last_at) * CLOCK_RATE / frame)
        return (frames if frames > _FOLLOW_ON_FRAMES else 1) * frame

    def _send(self, length: int) -> None:
        if length != self._view_len:  # nearly always the same size: keep one view
            self._sized = self._view[:length]
            self._view_len = length
        try:
            send = self.send
            if send is not None:
                send(self._sized)
            else:
                sendto, address = self.sendto, self.address
                if sendto is None or address is None:
                    return
                sendto(self._sized, address)
        except OSError:
            self.send_errors += 1
            return
        self.sent += 1
