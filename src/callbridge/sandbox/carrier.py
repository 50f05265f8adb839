"""The sandbox carrier on real sockets: the pure :class:`SandboxUas` on a UDP socket, and an
RTP port per answered call that plays the party's voice, presses the rule's keys (RFC 4733
events on the same stream) and keeps what it hears.

The loop is the SIP service's (the aioquic ``transmit()`` shape): feed what arrives into the
UAS, send what it produced, act on its events, re-arm one ``loop.call_at``. Only loopback
sources are heard unless ``allow_remote``: the sandbox is a demo and test tool, and must never
become a way into the machine. Its RTP ports come from a range of their own (30000-30999 by
default), so it never competes with the server's ``[media]`` range.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from collections.abc import Callable, Coroutine, Iterable

import numpy as np
from numpy.typing import NDArray

from callbridge.b2bua.service import new_token
from callbridge.b2bua.transport import Address, UdpTransport
from callbridge.errors import CallbridgeError, TransportError
from callbridge.logs import call_logger
from callbridge.media.endpoint import LegEndpoint, LegMedia
from callbridge.media.g711 import alaw_decode, ulaw_decode
from callbridge.media.player import Player
from callbridge.media.ports import PortAllocator
from callbridge.media.stream import audio_payload
from callbridge.media.tones import ToneGenerator
from callbridge.sandbox.rules import DEFAULT_TIMINGS, SandboxTimings
from callbridge.sandbox.uas import (
    AudioStarted,
    CallChanged,
    CallState,
    DigitsWanted,
    Event,
    MediaWanted,
    SandboxCall,
    SandboxUas,
)
from callbridge.sip.sdp import NegotiatedMedia
from callbridge.sip.transaction import DEFAULT_TIMERS, TimerSettings

__all__ = ["SandboxCarrier", "run_standalone"]

log = logging.getLogger(__name__)

#: What the sandbox keeps of each call's received audio: the last minute (8 kHz G.711).
HEARD_BYTES = 60 * 8000


class _Ears:
    """An RTP handler that keeps the payloads a sandbox party hears (the newest minute)."""

    def __init__(self) -> None:
        self.audio = bytearray()
        self.events = 0

    def on_audio(self, data: bytes, marker: bool, seq: int, ts: int, ssrc: int,
                 now: float) -> None:
        payload = audio_payload(data)
        if payload is not None:
            self.audio += payload
            if len(self.audio) > 2 * HEARD_BYTES:  # trim now and then, not per packet
                del self.audio[:-HEARD_BYTES]

    def on_telephone_event(self, data: bytes, marker: bool, seq: int, ts: int, ssrc: int,
                           now: float) -> None:
        self.events += 1

    def media_changed(self) -> None:
        pass


class _Media:
    """One call's RTP side: its port, its player while it talks, what it heard."""

    def __init__(self, endpoint: LegEndpoint) -> None:
        self.endpoint = endpoint
        self.ears = _Ears()
        self.player: Player | None = None
        self.codec = "PCMU"
        endpoint.connect(self.ears)

    def close(self) -> None:
        if self.player is not None:
            self.player.stop()
        self.endpoint.close()


class SandboxCarrier:
    """A simulated SIP trunk on loopback; see ``callbridge.sandbox`` for what numbers do.

    ``timings`` sets the ring, early-media and hang-up delays; ``rtp_port_min``/``max`` its
    own RTP range; ``timers`` the SIP timers (T1, T2, T4).
    """

    def __init__(self, timings: SandboxTimings = DEFAULT_TIMINGS, *,
                 rtp_port_min: int = 30000, rtp_port_max: int = 30999,
                 timers: TimerSettings = DEFAULT_TIMERS, allow_remote: bool = False,
                 history: int = 1000) -> None:
        self.timings = timings
        self.timers = timers
        self.allow_remote = allow_remote
        self.history = history
        self.rtp_port_min, self.rtp_port_max = rtp_port_min, rtp_port_max
        self.refused_sources = 0
        self._uas: SandboxUas | None = None
        self._udp: UdpTransport | None = None
        self._ports: PortAllocator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._media: dict[str, _Media] = {}
        self._heard: dict[str, _Media] = {}  #: every call's media, kept for heard()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- life cycle ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen for SIP on UDP ``host:port`` (0: any free port)."""
        if self._udp is not None:
            raise RuntimeError("the sandbox carrier is already started")
        self._loop = asyncio.get_running_loop()
        self._ports = PortAllocator(host, self.rtp_port_min, self.rtp_port_max)
        try:
            _, proto = await self._loop.create_datagram_endpoint(
                lambda: UdpTransport(self._on_datagram), local_addr=(host, port))
        except OSError as exc:
            raise TransportError(f"cannot bind the sandbox carrier on udp {host}:{port}: "
                                 f"{exc}") from exc
        self._udp = proto
        bound = proto.local_address
        self._uas = SandboxUas(bound[0], bound[1], token=new_token, timings=self.timings,
                               timers=self.timers, history=self.history)
        log.info("sandbox carrier on udp %s:%d, RTP %d-%d", bound[0], bound[1],
                 self.rtp_port_min, self.rtp_port_max)

    @property
    def address(self) -> Address:
        """Where the carrier listens: point ``[trunk] host``/``port`` here."""
        if self._udp is None:
            raise RuntimeError("the sandbox carrier is not started")
        return self._udp.local_address

    async def stop(self) -> None:
        """Stop playing, close every RTP port and the SIP socket. Calls still up are
        dropped without a BYE: stop the server using the carrier first."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for media in self._media.values():
            media.close()
        self._media.clear()
        if self._udp is not None:
            self._udp.close()

    # -- what tests read -----------------------------------------------------------------------

    @property
    def calls(self) -> list[SandboxCall]:
        """Every INVITE taken, oldest first (the newest ``history``)."""
        return list(self._uas.calls) if self._uas is not None else []

    def calls_to(self, number: str) -> list[SandboxCall]:
        """The calls to ``number`` in any format: the last ten digits compare."""
        digits = "".join(c for c in number if c.isdigit())[-10:]
        return [c for c in self.calls if c.number[-10:] == digits]

    def heard(self, call: SandboxCall) -> NDArray[np.int16]:
        """What the party heard on ``call`` (the newest minute), decoded to 8 kHz samples."""
        media = self._heard.get(call.call_id)
        if media is None:
            return np.zeros(0, dtype=np.int16)
        decode = alaw_decode if media.codec == "PCMA" else ulaw_decode
        return decode(bytes(media.ears.audio[-HEARD_BYTES:]))

    # -- the transmit loop -------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_datagram(self, data: bytes, source: Address) -> None:
        if not (self.allow_remote or _is_loopback(source[0])):
            self.refused_sources += 1
            return
        assert self._uas is not None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sandbox recv from %s:%d\n%s", *source, data.decode("utf-8", "replace"))
        self._uas.receive_datagram(data, source, self._now())
        self._transmit()

    def _on_timer(self) -> None:
        self._timer = None
        assert self._uas is not None
        self._uas.handle_timer(self._now())
        self._transmit()

    def _transmit(self) -> None:
        uas, udp = self._uas, self._udp
        if uas is None or udp is None:
            return
        for data, address in uas.datagrams_to_send():
            if log.isEnabledFor(logging.DEBUG):
                log.debug("sandbox send to %s:%d\n%s", *address, data.decode("utf-8", "replace"))
            udp.send(data, address)
        self._act(_drain(uas))
        deadline = uas.get_timer()
        if self._timer is not None and (deadline is None or self._timer.when() != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _act(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, CallChanged):
                _log_change(event)
            elif isinstance(event, MediaWanted):
                self._spawn(self._open_media(event.call_id))
            elif isinstance(event, DigitsWanted):
                self._spawn(self._press(event.call_id, event.digits))
            elif isinstance(event, AudioStarted):
                self._play(event.call_id, event.media)
            else:
                media = self._media.pop(event.call_id, None)
                if media is not None:
                    media.close()

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        """Run ``work`` on the loop; :meth:`stop` cancels it if it is still going."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- media ---------------------------------------------------------------------------

    async def _open_media(self, call_id: str) -> None:
        assert self._ports is not None and self._uas is not None
        clog = call_logger(log, call_id)
        try:
            endpoint = await self._ports.open(f"sandbox/{call_id}")
        except CallbridgeError as exc:
            clog.warning("sandbox: no RTP port: %s", exc)
            self._uas.media_failed(call_id, self._now())
            self._transmit()
            return
        media = _Media(endpoint)
        self._media[call_id] = media
        host, port = endpoint.advertised_address
        if self._uas.media_ready(call_id, host, port, self._now()):
            self._keep_heard(call_id, media)
            clog.debug("sandbox: RTP on %s:%d", host, port)
        else:
            self._media.pop(call_id, None)
            media.close()
        self._transmit()

    def _play(self, call_id: str, negotiated: NegotiatedMedia) -> None:
        media = self._media.get(call_id)
        call = self._uas.call(call_id) if self._uas is not None else None
        if media is None or call is None:
            return
        media.codec = negotiated.codec.name.upper()
        media.endpoint.set_media(LegMedia(
            negotiated.remote_address, negotiated.remote_port, negotiated.codec.payload_type,
            media.codec, negotiated.telephone_event_pt, negotiated.ptime))
        if media.player is None:
            media.player = Player(media.endpoint, ToneGenerator(call.voice)).start()

    async def _press(self, call_id: str, digits: str) -> None:
        """Send ``digits`` as RFC 4733 events; the tone pauses meanwhile, then plays on. A BYE
        meanwhile closes the port, and the sending stops there."""
        media = self._media.get(call_id)
        if media is None:
            return
        clog = call_logger(log, call_id)
        clog.info("sandbox: presses %s", digits)  # a rule's fixed key, not a customer's PIN
        try:
            await media.endpoint.send_dtmf(digits)
        except ValueError as exc:  # a re-INVITE dropped telephone-event meanwhile
            clog.warning("sandbox: cannot press %s: %s", digits, exc)

    def _keep_heard(self, call_id: str, media: _Media) -> None:
        self._heard[call_id] = media
        while len(self._heard) > self.history:
            del self._heard[next(iter(self._heard))]


def _log_change(change: CallChanged) -> None:
    """One INFO line per state change, e.g. ``sandbox 9876543401: ended (refused, 486)``."""
    call, state = change.call, change.state
    clog = call_logger(log, call.call_id)
    if state is CallState.OFFERED:
        clog.info("sandbox %s: INVITE, %s, plays %g Hz", call.number, call.rule.value,
                  call.tone_hz)
    elif state is CallState.ENDED and call.outcome is not None:
        clog.info("sandbox %s: ended (%s, %s)", call.number, call.outcome.value,
                  call.final_status)
    else:
        clog.info("sandbox %s: %s", call.number, state.value)


def _drain(uas: SandboxUas) -> list[Event]:
    events = []
    while (event := uas.next_event()) is not None:
        events.append(event)
    return events


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


async def run_standalone(carrier: SandboxCarrier, host: str = "127.0.0.1", port: int = 5070,
                         ready: Callable[[SandboxCarrier], None] | None = None) -> None:
    """`callbridge sandbox`: run ``carrier`` on ``host:port`` until SIGINT or SIGTERM;
    ``ready`` is called once it listens."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    await carrier.start(host, port)
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(carrier)
        await stop.wait()
    finally:
        log.info("sandbox carrier shutting down")
        await carrier.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
