"""The call recorder: RTP packets in, a stereo WAV out, aligned to wall-clock time.

The file (DESIGN.md, Recordings) is 8 kHz 16-bit PCM with two channels: the agent's leg on
the left, everyone else mixed on the right. Sample n of the file is the call at
``start + n / 8000`` s; silence fills whatever no packet covers (loss, a leg not yet joined,
hold), so one minute of call is one minute of WAV and the two channels stay in step.

Two halves:

- on the event loop, `Recorder.on_audio` runs for every packet the relay receives and only
  appends the whole datagram and its arrival time to two lists of that leg's segment (a codec
  change, a re-INVITE, starts a new one): no parsing, slicing, numpy or I/O;
- in a `Writer`, `Recorder.flush` hands those lists over about once a second as a `Batch`;
  the writer has placement.py parse them and place every packet's audio by its RTP timestamp
  in its leg's `Track` (a handful of numpy calls per leg, not Python per packet), then mixes
  the tracks, interleaves and appends to the file with soundfile, and brings the header's
  sizes up to date so that a killed process leaves a playable file (repair.py mends the rest
  at start-up).

Writers run where the owner's `Writers` put them: on threads (`ThreadWriters`), or in a
separate process (process.py's `ProcessWriters`, what the server uses, so that the writers'
work never takes the GIL from the relay).

Legs of one channel are summed in int32 and saturated to int16. `flush` writes only up to
``now - jitter_window`` (200 ms by default), so slightly late packets still land; audio
placed before what is already written is late (see placement.py for the rules). `close`
writes the rest and pads with silence up to the end time. Memory stays bounded: at most 10 s
is rendered at once, and a batch holding more than 10 s of arrivals (a close without
flushes) is placed and written 10 s at a time, as flushes would have.
"""

import asyncio
import logging
import math
import os
import threading
from array import array
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NamedTuple, Protocol

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]
from numpy.typing import NDArray

from callbridge.errors import CallbridgeError
from callbridge.logs import call_logger
from callbridge.recordings.naming import parse_recording_name
from callbridge.recordings.placement import (
    DECODERS,
    SAMPLE_RATE,
    Counts,
    Run,
    Track,
    parse,
)
from callbridge.recordings.repair import HEADER_READ_LIMIT, patch_sizes, read_layout

__all__ = [
    "CHANNELS",
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "SAMPLE_RATE",
    "Batch",
    "Channel",
    "FinishedRecording",
    "Packed",
    "Recorder",
    "RecordingError",
    "Segment",
    "ThreadWriters",
    "Writer",
    "WriterLink",
    "Writers",
]

log = logging.getLogger(__name__)

CHANNELS: Final = 2
#: The file's length is a whole number of these (the usual G.711 packetisation, RFC 3551).
FRAME_SECONDS: Final = 0.020
FRAME_SAMPLES: Final = 160
_BYTES_PER_SAMPLE: Final = CHANNELS * 2
#: At most this many samples (10 s) are rendered, or placed from one batch, at once.
_CHUNK: Final = 10 * SAMPLE_RATE
_INT16_MIN: Final = -32768
_INT16_MAX: Final = 32767

Channel = Literal["left", "right"]
Int64s = NDArray[np.int64]


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
    #: Packets written into the file (in whole or, straddling an edge, in part).
    packets: int
    #: Packets dropped because all their audio lay before what was already written, or
    #: past the end.
    late: int
    #: Packets dropped because a packet of the same leg already started at the same sample
    #: (the same RTP timestamp): the first is kept.
    duplicates: int
    #: Packets dropped for a codec the recorder does not decode (only PCMU and PCMA).
    unsupported: int
    #: Packets dropped as not RTP: too short, RTCP, CSRC/extension/padding lengths that do
    #: not fit, or no payload at all.
    malformed: int = 0
    #: Packets never handed to the writer because it had fallen too far behind (a writer
    #: process stalled on its disk): their audio is silence in the file.
    dropped: int = 0


class Segment:
    """What the loop thread collects: one leg's packets in one codec, as they arrived."""

    __slots__ = ("arrivals", "channel", "codec", "leg", "packets")

    def __init__(self, leg: str, channel: Channel, codec: str) -> None:
        self.leg = leg
        self.channel: Channel = channel
        self.codec = codec
        self.packets: list[bytes] = []
        self.arrivals: list[float] = []

    def pack(self) -> "Packed":
        return Packed(self.leg, self.channel, self.codec, b"".join(self.packets),
                      array("H", map(len, self.packets)).tobytes(),
                      array("d", self.arrivals).tobytes())


class Packed(NamedTuple):
    """A `Segment` as it travels to its writer: the datagrams back to back, then their
    lengths (native uint16: a UDP payload is at most 65,507 bytes) and arrival times (native
    float64) as bytes. Plain bytes rather than a hundred objects, or arrays: a writer process
    gets them for the price of a copy (pickling two arrays costs 4x the rest)."""

    leg: str
    channel: Channel
    codec: str
    data: bytes
    sizes: bytes
    arrivals: bytes

    @property
    def packet_count(self) -> int:
        """How many packets."""
        return len(self.sizes) // 2


@dataclass(frozen=True)
class Batch:
    """What one flush hands to the worker: the segments in order and how far to write."""

    segments: list[Packed]
    #: Write samples below this; None for the final batch (close decides).
    horizon: int | None


class Writer:
    """The writing half: owns the file and every bit of state the writes touch.

    Batches arrive through a deque (appended on the loop thread, or by the writer process's
    reader) and are taken under a lock in arrival order, so an executor may run `drain` and
    `finish` on any thread, several at once, and the file still sees one writer and the
    batches in order.
    """

    def __init__(self, path: Path, start: float, jitter: int) -> None:
        self._path = path
        self._start = start
        #: The jitter window in samples: how far behind the latest arrival writes stay.
        self._jitter = jitter
        self._log = call_logger(log, parse_recording_name(path.name) or path.name)
        self._lock = threading.Lock()
        self._inbox: deque[Batch] = deque()
        self._tracks: dict[str, Track] = {}
        #: The tracks of the left channel and of the right.
        self._channels: tuple[list[Track], list[Track]] = ([], [])
        self._file: sf.SoundFile | None = None
        self._header_fd = -1
        self._data_offset = 0
        #: Samples on disk: the file holds samples [0, _written).
        self._written = 0
        self._counts = Counts()
        self._result: FinishedRecording | None = None
        self._error: Exception | None = None

    def post(self, batch: Batch) -> None:
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

    def finish(self, end: int) -> FinishedRecording:
        """Write everything up to sample ``end`` and close the file; the same result (or
        error) however many times it is called."""
        with self._lock:
            if self._result is None and self._error is None:
                try:
                    self._absorb(limit=end)
                    self._ensure_open()
                    self._write_until(end)
                    for track in self._tracks.values():  # placed, but past the end
                        unwritten = track.unwritten(end)
                        self._counts.late += unwritten
                        self._counts.packets -= unwritten
                    self._close_file()
                    self._result = self._summary()
                except Exception as exc:
                    self._fail(exc)
            if self._error is not None:
                raise RecordingError(f"recording {self._path}: {self._error}") from self._error
            assert self._result is not None
            return self._result

    def _absorb(self, limit: int | None) -> int | None:
        """Place the posted packets; returns the furthest horizon among the batches.
        Audio at or past ``limit`` (the end of the call) is late."""
        horizon: int | None = None
        while self._inbox:
            batch = self._inbox.popleft()
            self._take(batch.segments, limit)
            if batch.horizon is not None:
                horizon = batch.horizon if horizon is None else max(horizon, batch.horizon)
        return horizon

    def _take(self, segments: list[Packed], limit: int | None) -> None:
        """Place one batch, 10 s of arrivals at a time, writing in between as a flush at the
        end of each 10 s would have."""
        work: list[tuple[str, NDArray[np.int16], memoryview, Int64s, Int64s]] = []
        for segment in segments:
            table = DECODERS.get(segment.codec)
            if table is None:
                self._counts.unsupported += segment.packet_count
                continue
            arrivals = self._positions(segment.arrivals)
            self._track(segment)
            offsets = np.zeros(segment.packet_count + 1, dtype=np.int64)
            np.cumsum(np.frombuffer(segment.sizes, dtype=np.uint16), out=offsets[1:])
            work.append((segment.leg, table, memoryview(segment.data), offsets, arrivals))
        if not work:
            return
        counts = self._counts
        cursors = [0] * len(work)
        window_end = min(int(arrivals[0]) for *_, arrivals in work) + _CHUNK
        last = max(int(arrivals[-1]) for *_, arrivals in work)
        while True:
            final = last < window_end
            for k, (leg, table, data, offsets, arrivals) in enumerate(work):
                stop = len(arrivals) if final else int(np.searchsorted(arrivals, window_end))
                if stop > cursors[k]:
                    first = cursors[k]
                    packed = data[offsets[first]:offsets[stop]]
                    sizes = np.diff(offsets[first:stop + 1])
                    run = parse(packed, sizes, arrivals[first:stop], table, counts)
                    if run is not None:
                        self._place(leg, run, limit)
                    cursors[k] = stop
            if final:
                return
            target = window_end - self._jitter
            self._write_until(target if limit is None else min(target, limit))
            window_end += _CHUNK

    def _place(self, leg: str, run: Run, limit: int | None) -> None:
        counts = self._counts
        anchors, recentres = counts.reanchored, counts.recentred
        self._tracks[leg].place(run, self._written, limit, counts)
        if counts.reanchored != anchors:
            self._log.debug("leg %s: new SSRC or timestamp jump, re-anchored", leg)
        if counts.recentred != recentres:
            self._log.debug("leg %s: re-centred on the sender's drifting clock", leg)

    def _positions(self, arrivals: bytes) -> Int64s:
        """Arrival times as file sample positions, to the nearest sample."""
        elapsed = np.frombuffer(arrivals, dtype=np.float64) * SAMPLE_RATE
        elapsed -= self._start * SAMPLE_RATE - 0.5  # rounded, as astype truncates
        return elapsed.astype(np.int64)

    def _track(self, segment: Packed) -> None:
        """Give ``segment``'s leg a track, on its channel, if it has none yet."""
        if segment.leg not in self._tracks:
            track = self._tracks[segment.leg] = Track()
            self._channels[0 if segment.channel == "left" else 1].append(track)

    def _write_until(self, target: int) -> None:
        if target <= self._written:
            return
        self._ensure_open()
        assert self._file is not None
        while self._written < target:
            count = min(target - self._written, _CHUNK)
            self._file.buffer_write(self._render(count), dtype="int16")
        # Audio first, then the sizes that cover it: a kill in between leaves a header that
        # is behind its audio, which repair_recordings fixes, never one that runs ahead.
        patch_sizes(self._header_fd, self._data_offset, self._written * _BYTES_PER_SAMPLE)

    def _render(self, count: int) -> NDArray[np.int16]:
        """The next ``count`` samples as interleaved stereo, shape (count, 2)."""
        out = np.zeros((count, CHANNELS), dtype=np.int16)
        self._written += count
        for column, tracks in enumerate(self._channels):
            if len(tracks) == 1:  # the usual case: no sum, no saturation
                tracks[0].render(out[:, column], count, self._written)
            elif tracks:
                out[:, column] = self._mix(tracks, count)
        return out

    def _mix(self, tracks: list[Track], count: int) -> NDArray[np.int16]:
        """The sum of ``tracks``' next ``count`` samples, saturated to int16."""
        total = np.zeros(count, dtype=np.int32)
        for track in tracks:
            track.render(total, count, self._written, add=True)
        np.clip(total, _INT16_MIN, _INT16_MAX, out=total)
        return total.astype(np.int16)

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
        counts = self._counts
        return FinishedRecording(
            path=self._path,
            duration=round(self._written / SAMPLE_RATE, 3),
            packets=counts.packets,
            late=counts.late,
            duplicates=counts.duplicates,
            unsupported=counts.unsupported,
            malformed=counts.malformed,
        )

    def _fail(self, exc: Exception) -> None:
        self._error = exc  # logged by the Recorder that closes
        self._inbox.clear()
        self._tracks.clear()
        self._channels = ([], [])
        try:
            self._close_file()
        except Exception as close_exc:
            self._log.debug("closing the failed recording: %s", close_exc)


class WriterLink(Protocol):
    """One recording's line to its `Writer`, wherever that runs (`Writers.open`)."""

    def post(self, batch: Batch) -> "Future[None] | None":
        """Hand ``batch`` over and have it written; never blocks the caller for long."""

    async def finish(self, end: int) -> FinishedRecording:
        """`Writer.finish`: write up to sample ``end`` and close the file."""

    def finish_blocking(self, end: int) -> FinishedRecording:
        """`finish`, blocking the caller: for shutdown paths without a running loop."""


class Writers(Protocol):
    """Where recordings are written: threads of this process (`ThreadWriters`) or a separate
    process (`callbridge.recordings.process.ProcessWriters`, what the server uses)."""

    def open(self, path: Path, start: float, jitter: int) -> WriterLink:
        """A `Writer` for the file ``path``: the call starts at loop time ``start``, and
        writes stay ``jitter`` samples behind the latest arrival."""


class ThreadWriters:
    """Writers that run on ``executor``'s threads, in this process.

    Simple, and right for a handful of calls; under load the writers' numpy and file work
    contends with the event loop for the GIL (see process.py for the figures).
    """

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def open(self, path: Path, start: float, jitter: int) -> "_ThreadLink":
        return _ThreadLink(Writer(path, start, jitter), self._executor)


class _ThreadLink:
    def __init__(self, writer: Writer, executor: Executor) -> None:
        self._writer = writer
        self._executor = executor

    def post(self, batch: Batch) -> "Future[None]":
        """Returns the worker's future; it never holds an exception (a failed write is kept
        for `finish` to raise)."""
        self._writer.post(batch)
        return self._executor.submit(self._writer.drain)

    async def finish(self, end: int) -> FinishedRecording:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._writer.finish, end)

    def finish_blocking(self, end: int) -> FinishedRecording:
        return self._writer.finish(end)


class Recorder:
    """Records one call: the relay's audio sink (:class:`~callbridge.media.relay.FrameSink`),
    stereo WAV out.

    ``start`` is the bridge time and ``now`` the clock (both the event loop's monotonic time,
    ``loop.time``); the recorder reads no other clock. Legs in ``left_legs`` go to the left
    channel and all others to the right, or ``channel_of(leg_key)`` decides (asked once per
    leg, on the loop thread). The file is written by one of ``writers``.

    Drive it with `on_audio` per packet, `flush` about once a second (or `flush_every`), and
    `close` (or `close_now`) on every way out of the call: both are idempotent.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        start: float,
        writers: Writers,
        now: Callable[[], float],
        left_legs: Collection[str] = (),
        channel_of: Callable[[str], Channel] | None = None,
        jitter_window: float = 0.2,
    ) -> None:
        if channel_of is not None and left_legs:
            raise ValueError("give left_legs or channel_of, not both")
        self.path = Path(path)
        self.start = start
        self._now = now
        self._jitter_window = jitter_window
        left = frozenset(left_legs)
        self._channel_of = channel_of or (lambda leg: "left" if leg in left else "right")
        #: Each leg's segment taking packets now, and every segment since the last flush.
        self._current: dict[str, Segment] = {}
        self._segments: list[Segment] = []
        self._channels: dict[str, Channel] = {}
        self._closed = False
        self._end = 0
        self._closing: asyncio.Future[FinishedRecording] | None = None
        self._failure: RecordingError | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._log = call_logger(log, parse_recording_name(self.path.name) or self.path.name)
        self._link = writers.open(self.path, start, round(jitter_window * SAMPLE_RATE))

    def on_audio(self, leg_key: str, packet: bytes, codec: str, arrival: float) -> None:
        """One received RTP datagram of ``leg_key``, whole ("PCMU" or "PCMA"; arrival in
        loop time). Only appends: everything else happens in the writer."""
        segment = self._current.get(leg_key)
        if segment is None or segment.codec != codec:
            segment = self._open_segment(leg_key, codec)
            if segment is None:
                return
        segment.packets.append(packet)
        segment.arrivals.append(arrival)

    def flush(self) -> "Future[None] | None":
        """Hand the packets so far to the writer, which writes up to ``now - jitter_window``.

        Returns what the writer's `WriterLink.post` does (a future for `ThreadWriters`), or
        None once closed.
        """
        if self._closed:
            return None
        elapsed = self._now() - self._jitter_window - self.start
        # A millionth of a sample of allowance keeps 0.8 s from counting as 6399.99999.
        horizon = math.floor(elapsed * SAMPLE_RATE + 1e-6)
        return self._link.post(Batch(self._take_segments(), horizon))

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
            self._closing = asyncio.ensure_future(self._finish(self._stop(end_time)))
        return await asyncio.shield(self._closing)

    def close_now(self, end_time: float | None = None) -> FinishedRecording:
        """`close` without an event loop, blocking the caller: for shutdown paths."""
        end = self._stop(end_time)
        if self._failure is not None:
            raise self._failure
        try:
            return self._link.finish_blocking(end)
        except RecordingError as exc:
            raise self._failed(exc) from exc.__cause__

    async def _finish(self, end: int) -> FinishedRecording:
        try:
            return await self._link.finish(end)
        except RecordingError as exc:
            raise self._failed(exc) from exc.__cause__

    def _failed(self, exc: RecordingError) -> RecordingError:
        """Log a failed recording once; the error every later close raises."""
        if self._failure is None:
            self._failure = exc
            self._log.error("%s", exc, exc_info=exc.__cause__ or exc)
        return self._failure

    def _stop(self, end_time: float | None) -> int:
        """Stop taking packets and post the last batch, once; the end sample."""
        if not self._closed:
            end = self._now() if end_time is None else end_time
            self._end = max(0, round((end - self.start) / FRAME_SECONDS)) * FRAME_SAMPLES
            self._link.post(Batch(self._take_segments(), None))
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        return self._end

    def _open_segment(self, leg_key: str, codec: str) -> Segment | None:
        """A new segment for ``leg_key`` in ``codec``; None once closed."""
        if self._closed:
            return None
        channel = self._channels.get(leg_key)
        if channel is None:
            channel = self._channel_of(leg_key)
            if channel not in ("left", "right"):
                raise ValueError(f"channel_of({leg_key!r}) gave {channel!r}, not left or right")
            self._channels[leg_key] = channel
        segment = self._current[leg_key] = Segment(leg_key, channel, codec)
        self._segments.append(segment)
        return segment

    def _take_segments(self) -> list[Packed]:
        segments, self._segments, self._current = self._segments, [], {}
        return [segment.pack() for segment in segments]
