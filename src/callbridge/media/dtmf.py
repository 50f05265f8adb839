"""DTMF as RFC 4733 telephone-events: the payload, a receiver and a sender.

Payload (RFC 4733 §2.3), one 4-byte block per event::

    event (8) | E (1) | R (1) | volume (6) | duration (16)

Every packet of one event carries the RTP timestamp of the event's start (§2.5.1.2); the
duration grows as the key is held, and the final packet, with the E bit, is sent three times
(§2.5.1.4). So the RTP timestamp, not the marker bit or the sequence number, identifies an
event: :class:`DtmfReceiver` reports each digit once, however many redundant, retransmitted
or reordered packets carry it. :class:`DtmfSender` produces the packets of one keypress, or
of a string of them (:meth:`DtmfSender.sequence`).

Only the DTMF events (codes 0-15, §3.2) are digits; other codes parse as
:class:`TelephoneEvent` with ``digit`` None and the receiver ignores them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from callbridge.media.rtp import ts_add, ts_newer

#: RFC 4733 §3.2: event codes 0-15, in order.
DIGITS = "0123456789*#ABCD"
#: Largest duration one packet can carry (§2.3.5); longer events are split into segments.
MAX_DURATION = 0xFFFF
#: Volume is the power level in -dBm0, 0-63 (§2.3.4).
MAX_VOLUME = 63

_BLOCK = struct.Struct("!BBH")
_BLOCK_SIZE = _BLOCK.size
_END = 0x80
_VOLUME = 0x3F  # the R bit (0x40) is reserved: sent as 0, ignored on receipt (§2.3.3)


class DtmfError(ValueError):
    """A malformed telephone-event payload, an unknown digit, or an event that cannot be sent."""


def event_code(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit ``0-9 * # A-D``."""
    code = DIGITS.find(digit) if len(digit) == 1 else -1
    if code < 0:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    return code


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One event block (RFC 4733 §2.3). ``duration`` is in RTP timestamp units."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @property
    def digit(self) -> str | None:
        """The DTMF digit for codes 0-15, else None."""
        return DIGITS[self.event] if self.event < len(DIGITS) else None

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        """The first event block of a payload; later blocks (§2.5.1.5) are ignored."""
        if len(data) < _BLOCK_SIZE:
            raise DtmfError("telephone-event payload is shorter than 4 bytes")
        return cls._unpack(data, 0)

    @classmethod
    def parse_all(cls, data: bytes) -> tuple[TelephoneEvent, ...]:
        """Every whole event block of a payload, oldest first (§2.5.1.5)."""
        if len(data) < _BLOCK_SIZE:
            raise DtmfError("telephone-event payload is shorter than 4 bytes")
        stop = len(data) - len(data) % _BLOCK_SIZE
        return tuple(cls._unpack(data, pos) for pos in range(0, stop, _BLOCK_SIZE))

    @classmethod
    def _unpack(cls, data: bytes, pos: int) -> TelephoneEvent:
        event, flags, duration = _BLOCK.unpack_from(data, pos)
        return cls(event, bool(flags & _END), flags & _VOLUME, duration)

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise DtmfError("telephone-event code must be 0-255")
        if not 0 <= self.volume <= MAX_VOLUME:
            raise DtmfError("telephone-event volume must be 0-63")
        if not 0 <= self.duration <= MAX_DURATION:
            raise DtmfError("telephone-event duration must be 0-65535")
        return _BLOCK.pack(self.event, (_END if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A keypress seen by :class:`DtmfReceiver`, reported once."""

    digit: str
    #: RTP timestamp of the event's start: what tells one keypress from the next.
    timestamp: int
    volume: int


@dataclass(slots=True)
class _Current:
    """The newest event seen, kept to recognise its next segment (RFC 4733 §2.5.2.3)."""

    timestamp: int
    event: int
    duration: int


class DtmfReceiver:
    """Turn telephone-event packets into :class:`DtmfDigit` reports, one per keypress.

    A digit is reported on the first packet seen for its RTP timestamp, whichever it is: the
    marked first packet, an update or one of the final packets (§2.5.1.4). Reporting at once,
    rather than on the E bit, keeps a digit whose three final packets were all lost. Later
    packets with that timestamp, including late or reordered ones, are dropped: the last
    ``history`` event timestamps are remembered.

    An event longer than 0xFFFF timestamp units continues in a new segment whose timestamp is
    the previous one plus 0xFFFF (§2.5.1.3); an unmarked packet of the same event exactly
    there continues the keypress instead of starting a new one.
    """

    def __init__(self, history: int = 32) -> None:
        if history < 1:
            raise ValueError("history must be at least 1")
        self._history = history
        self._seen: dict[int, None] = {}  # an insertion-ordered set of event timestamps
        self._current: _Current | None = None

    def receive(self, timestamp: int, marker: bool, event: TelephoneEvent) -> DtmfDigit | None:
        """Feed one packet's RTP timestamp, marker bit and (first) event block."""
        digit = event.digit
        if digit is None:
            return None
        if timestamp in self._seen:
            self._extend(timestamp, event)
            return None
        continues = not marker and self._next_segment(timestamp, event)
        self._remember(timestamp, event)
        return None if continues else DtmfDigit(digit, timestamp, event.volume)

    def reset(self) -> None:
        """Forget every event, e.g. when the sender's SSRC changes."""
        self._seen.clear()
        self._current = None

    def _extend(self, timestamp: int, event: TelephoneEvent) -> None:
        current = self._current
        if current is not None and current.timestamp == timestamp:
            current.duration = max(current.duration, event.duration)

    def _next_segment(self, timestamp: int, event: TelephoneEvent) -> bool:
        current = self._current
        return (
            current is not None
            and current.event == event.event
            and current.duration == MAX_DURATION
            and timestamp == ts_add(current.timestamp, MAX_DURATION)
        )

    def _remember(self, timestamp: int, event: TelephoneEvent) -> None:
        self._seen[timestamp] = None
        if len(self._seen) > self._history:
            del self._seen[next(iter(self._seen))]
        current = self._current
        if current is None or ts_newer(timestamp, current.timestamp):
            self._current = _Current(timestamp, event.event, event.duration)


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One packet of an outgoing event, for the RTP stream to stamp and send."""

    #: The 4-byte telephone-event payload.
    payload: bytes
    #: RTP marker bit: set on the event's first packet only (§2.5.1.2).
    marker: bool
    #: RTP timestamp: the event's start, the same in every packet of the event.
    timestamp: int
    #: When to send it, in timestamp units after the event's start.
    send_at: int


class DtmfSender:
    """Build the packets of one keypress (RFC 4733 §2.5.1).

    One packet per ``ptime`` while the key is held, its duration growing by ``ptime`` each
    time (160, 320, ... at 8 kHz and 20 ms), then the final packet with the E bit and the
    whole duration, sent three times one ``ptime`` apart (§2.5.1.4). The caller gives each a
    new sequence number; the timestamp stays the event's start.
    """

    def __init__(self, *, clock_rate: int = 8000, ptime: int = 20, volume: int = 10) -> None:
        if clock_rate <= 0 or ptime <= 0 or clock_rate * ptime % 1000:
            raise ValueError("clock_rate * ptime must be a positive whole number of ms ticks")
        if not 0 <= volume <= MAX_VOLUME:
            raise DtmfError("telephone-event volume must be 0-63")
        self.clock_rate = clock_rate
        self.ptime = ptime
        self.volume = volume

    def ticks(self, duration_ms: int) -> int:
        """``duration_ms`` in RTP timestamp units."""
        return duration_ms * self.clock_rate // 1000

    def packets(self, digit: str, duration_ms: int, timestamp: int) -> tuple[DtmfPacket, ...]:
        """Every packet for ``digit`` held ``duration_ms``, starting at RTP ``timestamp``."""
        code = event_code(digit)
        total = self.ticks(duration_ms)
        if total <= 0:
            raise DtmfError("DTMF duration must be positive")
        if total > MAX_DURATION:
            raise DtmfError("DTMF duration must fit 65535 timestamp units")
        step = self.ticks(self.ptime)
        updates = [
            (TelephoneEvent(code, False, self.volume, elapsed), elapsed)
            for elapsed in range(step, total, step)
        ]
        final = TelephoneEvent(code, True, self.volume, total)
        ends = [(final, total + i * step) for i in range(3)]
        return tuple(
            DtmfPacket(event.serialize(), index == 0, timestamp, send_at)
            for index, (event, send_at) in enumerate(updates + ends)
        )

    def sequence(
        self, digits: str, duration_ms: int, gap_ms: int, timestamp: int = 0
    ) -> tuple[DtmfPacket, ...]:
        """Every packet for ``digits`` pressed one after another, the first at RTP
        ``timestamp``.

        Each event starts ``duration_ms + gap_ms`` after the one before, but never before
        the previous event's last end packet went out (§2.5.1.4: two ``ptime`` after its
        end), so events never overlap. A packet is due when the audio clock reaches its
        ``timestamp + send_at``. Every digit is checked before any packet is built.
        """
        if not digits:
            raise DtmfError("no DTMF digits to send")
        if gap_ms < 0:
            raise DtmfError("the gap between DTMF digits must not be negative")
        for digit in digits:
            event_code(digit)
        step = self.ticks(self.ptime)
        spacing = self.ticks(duration_ms) + max(self.ticks(gap_ms), 2 * step)
        return tuple(
            packet
            for index, digit in enumerate(digits)
            for packet in self.packets(digit, duration_ms, ts_add(timestamp, index * spacing))
        )
