"""Placing a leg's RTP packets on the recording's sample grid, by RTP timestamp.

The recorder's worker thread (recorder.py) hands each leg's packets here in batches, about
a second at a time, and reads decoded samples back at their place in the file. Pure: numpy,
no I/O, threads or clock; arrival times come in as file sample positions,
``(arrival - start) * 8000``.

Parsing (`parse`). Nearly every batch is packets of one length with the plain 12-byte header
(first octet 0x80). Those take a handful of numpy calls, whatever their number: one join and
``frombuffer`` into an (n, length) array, timestamps and SSRCs read from its header columns
(big-endian), the payload columns decoded with one G.711 table lookup. Anything else
(CSRCs, a header extension, padding, mixed lengths) takes a per-packet path; a malformed
packet is counted and dropped, never raised. The relay passes only packets of a leg's audio
payload type, so RTCP (RFC 5761) does not reach the fast path; the per-packet path refuses
it.

Placing (`Track.place`). A G.711 timestamp counts 8 kHz samples (RFC 3551 §4.5.14), so each
leg keeps an anchor, an SSRC and a (timestamp, file sample) pair, and a packet's audio goes
at ``sample + (ts - timestamp)`` (signed modulo 2**32, RFC 3550 §5.1). Arrival jitter and
reordering move nothing: packets land end to end, whatever their ptime. Arrival positions
only set and check the anchor:

- a new anchor starts from a packet's arrival and is centred on the median of (timestamp
  position - arrival position) over the packets it places in its first batch, so one
  delayed first packet does not shift the whole leg;
- a new SSRC, or a packet whose timestamp disagrees with its arrival by more than 200 ms (a
  restarted source, a timestamp jump), takes a new anchor at that packet. The anchor before
  is kept too: a lone stray packet, or a straggler of the old SSRC, goes back to it and the
  stream keeps its exact placement;
- the sender's clock drifts against ours (0.1% is 3.6 s an hour). Each batch's median
  disagreement feeds a slow average (time constant 400 packets, 8 s of 20 ms packets); when
  it passes 20 ms the anchor moves by that much, leaving a short gap or overwriting a few
  milliseconds, so the channels stay aligned to wall-clock time over an hour's call. One
  batch's median alone wanders by +-6 ms under +-60 ms of jitter, enough to step the anchor
  every minute or two; the average does not.

Rules: audio before the written edge is late (a packet wholly before it is counted late; one
straddling it keeps its part after the edge), and so is audio at or past the end of the
call. A packet that starts where a packet of the same leg placed before starts (the same
timestamp: a retransmission, a looped packet) is a duplicate and dropped, the first stays;
one that overlaps another only in part (after an anchor moved) overwrites what it covers.
Placed starts are kept in a set until written, so a batch without duplicates costs one set
operation, not a check per packet.
"""

from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from callbridge.media.g711 import ALAW_DECODE, ULAW_DECODE
from callbridge.media.rtp import HEADER_SIZE, RtpPacket, unpack_header

__all__ = ["DECODERS", "Counts", "Run", "Track", "parse"]

SAMPLE_RATE: Final = 8000
#: A packet whose timestamp and arrival disagree by more than this (200 ms) re-anchors.
JUMP: Final = 1600
#: The drift average moves the anchor once it passes this (20 ms).
RECENTRE: Final = 160
#: Per packet, the drift average keeps this much of its value: a time constant of 400 packets.
_DRIFT_KEEP: Final = 1 - 1 / 400
_TS_HALF: Final = 1 << 31
_TS_MASK: Final = (1 << 32) - 1
#: The plain header's first octet: version 2, no padding, extension or CSRCs.
_PLAIN: Final = b"\x80"

Int64s = NDArray[np.int64]
Words = NDArray[np.uint32]
Pcm = NDArray[np.int16]
Flags = NDArray[np.bool_]
#: Bytes numpy and memoryview read in place: bytes, a bytearray, a slice of either's view.
Buffer = bytes | bytearray | memoryview


#: The codecs the recorder decodes, by SDP encoding name: code byte -> int16 sample.
DECODERS: Final = {"PCMU": ULAW_DECODE, "PCMA": ALAW_DECODE}


@dataclass(slots=True)
class Counts:
    """What became of the packets offered to a recording."""

    #: Written into the file (in whole or, straddling an edge, in part).
    packets: int = 0
    #: All their audio before what was already written, or past the end.
    late: int = 0
    #: A packet of the same leg already started at their first sample (same timestamp).
    duplicates: int = 0
    #: A codec other than PCMU and PCMA.
    unsupported: int = 0
    #: Not RTP: too short, RTCP, CSRC/extension/padding lengths that do not fit, no payload.
    malformed: int = 0
    #: New anchors taken on a leg that had one (a new SSRC, a timestamp jump).
    reanchored: int = 0
    #: Anchors moved to follow the sender's clock drift.
    recentred: int = 0


@dataclass(frozen=True, slots=True)
class Run:
    """Parsed packets of one leg: per packet its RTP timestamp, SSRC and arrival position,
    and its decoded samples, packet after packet, in ``pcm``."""

    ts: Words
    ssrc: Words
    arrival: Int64s
    pcm: Pcm
    #: Samples per packet when every packet has as many, else 0.
    step: int
    #: The one SSRC of every packet, if they share one (else None: look at ``ssrc``).
    source: int | None = None
    #: With mixed lengths: packet k's samples are ``pcm[offsets[k]:offsets[k + 1]]``.
    offsets: Int64s | None = None

    def bounds(self, i: int, j: int) -> tuple[int, int]:
        """Where packets ``i..j``'s samples lie in ``pcm``."""
        if self.offsets is None:
            return i * self.step, j * self.step
        return int(self.offsets[i]), int(self.offsets[j])

    def starts(self, i: int, j: int) -> Int64s:
        """Where each of packets ``i..j``'s samples start in ``pcm``, from packet i's."""
        if self.offsets is None:
            return np.arange(0, (j - i) * self.step, self.step, dtype=np.int64)
        offsets = self.offsets[i:j]
        return offsets - int(offsets[0])

    def sizes(self, i: int, j: int) -> Int64s:
        """Samples in each of packets ``i..j``."""
        if self.offsets is None:
            return np.full(j - i, self.step, dtype=np.int64)
        return np.diff(self.offsets[i : j + 1])


def parse(data: Buffer, sizes: Int64s, arrival: Int64s, table: Pcm,
          counts: Counts) -> Run | None:
    """Timestamps, SSRCs and ``table``-decoded payloads of the packets (at least one) held
    back to back in ``data``, ``sizes[k]`` bytes each, which arrived at ``arrival``; None if
    not one is usable."""
    n, size = len(sizes), int(sizes[0])
    if size > HEADER_SIZE and int(sizes.min()) == int(sizes.max()):
        rows = np.frombuffer(data, dtype=np.uint8).reshape(n, size)
        if rows[:, 0].tobytes() == _PLAIN * n:  # one bytes comparison, not two numpy calls
            header = rows[:, 4:HEADER_SIZE].copy().view(">u4")
            # take, not fancy indexing: a third less time; clip, as no code is out of range.
            pcm = table.take(rows[:, HEADER_SIZE:], mode="clip").reshape(-1)
            # One bytes comparison tells whether all SSRCs are the first one.
            one = rows[:, 8:HEADER_SIZE].tobytes() == rows[0, 8:HEADER_SIZE].tobytes() * n
            source = int(header[0, 1]) if one else None
            return Run(header[:, 0], header[:, 1], arrival, pcm, size - HEADER_SIZE, source)
    return _parse_each(data, sizes, arrival, table, counts)


def _parse_each(data: Buffer, sizes: Int64s, arrival: Int64s, table: Pcm,
                counts: Counts) -> Run | None:
    """`parse`, a packet at a time: CSRCs, extensions, padding, mixed lengths, junk."""
    kept: list[int] = []
    stamps: list[int] = []
    sources: list[int] = []
    payloads: list[bytes] = []
    view, start = memoryview(data), 0
    for k, size in enumerate(sizes.tolist()):
        packet_bytes = bytes(view[start:start + size])
        start += size
        try:
            if packet_bytes[:1] == _PLAIN:
                _, _, _, ts, ssrc = unpack_header(packet_bytes)
                payload = packet_bytes[HEADER_SIZE:]
            else:
                packet = RtpPacket.parse(packet_bytes)
                ts, ssrc, payload = packet.timestamp, packet.ssrc, packet.payload
        except ValueError:  # RtpError: not RTP, or lengths that do not fit
            continue
        if payload:
            kept.append(k)
            stamps.append(ts)
            sources.append(ssrc)
            payloads.append(payload)
    counts.malformed += len(sizes) - len(kept)
    if not kept:
        return None
    lengths = list(map(len, payloads))
    pcm = table.take(np.frombuffer(b"".join(payloads), dtype=np.uint8), mode="clip")
    offsets = None
    if len(set(lengths)) > 1:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
    return Run(
        np.array(stamps, dtype=np.uint32),
        np.array(sources, dtype=np.uint32),
        arrival[kept],
        pcm,
        0 if offsets is not None else lengths[0],
        sources[0] if len(set(sources)) == 1 else None,
        offsets,
    )


class _Anchor:
    """Where one SSRC's RTP clock meets the file: timestamp ``ts`` is file sample ``sample``."""

    __slots__ = ("drift", "sample", "ssrc", "ts")

    def __init__(self, ssrc: int, ts: int, sample: int) -> None:
        self.ssrc = ssrc
        self.ts = ts
        self.sample = sample
        #: Slow average of (timestamp position - arrival position), in samples.
        self.drift = 0.0

    def position(self, ts: int) -> int:
        return self.sample + ((ts - self.ts + _TS_HALF) & _TS_MASK) - _TS_HALF

    def positions(self, ts: Words) -> Int64s:
        # uint32 subtraction wraps modulo 2**32; read as int32 it is the signed distance.
        distance = (ts - np.uint32(self.ts)).view(np.int32)
        return np.add(distance, self.sample, dtype=np.int64)

    def fits(self, ssrc: int, ts: int, arrival: int) -> bool:
        return ssrc == self.ssrc and abs(self.position(ts) - arrival) <= JUMP


class _Timeline:
    """Decoded samples from the written edge on (index 0 is the first sample not yet
    written) as far as packets reach; silence where no packet is.

    Between flushes it holds only the audio placed past the written edge (about the jitter
    window's worth), not the room a batch needed: that is allocated while the batch is
    placed, on the worker, so a call keeps a few KB rather than a second of samples.
    """

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: Pcm = np.zeros(0, dtype=np.int16)

    def reserve(self, size: int) -> None:
        old = len(self.samples)
        if size > old:
            self.samples = np.concatenate((self.samples, np.zeros(size - old, np.int16)))

    def pop(self, column: NDArray[np.int16 | np.int32], count: int, add: bool) -> None:
        """Copy (or ``add``) the first ``count`` samples into ``column``, as far as there
        are any, and forget them."""
        samples = self.samples
        if add:
            column[: len(samples)] += samples[:count]
        else:
            column[: len(samples)] = samples[:count]
        self.samples = samples[count:].copy()


class Track:
    """One leg in the recording: its anchors and its samples waiting to be written.

    `place` pastes a batch into the timeline, `render` hands the next samples to the file.
    ``edge`` is always the file's written edge (its first unwritten sample).
    """

    __slots__ = ("anchor", "pending", "previous", "timeline", "top")

    def __init__(self) -> None:
        self.anchor: _Anchor | None = None
        self.previous: _Anchor | None = None
        self.timeline = _Timeline()
        #: Start positions of the packets placed and not yet written, as (highest, all) per
        #: paste: to tell duplicates, and what a close must count as late.
        self.pending: deque[tuple[int, Int64s]] = deque()
        #: The highest start placed so far: a batch wholly after it holds no duplicate.
        self.top = -1

    def place(self, run: Run, edge: int, limit: int | None, counts: Counts) -> None:
        """Paste ``run``; audio at or past ``limit`` (the end, if known) is late."""
        i, n = 0, len(run.arrival)
        while i < n:  # one pass per anchor the run needs: once, bar jumps
            anchor, fresh = self._anchor_for(run, i, counts)
            positions = anchor.positions(run.ts[i:])
            disagreement = positions - run.arrival[i:]
            ordered = np.sort(disagreement)
            if ordered[0] >= -JUMP and ordered[-1] <= JUMP and run.source == anchor.ssrc:
                count = n - i  # the usual case: the anchor fits them all
            else:
                count = _fitting(disagreement, run.ssrc[i:], anchor.ssrc)
                positions, disagreement = positions[:count], disagreement[:count]
                ordered = np.sort(disagreement)
            offset = int(ordered[count // 2])  # the median
            if fresh:
                anchor.sample -= offset
                positions -= offset
            else:
                gain = 1 - _DRIFT_KEEP**count
                anchor.drift += gain * (offset - anchor.drift)
            self._paste(positions, run, i, i + count, edge, limit, counts)
            # Re-based on the last packet, the modulo-2**32 distance never wraps.
            anchor.ts, anchor.sample = int(run.ts[i + count - 1]), int(positions[-1])
            if abs(anchor.drift) > RECENTRE:
                anchor.sample -= round(anchor.drift)
                anchor.drift = 0.0
                counts.recentred += 1
            i += count

    def render(
        self, column: NDArray[np.int16 | np.int32], count: int, edge: int, add: bool = False
    ) -> None:
        """Copy (or ``add``) the next ``count`` samples into ``column`` (untouched past the
        audio placed) and forget them; ``edge`` is the written edge after them."""
        self.timeline.pop(column, count, add)
        pending = self.pending
        while pending and pending[0][0] < edge:
            pending.popleft()

    def unwritten(self, edge: int) -> int:
        """Packets placed that start at or past ``edge``: at the close, those past the end."""
        return sum(int(np.count_nonzero(starts >= edge)) for _, starts in self.pending)

    def _anchor_for(self, run: Run, i: int, counts: Counts) -> tuple[_Anchor, bool]:
        """An anchor that fits packet ``i``, the current or the one before, or a new one
        taken from its arrival; and whether it is new."""
        ssrc, ts, arrival = int(run.ssrc[i]), int(run.ts[i]), int(run.arrival[i])
        current, previous = self.anchor, self.previous
        if current is not None and current.fits(ssrc, ts, arrival):
            return current, False
        if previous is not None and previous.fits(ssrc, ts, arrival):
            self.anchor, self.previous = previous, current
            return previous, False
        if current is not None:
            counts.reanchored += 1
        self.anchor, self.previous = _Anchor(ssrc, ts, arrival), current
        return self.anchor, True

    def _paste(
        self,
        positions: Int64s,
        run: Run,
        i: int,
        j: int,
        edge: int,
        limit: int | None,
        counts: Counts,
    ) -> None:
        """Packets ``i..j`` of ``run`` at file ``positions``: late, duplicate or pasted."""
        step, n = run.step, j - i
        first, last = int(positions[0]), int(positions[-1])
        # In order and nothing lost, the usual case: one block of samples.
        block = bool(step) and last - first == (n - 1) * step
        if block and n > 1:
            block = bool(((positions[1:] - positions[:-1]) == step).all())
        low, top = (first, last) if block else (int(positions.min()), int(positions.max()))
        high = top + step if step else int((positions + run.sizes(i, j)).max())
        end = high if limit is None else min(high, limit)
        if end <= edge:
            counts.late += n
            return
        self.timeline.reserve(end - edge)
        keep = None if block and low > self.top else self._new_ones(positions)
        kept: Int64s | None = None
        if step and low >= edge and end == high:  # nothing cut off at either end
            if block and keep is None:
                start, stop = run.bounds(i, j)
                self.timeline.samples[low - edge : high - edge] = run.pcm[start:stop]
                kept = positions
            else:
                rows, phase = np.divmod(positions - low, step)
                if not phase.any():
                    kept = self._paste_rows(positions, rows, keep, low - edge, run, i, j)
        if kept is None:
            kept = self._paste_samples(positions, keep, run, i, j, edge, end, counts)
        counts.packets += len(kept)
        counts.duplicates += n - len(kept)  # _paste_samples took the late out of kept
        self.pending.append((top, kept))
        self.top = max(self.top, top)

    def _new_ones(self, positions: Int64s) -> Flags | None:
        """Which packets to keep: those that start where no packet of the leg placed
        before, or earlier in the batch, starts (the same RTP timestamp: a duplicate); None
        for all. A few set operations in C for a batch without duplicates."""
        starts = positions.tolist()
        unique = set(starts)
        placed = set().union(*(kept.tolist() for _, kept in self.pending))
        if len(unique) == len(starts) and placed.isdisjoint(unique):
            return None
        taken = placed
        keep = []
        for start in starts:  # only with duplicates about
            keep.append(start not in taken)
            taken.add(start)
        return np.array(keep, dtype=np.bool_)

    def _paste_rows(
        self,
        positions: Int64s,
        rows: Int64s,
        keep: Flags | None,
        base: int,
        run: Run,
        i: int,
        j: int,
    ) -> Int64s:
        """Packets of one length at ``base + rows * step`` in the timeline, all inside it,
        pasted as rows of a 2-D view; only those to ``keep`` (None: all). Returns the
        positions kept."""
        step, samples = run.step, self.timeline.samples
        phase, first_row = base % step, base // step
        span = phase + (first_row + int(rows.max()) + 1) * step
        grid = samples[phase:span].reshape(-1, step)
        start, stop = run.bounds(i, j)
        pcm = run.pcm[start:stop].reshape(-1, step)
        rows = rows + first_row
        if keep is not None:
            rows, pcm, positions = rows[keep], pcm[keep], positions[keep]
        grid[rows] = pcm
        return positions

    def _paste_samples(
        self,
        positions: Int64s,
        keep: Flags | None,
        run: Run,
        i: int,
        j: int,
        edge: int,
        end: int,
        counts: Counts,
    ) -> Int64s:
        """The general case, a sample at a time: mixed lengths, several phases, packets
        straddling the written edge or the end (their parts outside are cut off); only
        those to ``keep`` (None: all). Returns the positions kept; counts the late ones."""
        samples, size = self.timeline.samples, end - edge
        lengths = run.sizes(i, j)
        live = (positions + lengths > edge) & (positions < end)
        late = j - i - int(np.count_nonzero(live))
        counts.late += late
        counts.duplicates -= late  # _paste counts whatever is not kept as a duplicate
        keep = live if keep is None else keep & live
        start, stop = run.bounds(i, j)
        # Timeline index of every decoded sample of the run.
        index = np.repeat(positions - edge - run.starts(i, j), lengths)
        index += np.arange(stop - start)
        wanted = np.repeat(keep, lengths) & (index >= 0) & (index < size)
        samples[index[wanted]] = run.pcm[start:stop][wanted]
        return positions[keep]


def _fitting(disagreement: Int64s, ssrc: Words, source: int) -> int:
    """How many packets, from the first, the anchor fits: same SSRC, within JUMP."""
    broken = (np.abs(disagreement) > JUMP) | (ssrc != source)
    if not broken.any():
        return len(disagreement)
    return int(broken.argmax())  # the anchor fits the first packet, so this is >= 1
