"""Per-stream jitter and reorder buffer: RTP packets in at any time, one frame out per tick.

The mixer and the recorder consume audio at a steady 20 ms tick, while packets arrive early,
late, out of order, twice, or not at all. A `JitterBuffer` sits between the two for one RTP
stream. ``push(timestamp, payload, arrival)`` files a packet by its RTP timestamp;
``pop()``, called once per tick, hands back the next frame in timestamp order, or None where
there is nothing to play (the caller renders silence).

How it plays out:

- Prefetch: nothing comes out until ``depth`` frames are buffered (2-3 frames, 40-60 ms, is
  the usual trade between delay and late loss). Playout then starts at the oldest frame.
- Playing: each tick plays the frame due in that slot. A slot with no frame while later ones
  are waiting is a loss: None, or with ``conceal`` the previous frame once more (the cheapest
  packet loss concealment, good for one 20 ms hole, not for two).
- Underrun: when the buffer runs dry the stream has paused (silence suppression, a network
  stall) and playout goes back to prefetch, so the next talkspurt gets its margin back.
- Too much buffered (the sender's clock runs fast, or a burst arrived after a stall): past
  ``max_depth`` frames of delay the oldest frames are dropped down to ``depth``.
- A packet for a slot already played is late and dropped; a second copy of a frame is a
  duplicate and dropped. A change of SSRC, a timestamp jump of more than ``resync_frames``,
  or a run of packets for slots already gone by (the sender's clock stepped back) restarts
  the buffer on the new timing (RFC 3550 §5.1: timestamps only compare within one SSRC's
  media clock).

Timestamps are 32-bit and wrap (RFC 3550 §5.1); they are unwrapped onto an unbounded integer
line near the newest one seen, so ordering is right across the wrap. The buffer never reads a
clock: arrival times come in with each packet and only feed the RFC 3550 §6.4.1 interarrival
jitter estimate. Payloads are opaque bytes; the buffer does not care about the codec, only that
every packet carries one frame of ``samples_per_frame`` timestamp units.
"""

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = ["JitterBuffer", "JitterStats"]

#: RTP timestamps are 32-bit unsigned (RFC 3550 §5.1).
_TIMESTAMP_MODULUS: Final = 1 << 32
_HALF_MODULUS: Final = 1 << 31
#: This many packets in a row for slots already gone by (late, or repeating played timestamps)
#: mean the sender's timestamps stepped back: resynchronise rather than drop the rest of the
#: call.
_LATE_RUN_RESYNC: Final = 10
#: Played timestamps remembered to tell a duplicate of a played frame from a late one.
_PLAYED_MEMORY: Final = 64


class _Playout(enum.Enum):
    """Whether the buffer is filling up or playing out."""

    #: Waiting for ``depth`` frames before playing: at the start, after an underrun, after a
    #: resync. ``pop`` returns None.
    PREFETCH = enum.auto()
    #: One frame (or a loss) per ``pop``.
    PLAYING = enum.auto()


@dataclass(frozen=True)
class JitterStats:
    """Counters since the buffer was made; a snapshot, see `JitterBuffer.stats`."""

    #: Packets pushed, whatever became of them.
    received: int = 0
    #: Packets dropped because their slot had already been played.
    late: int = 0
    #: Packets dropped because the same timestamp was already buffered or played.
    duplicate: int = 0
    #: Slots played as missing (None or concealed) while later frames were buffered, and slots
    #: skipped over when too much was buffered.
    lost: int = 0
    #: Lost slots filled by repeating the previous frame.
    concealed: int = 0
    #: Buffered frames dropped to bring the delay back down to ``depth``.
    overflow: int = 0
    #: Buffered frames discarded unplayed by a resync (they belong to the old timing).
    flushed: int = 0
    #: Times the buffer ran dry while playing and went back to prefetch.
    underruns: int = 0
    #: Restarts on an SSRC change, a timestamp jump or a run of packets for past slots.
    resyncs: int = 0
    #: RFC 3550 §6.4.1 interarrival jitter estimate, in seconds.
    jitter: float = 0.0


class JitterBuffer:
    """Reorders one RTP stream's frames by timestamp and plays them out one per tick."""

    def __init__(
        self,
        depth: int = 3,
        *,
        max_depth: int | None = None,
        resync_frames: int = 50,
        conceal: bool = False,
        samples_per_frame: int = 160,
        clock_rate: int = 8000,
    ) -> None:
        max_depth = depth + 4 if max_depth is None else max_depth
        if depth < 1 or max_depth < depth:
            raise ValueError(f"need 1 <= depth <= max_depth, got {depth} and {max_depth}")
        if resync_frames <= max_depth:
            raise ValueError(f"resync_frames ({resync_frames}) must exceed max_depth")
        if samples_per_frame < 1 or clock_rate < 1:
            raise ValueError("samples_per_frame and clock_rate must be positive")
        self.depth = depth
        self.max_depth = max_depth
        self.conceal = conceal
        self._frame = samples_per_frame
        self._resync_span = resync_frames * samples_per_frame
        self._clock_rate = clock_rate
        self._counts: dict[str, int] = dict.fromkeys(
            ("received", "late", "duplicate", "lost", "concealed", "overflow", "flushed"), 0
        )
        self._counts.update(underruns=0, resyncs=0)
        self._jitter = 0.0  # RFC 3550 J, in timestamp units
        self._reset_stream()

    def _reset_stream(self) -> None:
        """Forget everything about the current timing (not the counters)."""
        self._state = _Playout.PREFETCH
        #: Unwrapped timestamp -> payload, for frames not yet played.
        self._frames: dict[int, bytes] = {}
        #: Unwrapped timestamp of the slot the next ``pop`` plays; None until playout starts.
        self._next: int | None = None
        #: Newest unwrapped timestamp accepted: the reference for unwrapping.
        self._newest: int | None = None
        self._ssrc: int | None = None
        self._played: deque[int] = deque(maxlen=_PLAYED_MEMORY)
        self._last_payload: bytes | None = None
        self._concealed_last = False
        self._late_run = 0
        self._transit: float | None = None

    # -- packets in -------------------------------------------------------------------------

    def push(
        self, timestamp: int, payload: bytes, arrival: float, *, ssrc: int | None = None
    ) -> None:
        """File one packet's frame by its RTP ``timestamp``; ``arrival`` in seconds, any epoch."""
        if not 0 <= timestamp < _TIMESTAMP_MODULUS:
            raise ValueError(f"RTP timestamp out of range: {timestamp}")
        self._counts["received"] += 1
        ext = self._unwrap(timestamp)
        if self._is_new_timing(ext, ssrc):
            ext = self._resync(timestamp)
        if ssrc is not None:
            self._ssrc = ssrc
        self._update_jitter(ext, arrival)
        if ext in self._frames:
            self._counts["duplicate"] += 1
        elif not self._is_late(ext):
            self._accept(ext, payload)
        elif self._late_run + 1 < _LATE_RUN_RESYNC:
            self._late_run += 1
            self._counts["duplicate" if ext in self._played else "late"] += 1
        else:
            self._accept(self._resync(timestamp), payload)

    def _accept(self, ext: int, payload: bytes) -> None:
        self._late_run = 0
        self._frames[ext] = payload
        self._newest = ext if self._newest is None else max(self._newest, ext)
        if self._state is _Playout.PREFETCH and len(self._frames) >= self.depth:
            self._state = _Playout.PLAYING
            self._next = min(self._frames)
            self._trim(count_lost=False)
        elif self._state is _Playout.PLAYING:
            self._trim(count_lost=True)

    def _unwrap(self, timestamp: int) -> int:
        """The unwrapped timestamp nearest the newest one seen (RFC 3550 §5.1 wraps)."""
        if self._newest is None:
            return timestamp
        delta = (timestamp - self._newest + _HALF_MODULUS) % _TIMESTAMP_MODULUS - _HALF_MODULUS
        return self._newest + delta

    def _is_new_timing(self, ext: int, ssrc: int | None) -> bool:
        if ssrc is not None and self._ssrc is not None and ssrc != self._ssrc:
            return True
        anchor = self._next if self._next is not None else self._newest
        return anchor is not None and abs(ext - anchor) > self._resync_span

    def _resync(self, timestamp: int) -> int:
        """Start over on the new timing; returns the packet's timestamp on the new line."""
        self._counts["resyncs"] += 1
        self._counts["flushed"] += len(self._frames)
        self._reset_stream()
        return timestamp

    def _is_late(self, ext: int) -> bool:
        """Whether this frame's slot is past: it could only be played out of order."""
        if self._state is _Playout.PLAYING and self._next is not None:
            return ext < self._next - self._frame // 2
        # Prefetching after an underrun: anything newer than what was played is still in order.
        return bool(self._played) and ext <= self._played[-1]

    def _trim(self, *, count_lost: bool) -> None:
        """Past ``max_depth`` frames of delay, skip ahead so that ``depth`` remain."""
        assert self._next is not None
        newest = max(self._frames)
        if (newest - self._next) // self._frame + 1 <= self.max_depth:
            return
        target = newest - (self.depth - 1) * self._frame
        stale = [ext for ext in self._frames if ext < target - self._frame // 2]
        for ext in stale:
            del self._frames[ext]
        self._counts["overflow"] += len(stale)
        if count_lost:
            skipped = (target - self._next) // self._frame
            self._counts["lost"] += max(0, skipped - len(stale))
        self._next = target

    def _update_jitter(self, ext: int, arrival: float) -> None:
        """RFC 3550 §6.4.1 / A.8: J += (|D(i-1, i)| - J) / 16, in timestamp units."""
        transit = arrival * self._clock_rate - ext
        if self._transit is not None:
            self._jitter += (abs(transit - self._transit) - self._jitter) / 16
        self._transit = transit

    # -- frames out -------------------------------------------------------------------------

    def pop(self) -> bytes | None:
        """The frame for this tick, or None for silence (prefetching, loss, underrun)."""
        if self._next is None:
            return None
        if self._state is _Playout.PREFETCH:
            self._next += self._frame  # keep the slot clock running through a pause
            self._last_payload = None  # concealment repeats only the tick just before
            return None
        if not self._frames:
            self._state = _Playout.PREFETCH
            self._counts["underruns"] += 1
            self._next += self._frame
            self._last_payload = None
            return None
        first = min(self._frames)
        if first < self._next + self._frame // 2:
            return self._play(first)
        return self._miss()

    def _play(self, ext: int) -> bytes:
        payload = self._frames.pop(ext)
        self._next = ext + self._frame  # follow the sender's grid, even if slightly off ours
        self._played.append(ext)
        self._last_payload = payload
        self._concealed_last = False
        return payload

    def _miss(self) -> bytes | None:
        assert self._next is not None
        self._next += self._frame
        self._counts["lost"] += 1
        if self.conceal and self._last_payload is not None and not self._concealed_last:
            self._counts["concealed"] += 1
            self._concealed_last = True
            return self._last_payload
        return None

    # -- looking in -------------------------------------------------------------------------

    @property
    def stats(self) -> JitterStats:
        """A snapshot of the counters."""
        return JitterStats(**self._counts, jitter=self._jitter / self._clock_rate)

    @property
    def playing(self) -> bool:
        """False while prefetching (at the start, after an underrun or a resync)."""
        return self._state is _Playout.PLAYING

    def __len__(self) -> int:
        """Frames buffered and not yet played."""
        return len(self._frames)
