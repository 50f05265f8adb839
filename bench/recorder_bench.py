"""Call recorder costs: `on_audio` per packet (the event loop's share) and the worker's flush
throughput (placing, decoding, mixing and writing a second of call at a time).

A call sends 50 packets/s per leg; the flush figure in call-seconds per second is roughly how
many two-leg calls one core records in real time. Prints figures only (no asserts):
`.venv/bin/python bench/recorder_bench.py [call_seconds]`.
"""

import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import numpy as np

from callbridge.media.g711 import alaw_encode, ulaw_encode
from callbridge.recordings.recorder import FRAME_SAMPLES, Recorder

RATE = 8000
START = 1000.0


class InlineExecutor(Executor):
    """Runs the worker's jobs on the calling thread, so they can be timed."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "Future[Any]":
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def packets(seconds: float) -> list[tuple[float, str, bytes, str]]:
    """A two-leg call: a 440 Hz agent (PCMU) and a 1 kHz customer (PCMA), 20 ms packets."""
    t = np.arange(int(seconds * RATE)) / RATE
    agent = ulaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    customer = alaw_encode((8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))
    out = []
    for k in range(len(agent) // FRAME_SAMPLES):
        frame = slice(k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES)
        out.append((START + k * 0.02 + 0.005, "agent", agent[frame], "PCMU"))
        out.append((START + k * 0.02 + 0.008, "customer", customer[frame], "PCMA"))
    return out


def on_audio_cost(feed: list[tuple[float, str, bytes, str]], directory: Path) -> float:
    """Seconds per on_audio call, packets appended as the relay would, no flushing."""
    rec = Recorder(
        directory / "unused.wav",
        start=START,
        executor=InlineExecutor(),
        now=lambda: START,
        left_legs={"agent"},
    )
    on_audio = rec.on_audio
    begin = time.perf_counter()
    for arrival, leg, payload, codec in feed:
        on_audio(leg, payload, codec, arrival)
    return (time.perf_counter() - begin) / len(feed)


def flush_cost(feed: list[tuple[float, str, bytes, str]], seconds: int, directory: Path) -> float:
    """Worker seconds spent on the flushes and the close of a ``seconds``-long call."""
    clock = [START]
    rec = Recorder(
        directory / "call.wav",
        start=START,
        executor=InlineExecutor(),
        now=lambda: clock[0],
        left_legs={"agent"},
    )
    busy = 0.0
    index = 0
    for second in range(1, seconds + 1):
        while index < len(feed) and feed[index][0] < START + second:
            arrival, leg, payload, codec = feed[index]
            rec.on_audio(leg, payload, codec, arrival)
            index += 1
        clock[0] = START + second
        begin = time.perf_counter()
        rec.flush()
        busy += time.perf_counter() - begin
    begin = time.perf_counter()
    rec.close_now(START + seconds)
    return busy + time.perf_counter() - begin


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    feed = packets(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        per_packet = min(on_audio_cost(feed, directory) for _ in range(5))
        worker = min(flush_cost(feed, seconds, directory) for _ in range(3))
    print(f"on_audio: {per_packet * 1e9:.0f} ns/packet ({len(feed)} packets, best of 5)")
    print(
        f"flush+close: {seconds}-s two-leg call in {worker * 1e3:.1f} ms of worker time: "
        f"{len(feed) / worker / 1e3:.0f} k packets/s, {seconds / worker:.0f} call-seconds/s "
        "(best of 3)"
    )


if __name__ == "__main__":
    main()
