"""Tone plans and generators: spectrum, cadence and phase continuity, frame by frame."""

import math
from itertools import islice, pairwise

import numpy as np
import pytest

from callbridge.media.tones import (
    DEFAULT_AMPLITUDE,
    FRAME_SAMPLES,
    INDIA_BUSY,
    INDIA_RINGBACK,
    SAMPLE_RATE,
    TONE_PLANS,
    ToneGenerator,
    TonePlan,
    sine,
    sine_plan,
)


def play(plan: TonePlan, frames: int, amplitude: float = DEFAULT_AMPLITUDE) -> np.ndarray:
    generator = ToneGenerator(plan, amplitude)
    return np.stack([generator.next_frame() for _ in range(frames)])


def spectrum(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, magnitudes) of a real signal, rectangular window."""
    magnitudes = np.abs(np.fft.rfft(signal.astype(np.float64)))
    return np.fft.rfftfreq(signal.size, d=1 / SAMPLE_RATE), magnitudes


def magnitude_at(freqs: np.ndarray, mags: np.ndarray, hz: float) -> float:
    return float(mags[np.argmin(np.abs(freqs - hz))])


def test_india_plans_follow_e180() -> None:
    assert TONE_PLANS["in"]["ringback"] is INDIA_RINGBACK
    assert TONE_PLANS["in"]["busy"] is INDIA_BUSY
    assert INDIA_RINGBACK.frequencies == (400.0,)
    assert INDIA_RINGBACK.modulation_hz == 25.0
    assert INDIA_RINGBACK.cadence == ((400, 200), (400, 2000))
    assert INDIA_RINGBACK.cycle_ms == 3000
    assert INDIA_BUSY.frequencies == (400.0,)
    assert INDIA_BUSY.modulation_hz is None
    assert INDIA_BUSY.cadence == ((750, 750),)


def test_tone_plans_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        TONE_PLANS["xx"] = {}  # type: ignore[index]
    with pytest.raises(AttributeError):
        INDIA_BUSY.cadence = ()  # type: ignore[misc]


def test_busy_spectrum_peaks_at_400_hz_without_sidebands() -> None:
    burst = play(INDIA_BUSY, 37).ravel()  # 740 ms, inside the first 750 ms burst
    freqs, mags = spectrum(burst)
    assert freqs[np.argmax(mags)] == pytest.approx(400, abs=1.5)
    carrier = magnitude_at(freqs, mags, 400)
    assert magnitude_at(freqs, mags, 375) < 0.02 * carrier
    assert magnitude_at(freqs, mags, 425) < 0.02 * carrier


def test_ringback_spectrum_is_400_hz_with_25_hz_sidebands() -> None:
    burst = play(INDIA_RINGBACK, 20).ravel()  # exactly the first 400 ms burst
    freqs, mags = spectrum(burst)  # 2.5 Hz bins: 375, 400, 425 Hz fall on bins
    assert freqs[np.argmax(mags)] == 400
    top_three = sorted(freqs[np.argsort(mags)[-3:]])
    assert top_three == [375, 400, 425]
    carrier = magnitude_at(freqs, mags, 400)
    # Full-depth AM: each sideband carries half the carrier's amplitude.
    assert magnitude_at(freqs, mags, 375) == pytest.approx(carrier / 2, rel=0.05)
    assert magnitude_at(freqs, mags, 425) == pytest.approx(carrier / 2, rel=0.05)
    elsewhere = np.delete(mags, [np.argmin(np.abs(freqs - f)) for f in (375, 400, 425)])
    assert elsewhere.max() < 0.02 * carrier


def test_ringback_cadence_frame_by_frame_over_two_cycles() -> None:
    frames = play(INDIA_RINGBACK, 300)  # a cycle is 3.0 s = 150 frames
    peaks = np.abs(frames.astype(np.int32)).max(axis=1)
    for index, peak in enumerate(peaks):
        at = index % 150
        sounding = at < 20 or 30 <= at < 50  # 0.4 on, 0.2 off, 0.4 on, 2.0 off
        if sounding:
            assert peak > DEFAULT_AMPLITUDE // 3, f"frame {index} should sound"
        else:
            assert peak == 0, f"frame {index} should be silent"


def test_busy_cadence_is_sample_exact_even_mid_frame() -> None:
    # 750 ms is 37.5 frames: the burst ends in the middle of frame 37.
    samples = play(INDIA_BUSY, 150).ravel()  # two 1.5 s cycles
    burst = sine(400, 6000)
    for cycle in (0, 1):
        start = cycle * 12000
        np.testing.assert_array_equal(samples[start : start + 6000], burst)
        assert not samples[start + 6000 : start + 12000].any()


@pytest.mark.parametrize(
    ("plan", "bursts"),
    [(INDIA_RINGBACK, ((0, 3200), (4800, 8000))), (INDIA_BUSY, ((0, 6000), (12000, 18000)))],
    ids=["ringback", "busy"],
)
def test_bursts_start_and_end_on_zero_crossings(plan: TonePlan, bursts) -> None:
    # 400 Hz for 0.4 s or 0.75 s is a whole number of cycles, and a burst starts at phase 0:
    # switching on or off steps no further than one ordinary sample step of the tone (no click).
    samples = play(plan, 300).ravel().astype(np.int32)
    ordinary_step = 2 * DEFAULT_AMPLITUDE * math.sin(math.pi * 400 / SAMPLE_RATE)
    for start, end in bursts:
        assert samples[start] == 0
        assert start == 0 or samples[start - 1] == 0
        assert samples[end] == 0
        assert abs(samples[end - 1]) <= ordinary_step


@pytest.mark.parametrize("freq", [400.0, 437.0, 1004.0, 3001.5])
def test_phase_is_continuous_across_frames(freq: float) -> None:
    frames = play(sine_plan(freq), 50)
    joined = frames.ravel()
    # The same as one uninterrupted sine: no phase reset at any frame boundary.
    np.testing.assert_array_equal(joined, sine(freq, joined.size))
    # And no jump at a boundary bigger than the steepest step a sine of this frequency takes.
    steepest = 2 * DEFAULT_AMPLITUDE * math.sin(math.pi * freq / SAMPLE_RATE) + 1
    steps = np.abs(np.diff(joined.astype(np.int32)))
    boundary_steps = steps[FRAME_SAMPLES - 1 :: FRAME_SAMPLES]
    assert boundary_steps.size == 49
    assert boundary_steps.max() <= steepest


def test_phase_is_continuous_across_a_ringback_burst() -> None:
    frames = play(INDIA_RINGBACK, 20)
    # Every one of the 19 inner boundaries of the first burst joins smoothly.
    step_limit = 2 * DEFAULT_AMPLITUDE * math.sin(math.pi * 425 / SAMPLE_RATE) + 1
    for left, right in pairwise(frames):
        assert abs(int(right[0]) - int(left[-1])) <= step_limit


def test_two_frequencies_are_summed_at_equal_weight() -> None:
    plan = TonePlan(frequencies=(350.0, 440.0))
    freqs, mags = spectrum(play(plan, 50).ravel())  # 1 s, 1 Hz bins
    assert sorted(freqs[np.argsort(mags)[-2:]]) == [350, 440]
    assert magnitude_at(freqs, mags, 350) == pytest.approx(magnitude_at(freqs, mags, 440), rel=0.01)


def test_amplitude_is_the_peak() -> None:
    for plan in (sine_plan(400), INDIA_RINGBACK, TonePlan((350.0, 440.0))):
        samples = play(plan, 150, amplitude=12000)
        peak = int(np.abs(samples.astype(np.int32)).max())
        assert 0.9 * 12000 <= peak <= 12000


def test_generator_is_an_endless_iterator_of_frames() -> None:
    generator = ToneGenerator(sine_plan(400))
    assert iter(generator) is generator
    frames = list(islice(generator, 3))
    assert [f.shape for f in frames] == [(FRAME_SAMPLES,)] * 3
    assert all(f.dtype == np.int16 for f in frames)
    np.testing.assert_array_equal(np.concatenate(frames), sine(400, 480))


def test_frame_size_and_rate_are_configurable() -> None:
    generator = ToneGenerator(sine_plan(1000), rate=16000, frame_samples=320)
    frame = generator.next_frame()
    np.testing.assert_array_equal(frame, sine(1000, 320, rate=16000))


def test_sine_starting_phase_and_amplitude() -> None:
    cosine = sine(1000, 8, amplitude=1000, phase=math.pi / 2)
    assert cosine.tolist() == [1000, 707, 0, -707, -1000, -707, 0, 707]
    assert sine(1000, 0).shape == (0,)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frequencies": ()},
        {"frequencies": (0.0,)},
        {"frequencies": (400.0,), "cadence": ((-1, 100),)},
        {"frequencies": (400.0,), "cadence": ((0, 0),)},
        {"frequencies": (400.0,), "modulation_hz": 0.0},
        {"frequencies": (400.0,), "modulation_hz": 25.0, "modulation_depth": 1.5},
    ],
)
def test_invalid_plans_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TonePlan(**kwargs)  # type: ignore[arg-type]


def test_invalid_generator_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="amplitude"):
        ToneGenerator(sine_plan(400), amplitude=40000)
    with pytest.raises(ValueError, match="Nyquist"):
        ToneGenerator(sine_plan(4000))
    with pytest.raises(ValueError, match="amplitude"):
        sine(400, 10, amplitude=-1)
