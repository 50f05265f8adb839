"""RTP packets (RFC 3550 §5.1), RTCP demultiplexing (RFC 5761 §4) and wrap-around arithmetic.

The relay handles every packet of every call (400 calls x 2 directions x 50 packets/s on one
core), so this module is written for the per-packet path:

- :func:`unpack_header` reads the fields the relay needs, as a plain tuple, without building
  an object;
- :func:`rewrite_header` copies a received packet into a preallocated ``bytearray`` with a new
  payload type, sequence number, timestamp and SSRC: one ``pack_into`` plus one copy, no
  allocation;
- :class:`RtpPacket` is the full model (CSRCs, header extension, padding) for the few places
  that need it: DTMF, recording, tests. ``parse(serialize(p)) == p``.

The relay's own hot path (``endpoint.LegEndpoint._accepted``, ``stream.TxStream.forward``)
inlines the first two, a few lines each, because it has already made some of their checks
and a call per packet costs ~3% of the relay's CPU; these are the checked, general forms.

Every malformed packet raises :class:`RtpError`, a ``ValueError`` with a fixed message per
case; tests check the messages. RTCP sharing the RTP port (RFC 5761) is recognised by
:func:`is_rtcp` and refused by the parsers, so a report is never played as audio.

Sequence numbers wrap at 2**16 and timestamps at 2**32; :func:`seq_newer`, :func:`seq_diff`,
:func:`extend_seq`, :func:`ts_newer` and :func:`ts_diff` compare them as serial numbers
(RFC 1982 §3.2): ``b`` is newer than ``a`` when it lies less than half the space ahead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

#: The only RTP version in use (RFC 3550 §5.1).
RTP_VERSION = 2
#: Fixed header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
HEADER_SIZE = 12
#: Largest CSRC count the 4-bit CC field can hold.
MAX_CSRC = 15

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32

_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")
_CSRC_STRUCTS = tuple(struct.Struct(f"!{n}I") for n in range(MAX_CSRC + 1))

# RFC 5761 §4: with RTP and RTCP on one port, an RTCP packet type 192-223 sits where the RTP
# marker bit and payload type are, and reads as marker=1 with payload type 64-95.
_RTCP_TYPE_MIN = 192
_RTCP_TYPE_MAX = 223

_TOO_SHORT = "RTP packet is shorter than the 12-byte header"
_RTCP_ON_RTP_PORT = "RTCP packet on the RTP port (RFC 5761)"


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet, or a packet that cannot be sent."""


@dataclass(frozen=True, slots=True)
class HeaderExtension:
    """The header extension (RFC 3550 §5.3.1): a 16-bit profile word and 32-bit-word data.

    The data is kept opaque: RFC 8285 one- and two-byte elements are a profile's business.
    """

    profile: int
    data: bytes = b""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 §5.1).

    A mutable slotted dataclass, not a frozen one: a frozen dataclass costs about five times as
    much to construct, and packets are built at the packet rate. Treat parsed packets as
    values all the same.

    ``padding`` is the number of padding octets including the final count octet (RFC 3550
    §5.1, P bit); 0 means no padding. ``parse`` strips the padding from ``payload``.
    ``extension`` is None when the X bit is clear.
    """

    payload_type: int = 0
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: HeaderExtension | None = None
    payload: bytes = b""
    padding: int = 0
    version: int = field(default=RTP_VERSION, repr=False)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raise :class:`RtpError` if it is not RTP or is malformed."""
        b0, b1, seq, ts, ssrc = _check_fixed_header(data)
        pos = HEADER_SIZE
        end = len(data)
        cc = b0 & 0x0F
        if cc:
            if end < pos + 4 * cc:
                raise RtpError("RTP CSRC list extends beyond the packet")
            csrc: tuple[int, ...] = _CSRC_STRUCTS[cc].unpack_from(data, pos)
            pos += 4 * cc
        else:
            csrc = ()
        extension = None
        if b0 & 0x10:
            extension, pos = _parse_extension(data, pos)
        padding = 0
        if b0 & 0x20:
            padding = _padding_length(data, pos)
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            marker=bool(b1 & 0x80),
            csrc=csrc,
            extension=extension,
            payload=data[pos:end],
            padding=padding,
        )

    def serialize(self) -> bytes:
        """The packet on the wire; raise :class:`RtpError` if a field does not fit."""
        self._check_fields()
        cc = len(self.csrc)
        b0 = (RTP_VERSION << 6) | cc
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(b0, b1, self.sequence_number, self.timestamp, self.ssrc)]
        if cc:
            parts.append(_CSRC_STRUCTS[cc].pack(*self.csrc))
        if self.extension is not None:
            ext = self.extension
            parts.append(_EXTENSION.pack(ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if self.padding:
            # RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)

    def _check_fields(self) -> None:
        if self.version != RTP_VERSION:
            raise RtpError("RTP version must be 2")
        if not 0 <= self.payload_type <= 127:
            raise RtpError("RTP payload type must be 0-127")
        if self.marker and 64 <= self.payload_type <= 95:
            # RFC 5761 §4: it would read as an RTCP packet type 192-223.
            raise RtpError("RTP payload type 64-95 with the marker bit set would read as RTCP")
        if not 0 <= self.sequence_number < SEQ_MOD:
            raise RtpError("RTP sequence number must be 0-65535")
        if not 0 <= self.timestamp < TS_MOD or not 0 <= self.ssrc < TS_MOD:
            raise RtpError("RTP timestamp and SSRC must be 32-bit unsigned")
        if len(self.csrc) > MAX_CSRC or not all(0 <= c < TS_MOD for c in self.csrc):
            raise RtpError("RTP CSRC list must hold at most 15 32-bit identifiers")
        if self.extension is not None:
            ext = self.extension
            if not 0 <= ext.profile < SEQ_MOD:
                raise RtpError("RTP header extension profile must be 16-bit")
            if len(ext.data) % 4 or len(ext.data) // 4 >= SEQ_MOD:
                raise RtpError("RTP header extension data must be whole 32-bit words")
        if not 0 <= self.padding <= 255:
            raise RtpError("RTP padding must be 0-255 octets")


def _check_fixed_header(data: bytes) -> tuple[int, int, int, int, int]:
    """Unpack the 12 fixed octets, refusing short datagrams, other versions and RTCP."""
    if len(data) < HEADER_SIZE:
        if is_rtcp(data):  # an RTCP RR without report blocks is 8 bytes
            raise RtpError(_RTCP_ON_RTP_PORT)
        raise RtpError(_TOO_SHORT)
    fields: tuple[int, int, int, int, int] = _HEADER.unpack_from(data)
    b0, b1 = fields[0], fields[1]
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP packet has version {b0 >> 6}, expected 2")
    if _RTCP_TYPE_MIN <= b1 <= _RTCP_TYPE_MAX:
        raise RtpError(_RTCP_ON_RTP_PORT)
    return fields


def _parse_extension(data: bytes, pos: int) -> tuple[HeaderExtension, int]:
    """RFC 3550 §5.3.1: profile word, length in 32-bit words, then the data."""
    if len(data) < pos + 4:
        raise RtpError("RTP header extension extends beyond the packet")
    profile, words = _EXTENSION.unpack_from(data, pos)
    start = pos + 4
    stop = start + 4 * words
    if len(data) < stop:
        raise RtpError("RTP header extension extends beyond the packet")
    return HeaderExtension(profile, data[start:stop]), stop


def _padding_length(data: bytes, payload_start: int) -> int:
    """RFC 3550 §5.1: the last octet counts padding octets, itself included, so never 0."""
    count = data[-1]
    if count == 0:
        raise RtpError("RTP padding count is zero")
    if count > len(data) - payload_start:
        raise RtpError("RTP padding count exceeds the payload")
    return count


def unpack_header(data: bytes) -> tuple[int, bool, int, int, int]:
    """``(payload_type, marker, sequence_number, timestamp, ssrc)`` of an RTP datagram.

    The relay's read path: checks length, version and RTCP like :meth:`RtpPacket.parse` but
    not the CSRC, extension or padding lengths, which the relay copies through untouched.
    """
    _, b1, seq, ts, ssrc = _check_fixed_header(data)
    return b1 & 0x7F, b1 >= 0x80, seq, ts, ssrc


def rewrite_header(
    buf: bytearray,
    data: bytes,
    *,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    marker: bool | None = None,
) -> int:
    """Copy RTP packet ``data`` into ``buf`` with a new PT, sequence, timestamp and SSRC.

    Returns the packet length; send ``memoryview(buf)[:length]``. ``marker=None`` keeps the
    original marker bit. CSRCs, header extension, payload and padding are copied as they are.
    ``buf`` is reused from packet to packet, so nothing is allocated here. Raises
    :class:`RtpError` if ``data`` is not RTP, a field is out of range, or ``buf`` is too small;
    after an out-of-range sequence, timestamp or SSRC the header in ``buf`` may be half written.
    """
    length = len(data)
    if length < HEADER_SIZE:
        raise RtpError(_TOO_SHORT)
    b0 = data[0]
    b1 = data[1]
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP packet has version {b0 >> 6}, expected 2")
    if _RTCP_TYPE_MIN <= b1 <= _RTCP_TYPE_MAX:
        raise RtpError(_RTCP_ON_RTP_PORT)
    if length > len(buf):
        raise RtpError("RTP packet does not fit the output buffer")
    if marker is None:
        marker = b1 >= 0x80
    if not 0 <= payload_type <= 127:
        raise RtpError("RTP payload type must be 0-127")
    b1 = payload_type | 0x80 if marker else payload_type
    if _RTCP_TYPE_MIN <= b1 <= _RTCP_TYPE_MAX:
        raise RtpError("RTP payload type 64-95 with the marker bit set would read as RTCP")
    try:
        _HEADER.pack_into(buf, 0, b0, b1, sequence_number, timestamp, ssrc)
    except struct.error as exc:
        raise RtpError("RTP sequence number, timestamp or SSRC out of range") from exc
    buf[HEADER_SIZE:length] = memoryview(data)[HEADER_SIZE:]
    return length


def is_rtcp(data: bytes) -> bool:
    """True for an RTCP packet sharing the RTP port (RFC 5761 §4): types 192-223, version 2.

    That covers SR 200, RR 201, SDES 202, BYE 203, APP 204 and the feedback types (RFC 4585).
    The version check keeps STUN (first octet 0-3, RFC 7983) out.
    """
    return (
        len(data) >= 2
        and data[0] >> 6 == RTP_VERSION
        and _RTCP_TYPE_MIN <= data[1] <= _RTCP_TYPE_MAX
    )


# Serial-number arithmetic (RFC 1982 §3.2, as RFC 3550 Appendix A.1 uses it).


def seq_diff(a: int, b: int) -> int:
    """Signed distance from sequence number ``b`` to ``a`` modulo 2**16, in -32768..32767."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_newer(a: int, b: int) -> bool:
    """True if sequence number ``a`` comes after ``b`` (less than half the space ahead)."""
    return 0 < ((a - b) & 0xFFFF) < 0x8000


def seq_add(seq: int, n: int) -> int:
    """``seq + n`` modulo 2**16."""
    return (seq + n) & 0xFFFF


def extend_seq(seq: int, reference: int) -> int:
    """The extended (wrap-counting) sequence number of 16-bit ``seq`` nearest ``reference``.

    ``reference`` is an extended number already seen, typically the highest. A packet from
    before the first one seen may extend to a negative number; callers treat it as late.
    """
    return reference + seq_diff(seq, reference & 0xFFFF)


def ts_diff(a: int, b: int) -> int:
    """Signed distance from RTP timestamp ``b`` to ``a`` modulo 2**32."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def ts_newer(a: int, b: int) -> bool:
    """True if RTP timestamp ``a`` comes after ``b`` (less than half the space ahead)."""
    return 0 < ((a - b) & 0xFFFFFFFF) < 0x80000000


def ts_add(ts: int, n: int) -> int:
    """``ts + n`` modulo 2**32."""
    return (ts + n) & 0xFFFFFFFF
