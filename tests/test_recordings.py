"""The call recorder: synthetic G.711 streams on a fake clock in, a real WAV file out.

Arrival times are made up (the recorder reads no clock but the injected ``now``), the writes
run on a real thread pool, and the result is read back with soundfile and checked by FFT.
"""

import asyncio
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from callbridge.media.g711 import alaw_encode, ulaw_encode
from callbridge.recordings.recorder import (
    FRAME_SAMPLES,
    Channel,
    FinishedRecording,
    Recorder,
    RecordingError,
)

START = 1000.0  # the bridge time, in loop time
RATE = 8000
#: (arrival, leg, payload, codec)
Packet = tuple[float, str, bytes, str]


class Clock:
    def __init__(self, t: float = START) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class InlineExecutor(Executor):
    """Runs each job at once on the caller's thread: for tests that step a fake loop."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "Future[Any]":
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def tone(freq: float, seconds: float, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def encode(pcm: np.ndarray, codec: str) -> bytes:
    return ulaw_encode(pcm) if codec == "PCMU" else alaw_encode(pcm)


def stream(
    leg: str,
    codec: str,
    pcm: np.ndarray,
    *,
    first: float = 0.0,
    offset: float = 0.007,
    jitter: Callable[[int], float] = lambda k: 0.0,
) -> list[Packet]:
    """``pcm`` as 20 ms packets of ``leg``, the k-th sent at ``first + k * 20 ms`` after the
    bridge and arriving ``offset + jitter(k)`` later."""
    codes = encode(pcm, codec)
    return [
        (
            START + first + k * 0.020 + offset + jitter(k),
            leg,
            codes[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES],
            codec,
        )
        for k in range(len(codes) // FRAME_SAMPLES)
    ]


def recorder(path: Path, clock: Clock, executor: Executor, **options: Any) -> Recorder:
    options.setdefault("left_legs", {"agent"})
    return Recorder(path, start=START, executor=executor, now=clock, **options)


def play(rec: Recorder, clock: Clock, packets: list[Packet], end: float) -> FinishedRecording:
    """Deliver ``packets`` in arrival order, flushing once a second of call time as the owner
    does, then close at ``START + end``."""
    futures = []
    next_flush = START + 1.0
    for arrival, leg, payload, codec in sorted(packets, key=lambda p: p[0]):
        while arrival >= next_flush:
            clock.t = next_flush
            futures.append(rec.flush())
            next_flush += 1.0
        clock.t = arrival
        rec.on_audio(leg, payload, codec, arrival)
    clock.t = START + end
    result = asyncio.run(rec.close(START + end))
    for future in futures:  # a drain may still be finishing on another pool thread
        assert future is not None
        assert future.result(timeout=10) is None
    return result


def read(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="int16", always_2d=True)
    assert rate == RATE
    assert data.shape[1] == 2
    return data


def peak(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * RATE / len(samples)


def level(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def frames_with_sound(channel: np.ndarray) -> int:
    frames = channel[: len(channel) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    return int(np.count_nonzero(np.abs(frames).max(axis=1) > 100))


def test_agent_left_customer_right_as_stereo_pcm16_wav(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    packets = stream("agent", "PCMU", tone(440, 3.0)) + stream("cust", "PCMA", tone(1000, 3.0))
    result = play(recorder(path, clock, pool), clock, packets, end=3.0)

    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "WAV",
        "PCM_16",
        8000,
        2,
    )
    data = read(path)
    assert abs(len(data) / RATE - 3.0) <= 0.020
    assert result.duration == pytest.approx(len(data) / RATE)
    assert result.packets == 300
    assert peak(data[:, 0]) == pytest.approx(440, abs=3)
    assert peak(data[:, 1]) == pytest.approx(1000, abs=3)
    # No bleed: each channel is one leg only.
    left_spectrum = np.abs(np.fft.rfft(data[:, 0]))
    assert left_spectrum[1000 * len(data) // RATE] < left_spectrum.max() / 100


def test_silence_where_a_leg_is_absent_and_audio_at_its_wall_clock_time(
    tmp_path: Path, pool: Executor
) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    # The customer talks from 1.5 s to 2.5 s of a 4 s call; the agent says nothing at all.
    packets = stream("cust", "PCMA", tone(1000, 1.0), first=1.5, offset=0.002)
    result = play(recorder(path, clock, pool), clock, packets, end=4.0)

    data = read(path)
    assert len(data) == 4 * RATE
    assert result.duration == 4.0
    assert not data[:, 0].any()
    right = data[:, 1]
    loud = np.flatnonzero(np.abs(right) > 100)
    # Placed at its arrival time to within a frame, on both ends.
    assert abs(loud[0] - 1.5 * RATE) <= FRAME_SAMPLES
    assert abs(loud[-1] - 2.5 * RATE) <= FRAME_SAMPLES
    assert not right[: int(1.4 * RATE)].any()
    assert not right[int(2.6 * RATE) :].any()


def test_loss_and_reordering_keep_the_length(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rng = np.random.default_rng(7)
    seconds = 10.0
    packets = stream("agent", "PCMU", tone(440, seconds)) + stream(
        "cust", "PCMA", tone(1000, seconds)
    )
    lost = rng.random(len(packets)) < 0.05
    # Each packet delayed by 0-60 ms: delivered out of order within a 60 ms window.
    survivors = [
        (arrival + rng.uniform(0.0, 0.060), leg, payload, codec)
        for (arrival, leg, payload, codec), gone in zip(packets, lost, strict=True)
        if not gone
    ]
    assert sorted(survivors) != survivors  # the shuffle really reorders
    result = play(recorder(path, clock, pool), clock, survivors, end=seconds)

    data = read(path)
    assert abs(len(data) / RATE - seconds) <= 0.040
    assert result.late + result.duplicates + result.packets == len(survivors)
    for channel, freq in ((0, 440), (1, 1000)):
        assert peak(data[:, channel]) == pytest.approx(freq, abs=3)
        # Placed by arrival alone, about 3 packets in 10 collide in a slot at this much
        # jitter and are dropped (the first is kept): the price of having no RTP timestamps.
        assert frames_with_sound(data[:, channel]) >= 0.5 * seconds * 50


def test_right_channel_legs_are_mixed(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    packets = (
        stream("agent", "PCMU", tone(440, 2.0))
        + stream("cust", "PCMA", tone(1000, 2.0), offset=0.004)
        + stream("third", "PCMU", tone(1500, 2.0), offset=0.013)
    )
    play(recorder(path, clock, pool), clock, packets, end=2.0)

    right = read(path)[:, 1]
    spectrum = np.abs(np.fft.rfft(right * np.hanning(len(right))))
    bins = {f: spectrum[f * len(right) // RATE] for f in (440, 1000, 1500)}
    assert bins[1000] > 0.5 * spectrum.max()
    assert bins[1500] > 0.5 * spectrum.max()
    assert bins[440] < spectrum.max() / 100
    # Summed: louder than either leg alone.
    assert level(right[RATE:]) > 1.2 * level(tone(1000, 1.0))


def test_mixing_saturates_instead_of_wrapping(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    loud = np.full(RATE, 30000, dtype=np.int16)
    packets = stream("cust", "PCMU", loud) + stream("third", "PCMA", loud, offset=0.011)
    play(recorder(path, clock, pool), clock, packets, end=1.0)

    right = read(path)[FRAME_SAMPLES:-FRAME_SAMPLES, 1]
    assert (right == 32767).all()


def test_arrivals_near_a_slot_boundary_lose_nothing(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rng = np.random.default_rng(3)
    jitter = rng.uniform(-0.0005, 0.0005, 250)
    # Packets arrive 19.9 ms into their slot, give or take half a millisecond: cut with int()
    # they would keep spilling into the next slot and colliding there.
    packets = stream("agent", "PCMU", tone(440, 5.0), offset=0.0199, jitter=lambda k: jitter[k])
    result = play(recorder(path, clock, pool), clock, packets, end=5.1)

    assert (result.packets, result.duplicates, result.late) == (250, 0, 0)
    assert frames_with_sound(read(path)[:, 0]) == 250


def test_a_late_packet_for_a_written_slot_is_dropped(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    packets = stream("agent", "PCMU", tone(440, 2.0))
    missing = packets.pop(10)
    for arrival, leg, payload, codec in packets[:75]:
        rec.on_audio(leg, payload, codec, arrival)
    clock.t = START + 1.5
    assert rec.flush() is not None
    rec.on_audio("agent", missing[2], "PCMU", missing[0])  # slot 10: written at 1.3 s
    for arrival, leg, payload, codec in packets[75:]:
        rec.on_audio(leg, payload, codec, arrival)
    result = asyncio.run(rec.close(START + 2.0))

    assert (result.late, result.packets) == (1, 99)
    left = read(path)[:, 0]
    assert not left[10 * FRAME_SAMPLES : 11 * FRAME_SAMPLES].any()
    assert frames_with_sound(left) == 99


def test_a_second_packet_for_a_slot_is_dropped_first_kept(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    first = stream("agent", "PCMU", tone(440, 0.02), offset=0.010)[0]
    rec.on_audio("agent", first[2], "PCMU", first[0])
    rec.on_audio("agent", ulaw_encode(np.full(160, 20000, np.int16)), "PCMU", first[0] + 0.001)
    result = asyncio.run(rec.close(START + 0.1))

    assert (result.packets, result.duplicates) == (1, 1)
    left = read(path)[:FRAME_SAMPLES, 0]
    assert np.abs(left).max() < 9000  # the tone, not the 20000 level of the duplicate


def test_flush_waits_out_the_jitter_window_and_keeps_the_header_current(
    tmp_path: Path, pool: Executor
) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    packets = stream("agent", "PCMU", tone(440, 2.0))
    straggler = packets.pop(45)
    for arrival, leg, payload, codec in packets[:49]:
        rec.on_audio(leg, payload, codec, arrival)
    clock.t = START + 1.0
    future = rec.flush()
    assert future is not None
    future.result()
    # Written up to now - 200 ms; the header, read while the file is open, says so.
    assert sf.info(path).frames == 40 * FRAME_SAMPLES
    # A straggler for slot 45, handed over after that flush, is within the window: it lands.
    rec.on_audio("agent", straggler[2], "PCMU", straggler[0])
    result = rec.close_now(START + 1.0)
    assert (result.packets, result.late) == (50, 0)
    assert frames_with_sound(read(path)[:, 0]) == 50


def test_close_is_idempotent(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    packets = stream("agent", "PCMU", tone(440, 1.0))
    for arrival, leg, payload, codec in packets:
        rec.on_audio(leg, payload, codec, arrival)

    async def close_twice_at_once() -> tuple[FinishedRecording, FinishedRecording]:
        first, second = await asyncio.gather(rec.close(START + 1.0), rec.close(START + 9.0))
        return first, second

    first, second = asyncio.run(close_twice_at_once())
    content = path.read_bytes()
    third = asyncio.run(rec.close(START + 5.0))
    rec.on_audio("agent", packets[0][2], "PCMU", START + 1.01)  # ignored once closed
    assert rec.flush() is None
    fourth = rec.close_now()
    assert first == second == third == fourth
    assert first.duration == 1.0
    assert path.read_bytes() == content


def test_close_now_without_an_event_loop(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock(START + 2.5)
    rec = recorder(path, clock, pool)
    for arrival, leg, payload, codec in stream("agent", "PCMU", tone(440, 1.0)):
        rec.on_audio(leg, payload, codec, arrival)
    result = rec.close_now()  # end defaults to now()

    assert result.duration == 2.5
    assert len(read(path)) == 2.5 * RATE
    assert asyncio.run(rec.close()) == result


def test_a_call_without_audio_is_silence_of_its_length(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "sub" / "dir" / "call.wav"  # the directory is created
    clock = Clock()
    result = asyncio.run(recorder(path, clock, pool).close(START + 25.0))
    data = read(path)
    assert result == FinishedRecording(path, 25.0, 0, 0, 0, 0)
    assert len(data) == 25 * RATE
    assert not data.any()


def test_odd_payload_sizes_and_codecs(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    codes = ulaw_encode(tone(440, 0.1))
    rec.on_audio("agent", codes[:80], "PCMU", START + 0.010)  # 10 ms: padded with silence
    rec.on_audio("agent", codes[:240], "PCMU", START + 0.030)  # 30 ms: cut to one slot
    rec.on_audio("cust", b"\x00" * 160, "G722", START + 0.010)
    result = asyncio.run(rec.close(START + 0.1))

    assert (result.packets, result.unsupported) == (2, 1)
    left = read(path)[:, 0]
    assert len(left) == 800
    assert np.abs(left[80:160]).max() <= 8
    assert left[160:320].any()
    assert not left[320:].any()


def test_channel_policy(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()

    def policy(leg: str) -> Channel:
        return "left" if leg.startswith("agent") else "right"

    rec = recorder(path, clock, pool, left_legs=(), channel_of=policy)
    packets = stream("agent-browser", "PCMA", tone(440, 1.0)) + stream(
        "cust", "PCMU", tone(1000, 1.0)
    )
    play(rec, clock, packets, end=1.0)
    data = read(path)
    assert peak(data[:, 0]) == pytest.approx(440, abs=5)
    assert peak(data[:, 1]) == pytest.approx(1000, abs=5)

    with pytest.raises(ValueError, match="not both"):
        recorder(path, clock, pool, left_legs={"a"}, channel_of=policy)
    bad = recorder(tmp_path / "bad.wav", clock, pool, left_legs=(), channel_of=lambda _: "centre")
    with pytest.raises(ValueError, match="centre"):
        bad.on_audio("x", b"\xff" * 160, "PCMU", START)


def test_flush_every_schedules_itself_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()

    class FakeLoop:
        def __init__(self) -> None:
            self.calls: list[tuple[float, Callable[[], None]]] = []
            self.cancelled = 0

        def call_later(self, delay: float, callback: Callable[[], None]) -> "FakeLoop":
            self.calls.append((delay, callback))
            return self

        def cancel(self) -> None:
            self.cancelled += 1

    loop = FakeLoop()
    rec = recorder(path, clock, InlineExecutor())
    rec.flush_every(loop, interval=1.0)  # type: ignore[arg-type]
    for arrival, leg, payload, codec in stream("agent", "PCMU", tone(440, 1.0)):
        rec.on_audio(leg, payload, codec, arrival)
    clock.t = START + 1.0
    delay, tick = loop.calls[-1]
    tick()
    assert delay == 1.0
    assert len(loop.calls) == 2  # re-armed
    assert sf.info(path).frames == 40 * FRAME_SAMPLES
    rec.close_now()
    assert loop.cancelled == 1


def test_a_failed_recording_raises_on_every_close(tmp_path: Path, pool: Executor) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = blocker / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    for arrival, leg, payload, codec in stream("agent", "PCMU", tone(440, 2.0)):
        rec.on_audio(leg, payload, codec, arrival)
    clock.t = START + 1.5
    future = rec.flush()
    assert future is not None
    assert future.exception() is None  # kept for close, not lost in a future nobody reads
    for _ in range(2):
        with pytest.raises(RecordingError) as info:
            asyncio.run(rec.close(START + 2.0))
        assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(RecordingError):
        rec.close_now()
    assert not os.path.exists(path)
