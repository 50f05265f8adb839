"""G.711 mu-law and A-law (ITU-T G.711, 1988) as lookup tables.

Every conversion is a table lookup built once at import from the G.711 segment/quantization
rules below, never from audioop (gone in Python 3.13):

- decode: 256 entries, code byte -> int16 linear sample;
- encode: 65,536 entries, indexed by the int16 sample viewed as uint16 -> code byte;
- transcode: 256-byte ``bytes.translate`` tables, so the RTP relay converts mu-law <-> A-law
  payloads without touching numpy.

Linear samples are 16-bit; G.711 itself works on 14-bit (mu-law) and 13-bit (A-law) uniform
PCM, so encoding first drops the 2 or 3 low bits with an arithmetic shift, exactly as the
classic reference code (and audioop, which our tests compare against bit for bit) does.
For negative samples that truncation is the one convention G.711 leaves open: mu-law takes
the two's-complement magnitude ``-(x >> 2)``, A-law the one's-complement ``~(x >> 3)``.
"""

from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ALAW_DECODE",
    "ALAW_ENCODE",
    "ALAW_TO_ULAW",
    "ULAW_DECODE",
    "ULAW_ENCODE",
    "ULAW_TO_ALAW",
    "alaw_decode",
    "alaw_encode",
    "alaw_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_alaw",
]

Pcm = NDArray[np.int16]

#: mu-law bias on the 14-bit scale (0x84 on the 16-bit scale): adding it to the magnitude puts
#: segment boundaries on powers of two, G.711 Table 2a.
_ULAW_BIAS: Final = 33
#: Largest 14-bit magnitude mu-law represents (decision value 8159); larger ones clip.
_ULAW_CLIP: Final = 8159
#: G.711 inverts every mu-law bit on the line, and even bits of A-law (0x55), so that idle
#: channels carry plenty of ones (a T1/E1 clock-recovery concern).
_ULAW_INVERT: Final = 0xFF
_ALAW_INVERT: Final = 0x55
_SIGN: Final = 0x80


def _all_int16() -> NDArray[np.int32]:
    """Every int16 value, in uint16 index order (0..32767, then -32768..-1), as int32."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> NDArray[np.uint8]:
    x14 = _all_int16() >> 2
    negative = x14 < 0
    magnitude = np.minimum(np.abs(x14), _ULAW_CLIP) + _ULAW_BIAS  # 33 .. 8192
    # Biased magnitudes 2**(5+s) .. 2**(6+s)-1 form segment s; 8192 (only reached by the
    # clipped maximum) lands in segment 8 and is folded back to the top code of segment 7.
    segment = np.searchsorted(1 << np.arange(6, 14), magnitude, side="right")
    mantissa = (magnitude >> (segment + 1)) & 0x0F
    overflow = segment > 7
    mantissa[overflow], segment[overflow] = 0x0F, 7
    # Before inversion the mu-law sign bit is 1 for negative samples (A-law's is the opposite).
    code: NDArray[np.int64] = (segment << 4) | mantissa | np.where(negative, _SIGN, 0)
    return (code ^ _ULAW_INVERT).astype(np.uint8)


def _ulaw_decode_table() -> NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ _ULAW_INVERT
    segment, mantissa = (code >> 4) & 0x07, code & 0x0F
    # The decoder outputs the middle of the quantization interval, on the 14-bit scale:
    # ((2m + 33) << s) - 33, then scaled back to 16 bits.
    magnitude = (((2 * mantissa + _ULAW_BIAS) << segment) - _ULAW_BIAS) << 2
    return np.where(code & _SIGN, -magnitude, magnitude).astype(np.int16)


def _alaw_encode_table() -> NDArray[np.uint8]:
    x13 = _all_int16() >> 3
    negative = x13 < 0
    magnitude = np.where(negative, ~x13, x13)  # 0 .. 4095, no clipping needed
    # Segment 0 and 1 share a step size (the A-law characteristic is linear below 1/A);
    # segment s >= 1 covers magnitudes 2**(4+s) .. 2**(5+s)-1.
    segment = np.searchsorted(1 << np.arange(5, 12), magnitude, side="right")
    mantissa = (magnitude >> np.maximum(segment, 1)) & 0x0F
    code: NDArray[np.int64] = (segment << 4) | mantissa | np.where(negative, 0, _SIGN)
    return (code ^ _ALAW_INVERT).astype(np.uint8)


def _alaw_decode_table() -> NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ _ALAW_INVERT
    segment, mantissa = (code >> 4) & 0x07, code & 0x0F
    # Interval midpoints on the 13-bit scale, (2m + 1) in segment 0 and (2m + 33) << (s - 1)
    # above, scaled back to 16 bits.
    upper = (2 * mantissa + 33) << np.maximum(segment - 1, 0)
    steps = np.where(segment == 0, 2 * mantissa + 1, upper)
    magnitude = steps << 3
    return np.where(code & _SIGN, magnitude, -magnitude).astype(np.int16)


def _read_only(table: NDArray[np.generic]) -> None:
    table.flags.writeable = False


#: mu-law code byte -> int16 sample (256 entries).
ULAW_DECODE: Final = _ulaw_decode_table()
#: int16 sample viewed as uint16 -> mu-law code byte (65,536 entries).
ULAW_ENCODE: Final = _ulaw_encode_table()
#: A-law code byte -> int16 sample (256 entries).
ALAW_DECODE: Final = _alaw_decode_table()
#: int16 sample viewed as uint16 -> A-law code byte (65,536 entries).
ALAW_ENCODE: Final = _alaw_encode_table()
for _table in (ULAW_DECODE, ULAW_ENCODE, ALAW_DECODE, ALAW_ENCODE):
    _read_only(_table)

#: mu-law byte -> A-law byte: decode then re-encode (the composition every softswitch uses;
#: G.711's own Tables 3/4 round a few codes the other way).
ULAW_TO_ALAW: Final = ALAW_ENCODE[ULAW_DECODE.view(np.uint16)].tobytes()
#: A-law byte -> mu-law byte, likewise.
ALAW_TO_ULAW: Final = ULAW_ENCODE[ALAW_DECODE.view(np.uint16)].tobytes()


def _as_index(pcm: Pcm) -> NDArray[np.uint16]:
    """The samples as encode-table indices; refuse anything but native int16 samples."""
    samples = np.asarray(pcm)
    if samples.dtype != np.dtype(np.int16):
        raise TypeError(f"G.711 encodes int16 samples, not {samples.dtype}")
    return samples.view(np.uint16)


def ulaw_decode(data: bytes) -> Pcm:
    """mu-law payload -> int16 samples (a new array)."""
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: Pcm) -> bytes:
    """int16 samples -> mu-law payload."""
    return ULAW_ENCODE[_as_index(pcm)].tobytes()


def alaw_decode(data: bytes) -> Pcm:
    """A-law payload -> int16 samples (a new array)."""
    return ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: Pcm) -> bytes:
    """int16 samples -> A-law payload."""
    return ALAW_ENCODE[_as_index(pcm)].tobytes()


def ulaw_to_alaw(data: bytes) -> bytes:
    """Transcode a mu-law payload to A-law, byte for byte (no numpy on the relay path)."""
    return data.translate(ULAW_TO_ALAW)


def alaw_to_ulaw(data: bytes) -> bytes:
    """Transcode an A-law payload to mu-law, byte for byte."""
    return data.translate(ALAW_TO_ULAW)
