"""Playing audio into a leg: ringback while the customer rings, announcements, beeps.

A :class:`Player` takes any iterable of 20 ms int16 frames (a ``tones.ToneGenerator`` is an
endless one; :func:`wav_frames` reads a file) and sends one frame per tick, encoded in the
leg's negotiated law, as generated frames on the leg's :class:`TxStream`. While it plays it
holds the leg (``leg.player``): bridges and conferences stop sending to that leg, so two
sources never interleave in one stream. When the frames run out, or on :meth:`stop`, the leg is
let go and whatever is connected takes over on the same unbroken stream.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from callbridge.media.endpoint import LegEndpoint
from callbridge.media.g711 import ALAW_ENCODE, ULAW_ENCODE
from callbridge.media.mixer import FRAME_SAMPLES
from callbridge.media.stream import CLOCK_RATE

__all__ = ["Player", "wav_frames"]

Frame = NDArray[np.int16]
#: Seconds per frame.
TICK: Final = FRAME_SAMPLES / CLOCK_RATE
_ENCODE: Final = {"PCMU": ULAW_ENCODE, "PCMA": ALAW_ENCODE}
_MAX_LAG_TICKS: Final = 5


class Player:
    """Plays ``frames`` into ``leg`` from :meth:`start` until they end or :meth:`stop`.

    ``done`` resolves (to None) when the player lets the leg go, either way.
    """

    def __init__(self, leg: LegEndpoint, frames: Iterable[Frame]) -> None:
        self.leg = leg
        self.frames_sent = 0
        self._frames: Iterator[Frame] = iter(frames)
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._next_tick = 0.0

    def start(self) -> Player:
        """Take the leg (stopping any other player on it) and play from the next tick."""
        if self.done.done() or self._timer is not None:
            raise RuntimeError("a player starts once")
        current = self.leg.player
        if isinstance(current, Player):
            current.stop()
        self.leg.player = self
        self._next_tick = self._loop.time()
        self._tick()
        return self

    def stop(self) -> None:
        """Stop playing and hand the leg back to whatever is connected to it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.leg.player is self:
            self.leg.player = None
            self.leg.tx.reset_source()
        if not self.done.done():
            self.done.set_result(None)

    def _tick(self) -> None:
        self._timer = None
        frame = None if self.leg.closed else next(self._frames, None)
        if frame is None:  # played out, or the leg hung up under us
            self.stop()
            return
        now = self._loop.time()
        self._send(frame, now)
        self._next_tick += TICK
        if now - self._next_tick > _MAX_LAG_TICKS * TICK:
            self._next_tick = now + TICK  # the loop stalled: carry on, don't burst
        self._timer = self._loop.call_at(self._next_tick, self._tick)

    def _send(self, frame: Frame, now: float) -> None:
        media = self.leg.media
        if media is None:
            return  # nowhere to send yet: the frame passes in silence
        samples = np.asarray(frame, dtype=np.int16)
        payload = _ENCODE[media.codec][samples.view(np.uint16)].tobytes()
        self.leg.tx.send_generated(payload, media.payload_type, samples.size, now)
        self.frames_sent += 1


def wav_frames(path: str | Path, *, repeat: bool = False) -> Iterator[Frame]:
    """20 ms frames of a WAV file: 8 kHz, mono, 16-bit PCM (what announcements are
    recorded as; anything else is refused rather than resampled). The last frame is padded
    with silence. With ``repeat`` the file loops forever."""
    samples = _read_wav(Path(path))
    padded = np.zeros(-(-samples.size // FRAME_SAMPLES) * FRAME_SAMPLES, dtype=np.int16)
    padded[: samples.size] = samples
    frames = padded.reshape(-1, FRAME_SAMPLES)
    while True:
        yield from frames
        if not repeat or not len(frames):
            return


def _read_wav(path: Path) -> Frame:
    try:
        with wave.open(str(path), "rb") as wav:
            shape = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
            data = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path.name}: not a PCM WAV file: {exc}") from exc
    if shape != (CLOCK_RATE, 1, 2):
        raise ValueError(
            f"{path.name}: need 8000 Hz mono 16-bit PCM, got {shape[0]} Hz, "
            f"{shape[1]} channel(s), {8 * shape[2]}-bit"
        )
    return np.frombuffer(data, dtype="<i2").astype(np.int16)
