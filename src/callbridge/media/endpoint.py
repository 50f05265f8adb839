"""One call leg's RTP socket: who may send to it, where it sends, and the stream it sends.

A :class:`LegEndpoint` owns one leased UDP port, read through the loop's reactor
(``reactor.py``: one epoll set for all legs, not an asyncio transport each). It knows the
leg's negotiated media (:class:`LegMedia`, converted from SDP by the call layer: media does
not import ``sip``) and does three things with every datagram:

1. **Source check.** Only the remote address from SDP may send. With ``symmetric`` (NAT), the
   endpoint instead latches to the first source it hears (symmetric RTP, RFC 4961 §3) and
   sends there; a packet from exactly the SDP address may always take the latch over. Any
   other source is dropped and counted: that is the "RTP Bleed" defence.

   Given a ``stray`` socket (``PortAllocator`` gives one where SO_REUSEPORT exists), the kernel
   makes that check: the leg's socket is ``connect()``-ed to the accepted address, so only its
   packets reach it, read with ``recv`` and answered with ``send`` (no address to format or
   parse per packet, and the route is looked up once); every other source lands on ``stray``,
   an unconnected socket on the same port, where it is counted, or latched to. Without one,
   the leg's only socket is unconnected and every packet's source is compared here.
2. **Classification.** RTCP (RFC 5761) and malformed datagrams are counted and dropped; audio
   and telephone-events (the negotiated payload types) go to the leg's :class:`RtpHandler`, the
   bridge or conference it is connected to; anything else is counted.
3. **Liveness.** The arrival time is kept, and a timer raises :class:`MediaTimeout` when no
   RTP arrived for ``inactivity_timeout`` seconds.

DTMF, both ways, whatever the leg is connected to (a bridge, a conference, a player, nothing):

- **Digits from the leg.** Its telephone-events go through a :class:`DtmfReceiver` and each
  keypress is reported once to ``on_digit(leg_key, digit)``, soon after its first packet,
  on the loop (outside the packet path, so the handler may rewire the room). The packets
  still go to the handler as well: a bridge forwards them to the other leg.
- **Digits into the leg.** :meth:`LegEndpoint.send_dtmf` sends RFC 4733 events on the leg's
  own stream, paced in real time, holding the stream meanwhile (``TxStream.hold``): no
  forwarded or played audio is interleaved with the events.

What the leg hears goes out through its ``tx``, a :class:`~callbridge.media.stream.TxStream`
that owns the leg's outgoing SSRC, sequence numbers and timestamps.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Protocol

from callbridge.media.dtmf import DtmfError, DtmfPacket, DtmfReceiver, DtmfSender, TelephoneEvent
from callbridge.media.reactor import Reactor, reactor_for
from callbridge.media.rtp import HEADER_SIZE, is_rtcp, ts_add
from callbridge.media.stream import CLOCK_RATE, MAX_DATAGRAM, TxStream, audio_payload

__all__ = [
    "CLOCK_RATE",
    "CODECS",
    "DigitHandler",
    "LegEndpoint",
    "LegMedia",
    "MediaTimeout",
    "RtpHandler",
]

log = logging.getLogger(__name__)

#: The codecs a leg may negotiate.
CODECS: Final = ("PCMU", "PCMA")

_HEADER: Final = struct.Struct("!BBHII")
#: Second octets of RTCP sharing the RTP port (RFC 5761 §4): packet types 192-223.
_RTCP_FIRST: Final = 192
_RTCP_LAST: Final = 223


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


#: Told of each keypress on a leg: ``(leg_key, digit)``, the digit one of ``0-9 * # A-D``.
DigitHandler = Callable[[str, str], None]


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


class LegEndpoint:
    """One leg's RTP socket (see the module docstring). Open through ``PortAllocator``.

    ``sock`` is a bound, non-blocking UDP socket the endpoint owns from :meth:`start` on, and
    ``stray`` (optional) a second one bound to the same port with SO_REUSEPORT, as ``sock``
    (see the module docstring); ``on_close`` runs once when they are closed (the allocator's
    lease release). ``on_digit`` is told of each keypress the leg sends (also settable later:
    :meth:`set_digit_handler`).
    """

    def __init__(
        self,
        key: str,
        sock: socket.socket,
        *,
        stray: socket.socket | None = None,
        symmetric: bool = False,
        inactivity_timeout: float | None = None,
        on_event: Callable[[MediaTimeout], None] | None = None,
        advertised_host: str = "",
        on_close: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        on_digit: DigitHandler | None = None,
    ) -> None:
        self.key = key
        self.symmetric = symmetric
        self.on_event = on_event
        #: Told of each keypress received from this leg (see :meth:`set_digit_handler`).
        self.on_digit = on_digit
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
        self._recv = sock.recv
        self._stray = stray
        #: True while ``sock`` is connected to the accepted source (``stray`` mode only).
        self._connected = False
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
        self._digits = DtmfReceiver()
        self._digits_ssrc = -1
        self._dtmf_lock = asyncio.Lock()  # one digit string at a time on the stream

    def start(self) -> None:
        """Start reading, on the running loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._time = loop.time
        self._reactor = reactor_for(loop)
        if self._stray is None:
            self._reactor.add(self._sock.fileno(), self._read)
        else:
            self._reactor.add(self._sock.fileno(), self._read_connected)
            self._reactor.add(self._stray.fileno(), self._read_stray)
        self.tx.sendto = self._sock.sendto
        self.set_inactivity_timeout(self._timeout)

    # -- the packet path --------------------------------------------------------------------

    def _read(self) -> None:
        """A datagram on the leg's only socket, unconnected: its source is checked here."""
        try:
            data, addr = self._recvfrom(MAX_DATAGRAM)
        except OSError:  # nothing after all (BlockingIOError), or an ICMP error report
            self.errors += 1
            return
        self._from(data, addr)

    def _read_stray(self) -> None:
        """A datagram on ``stray``: a source the connected socket does not take."""
        assert self._stray is not None
        try:
            data, addr = self._stray.recvfrom(MAX_DATAGRAM)
        except OSError:
            self.errors += 1
            return
        self._from(data, addr)

    def _from(self, data: bytes, addr: tuple[str, int]) -> None:
        if (addr[1] != self._port or addr[0] != self._host) and not self._new_source(addr):
            self.strangers += 1
            return
        self._accepted(data)

    def _read_connected(self) -> None:
        """A datagram on the socket connected to the accepted source: the kernel checked it."""
        try:
            data = self._recv(MAX_DATAGRAM)
        except OSError:  # nothing after all, or an ICMP error (port unreachable) reported
            self.errors += 1
            return
        if not self._connected:  # from a source no longer accepted (media gone, connect failed)
            self.strangers += 1
            return
        self._accepted(data)

    def _accepted(self, data: bytes) -> None:
        """A datagram from the accepted source: classify it and hand it on."""
        now = self._reactor.now  # type: ignore[union-attr]  # set: only a reactor calls this
        self.last_received = now
        self.received += 1
        # rtp.unpack_header, inlined: this runs for every packet of every call.
        if len(data) < HEADER_SIZE:
            self._bad_datagram(data)
            return
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 & 0xC0 != 0x80 or _RTCP_FIRST <= b1 <= _RTCP_LAST:
            self._bad_datagram(data)
            return
        pt = b1 & 0x7F
        handler = self._handler
        if pt == self._audio_pt:
            if handler is not None:
                handler.on_audio(data, b1 > 0x7F, seq, ts, ssrc, now)
        elif pt == self._event_pt:
            if handler is not None:
                handler.on_telephone_event(data, b1 > 0x7F, seq, ts, ssrc, now)
            self._receive_digit(data, b1 > 0x7F, ts, ssrc)
        elif handler is not None:
            self.unknown_payload += 1

    def _receive_digit(self, data: bytes, marker: bool, ts: int, ssrc: int) -> None:
        """Feed a telephone-event to the receiver; report a new keypress on the loop."""
        payload = audio_payload(data)
        try:
            event = TelephoneEvent.parse(payload or b"")
        except DtmfError:
            return  # forwarded as it came, but nothing to report
        if ssrc != self._digits_ssrc:
            # A new source (a forked answer, a restarted phone) numbers its events afresh.
            self._digits.reset()
            self._digits_ssrc = ssrc
        pressed = self._digits.receive(ts, marker, event)
        on_digit = self.on_digit
        if pressed is not None and on_digit is not None and self._loop is not None:
            # The digit itself is not logged: customers key in PINs and card numbers.
            self._log.debug("rtp %s: DTMF keypress", self.key)
            self._loop.call_soon(on_digit, self.key, pressed.digit)

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

    def set_digit_handler(self, on_digit: DigitHandler | None) -> None:
        """Report each keypress received from this leg to ``on_digit(leg_key, digit)``;
        None stops reporting. Works whatever the leg is connected to."""
        self.on_digit = on_digit

    async def send_dtmf(self, digits: str, *, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Press ``digits`` (``0-9 * # A-D``) into this leg as RFC 4733 telephone-events.

        Each key is held ``duration_ms``; the next starts ``gap_ms`` after it ends (at
        least two ptimes: the repeated end packets go out first). Packets go out in real
        time, one per ptime, on the leg's own stream (its SSRC, sequence numbers continuing,
        timestamps on its audio clock); forwarded and played audio into the leg is held back
        from the first event's start until the last end packet, then resumes on the same
        line. Returns when the last end packet went out, or at once if the leg closes; a
        second call waits for the first to finish. Cancelling stops at once.

        Raises ValueError, before sending anything, when the leg negotiated no
        telephone-event (send SIP INFO instead) or a digit or duration is invalid.
        """
        media = self.media
        if media is None or media.telephone_event_pt is None:
            raise ValueError(f"leg {self.key} negotiated no telephone-event (RFC 4733)")
        sender = DtmfSender(ptime=media.ptime)
        packets = sender.sequence(digits, duration_ms, gap_ms)
        async with self._dtmf_lock:
            await self._send_events(packets, media.telephone_event_pt, sender.clock_rate)

    async def _send_events(
        self, packets: tuple[DtmfPacket, ...], payload_type: int, clock_rate: int
    ) -> None:
        """Send ``packets`` (timestamps relative to the first event's start) when each is
        due, the first event starting now on the leg's audio clock."""
        loop = asyncio.get_running_loop()
        tx = self.tx
        start = loop.time()
        tx.hold()
        try:
            base = tx.clock(start)
            for packet in packets:
                due = start + (packet.timestamp + packet.send_at) / clock_rate
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if self.closed:
                    return
                stamped = replace(packet, timestamp=ts_add(base, packet.timestamp))
                tx.send_event(stamped, payload_type, loop.time())
        finally:
            tx.release()

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
        self.tx.send = None
        if self._reactor is not None:
            self._reactor.remove(self._sock.fileno())
            if self._stray is not None:
                self._reactor.remove(self._stray.fileno())
        self._sock.close()
        if self._stray is not None:
            self._stray.close()
        if self._on_close is not None:
            self._on_close()

    async def aclose(self) -> None:
        """:meth:`close`, for callers that close things by awaiting."""
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _accept(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self.tx.address = (host, port) if host else None
        if self._stray is None:
            return
        # Connected to the accepted source, the socket gets its packets and no one else's
        # (those go to ``stray``). There is no portable way to dissolve a UDP association:
        # with nothing accepted, or if connecting fails, whatever still reaches the socket
        # from its old peer is counted as a stranger, and the accepted source (if any) is
        # served by ``stray``'s checked path.
        self._connected = False
        self.tx.send = None
        if not host or self.closed:
            return
        try:
            self._sock.connect((host, port))
        except OSError as exc:
            self._log.warning("rtp %s: cannot connect to %s:%d: %s", self.key, host, port, exc)
            return
        self._connected = True
        self.tx.send = self._sock.send

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
