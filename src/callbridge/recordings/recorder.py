"""The call recorder: RTP payloads in, a stereo WAV out, aligned to wall-clock time.

The file (DESIGN.md, Recordings) is 8 kHz 16-bit PCM with two channels: the agent's leg on
the left, everyone else mixed on the right. One 20 ms frame of the file stands for one 20 ms
slot of the call, counted from the bridge time; silence fills whatever no packet covers
(loss, a leg not yet joined, hold), so one minute of call is one minute of WAV and the two
channels stay in step.

Two halves, two threads:

- on the event loop, `Recorder.on_audio` runs for every packet the relay receives and only
  appends ``(arrival, payload, codec)`` to that leg's list: no decoding, no numpy, no I/O;
- on a worker thread (the executor the owner gives), `_Writer` takes those lists about once a
  second (`Recorder.flush`), places each packet in its slot, decodes a whole batch of G.711 per
  leg in one table lookup, mixes, interleaves and appends to the file with soundfile, then
  brings the header's sizes up to date so that a killed process leaves a playable file
  (repair.py mends the rest at start-up).

Placing packets by arrival time. The recorder sees arrival times, not RTP timestamps, so a
packet belongs to slot (arrival - start) / 20 ms. Cut with a plain int(), a stream whose
packets happen to arrive near a slot boundary flips between two slots on sub-millisecond
jitter: two packets collide in one slot (the second is dropped) and the next slot stays
empty. Each leg therefore keeps its phase, the offset of its arrivals within the 20 ms grid:
taken from its first packet (and again after a pause in its packets), then tracked with a
1/32 step per packet, which follows the sender's clock drift without chasing jitter. A
packet goes to the slot nearest (arrival - start - phase), so arrivals sit mid-slot and
+-10 ms of jitter moves none of them.

Rules per slot: a packet for a slot already written is late and dropped; a second packet of
the same leg for one slot is dropped (the first is kept); legs of one channel are summed in
int32 and saturated to int16. `flush` writes slots only up to ``now - jitter_window``
(200 ms by default), so slightly late packets still land; `close` writes the rest and pads
with silence up to the end time.
"""

import asyncio
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]
from numpy.typing import NDArray

from callbridge.errors import CallbridgeError
from callbridge.logs import CallLogger, call_logger
from callbridge.media.g711 import alaw_decode, ulaw_decode
from callbridge.recordings.naming import parse_recording_name
from callbridge.recordings.repair import HEADER_READ_LIMIT, patch_sizes, read_layout

__all__ = [
    "CHANNELS",
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "SAMPLE_RATE",
    "Channel",
    "FinishedRecording",
    "Recorder",
    "RecordingError",
]

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 8000
CHANNELS: Final = 2
#: One slot of the recording: the usual RTP packetisation for G.711 (RFC 3551 §4.5).
FRAME_SECONDS: Final = 0.020
FRAME_SAMPLES: Final = 160
_BYTES_PER_FRAME: Final = FRAME_SAMPLES * CHANNELS * 2
#: How fast a leg's phase follows its arrivals: 1/32 of each packet's offset from mid-slot.
_PHASE_GAIN: Final = 1 / 32
#: A leg silent this long (silence suppression, hold) may come back on another phase.
_RESYNC_GAP: Final = 0.5
#: At most this many slots (10 s) are rendered at once, bounding memory when a long stretch
#: is written in one go (a long silence, a close without flushes).
_CHUNK_SLOTS: Final = 500
_INT16_MIN: Final = -32768
_INT16_MAX: Final = 32767

Channel = Literal["left", "right"]
_DECODERS: Final = {"PCMU": ulaw_decode, "PCMA": alaw_decode}
#: Codes that decode to (near) silence, to pad a short payload: mu-law 0xFF is 0, A-law has
#: no zero and 0xD5 is +8.
_SILENCE_CODE: Final = {"PCMU": b"\xff", "PCMA": b"\xd5"}

#: One received packet as on_audio stores it: (arrival, payload, codec).
_Packet = tuple[float, bytes, str]


class RecordingError(CallbridgeError):
    """The recording could not be written (directory missing and not creatable, disk full,
    ...). Raised by `Recorder.close` and `Recorder.close_now`, every time they are called;
    the original error is the ``__cause__``. The call itself is not affected."""


@dataclass(frozen=True)
class FinishedRecording:
    """A closed recording and what became of the packets offered to it."""

    path: Path
    #: Seconds of audio in the file, a whole number of 20 ms frames.
    duration: float
    #: Packets written into the file.
    packets: int
    #: Packets dropped because their slot was already written (or lay past the end).
    late: int
    #: Packets dropped as a second packet of one leg for the same slot.
    duplicates: int
    #: Packets dropped for a codec the recorder does not decode (only PCMU and PCMA).
    unsupported: int


@dataclass(frozen=True)
class _Batch:
    """What one flush hands to the worker: each leg's packets and how far to write."""

    legs: list[tuple[str, Channel, list[_Packet]]]
    #: Write slots below this; None for the final batch (close decides).
    horizon: int | None


class _Leg:
    """One leg's placement state and its packets waiting to be written, by slot."""

    __slots__ = ("channel", "last_seen", "pending", "phase")

    def __init__(self, channel: Channel) -> None:
        self.channel: Channel = channel
        self.phase = 0.0
        self.last_seen = -math.inf
        self.pending: dict[int, tuple[bytes, str]] = {}

    def slot_of(self, elapsed: float) -> int:
        """The slot of a packet that arrived ``elapsed`` seconds after the start."""
        if elapsed - self.last_seen > _RESYNC_GAP:
            self.phase = elapsed % FRAME_SECONDS
        self.last_seen = max(self.last_seen, elapsed)
        position = (elapsed - self.phase) / FRAME_SECONDS
        slot = math.floor(position + 0.5)
        self.phase += _PHASE_GAIN * (position - slot) * FRAME_SECONDS
        return slot


def _slots_before(elapsed: float) -> int:
    """Whole slots in ``elapsed`` seconds; a millionth of a slot of allowance keeps 0.8 s
    from counting as 39.99999 slots."""
    return math.floor(elapsed / FRAME_SECONDS + 1e-6)


def _fit(payload: bytes, codec: str) -> bytes:
    """Exactly one frame of codes: a longer payload is cut, a shorter one padded."""
    if len(payload) == FRAME_SAMPLES:
        return payload
    return (payload + _SILENCE_CODE[codec] * FRAME_SAMPLES)[:FRAME_SAMPLES]


class _Writer:
    """The worker-thread half: owns the file and every bit of state the writes touch.

    Batches arrive through a deque (appended on the loop thread) and are taken under a lock
    in arrival order, so the executor may run `drain` and `finish` on any thread, several
    at once, and the file still sees one writer and the batches in order.
    """

    def __init__(self, path: Path, start: float, logger: CallLogger) -> None:
        self._path = path
        self._start = start
        self._log = logger
        self._lock = threading.Lock()
        self._inbox: deque[_Batch] = deque()
        self._legs: dict[str, _Leg] = {}
        self._file: sf.SoundFile | None = None
        self._header_fd = -1
        self._data_offset = 0
        #: Slots on disk: the file holds slots [0, _written).
        self._written = 0
        self._packets = self._late = self._duplicates = self._unsupported = 0
        self._result: FinishedRecording | None = None
        self._error: Exception | None = None

    def post(self, batch: _Batch) -> None:
        self._inbox.append(batch)

    def drain(self) -> None:
        """Place every posted packet and write what the batches allow."""
        with self._lock:
            if self._result is not None or self._error is not None:
                self._inbox.clear()
                return
            try:
                horizon = self._absorb(limit=None)
                if horizon is not None:
                    self._write_until(horizon)
            except Exception as exc:
                self._fail(exc)

    def finish(self, end_slot: int) -> FinishedRecording:
        """Write everything up to ``end_slot`` and close the file; the same result (or
        error) however many times it is called."""
        with self._lock:
            if self._result is None and self._error is None:
                try:
                    self._absorb(limit=end_slot)
                    self._ensure_open()
                    self._write_until(end_slot)
                    self._drop_the_rest()
                    self._close_file()
                    self._result = self._summary()
                except Exception as exc:
                    self._fail(exc)
            if self._error is not None:
                raise RecordingError(f"recording {self._path}: {self._error}") from self._error
            assert self._result is not None
            return self._result

    def _absorb(self, limit: int | None) -> int | None:
        """File the posted packets by slot; returns the furthest horizon among the batches.
        Packets at or past ``limit`` (the end of the call) count as late."""
        horizon: int | None = None
        while self._inbox:
            batch = self._inbox.popleft()
            for leg_key, channel, packets in batch.legs:
                leg = self._legs.get(leg_key)
                if leg is None:
                    leg = self._legs[leg_key] = _Leg(channel)
                self._place(leg, packets, limit)
            if batch.horizon is not None:
                horizon = batch.horizon if horizon is None else max(horizon, batch.horizon)
        return horizon

    def _place(self, leg: _Leg, packets: list[_Packet], limit: int | None) -> None:
        start, written, pending = self._start, self._written, leg.pending
        for arrival, payload, codec in packets:
            slot = leg.slot_of(arrival - start)
            if slot < written or (limit is not None and slot >= limit):
                self._late += 1
            elif codec not in _DECODERS:
                self._unsupported += 1
            elif slot in pending:
                self._duplicates += 1
            else:
                pending[slot] = (payload, codec)

    def _drop_the_rest(self) -> None:
        """Packets still pending once the end is written lie past the end: late."""
        for leg in self._legs.values():
            self._late += len(leg.pending)
            leg.pending.clear()

    def _write_until(self, target: int) -> None:
        if target <= self._written:
            return
        self._ensure_open()
        assert self._file is not None
        while self._written < target:
            count = min(target - self._written, _CHUNK_SLOTS)
            self._file.write(self._render(self._written, count))
            self._written += count
        # Audio first, then the sizes that cover it: a kill in between leaves a header that
        # is behind its audio, which repair_recordings fixes, never one that runs ahead.
        patch_sizes(self._header_fd, self._data_offset, self._written * _BYTES_PER_FRAME)

    def _render(self, first: int, count: int) -> NDArray[np.int16]:
        """Slots [first, first + count) as interleaved stereo samples, shape (n, 2)."""
        mix = np.zeros((count, FRAME_SAMPLES, CHANNELS), dtype=np.int32)
        for leg in self._legs.values():
            due = [slot for slot in leg.pending if slot < first + count]
            if due:
                self._add(mix[:, :, 0 if leg.channel == "left" else 1], leg, due, first)
        np.minimum(mix, _INT16_MAX, out=mix)
        np.maximum(mix, _INT16_MIN, out=mix)
        return mix.reshape(count * FRAME_SAMPLES, CHANNELS).astype(np.int16)

    def _add(self, channel: NDArray[np.int32], leg: _Leg, due: list[int], first: int) -> None:
        """Decode ``leg``'s packets for the ``due`` slots, one lookup per codec, and add them
        into their rows of ``channel`` (one leg has at most one packet per slot, so the
        fancy-indexed += never meets the same row twice)."""
        by_codec: dict[str, tuple[list[int], list[bytes]]] = {}
        for slot in due:
            payload, codec = leg.pending.pop(slot)
            rows, payloads = by_codec.setdefault(codec, ([], []))
            rows.append(slot - first)
            payloads.append(_fit(payload, codec))
        for codec, (rows, payloads) in by_codec.items():
            pcm = _DECODERS[codec](b"".join(payloads)).reshape(len(rows), FRAME_SAMPLES)
            channel[rows] += pcm
        self._packets += len(due)

    def _ensure_open(self) -> None:
        if self._file is not None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file = sf.SoundFile(
            self._path,
            "w",
            samplerate=SAMPLE_RATE,
            channels=CHANNELS,
            format="WAV",
            subtype="PCM_16",
        )
        # A second descriptor for the header: pwrite leaves libsndfile's file position alone.
        self._header_fd = os.open(self._path, os.O_RDWR | os.O_CLOEXEC)
        head = os.pread(self._header_fd, HEADER_READ_LIMIT, 0)
        self._data_offset = read_layout(head).data_offset

    def _close_file(self) -> None:
        if self._header_fd >= 0:
            os.close(self._header_fd)
            self._header_fd = -1
        if self._file is not None:
            self._file.close()  # libsndfile writes the final header

    def _summary(self) -> FinishedRecording:
        return FinishedRecording(
            path=self._path,
            duration=round(self._written * FRAME_SECONDS, 3),
            packets=self._packets,
            late=self._late,
            duplicates=self._duplicates,
            unsupported=self._unsupported,
        )

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        self._log.error("recording to %s failed: %s", self._path, exc, exc_info=exc)
        self._inbox.clear()
        for leg in self._legs.values():
            leg.pending.clear()
        try:
            self._close_file()
        except Exception as close_exc:
            self._log.debug("closing the failed recording: %s", close_exc)


class Recorder:
    """Records one call: the relay's audio sink, stereo WAV out.

    ``start`` is the bridge time and ``now`` the clock (both the event loop's monotonic time,
    ``loop.time``); the recorder reads no other clock. Legs in ``left_legs`` go to the left
    channel and all others to the right, or ``channel_of(leg_key)`` decides (asked once per
    leg, on the loop thread). Blocking work runs on ``executor``.

    Drive it with `on_audio` per packet, `flush` about once a second (or `flush_every`), and
    `close` (or `close_now`) on every way out of the call: both are idempotent.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        start: float,
        executor: Executor,
        now: Callable[[], float],
        left_legs: Collection[str] = (),
        channel_of: Callable[[str], Channel] | None = None,
        jitter_window: float = 0.2,
    ) -> None:
        if channel_of is not None and left_legs:
            raise ValueError("give left_legs or channel_of, not both")
        self.path = Path(path)
        self.start = start
        self._executor = executor
        self._now = now
        self._jitter_window = jitter_window
        left = frozenset(left_legs)
        self._channel_of = channel_of or (lambda leg: "left" if leg in left else "right")
        self._inbox: dict[str, list[_Packet]] = {}
        self._channels: dict[str, Channel] = {}
        self._closed = False
        self._end_slot = 0
        self._closing: asyncio.Future[FinishedRecording] | None = None
        self._timer: asyncio.TimerHandle | None = None
        call_id = parse_recording_name(self.path.name) or self.path.name
        self._writer = _Writer(self.path, start, call_logger(log, call_id))

    def on_audio(self, leg_key: str, payload: bytes, codec: str, arrival: float) -> None:
        """One received packet of ``leg_key`` ("PCMU" or "PCMA", arrival in loop time)."""
        if self._closed:
            return
        packets = self._inbox.get(leg_key)
        if packets is None:
            packets = self._new_leg(leg_key)
        packets.append((arrival, payload, codec))

    def flush(self) -> "Future[None] | None":
        """Hand the packets so far to the worker, which writes up to ``now - jitter_window``.

        Returns the worker's future (it never holds an exception: a failed write is kept
        for `close` to raise), or None once closed.
        """
        if self._closed:
            return None
        horizon = _slots_before(self._now() - self._jitter_window - self.start)
        self._writer.post(_Batch(self._take_inbox(), horizon))
        return self._executor.submit(self._writer.drain)

    def flush_every(self, loop: asyncio.AbstractEventLoop, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds on ``loop`` until closed."""

        def tick() -> None:
            self.flush()
            self._timer = loop.call_later(interval, tick)

        if not self._closed:
            self._timer = loop.call_later(interval, tick)

    async def close(self, end_time: float | None = None) -> FinishedRecording:
        """Write everything up to ``end_time`` (default: now), padding with silence so the file
        lasts ``end_time - start`` to the nearest frame, and close the file.

        Idempotent: later calls, concurrent ones included, return the first call's result
        (the first ``end_time`` wins). Raises RecordingError if the recording failed.
        """
        if self._closing is None:
            end_slot = self._stop(end_time)
            loop = asyncio.get_running_loop()
            self._closing = loop.run_in_executor(self._executor, self._writer.finish, end_slot)
        return await asyncio.shield(self._closing)

    def close_now(self, end_time: float | None = None) -> FinishedRecording:
        """`close` without an event loop, blocking the caller: for shutdown paths."""
        return self._writer.finish(self._stop(end_time))

    def _stop(self, end_time: float | None) -> int:
        """Stop taking packets and post the last batch, once; the end slot."""
        if not self._closed:
            end = self._now() if end_time is None else end_time
            self._end_slot = max(0, round((end - self.start) / FRAME_SECONDS))
            self._writer.post(_Batch(self._take_inbox(), None))
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        return self._end_slot

    def _new_leg(self, leg_key: str) -> list[_Packet]:
        if leg_key not in self._channels:
            channel = self._channel_of(leg_key)
            if channel not in ("left", "right"):
                raise ValueError(f"channel_of({leg_key!r}) gave {channel!r}, not left or right")
            self._channels[leg_key] = channel
        packets: list[_Packet] = []
        self._inbox[leg_key] = packets
        return packets

    def _take_inbox(self) -> list[tuple[str, Channel, list[_Packet]]]:
        inbox, self._inbox = self._inbox, {}
        return [(leg, self._channels[leg], packets) for leg, packets in inbox.items()]
