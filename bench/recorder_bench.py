"""Call recorder costs: `on_audio` per packet (the event loop's share) and the worker's CPU
per packet (parsing, placing, decoding, mixing and writing a second of call at a time).

Feeds whole RTP datagrams, as the bridge does: two-leg calls, a 440 Hz agent (PCMU, left)
and a 1 kHz customer (PCMA, right), 20 ms packets, ``--calls`` of them recorded at once
(400 by default, as bench/relay.py's target) and each flushed once a second of call time.
Many calls at once matter: a recorder's state and its file go cold in the caches between
two of its flushes, as they do in the server, so one call alone looks several times cheaper
than it is. Three feeds: ``plain`` (steady arrivals), ``jitter`` (arrivals shuffled by
+-60 ms) and ``csrc`` (every packet carries a CSRC: the worker's per-packet path).

The worker's figures are thread CPU time (``time.thread_time``) of the flushes, run inline
on this thread, once every file is open (a call's open and close, once per call, are
printed apart); "% of a core" is what the calls' 100 packets/s each cost the worker in that
steady state. Prints figures only (no asserts):
`.venv/bin/python bench/recorder_bench.py [--calls 400] [--seconds 8]`.
"""

import argparse
import struct
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import numpy as np

from callbridge.media.g711 import alaw_encode, ulaw_encode
from callbridge.recordings.recorder import (
    FRAME_SAMPLES,
    FinishedRecording,
    Recorder,
    ThreadWriters,
)

RATE = 8000
START = 1000.0
#: (arrival, leg, datagram, codec)
Feed = list[tuple[float, str, bytes, str]]


class InlineExecutor(Executor):
    """Runs the worker's jobs on the calling thread, so they can be timed."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "Future[Any]":
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def sine(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def packets(seconds: float, kind: str = "plain") -> Feed:
    """A two-leg call as the relay hands it over, in arrival order."""
    rng = np.random.default_rng(1)
    legs = (
        ("agent", "PCMU", 0, ulaw_encode(sine(440, seconds))),
        ("customer", "PCMA", 8, alaw_encode(sine(1000, seconds))),
    )
    out = []
    for ssrc, (leg, codec, pt, codes) in enumerate(legs, start=0x1000):
        for k in range(len(codes) // FRAME_SAMPLES):
            payload = codes[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES]
            if kind == "csrc":
                header = struct.pack("!BBHIII", 0x81, pt, k & 0xFFFF, k * 160, ssrc, 7)
            else:
                header = struct.pack("!BBHII", 0x80, pt, k & 0xFFFF, k * 160, ssrc)
            delay = 0.065 + (rng.uniform(-0.06, 0.06) if kind == "jitter" else 0.0)
            out.append((START + k * 0.02 + delay, leg, header + payload, codec))
    out.sort(key=lambda p: p[0])
    return out


def recorder(path: Path, clock: Callable[[], float]) -> Recorder:
    return Recorder(
        path, start=START, writers=ThreadWriters(InlineExecutor()), now=clock,
        left_legs={"agent"}
    )


def on_audio_cost(feed: Feed, directory: Path) -> float:
    """Seconds per on_audio call, packets appended as the relay would, no flushing."""
    rec = recorder(directory / "unused.wav", lambda: START)
    on_audio = rec.on_audio
    begin = time.perf_counter()
    for arrival, leg, data, codec in feed:
        on_audio(leg, data, codec, arrival)
    return (time.perf_counter() - begin) / len(feed)


def worker_cost(
    feed: Feed, calls: int, seconds: int, directory: Path
) -> tuple[float, float, FinishedRecording]:
    """Worker CPU for ``calls`` calls of ``seconds`` each, recorded at once (every call gets
    the same packets): seconds per packet in the steady state (the flushes after the first
    two, when every file is open), seconds per call to open and close the file; and the
    first call's counts."""
    clock = [START]
    recs = [recorder(directory / f"call-{n}.wav", lambda: clock[0]) for n in range(calls)]
    steady = fixed = 0.0
    index = measured = 0
    for second in range(1, seconds + 1):
        stop = index
        while stop < len(feed) and feed[stop][0] < START + second:
            stop += 1
        for rec in recs:
            for arrival, leg, data, codec in feed[index:stop]:
                rec.on_audio(leg, data, codec, arrival)
        clock[0] = START + second
        begin = time.thread_time()
        for rec in recs:
            rec.flush()
        if second > 2:
            steady += time.thread_time() - begin
            measured += stop - index
        else:  # the first flushes open the files
            fixed += time.thread_time() - begin
        index = stop
    for rec in recs:
        for arrival, leg, data, codec in feed[index:]:
            rec.on_audio(leg, data, codec, arrival)
    begin = time.thread_time()
    results = [rec.close_now(START + seconds + 0.2) for rec in recs]
    fixed += time.thread_time() - begin
    for path in directory.glob("call-*.wav"):
        path.unlink()
    return steady / (measured * calls), fixed / calls, results[0]


def baseline() -> float:
    """Seconds for one small numpy call, to compare figures across machines and loads."""
    values = np.zeros(50)
    best = float("inf")
    for _ in range(5):
        begin = time.perf_counter()
        for _ in range(10_000):
            values + 1
        best = min(best, (time.perf_counter() - begin) / 10_000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls recorded at once")
    parser.add_argument("--seconds", type=int, default=8, help="call length")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        plain = packets(args.seconds)
        per_call = min(on_audio_cost(plain * 20, directory) for _ in range(5))
        print(f"on_audio (loop side): {per_call * 1e9:.0f} ns/packet, best of 5")
        print(
            f"worker, {args.calls} two-leg calls of {args.seconds} s recorded at once, "
            f"flushed every second, best of {args.rounds}:"
        )
        for kind in ("plain", "jitter", "csrc"):
            feed = plain if kind == "plain" else packets(args.seconds, kind)
            per_packet, per_call, result = min(
                (worker_cost(feed, args.calls, args.seconds, directory)
                 for _ in range(args.rounds)),
                key=lambda r: r[0],
            )
            print(
                f"  {kind:6}  {per_packet * 1e6:5.2f} us/packet  "
                f"{per_packet * 50 * 1e6:4.0f} us per flush per leg  "
                f"{args.calls} calls: {per_packet * args.calls * 100 * 100:4.1f}% of a core  "
                f"(a call: written {result.packets}/{len(feed)}, late {result.late}, "
                f"duplicates {result.duplicates}; its file's open and close: "
                f"{per_call * 1e3:.1f} ms)"
            )
        print(f"this machine: a 50-element numpy add takes {baseline() * 1e6:.2f} us")


if __name__ == "__main__":
    main()
