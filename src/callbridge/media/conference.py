"""Three or more legs: everyone hears the mix of everyone else, never themselves.

Each leg's audio is filed in its own :class:`JitterBuffer` as it arrives (reordered by RTP
timestamp, still encoded). Every 20 ms a tick takes one frame per leg, decodes it, has the
:class:`Mixer` produce "everyone but me" for each leg, encodes that in the leg's own law and
sends it as a generated frame on the leg's :class:`TxStream`, so the leg's stream carries on
unbroken when a bridge becomes a conference or back.

Telephone-events are not mixed: a key press means nothing to the other participants, and a
conference has no single stream whose timestamps the events could follow. They are counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import numpy as np
from numpy.typing import NDArray

from callbridge.media.endpoint import LegEndpoint
from callbridge.media.g711 import ALAW_DECODE, ALAW_ENCODE, ULAW_DECODE, ULAW_ENCODE
from callbridge.media.jitter import JitterBuffer
from callbridge.media.mixer import FRAME_SAMPLES, Mixer
from callbridge.media.stream import CLOCK_RATE, audio_payload

if TYPE_CHECKING:
    from callbridge.media.relay import FrameSink

__all__ = ["TICK", "Conference"]

log = logging.getLogger(__name__)

#: Seconds between mixes: one 20 ms frame.
TICK: Final = FRAME_SAMPLES / CLOCK_RATE
#: Frames buffered per leg before playout: 40 ms against jitter.
JITTER_DEPTH: Final = 2
#: A tick later than this many ticks restarts the schedule instead of catching up in a burst.
_MAX_LAG_TICKS: Final = 5

Frame = NDArray[np.int16]
_DECODE: Final = {"PCMU": ULAW_DECODE, "PCMA": ALAW_DECODE}
_ENCODE: Final = {"PCMU": ULAW_ENCODE, "PCMA": ALAW_ENCODE}
_SILENCE: Final = np.zeros(FRAME_SAMPLES, dtype=np.int16)


class _Participant:
    """One leg in the conference: its RtpHandler, jitter buffer and codec tables."""

    def __init__(self, conference: Conference, leg: LegEndpoint) -> None:
        self.conference = conference
        self.leg = leg
        self.buffer = JitterBuffer(JITTER_DEPTH, conceal=True)
        self.codec = ""
        self.decode: NDArray[np.int16] | None = None
        self.encode: NDArray[np.uint8] | None = None
        self.media_changed()

    def on_audio(self, data: bytes, marker: bool, seq: int, ts: int, ssrc: int, now: float) -> None:
        payload = data[12:] if data[0] == 0x80 else audio_payload(data)
        if payload is None:
            return
        self.buffer.push(ts, payload, now, ssrc=ssrc)
        sink = self.conference.sink
        if sink is not None:
            sink.on_audio(self.leg.key, data, self.codec, now)

    def on_telephone_event(
        self, data: bytes, marker: bool, seq: int, ts: int, ssrc: int, now: float
    ) -> None:
        self.conference.events_dropped += 1

    def media_changed(self) -> None:
        self.codec = self.leg.codec or ""
        self.decode = _DECODE.get(self.codec)
        self.encode = _ENCODE.get(self.codec)

    def next_frame(self) -> Frame | None:
        """This tick's frame, decoded and exactly one frame long; None for silence."""
        payload = self.buffer.pop()
        if payload is None or self.decode is None:
            return None
        samples = self.decode[np.frombuffer(payload, dtype=np.uint8)]
        if samples.size != FRAME_SAMPLES:  # ptime other than 20 ms: fit it, do not fail
            fitted = _SILENCE.copy()
            fitted[: min(samples.size, FRAME_SAMPLES)] = samples[:FRAME_SAMPLES]
            return fitted
        return samples

    def send(self, heard: Frame, now: float) -> None:
        leg, media = self.leg, self.leg.media
        if leg.player is not None or media is None or self.encode is None:
            return
        payload = self.encode[heard.view(np.uint16)].tobytes()
        leg.tx.send_generated(payload, media.payload_type, FRAME_SAMPLES, now)


class Conference:
    """Mixes its legs every 20 ms until :meth:`close`; legs join and leave live."""

    def __init__(self, legs: Iterable[LegEndpoint] = (), sink: FrameSink | None = None) -> None:
        #: Telephone-events received and not forwarded.
        self.events_dropped = 0
        #: Ticks run: the mix schedule, for tests and statistics.
        self.ticks = 0
        self.sink = sink
        self._mixer = Mixer()
        self._participants: dict[LegEndpoint, _Participant] = {}
        self._loop = asyncio.get_running_loop()
        self._next_tick = self._loop.time() + TICK
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(self._next_tick, self._tick)
        for leg in legs:
            self.add(leg)

    @property
    def legs(self) -> tuple[LegEndpoint, ...]:
        return tuple(self._participants)

    def add(self, leg: LegEndpoint) -> None:
        """Mix ``leg`` in from the next tick."""
        if self._timer is None:
            raise RuntimeError("conference closed")
        if leg not in self._participants:
            participant = _Participant(self, leg)
            self._participants[leg] = participant
            leg.connect(participant)

    def remove(self, leg: LegEndpoint) -> None:
        """Take ``leg`` out; it stays open for whatever comes next."""
        participant = self._participants.pop(leg, None)
        if participant is not None and leg.handler is participant:
            leg.connect(None)

    def close(self) -> None:
        """Stop mixing and release every leg."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for leg in self.legs:
            self.remove(leg)

    def _tick(self) -> None:
        now = self._loop.time()
        self.ticks += 1
        for leg in [leg for leg in self._participants if leg.closed]:
            self.remove(leg)  # hung up without leaving first
        participants = list(self._participants.values())
        if participants:
            frames = {p: p.next_frame() for p in participants}
            for participant, heard in self._mixer.mix(frames).items():
                participant.send(heard, now)
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        """Next tick on a fixed 20 ms grid, so the mix rate does not drift with load."""
        self._next_tick += TICK
        if now - self._next_tick > _MAX_LAG_TICKS * TICK:
            log.warning(
                "conference mix fell %.0f ms behind; resetting", 1000 * (now - self._next_tick)
            )
            self._next_tick = now + TICK
        self._timer = self._loop.call_at(self._next_tick, self._tick)
