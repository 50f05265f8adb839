"""Conference mixing: every participant hears the sum of all the others, never itself.

One `Mixer.mix` call per 20 ms tick takes each participant's decoded frame (or None for
silence or a lost packet) and returns what each one should hear. The work is a handful of
whole-array numpy operations, whatever the number of participants:

1. copy the frames into the rows of a reused int32 matrix (None -> a row of zeros);
2. sum the rows once: the total everybody's mix is taken from;
3. subtract each row from the total, in place, in int32 where no sum of 16-bit frames can
   overflow;
4. clip to the int16 range (saturate, as a DSP would, rather than wrap) and cast.

Leaving a participant's own voice out is what keeps the conference free of self-echo; doing
it by subtraction costs O(N) rather than the O(N^2) of summing N-1 others for each.
"""

from collections.abc import Hashable, Mapping
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["FRAME_SAMPLES", "Mixer"]

#: One 20 ms frame of 8 kHz audio.
FRAME_SAMPLES: Final = 160
_INT16_MIN: Final = -32768
_INT16_MAX: Final = 32767
_INT16: Final = np.dtype(np.int16)

K = TypeVar("K", bound=Hashable)
Frame = NDArray[np.int16]


class Mixer:
    """Mixes N participants' frames into N "everyone but me" frames, one tick at a time.

    The mixer keeps no audio between ticks, only scratch space it reuses, so participants can
    join and leave between any two calls. The returned frames are fresh arrays the caller may
    keep or modify.
    """

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self.frame_samples = frame_samples
        self._rows: NDArray[np.int32] = np.zeros((0, frame_samples), dtype=np.int32)
        self._total: NDArray[np.int32] = np.zeros(frame_samples, dtype=np.int32)

    def mix(self, frames: Mapping[K, Frame | None]) -> dict[K, Frame]:
        """What each participant hears this tick: the others' frames summed and clipped.

        ``frames[key]`` is that participant's int16 frame of ``frame_samples`` samples, or None
        when it is silent or its packet was lost. Every key gets a frame back.
        """
        if not frames:
            return {}
        rows = self._scratch(len(frames))
        for index, frame in enumerate(frames.values()):
            rows[index] = 0 if frame is None else self._checked(frame)
        np.add.reduce(rows, axis=0, out=self._total)
        np.subtract(self._total, rows, out=rows)
        # minimum/maximum rather than np.clip: the same saturation, a fraction of the overhead
        # on arrays this small.
        np.minimum(rows, _INT16_MAX, out=rows)
        np.maximum(rows, _INT16_MIN, out=rows)
        heard = rows.astype(np.int16)
        return dict(zip(frames, heard, strict=True))

    def _scratch(self, participants: int) -> NDArray[np.int32]:
        """``participants`` rows of reusable int32 scratch; grows, never shrinks."""
        if participants > self._rows.shape[0]:
            capacity = max(participants, 2 * self._rows.shape[0])
            self._rows = np.zeros((capacity, self.frame_samples), dtype=np.int32)
        return self._rows[:participants]

    def _checked(self, frame: Frame) -> Frame:
        if frame.dtype != _INT16:
            raise TypeError(f"the mixer takes int16 frames, not {frame.dtype}")
        if frame.shape != (self.frame_samples,):
            raise ValueError(f"expected a frame of {self.frame_samples} samples, got {frame.shape}")
        return frame
