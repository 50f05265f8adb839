"""The call recorder: synthetic RTP streams on a fake clock in, a real WAV file out.

Packets are real RTP datagrams (``RtpPacket.serialize``), handed over whole as the relay does.
Arrival times are made up (the recorder reads no clock but the injected ``now``), the writes
run on a real thread pool, and the result is read back with soundfile and compared with the
decoded stream sample for sample, or checked by FFT.
"""

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from callbridge.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.media.rtp import HeaderExtension, RtpPacket
from callbridge.recordings import placement
from callbridge.recordings.recorder import (
    FRAME_SAMPLES,
    Channel,
    FinishedRecording,
    Recorder,
    RecordingError,
    ThreadWriters,
)

START = 1000.0  # the bridge time, in loop time
RATE = 8000
#: (arrival, leg, datagram, codec)
Packet = tuple[float, str, bytes, str]
_PT = {"PCMU": 0, "PCMA": 8}


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


def decode(codes: bytes, codec: str) -> np.ndarray:
    return ulaw_decode(codes) if codec == "PCMU" else alaw_decode(codes)


def rtp(ts: int, payload: bytes, codec: str = "PCMU", **fields: Any) -> bytes:
    """One RTP datagram; ``fields`` are RtpPacket's (ssrc, csrc, extension, padding, ...)."""
    fields.setdefault("ssrc", 0x5EED)
    packet = RtpPacket(_PT[codec], timestamp=ts % 2**32, payload=payload, **fields)
    return packet.serialize()


def stream(
    leg: str,
    codec: str,
    pcm: np.ndarray,
    *,
    first: float = 0.0,
    offset: float = 0.007,
    jitter: Callable[[int], float] = lambda k: 0.0,
    ptime: float = 0.020,
    ts0: int = 12345,
    **fields: Any,
) -> list[Packet]:
    """``pcm`` as RTP packets of ``leg``, ``ptime`` each: the k-th has timestamp
    ``ts0 + k * samples``, is sent ``first + k * ptime`` after the bridge and arrives
    ``offset + jitter(k)`` later."""
    codes = encode(pcm, codec)
    size = round(ptime * RATE)
    return [
        (
            START + first + k * ptime + offset + jitter(k),
            leg,
            rtp(ts0 + k * size, codes[k * size : (k + 1) * size], codec, sequence_number=k,
                **fields),
            codec,
        )
        for k in range(len(codes) // size)
    ]


def recorder(path: Path, clock: Clock, executor: Executor, **options: Any) -> Recorder:
    options.setdefault("left_legs", {"agent"})
    return Recorder(path, start=START, writers=ThreadWriters(executor), now=clock, **options)


def feed(rec: Recorder, packets: list[Packet]) -> None:
    for arrival, leg, data, codec in packets:
        rec.on_audio(leg, data, codec, arrival)


def play(rec: Recorder, clock: Clock, packets: list[Packet], end: float) -> FinishedRecording:
    """Deliver ``packets`` in arrival order, flushing once a second of call time as the owner
    does, then close at ``START + end``."""
    futures = []
    next_flush = START + 1.0
    for arrival, leg, data, codec in sorted(packets, key=lambda p: p[0]):
        while arrival >= next_flush:
            clock.t = next_flush
            futures.append(rec.flush())
            next_flush += 1.0
        clock.t = arrival
        rec.on_audio(leg, data, codec, arrival)
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


def placed_at(channel: np.ndarray, expected: np.ndarray) -> int:
    """Where ``expected`` starts in ``channel``, checked sample for sample (and nothing else
    is in the channel)."""
    start = int(np.flatnonzero(channel)[0]) - int(np.flatnonzero(expected)[0])
    assert start >= 0
    np.testing.assert_array_equal(channel[start : start + len(expected)], expected)
    assert not channel[:start].any()
    assert not channel[start + len(expected) :].any()
    return start


def test_agent_left_customer_right_as_stereo_pcm16_wav(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    agent, customer = tone(440, 3.0), tone(1000, 3.0)
    packets = stream("agent", "PCMU", agent) + stream("cust", "PCMA", customer, ssrc=77)
    result = play(recorder(path, clock, pool), clock, packets, end=3.1)

    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "WAV",
        "PCM_16",
        8000,
        2,
    )
    data = read(path)
    assert abs(len(data) / RATE - 3.1) <= 0.020
    assert result.duration == pytest.approx(len(data) / RATE)
    assert (result.packets, result.late, result.duplicates, result.malformed) == (300, 0, 0, 0)
    # Each stream whole, where it arrived (7 ms after the bridge), and nothing else.
    assert placed_at(data[:, 0], decode(encode(agent, "PCMU"), "PCMU")) == 56
    assert placed_at(data[:, 1], decode(encode(customer, "PCMA"), "PCMA")) == 56
    assert peak(data[:, 0]) == pytest.approx(440, abs=3)
    assert peak(data[:, 1]) == pytest.approx(1000, abs=3)


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
    expected = decode(encode(tone(1000, 1.0), "PCMA"), "PCMA")
    assert placed_at(data[:, 1], expected) == round(1.502 * RATE)


def test_loss_and_reordering_keep_the_length(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rng = np.random.default_rng(7)
    seconds = 10.0
    packets = stream("agent", "PCMU", tone(440, seconds)) + stream(
        "cust", "PCMA", tone(1000, seconds), ssrc=77
    )
    lost = rng.random(len(packets)) < 0.05
    # Each packet delayed by 0-60 ms: delivered out of order within a 60 ms window.
    survivors = [
        (arrival + rng.uniform(0.0, 0.060), leg, data, codec)
        for (arrival, leg, data, codec), gone in zip(packets, lost, strict=True)
        if not gone
    ]
    assert sorted(survivors) != survivors  # the shuffle really reorders
    result = play(recorder(path, clock, pool), clock, survivors, end=seconds)

    data = read(path)
    assert abs(len(data) / RATE - seconds) <= 0.040
    # Placed by timestamp, nothing collides and nothing is late, bar the last packet or two
    # of each leg: at the median delay (30 ms) of their arrivals they lie past the 10 s end.
    assert result.packets + result.late == len(survivors)
    assert (result.duplicates, result.late <= 4) == (0, True)
    for channel, freq in ((0, 440), (1, 1000)):
        assert peak(data[:, channel]) == pytest.approx(freq, abs=3)
        assert frames_with_sound(data[:, channel]) >= 0.9 * seconds * 50


def test_heavy_jitter_moves_no_packet(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rng = np.random.default_rng(11)
    seconds = 10.0
    shake = rng.uniform(-0.060, 0.060, 500)
    agent, customer = tone(440, seconds), tone(1000, seconds)
    packets = stream("agent", "PCMU", agent, offset=0.1, jitter=lambda k: shake[k]) + stream(
        "cust", "PCMA", customer, offset=0.1, ssrc=77, jitter=lambda k: shake[::-1][k]
    )
    result = play(recorder(path, clock, pool), clock, packets, end=seconds + 0.3)

    assert (result.packets, result.late, result.duplicates) == (1000, 0, 0)
    data = read(path)
    # Both streams whole, sample for sample, within jitter of where they arrived.
    for channel, pcm, codec in ((0, agent, "PCMU"), (1, customer, "PCMA")):
        start = placed_at(data[:, channel], decode(encode(pcm, codec), codec))
        assert abs(start - 0.1 * RATE) <= 0.030 * RATE


@pytest.mark.parametrize("ptime", [0.010, 0.030])
def test_any_ptime_is_placed_exactly(tmp_path: Path, pool: Executor, ptime: float) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rng = np.random.default_rng(5)
    shake = rng.uniform(0, 0.040, 400)
    pcm = tone(440, 3.0)
    packets = stream("agent", "PCMU", pcm, ptime=ptime, offset=0.05, jitter=lambda k: shake[k])
    result = play(recorder(path, clock, pool), clock, packets, end=3.2)

    assert (result.packets, result.late, result.duplicates) == (len(packets), 0, 0)
    start = placed_at(read(path)[:, 0], decode(encode(pcm, "PCMU"), "PCMU"))
    assert abs(start - 0.07 * RATE) <= 0.030 * RATE


def test_timestamps_wrapping_around_2_to_the_32(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    pcm = tone(440, 2.0)
    packets = stream("agent", "PCMU", pcm, ts0=2**32 - 160 * 60)  # wraps at 1.2 s
    result = play(recorder(path, clock, pool), clock, packets, end=2.1)

    assert result.packets == 100
    assert placed_at(read(path)[:, 0], decode(encode(pcm, "PCMU"), "PCMU")) == 56


def test_a_new_ssrc_or_a_timestamp_jump_re_anchors_on_arrival(
    tmp_path: Path, pool: Executor, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    first, second, third = tone(440, 2.0), tone(1000, 2.0), tone(1500, 2.0)
    packets = (
        stream("agent", "PCMU", first, ts0=1000)
        # A new source (a forked answer, a restarted phone) from 2 s, numbering afresh...
        + stream("agent", "PCMU", second, first=2.0, ts0=3_000_000_000, ssrc=0xABC)
        # ...then the same source jumps its timestamps by an hour at 4 s.
        + stream("agent", "PCMU", third, first=4.0, ts0=3_000_000_000 + 16000 + 28_800_000,
                 ssrc=0xABC)
    )
    with caplog.at_level(logging.DEBUG, logger="callbridge.recordings.recorder"):
        result = play(recorder(path, clock, pool), clock, packets, end=6.1)

    assert (result.packets, result.late, result.duplicates) == (300, 0, 0)
    left = read(path)[:, 0]
    # Each part whole, at the time it arrived, not where its timestamps alone would put it.
    expected = decode(encode(np.concatenate((first, second, third)), "PCMU"), "PCMU")
    assert placed_at(left, expected) == 56
    assert sum("re-anchored" in r.getMessage() for r in caplog.records) == 2


def test_a_stray_timestamp_does_not_lose_the_stream(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    shake = np.random.default_rng(4).uniform(0, 0.040, 150)
    pcm = tone(440, 3.0)
    packets = stream("agent", "PCMU", pcm, offset=0.05, jitter=lambda k: shake[k])
    arrival, leg, _, codec = packets[70]
    stray = rtp(12345 + 70 * 160 + 500_000, encode(tone(1000, 0.02), "PCMU"))
    packets[70] = (arrival, leg, stray, codec)  # one packet with a corrupt timestamp
    result = play(recorder(path, clock, pool), clock, packets, end=3.2)

    assert result.packets == 150
    left = read(path)[:, 0]
    expected = decode(encode(pcm, "PCMU"), "PCMU")
    start = int(np.flatnonzero(left)[0]) - int(np.flatnonzero(expected)[0])
    # The stray lands where it arrived, over a packet or two of the stream; the stream
    # goes on with its own anchor, exact to the sample on both sides.
    np.testing.assert_array_equal(left[start : start + 68 * 160], expected[: 68 * 160])
    np.testing.assert_array_equal(left[start + 73 * 160 : start + 150 * 160], expected[73 * 160 :])


def test_sender_clock_drift_is_followed_within_40_ms(
    tmp_path: Path, pool: Executor, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rng = np.random.default_rng(3)
    seconds, fast = 60, 1.001  # the sender's clock runs 0.1% fast
    # Silence, with a 20 ms burst of tone at the start of every second of the sender's time.
    silence, burst = encode(np.zeros(160, np.int16), "PCMU"), encode(tone(1000, 0.02), "PCMU")
    packets = []
    for k in range(seconds * 50):
        sent = k * 0.020 / fast
        payload = burst if k % 50 == 0 else silence
        arrival = START + sent + 0.010 + rng.uniform(-0.002, 0.002)
        packets.append((arrival, "agent", rtp(k * 160, payload, sequence_number=k), "PCMU"))
    end = packets[-1][0] - START + 0.100
    with caplog.at_level(logging.DEBUG, logger="callbridge.recordings.recorder"):
        result = play(recorder(path, clock, pool), clock, packets, end=end)

    left = read(path)[:, 0]
    assert abs(len(left) / RATE - end) <= 0.020  # the file lasts as long as the call
    assert result.late == 0
    recentred = sum("re-centred" in r.getMessage() for r in caplog.records)
    assert 1 <= recentred <= 3  # about every 25 s
    found = 0
    for second in range(seconds):
        arrival = packets[second * 50][0] - START
        low = max(round((arrival - 0.1) * RATE), 0)
        loud = np.flatnonzero(np.abs(left[low : low + 1600]) > 100)
        # Each re-centre drops the 20 ms the fast sender ran ahead: maybe a burst.
        if len(loud):
            found += 1
            # Placed by timestamp alone, the last bursts would be ~60 ms early.
            assert abs(low + loud[0] - arrival * RATE) <= 0.040 * RATE, second
    assert found >= seconds - recentred


def test_csrcs_extensions_and_padding(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    pcm = tone(440, 2.0)
    packets = stream("agent", "PCMU", pcm)
    extension = HeaderExtension(0xBEDE, b"\x10\xaa\x00\x00")
    for k in range(0, 100, 3):  # every third packet from a mixer, with an extension, padded
        arrival, leg, data, codec = packets[k]
        original = RtpPacket.parse(data)
        original.csrc, original.extension, original.padding = (1, 2, 3), extension, 4
        packets[k] = (arrival, leg, original.serialize(), codec)
    result = play(recorder(path, clock, pool), clock, packets, end=2.1)

    assert (result.packets, result.malformed) == (100, 0)
    assert placed_at(read(path)[:, 0], decode(encode(pcm, "PCMU"), "PCMU")) == 56


def test_malformed_packets_are_counted_and_dropped(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    pcm = tone(440, 1.0)
    packets = stream("agent", "PCMU", pcm)
    good = packets[10][2]
    junk = [
        good[:8],  # shorter than the header
        good[:12],  # a header and no audio
        bytes([0x83]) + good[1:14],  # three CSRCs that are not there
        bytes([0x40]) + good[1:],  # RTP version 1
        bytes([0xA0]) + good[1:-1] + b"\x00",  # padding count zero
        bytes([0x80, 0xC8]) + good[2:28],  # an RTCP sender report (RFC 5761)
        bytes([0x90]) + good[1:12] + b"\xbe\xde\x00\x09" + good[16:20],  # extension too long
    ]
    arrival = packets[10][0]
    packets += [(arrival + 0.001, "agent", data, "PCMU") for data in junk]
    result = play(recorder(path, clock, pool), clock, packets, end=1.1)

    assert (result.packets, result.malformed, result.late, result.duplicates) == (50, 7, 0, 0)
    assert placed_at(read(path)[:, 0], decode(encode(pcm, "PCMU"), "PCMU")) == 56


def test_a_codec_change_mid_leg(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    pcm = tone(440, 2.0)
    # A re-INVITE switches the leg from PCMU to PCMA at 1 s; the stream goes on.
    packets = stream("agent", "PCMU", pcm[:RATE]) + stream(
        "agent", "PCMA", pcm[RATE:], first=1.0, ts0=12345 + RATE
    )
    result = play(recorder(path, clock, pool), clock, packets, end=2.1)

    assert result.packets == 100
    expected = np.concatenate(
        (decode(encode(pcm[:RATE], "PCMU"), "PCMU"), decode(encode(pcm[RATE:], "PCMA"), "PCMA"))
    )
    assert placed_at(read(path)[:, 0], expected) == 56


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


def test_a_late_packet_is_dropped_and_a_straddling_one_keeps_its_tail(
    tmp_path: Path, pool: Executor
) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    pcm = tone(440, 2.0)
    packets = stream("agent", "PCMU", pcm)  # packet k at samples 56 + 160 k
    held = {k: packets[k] for k in (10, 64)}
    feed(rec, [p for k, p in enumerate(packets[:75]) if k not in held])
    clock.t = START + 1.5
    future = rec.flush()  # writes up to 1.3 s: sample 10400, inside packet 64
    assert future is not None
    future.result()
    feed(rec, list(held.values()))
    feed(rec, packets[75:])
    result = asyncio.run(rec.close(START + 2.1))

    assert (result.late, result.packets) == (1, 99)  # packet 10 late, 64 written in part
    left = read(path)[:, 0]
    expected = decode(encode(pcm, "PCMU"), "PCMU")
    np.testing.assert_array_equal(left[56 + 1600 : 56 + 1760], 0)
    assert not left[56 + 64 * 160 : 10400].any()
    np.testing.assert_array_equal(left[10400 : 56 + 65 * 160], expected[10400 - 56 : 65 * 160])


def test_a_second_packet_with_the_same_timestamp_is_dropped_first_kept(
    tmp_path: Path, pool: Executor
) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    first = stream("agent", "PCMU", tone(440, 0.04), first=0.9)
    feed(rec, first)
    loud = rtp(12345, ulaw_encode(np.full(160, 20000, np.int16)), sequence_number=0)
    rec.on_audio("agent", loud, "PCMU", first[0][0] + 0.001)
    clock.t = START + 1.0
    future = rec.flush()  # writes up to 0.8 s: both packets still pending
    assert future is not None
    future.result()
    rec.on_audio("agent", first[1][2], "PCMU", START + 1.0)  # again, in a later batch
    result = asyncio.run(rec.close(START + 1.2))

    assert (result.packets, result.duplicates) == (2, 2)
    left = read(path)[:, 0]
    assert np.abs(left).max() < 9000  # the tone, not the 20000 level of the duplicate


def test_flush_waits_out_the_jitter_window_and_keeps_the_header_current(
    tmp_path: Path, pool: Executor
) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    packets = stream("agent", "PCMU", tone(440, 2.0))
    straggler = packets.pop(45)
    feed(rec, packets[:49])
    clock.t = START + 1.0
    future = rec.flush()
    assert future is not None
    future.result()
    # Written up to now - 200 ms; the header, read while the file is open, says so.
    assert sf.info(path).frames == 0.8 * RATE
    # A straggler at 0.907 s, handed over after that flush, is within the window: it lands.
    feed(rec, [straggler])
    result = rec.close_now(START + 1.02)
    assert (result.packets, result.late) == (50, 0)
    assert placed_at(read(path)[:, 0], decode(encode(tone(440, 1.0), "PCMU"), "PCMU")) == 56


def test_a_long_batch_is_placed_10_seconds_at_a_time(
    tmp_path: Path, pool: Executor, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "call.wav"
    clock = Clock(START + 25.0)
    rec = recorder(path, clock, pool)
    reserved = []
    reserve = placement._Timeline.reserve

    def watched(timeline: Any, size: int) -> None:
        reserved.append(size)
        reserve(timeline, size)

    monkeypatch.setattr(placement._Timeline, "reserve", watched)
    pcm = tone(440, 24.0)
    feed(rec, stream("agent", "PCMU", pcm))  # no flush at all: one 24 s batch at the close
    result = rec.close_now()

    assert (result.packets, result.duration) == (1200, 25.0)
    assert placed_at(read(path)[:, 0], decode(encode(pcm, "PCMU"), "PCMU")) == 56
    # Placed and written in three goes, none holding much more than 10 s.
    assert len(reserved) == 3
    assert max(reserved) <= 10.5 * RATE


def test_close_is_idempotent(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    packets = stream("agent", "PCMU", tone(440, 1.0))
    feed(rec, packets)

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
    feed(rec, stream("agent", "PCMU", tone(440, 1.0)))
    result = rec.close_now()  # end defaults to now()

    assert result.duration == 2.5
    assert len(read(path)) == 2.5 * RATE
    assert asyncio.run(rec.close()) == result


def test_a_call_without_audio_is_silence_of_its_length(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "sub" / "dir" / "call.wav"  # the directory is created
    clock = Clock()
    result = asyncio.run(recorder(path, clock, pool).close(START + 25.0))
    data = read(path)
    assert result == FinishedRecording(path, 25.0, 0, 0, 0, 0, 0)
    assert len(data) == 25 * RATE
    assert not data.any()


def test_only_g711_is_decoded(tmp_path: Path, pool: Executor) -> None:
    path = tmp_path / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    feed(rec, stream("agent", "PCMU", tone(440, 0.1)))
    feed(rec, [(START + 0.01, "cust", rtp(0, bytes(160), "PCMU"), "G722")] * 3)
    result = asyncio.run(rec.close(START + 0.1))

    assert (result.packets, result.unsupported) == (5, 3)
    assert not read(path)[:, 1].any()


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
        bad.on_audio("x", rtp(0, b"\xff" * 160), "PCMU", START)


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
    feed(rec, stream("agent", "PCMU", tone(440, 1.0)))
    clock.t = START + 1.0
    delay, tick = loop.calls[-1]
    tick()
    assert delay == 1.0
    assert len(loop.calls) == 2  # re-armed
    assert sf.info(path).frames == 0.8 * RATE
    rec.close_now()
    assert loop.cancelled == 1


def test_a_failed_recording_raises_on_every_close(tmp_path: Path, pool: Executor) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = blocker / "call.wav"
    clock = Clock()
    rec = recorder(path, clock, pool)
    feed(rec, stream("agent", "PCMU", tone(440, 2.0)))
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
