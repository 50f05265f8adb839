"""G.711 tables against an independent reference: CPython's audioop, every input."""

import warnings
from types import ModuleType

import numpy as np
import pytest

from callbridge.media import g711


def _import_audioop() -> ModuleType:
    # audioop is deprecated in 3.11/3.12 (a DeprecationWarning, an error under our pytest
    # settings) and removed in 3.13, where the audioop-lts package provides it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            audioop = pytest.importorskip("audioop", reason="needs stdlib audioop or audioop-lts")
    return audioop


audioop = _import_audioop()

ALL_CODES = bytes(range(256))
#: Every int16 sample, in encode-table index order (the int16 viewed as uint16).
ALL_SAMPLES = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16)


@pytest.mark.parametrize(
    ("table", "reference"),
    [(g711.ULAW_DECODE, audioop.ulaw2lin), (g711.ALAW_DECODE, audioop.alaw2lin)],
    ids=["ulaw", "alaw"],
)
def test_decode_table_matches_audioop_for_all_256_codes(table, reference) -> None:
    expected = np.frombuffer(reference(ALL_CODES, 2), dtype="<i2")
    assert table.dtype == np.int16
    assert table.shape == (256,)
    np.testing.assert_array_equal(table, expected)


@pytest.mark.parametrize(
    ("table", "reference"),
    [(g711.ULAW_ENCODE, audioop.lin2ulaw), (g711.ALAW_ENCODE, audioop.lin2alaw)],
    ids=["ulaw", "alaw"],
)
def test_encode_table_matches_audioop_for_all_65536_samples(table, reference) -> None:
    expected = np.frombuffer(reference(ALL_SAMPLES.astype("<i2").tobytes(), 2), dtype=np.uint8)
    assert table.dtype == np.uint8
    assert table.shape == (65536,)
    mismatches = np.flatnonzero(table != expected)
    assert mismatches.size == 0, f"first mismatching samples: {ALL_SAMPLES[mismatches[:8]]}"


def test_ulaw_to_alaw_table_is_decode_then_encode() -> None:
    expected = audioop.lin2alaw(audioop.ulaw2lin(ALL_CODES, 2), 2)
    assert expected == g711.ULAW_TO_ALAW
    assert g711.ulaw_to_alaw(ALL_CODES) == expected


def test_alaw_to_ulaw_table_is_decode_then_encode() -> None:
    expected = audioop.lin2ulaw(audioop.alaw2lin(ALL_CODES, 2), 2)
    assert expected == g711.ALAW_TO_ULAW
    assert g711.alaw_to_ulaw(ALL_CODES) == expected


def test_known_code_points() -> None:
    # Spot values any G.711 reader knows: both zeros, the extremes, the idle codes.
    assert g711.ulaw_decode(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert g711.alaw_decode(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]
    silence = np.zeros(160, dtype=np.int16)
    assert g711.ulaw_encode(silence) == b"\xff" * 160
    assert g711.alaw_encode(silence) == b"\xd5" * 160
    extremes = np.array([32767, -32768], dtype=np.int16)
    assert g711.ulaw_encode(extremes) == b"\x80\x00"
    assert g711.alaw_encode(extremes) == b"\xaa\x2a"


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)],
    ids=["ulaw", "alaw"],
)
def test_codec_functions_round_trip_every_code(encode, decode) -> None:
    # Decoded values are interval midpoints, so re-encoding them gives the code back, except
    # for mu-law's two zeros (0x7f decodes to 0, which encodes as +0, 0xff).
    pcm = decode(ALL_CODES)
    assert pcm.dtype == np.int16
    assert pcm.shape == (256,)
    again = encode(pcm)
    assert len(again) == 256
    differing = {code for code in range(256) if again[code] != code}
    assert differing <= {0x7F}


@pytest.mark.parametrize("encode", [g711.ulaw_encode, g711.alaw_encode], ids=["ulaw", "alaw"])
def test_encode_is_the_table_lookup_per_sample(encode) -> None:
    rng = np.random.default_rng(711)
    pcm = rng.integers(-32768, 32768, size=1600, dtype=np.int16)
    table = g711.ULAW_ENCODE if encode is g711.ulaw_encode else g711.ALAW_ENCODE
    assert encode(pcm) == bytes(table[pcm.view(np.uint16)])


def test_encode_refuses_samples_that_are_not_int16() -> None:
    with pytest.raises(TypeError, match="int16"):
        g711.ulaw_encode(np.zeros(160, dtype=np.int32))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float64"):
        g711.alaw_encode(np.zeros(160))  # type: ignore[arg-type]


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError, match="read-only"):
        g711.ULAW_ENCODE[0] = 0


def test_empty_payloads() -> None:
    assert g711.ulaw_decode(b"").shape == (0,)
    assert g711.alaw_encode(np.zeros(0, dtype=np.int16)) == b""
    assert g711.ulaw_to_alaw(b"") == b""
