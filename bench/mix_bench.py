"""Conference mixer throughput: ticks per second for 3, 5 and 10 participants.

One tick mixes one 20 ms frame per participant, so real time needs 50 ticks/s per
conference; the figure divided by 50 is roughly how many such conferences one core mixes.
Prints figures only (no asserts): `.venv/bin/python bench/mix_bench.py [seconds]`.
"""

import sys
import time

import numpy as np

from callbridge.media.mixer import FRAME_SAMPLES, Mixer

REAL_TIME_TICKS = 50  # 20 ms frames


def ticks_per_second(participants: int, seconds: float) -> float:
    rng = np.random.default_rng(participants)
    frames: dict[int, np.ndarray | None] = {
        key: rng.integers(-8000, 8000, FRAME_SAMPLES, dtype=np.int16) for key in range(participants)
    }
    frames[0] = None  # one participant silent, as in a real conference
    mixer = Mixer()
    ticks = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            mixer.mix(frames)
        ticks += 100
    return ticks / (time.perf_counter() - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print(f"{'participants':>12} {'ticks/s':>10} {'us/tick':>8} {'real-time conferences':>22}")
    for participants in (3, 5, 10):
        rate = ticks_per_second(participants, seconds)
        print(
            f"{participants:>12} {rate:>10.0f} {1e6 / rate:>8.1f} {rate / REAL_TIME_TICKS:>22.0f}"
        )


if __name__ == "__main__":
    main()
