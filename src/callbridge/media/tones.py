"""Call-progress tones (ringback, busy) as 20 ms frames of 8 kHz int16 audio.

A `TonePlan` says what to play: frequencies summed, an optional amplitude modulation and a
cadence of (on_ms, off_ms) segments repeated forever. A `ToneGenerator` plays one plan frame
by frame. Every sample is a pure function of its position in the cadence, so frames join
without a discontinuity, and each burst starts at phase zero: for the plans below a burst
holds a whole number of cycles, so it also starts and ends on a zero crossing (no clicks).

India's tones follow ITU-T E.180 Supplement 2 ("Various tones used in national networks"):
ringback 400 Hz modulated by 25 Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2.0 s off; busy 400 Hz,
0.75 s on, 0.75 s off.

One tone is callbridge's own: the confirmation prompt (:func:`prompt_plan`) an agent hears
on answering, meaning "press 1 to connect", without a recorded voice.
"""

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CONFIRM_PROMPT",
    "DEFAULT_AMPLITUDE",
    "FRAME_SAMPLES",
    "INDIA_BUSY",
    "INDIA_RINGBACK",
    "SAMPLE_RATE",
    "TONE_PLANS",
    "ToneGenerator",
    "TonePlan",
    "prompt_plan",
    "sine",
    "sine_plan",
]

#: Audio is 8 kHz mono throughout callbridge.
SAMPLE_RATE: Final = 8000
#: One frame is 20 ms.
FRAME_SAMPLES: Final = 160
#: Peak amplitude of a tone: about -12 dBFS, near the -10 dBm0 that E.180 suggests for
#: call-progress tones, with headroom for the modulation and for mixing.
DEFAULT_AMPLITUDE: Final = 8000

Cadence = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TonePlan:
    """What a tone sounds like: frequencies, optional modulation, cadence.

    The frequencies are summed at equal weight. With ``modulation_hz`` set the sum is
    amplitude-modulated, (1 + d sin 2 pi f_m t) / (1 + d) with depth d, which puts sidebands
    at carrier +/- f_m (375 and 425 Hz for India's 400 * 25 Hz ringback). An empty cadence is
    a continuous tone; otherwise the (on_ms, off_ms) segments repeat in order.
    """

    frequencies: tuple[float, ...]
    cadence: Cadence = ()
    modulation_hz: float | None = None
    modulation_depth: float = 1.0

    def __post_init__(self) -> None:
        if not self.frequencies or any(f <= 0 for f in self.frequencies):
            raise ValueError(f"a tone needs positive frequencies, got {self.frequencies}")
        if any(on < 0 or off < 0 for on, off in self.cadence):
            raise ValueError(f"cadence segments must not be negative: {self.cadence}")
        if self.cadence and sum(on + off for on, off in self.cadence) == 0:
            raise ValueError("a cadence must last longer than zero")
        if self.modulation_hz is not None and self.modulation_hz <= 0:
            raise ValueError(f"modulation frequency must be positive: {self.modulation_hz}")
        if not 0.0 <= self.modulation_depth <= 1.0:
            raise ValueError(f"modulation depth must be in [0, 1]: {self.modulation_depth}")

    @property
    def cycle_ms(self) -> int:
        """Length of one cadence cycle, 0 for a continuous tone."""
        return sum(on + off for on, off in self.cadence)


def sine_plan(freq_hz: float, cadence: Sequence[tuple[int, int]] = ()) -> TonePlan:
    """A plain sine tone, continuous unless a cadence is given (tests, beeps)."""
    return TonePlan(frequencies=(freq_hz,), cadence=tuple(cadence))


#: ITU-T E.180 Suppl. 2, India: ringback "400*25" (400 Hz modulated by 25 Hz).
INDIA_RINGBACK: Final = TonePlan(
    frequencies=(400.0,), cadence=((400, 200), (400, 2000)), modulation_hz=25.0
)
#: ITU-T E.180 Suppl. 2, India: busy, 400 Hz 0.75 s on, 0.75 s off.
INDIA_BUSY: Final = TonePlan(frequencies=(400.0,), cadence=((750, 750),))

#: callbridge's confirmation prompt: two short 1400 Hz beeps, 0.2 s on, 0.2 s off, 0.2 s on,
#: then 1.4 s of silence, repeating every 2 s. 1400 Hz is far from the 400 Hz of ringback
#: and busy, so it is not taken for call progress; each beep is 280 whole cycles, so it
#: starts and ends on a zero crossing.
CONFIRM_PROMPT: Final = TonePlan(frequencies=(1400.0,), cadence=((200, 200), (200, 1400)))


def prompt_plan() -> TonePlan:
    """The prompt an agent hears while the call waits for their keypress ("press 1 to
    connect", :data:`CONFIRM_PROMPT`). Play it with
    ``Player(leg, ToneGenerator(prompt_plan())).start()``; ``stop()`` it on the digit."""
    return CONFIRM_PROMPT


#: Tone plans by country (ISO 3166 alpha-2, lower case), then by tone name.
TONE_PLANS: Final[Mapping[str, Mapping[str, TonePlan]]] = MappingProxyType(
    {"in": MappingProxyType({"ringback": INDIA_RINGBACK, "busy": INDIA_BUSY})}
)


def sine(
    freq: float,
    n_samples: int,
    rate: int = SAMPLE_RATE,
    amplitude: float = DEFAULT_AMPLITUDE,
    phase: float = 0.0,
) -> NDArray[np.int16]:
    """``amplitude * sin(2 pi freq n / rate + phase)`` for n in 0..n_samples-1, as int16."""
    _check_amplitude(amplitude)
    n = np.arange(n_samples, dtype=np.float64)
    return _to_int16(amplitude * np.sin(2 * math.pi * freq * n / rate + phase))


class ToneGenerator(Iterator[NDArray[np.int16]]):
    """Plays a `TonePlan` as an endless sequence of frames; ``next_frame()`` per 20 ms tick."""

    def __init__(
        self,
        plan: TonePlan,
        amplitude: float = DEFAULT_AMPLITUDE,
        *,
        rate: int = SAMPLE_RATE,
        frame_samples: int = FRAME_SAMPLES,
    ) -> None:
        _check_amplitude(amplitude)
        if rate <= 0 or frame_samples <= 0:
            raise ValueError("rate and frame_samples must be positive")
        if max(plan.frequencies) >= rate / 2:
            raise ValueError(f"{max(plan.frequencies)} Hz is above the Nyquist limit at {rate} Hz")
        self.plan = plan
        self.amplitude = amplitude
        self.rate = rate
        self.frame_samples = frame_samples
        #: Burst start offsets and lengths within one cycle, in samples.
        self._starts, self._on = _cadence_samples(plan.cadence, rate)
        self._cycle = sum(_ms_to_samples(on + off, rate) for on, off in plan.cadence)
        if plan.cadence and not self._cycle:
            raise ValueError(f"cadence {plan.cadence} is shorter than one sample at {rate} Hz")
        #: Samples played so far, modulo the cycle (unbounded for a continuous tone).
        self._position = 0

    def next_frame(self) -> NDArray[np.int16]:
        """The next ``frame_samples`` samples of the tone."""
        positions = self._position + np.arange(self.frame_samples, dtype=np.int64)
        if self._cycle:
            positions %= self._cycle
            self._position = (self._position + self.frame_samples) % self._cycle
        else:
            self._position += self.frame_samples
        offset, sounding = self._burst_offsets(positions)
        wave = self._waveform(offset.astype(np.float64)) * sounding
        return _to_int16(self.amplitude * wave)

    def __next__(self) -> NDArray[np.int16]:
        return self.next_frame()

    def __iter__(self) -> "ToneGenerator":
        return self

    def _burst_offsets(
        self, positions: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        """For each cycle position: samples since its burst began, and whether it sounds."""
        if not self._cycle:
            return positions, np.ones(positions.shape, dtype=np.bool_)
        burst = np.searchsorted(self._starts, positions, side="right") - 1
        offset = positions - self._starts[burst]
        return offset, offset < self._on[burst]

    def _waveform(self, offset: NDArray[np.float64]) -> NDArray[np.float64]:
        """The plan's signal at these offsets into a burst, peak 1.0."""
        t = offset / self.rate
        plan = self.plan
        freqs = np.array(plan.frequencies, dtype=np.float64)
        wave: NDArray[np.float64] = np.sin(2 * math.pi * np.outer(freqs, t)).mean(axis=0)
        if plan.modulation_hz is not None:
            depth = plan.modulation_depth
            envelope = (1 + depth * np.sin(2 * math.pi * plan.modulation_hz * t)) / (1 + depth)
            wave = wave * envelope
        return wave


def _ms_to_samples(ms: int, rate: int) -> int:
    return ms * rate // 1000


def _cadence_samples(cadence: Cadence, rate: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Start offset and on-length of each segment within one cycle, in samples."""
    starts: list[int] = []
    ons: list[int] = []
    at = 0
    for on_ms, off_ms in cadence:
        starts.append(at)
        ons.append(_ms_to_samples(on_ms, rate))
        at += _ms_to_samples(on_ms + off_ms, rate)
    return np.array(starts, dtype=np.int64), np.array(ons, dtype=np.int64)


def _check_amplitude(amplitude: float) -> None:
    if not 0 <= amplitude <= 32767:
        raise ValueError(f"amplitude must be within 0..32767, got {amplitude}")


def _to_int16(signal: NDArray[np.float64]) -> NDArray[np.int16]:
    return np.rint(signal).astype(np.int16)
