"""The conference mixer: each participant hears the others (not itself), saturated to int16."""

import numpy as np
import pytest

from callbridge.media.mixer import FRAME_SAMPLES, Mixer


def const(value: int, n: int = FRAME_SAMPLES) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def brute_force(frames: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """The definition, one participant at a time, in Python ints."""
    heard = {}
    for me in frames:
        total = [0] * FRAME_SAMPLES
        for other, frame in frames.items():
            if other != me and frame is not None:
                total = [t + int(s) for t, s in zip(total, frame, strict=True)]
        heard[me] = np.array([min(32767, max(-32768, t)) for t in total], dtype=np.int16)
    return heard


def test_each_participant_hears_the_others_and_not_itself() -> None:
    heard = Mixer().mix({"agent": const(100), "customer": const(20), "third": const(3)})
    assert {key: frame[0] for key, frame in heard.items()} == {
        "agent": 23,
        "customer": 103,
        "third": 120,
    }
    for frame in heard.values():
        assert frame.dtype == np.int16
        assert frame.shape == (FRAME_SAMPLES,)
        assert (frame == frame[0]).all()


@pytest.mark.parametrize("participants", [3, 4, 5, 10])
def test_random_frames_match_the_definition(participants: int) -> None:
    rng = np.random.default_rng(participants)
    frames: dict[str, np.ndarray | None] = {
        f"p{i}": rng.integers(-32768, 32768, FRAME_SAMPLES, dtype=np.int16)
        for i in range(participants)
    }
    frames["p1"] = None  # one participant silent this tick
    heard = Mixer().mix(frames)
    expected = brute_force(frames)
    assert heard.keys() == expected.keys()
    for key in frames:
        np.testing.assert_array_equal(heard[key], expected[key], err_msg=key)


def test_none_is_silence_and_the_silent_participant_hears_everyone() -> None:
    heard = Mixer().mix({1: const(1000), 2: None, 3: const(-300)})
    assert heard[1][0] == -300
    assert heard[2][0] == 700
    assert heard[3][0] == 1000


def test_all_silent() -> None:
    heard = Mixer().mix({"a": None, "b": None, "c": None})
    assert all(not frame.any() for frame in heard.values())


def test_saturates_at_positive_full_scale() -> None:
    heard = Mixer().mix({"a": const(30000), "b": const(30000), "c": const(30000)})
    assert all((frame == 32767).all() for frame in heard.values())


def test_saturates_at_negative_full_scale() -> None:
    heard = Mixer().mix({"a": const(-32768), "b": const(-32768), "c": const(-1)})
    assert (heard["a"] == -32768).all()  # -32769 would wrap to +32767 in int16
    assert (heard["b"] == -32768).all()
    assert (heard["c"] == -32768).all()


def test_full_scale_values_pass_unclipped() -> None:
    heard = Mixer().mix({"a": const(32767), "b": const(-32768), "c": const(0)})
    assert heard["a"][0] == -32768
    assert heard["b"][0] == 32767
    assert heard["c"][0] == -1


def test_clipping_happens_after_leaving_oneself_out() -> None:
    # The total (32767 + 32767 - 32768) would clip, but no one hears the total: A hears
    # B + C = -1 exactly. Clipping the total first would give A 32767 - 32767 = 0.
    heard = Mixer().mix({"a": const(32767), "b": const(32767), "c": const(-32768)})
    assert heard["a"][0] == -1
    assert heard["b"][0] == -1
    assert heard["c"][0] == 32767


def test_mixed_signs_within_a_frame_clip_per_sample() -> None:
    ramp = np.linspace(-32768, 32767, FRAME_SAMPLES).astype(np.int16)
    heard = Mixer().mix({"a": ramp, "b": ramp, "c": None})
    expected = np.clip(2 * ramp.astype(np.int32), -32768, 32767).astype(np.int16)
    np.testing.assert_array_equal(heard["c"], expected)
    np.testing.assert_array_equal(heard["a"], ramp)


def test_inputs_are_untouched_and_outputs_independent() -> None:
    mixer = Mixer()
    a, b, c = const(1), const(2), const(3)
    first = mixer.mix({"a": a, "b": b, "c": c})
    assert (a == 1).all() and (b == 2).all() and (c == 3).all()
    first["a"][:] = 999  # the caller owns what it got back
    assert first["b"][0] == 4
    second = mixer.mix({"a": c, "b": b, "c": a})
    assert first["c"][0] == 3  # a later tick does not overwrite an earlier result
    assert second["a"][0] == 3


def test_participants_join_and_leave_between_ticks() -> None:
    mixer = Mixer()
    assert mixer.mix({i: const(i) for i in range(3)})[0][0] == 3
    ten = mixer.mix({i: const(i) for i in range(10)})
    assert [ten[i][0] for i in range(10)] == [45 - i for i in range(10)]
    three = mixer.mix({i: const(i) for i in (7, 8, 9)})
    assert {i: three[i][0] for i in three} == {7: 17, 8: 16, 9: 15}


def test_two_participants_and_one_still_work() -> None:
    mixer = Mixer()
    pair = mixer.mix({"a": const(5), "b": const(7)})
    assert (pair["a"][0], pair["b"][0]) == (7, 5)
    assert mixer.mix({"alone": const(5)})["alone"][0] == 0
    assert mixer.mix({}) == {}


def test_frame_size_is_configurable() -> None:
    heard = Mixer(frame_samples=80).mix({"a": const(1, 80), "b": const(2, 80), "c": None})
    assert heard["c"].shape == (80,)
    assert heard["c"][0] == 3


def test_refuses_frames_of_the_wrong_type_or_length() -> None:
    mixer = Mixer()
    with pytest.raises(TypeError, match="int16"):
        mixer.mix({"a": np.zeros(FRAME_SAMPLES, dtype=np.int32), "b": None, "c": None})
    with pytest.raises(ValueError, match="160 samples"):
        mixer.mix({"a": const(0, 240), "b": None, "c": None})
    with pytest.raises(ValueError, match="positive"):
        Mixer(frame_samples=0)
