"""Jitter buffer: reordering, duplicates, loss, late packets, wrap, resync, all on a fake clock."""

from dataclasses import asdict

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from callbridge.media.jitter import JitterBuffer, JitterStats

F = 160  # timestamp units per 20 ms frame at 8 kHz
TICK = 0.020
WRAP = 1 << 32


def frame(i: int) -> bytes:
    """A payload that names its frame."""
    return f"frame {i}".encode()


def push(jb: JitterBuffer, i: int, base: int = 0, *, ssrc: int | None = None) -> None:
    """Push frame i of a stream starting at timestamp ``base``, arriving on time."""
    jb.push((base + i * F) % WRAP, frame(i), arrival=i * TICK, ssrc=ssrc)


def pops(jb: JitterBuffer, n: int) -> list[bytes | None]:
    return [jb.pop() for _ in range(n)]


def names(out: list[bytes | None]) -> list[int | None]:
    """Frame numbers of popped payloads, None for silence."""
    return [None if p is None else int(p.split()[1]) for p in out]


def counts(jb: JitterBuffer, **expected: int) -> None:
    """The named counters have these values, every other counter is zero."""
    actual = {k: v for k, v in asdict(jb.stats).items() if k != "jitter"}
    assert actual == {**dict.fromkeys(actual, 0), **expected}


def test_prefetches_depth_frames_then_plays_in_order() -> None:
    jb = JitterBuffer(depth=3)
    push(jb, 0)
    assert jb.pop() is None
    push(jb, 1)
    assert jb.pop() is None
    assert not jb.playing
    push(jb, 2)
    assert jb.playing
    assert names(pops(jb, 3)) == [0, 1, 2]
    counts(jb, received=3)


def test_runs_dry_and_prefetches_again() -> None:
    jb = JitterBuffer(depth=2)
    for i in range(2):
        push(jb, i)
    assert names(pops(jb, 3)) == [0, 1, None]
    assert not jb.playing
    counts(jb, received=2, underruns=1)
    # The stream resumes where the slot clock now is: two frames of prefetch, then in order.
    push(jb, 3)
    assert jb.pop() is None
    push(jb, 4)
    assert names(pops(jb, 2)) == [3, 4]
    counts(jb, received=4, underruns=1)


def test_reordered_packets_come_out_in_timestamp_order() -> None:
    jb = JitterBuffer(depth=3)
    for i in (2, 0, 1):
        push(jb, i)
    assert names(pops(jb, 3)) == [0, 1, 2]
    counts(jb, received=3)


def test_steady_stream_with_swapped_pairs_loses_nothing() -> None:
    jb = JitterBuffer(depth=3)
    arrival_order = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]
    played = []
    for i in arrival_order:  # one packet per tick, every pair swapped in flight
        push(jb, i)
        played.append(jb.pop())
    played += pops(jb, 4)
    assert [n for n in names(played) if n is not None] == list(range(10))
    counts(jb, received=10, underruns=1)


def test_duplicates_are_dropped_whether_buffered_or_already_played() -> None:
    jb = JitterBuffer(depth=2)
    push(jb, 0)
    push(jb, 0)  # still buffered
    push(jb, 1)
    assert names(pops(jb, 1)) == [0]
    push(jb, 0)  # already played
    push(jb, 2)
    assert names(pops(jb, 2)) == [1, 2]
    counts(jb, received=5, duplicate=2)


def test_a_missing_frame_is_a_loss_played_as_silence() -> None:
    jb = JitterBuffer(depth=3)
    for i in (0, 1, 2, 4, 5):
        push(jb, i)
    assert names(pops(jb, 5)) == [0, 1, 2, None, 4]
    assert names(pops(jb, 1)) == [5]
    counts(jb, received=5, lost=1)


def test_concealment_repeats_the_last_frame_once() -> None:
    jb = JitterBuffer(depth=3, max_depth=10, conceal=True)
    for i in (0, 1, 2, 5, 6, 8):
        push(jb, i)
    assert names(pops(jb, 9)) == [0, 1, 2, 2, None, 5, 6, 6, 8]
    counts(jb, received=6, lost=3, concealed=2)


def test_no_concealment_before_anything_was_played() -> None:
    jb = JitterBuffer(depth=2, conceal=True)
    jb.push(F, frame(1), 0.0)
    jb.push(2 * F, frame(2), 0.0)
    jb.push(0, frame(0), 0.0)  # playout started at frame 1: frame 0's slot never existed
    assert names(pops(jb, 2)) == [1, 2]
    counts(jb, received=3, late=1)


def test_a_packet_after_its_slot_was_played_is_late() -> None:
    jb = JitterBuffer(depth=3)
    for i in (0, 1, 2, 4):
        push(jb, i)
    assert names(pops(jb, 4)) == [0, 1, 2, None]
    push(jb, 3)  # its slot went by as a loss
    assert names(pops(jb, 1)) == [4]
    counts(jb, received=5, lost=1, late=1)


def test_a_packet_older_than_what_was_played_is_late_even_while_prefetching() -> None:
    jb = JitterBuffer(depth=2)
    for i in (0, 1, 3):
        push(jb, i)
    assert names(pops(jb, 4)) == [0, 1, None, 3]
    assert jb.pop() is None  # dry: prefetching again
    push(jb, 2)  # playing it now would go back in time
    counts(jb, received=4, lost=1, late=1, underruns=1)
    assert len(jb) == 0


@pytest.mark.parametrize("base", [WRAP - 3 * F, WRAP - 1, WRAP - F // 2])
def test_timestamps_wrap_around_32_bits(base: int) -> None:
    jb = JitterBuffer(depth=3, max_depth=8)
    for i in (1, 0, 3, 2, 4, 6, 5, 7):  # reordered across the wrap
        push(jb, i, base)
    assert names(pops(jb, 8)) == list(range(8))
    counts(jb, received=8)


def test_late_and_duplicate_across_the_wrap() -> None:
    jb = JitterBuffer(depth=2)
    base = WRAP - 2 * F  # frame 2 is timestamp 0
    for i in (0, 1, 2, 4):
        push(jb, i, base)
    assert names(pops(jb, 4)) == [0, 1, 2, None]
    push(jb, 1, base)  # before the wrap, already played
    push(jb, 3, base)  # after the wrap, slot gone
    push(jb, 5, base)
    assert names(pops(jb, 2)) == [4, 5]
    counts(jb, received=7, lost=1, duplicate=1, late=1)


def test_ssrc_change_resynchronises() -> None:
    jb = JitterBuffer(depth=2)
    for i in range(4):
        push(jb, i, ssrc=0x1111)
    assert names(pops(jb, 1)) == [0]
    # A new source: unrelated timestamps, even ones that would look late for the old one.
    for i in (0, 1, 2):
        jb.push(100 + i * F, frame(100 + i), 1.0, ssrc=0x2222)
    assert len(jb) == 3  # the old source's frames 1..3 are gone
    assert names(pops(jb, 3)) == [100, 101, 102]
    counts(jb, received=7, resyncs=1, flushed=3)


def test_packets_without_ssrc_keep_the_known_source() -> None:
    jb = JitterBuffer(depth=2)
    push(jb, 0, ssrc=7)
    push(jb, 1)
    push(jb, 2, ssrc=7)
    assert names(pops(jb, 3)) == [0, 1, 2]
    counts(jb, received=3)


@pytest.mark.parametrize("jump_frames", [60, 5000, -60, -5000])
def test_a_big_timestamp_jump_resynchronises(jump_frames: int) -> None:
    jb = JitterBuffer(depth=2, resync_frames=50)
    for i in range(3):
        push(jb, i)
    assert names(pops(jb, 1)) == [0]
    base = (jump_frames * F) % WRAP
    push(jb, 1000, base - 1000 * F)  # frame "1000" at timestamp base
    assert jb.pop() is None  # prefetching on the new timing
    push(jb, 1001, base - 1000 * F)
    assert names(pops(jb, 2)) == [1000, 1001]
    counts(jb, received=5, resyncs=1, flushed=2)  # frames 1 and 2 were of the old timing


def test_a_jump_within_the_resync_span_is_loss_not_resync() -> None:
    jb = JitterBuffer(depth=2, max_depth=8, resync_frames=50)
    for i in (0, 1, 6):
        push(jb, i)
    assert names(pops(jb, 7)) == [0, 1, None, None, None, None, 6]
    counts(jb, received=3, lost=4)


def test_a_run_of_old_packets_means_the_sender_stepped_back() -> None:
    jb = JitterBuffer(depth=2, resync_frames=50)
    for i in range(40):
        push(jb, i)
        jb.pop()
    # The sender's clock steps back 20 frames (within the resync span) and carries on: its
    # timestamps repeat ones already played.
    out = []
    for i in range(20, 40):
        push(jb, i)
        out.append(jb.pop())
    # The tenth old packet in a row restarts the buffer on the new timing.
    assert names(out) == [39, *([None] * 9), *range(29, 39)]
    assert names(pops(jb, 1)) == [39]
    counts(jb, received=60, duplicate=9, underruns=1, resyncs=1)


def test_isolated_late_packets_do_not_resynchronise() -> None:
    jb = JitterBuffer(depth=2)
    for i in range(2):
        push(jb, i)
    for tick in range(2, 62):  # tick t plays frame t - 2
        if tick % 5:
            push(jb, tick)
        if (tick - 3) % 5 == 0 and tick > 3:
            push(jb, tick - 3)  # every fifth frame arrives a tick after its slot
        jb.pop()
    counts(jb, received=61, late=11, lost=11)


def test_too_much_buffered_drops_the_oldest_down_to_depth() -> None:
    jb = JitterBuffer(depth=2, max_depth=4)
    for i in range(2):
        push(jb, i)
    assert names(pops(jb, 1)) == [0]
    for i in range(2, 6):  # a burst after a stall: 5 frames of delay > max_depth 4
        push(jb, i)
    assert len(jb) == 2
    assert names(pops(jb, 2)) == [4, 5]
    counts(jb, received=6, overflow=3)


def test_a_burst_after_an_underrun_is_trimmed_when_playout_restarts() -> None:
    jb = JitterBuffer(depth=2, max_depth=3)
    for i in range(2):
        push(jb, i)
    assert names(pops(jb, 3)) == [0, 1, None]
    for i in range(2, 8):
        push(jb, i)
    assert names(pops(jb, 2)) == [6, 7]
    counts(jb, received=8, underruns=1, overflow=4)


def test_a_silence_suppressed_pause_resumes_without_loss_or_resync() -> None:
    jb = JitterBuffer(depth=2)
    for i in range(2):
        push(jb, i)
    out = pops(jb, 2)
    out += pops(jb, 100)  # 2 s of silence: timestamps move on, no packets
    push(jb, 102)
    out.append(jb.pop())
    push(jb, 103)
    out += pops(jb, 2)
    assert names(out) == [0, 1, *([None] * 101), 102, 103]
    counts(jb, received=4, underruns=1)


def test_follows_a_sender_whose_grid_shifts_by_less_than_half_a_frame() -> None:
    jb = JitterBuffer(depth=2)
    for i, ts in enumerate([0, F, 2 * F + 40, 3 * F + 40, 4 * F + 40]):
        jb.push(ts, frame(i), i * TICK)
    assert names(pops(jb, 5)) == [0, 1, 2, 3, 4]
    counts(jb, received=5)


def test_payloads_are_opaque_bytes() -> None:
    jb = JitterBuffer(depth=1)
    payload = bytes(range(256))
    jb.push(12345, payload, 0.0)
    assert jb.pop() is payload


def test_interarrival_jitter_follows_rfc3550() -> None:
    on_time = JitterBuffer()
    for i in range(50):
        push(on_time, i)
    assert on_time.stats.jitter == pytest.approx(0.0, abs=1e-12)
    # Arrivals alternately 5 ms early and 5 ms late: |D| is 10 ms for every packet, and the
    # estimate converges on it (J += (|D| - J) / 16).
    jittery = JitterBuffer()
    for i in range(400):
        jittery.push(i * F, frame(i), i * TICK + (0.005 if i % 2 else -0.005))
    assert jittery.stats.jitter == pytest.approx(0.010, rel=1e-3)


def test_stats_is_a_frozen_snapshot() -> None:
    jb = JitterBuffer()
    before = jb.stats
    push(jb, 0)
    assert before.received == 0
    assert jb.stats.received == 1
    assert isinstance(before, JitterStats)
    with pytest.raises(AttributeError):
        before.received = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 0},
        {"depth": 4, "max_depth": 3},
        {"depth": 2, "max_depth": 10, "resync_frames": 10},
        {"samples_per_frame": 0},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        JitterBuffer(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("timestamp", [-1, WRAP])
def test_timestamps_must_be_32_bit(timestamp: int) -> None:
    with pytest.raises(ValueError, match="RTP timestamp"):
        JitterBuffer().push(timestamp, b"", 0.0)


@settings(max_examples=300, deadline=None)
# Found by hypothesis: after an underrun, concealment repeated a frame from two ticks back.
@example(events=[0, 1, 7, None, None, None, None, 8, 9, 15, None], base=0, conceal=True)
@given(
    events=st.lists(
        st.one_of(st.integers(min_value=0, max_value=40), st.none()), min_size=1, max_size=120
    ),
    base=st.integers(min_value=0, max_value=WRAP - 1),
    conceal=st.booleans(),
)
def test_whatever_arrives_playout_never_goes_back_in_time(
    events: list[int | None], base: int, conceal: bool
) -> None:
    # Random pushes (frame numbers, any order, repeats) and pops (None). Between two resyncs
    # (here only a run of old packets can cause one), every real frame played is one that was
    # pushed, each at most once, in increasing order; and every packet is accounted for.
    jb = JitterBuffer(depth=3, conceal=conceal)
    pushed: set[int] = set()
    outputs: list[tuple[int, int | None]] = []  # (resyncs so far, frame played)
    for event in events:
        if event is None:
            outputs.append((jb.stats.resyncs, names([jb.pop()])[0]))
        else:
            push(jb, event, base)
            pushed.add(event)
    # Concealment may repeat the frame just played, once, in the very next tick.
    played: dict[int, list[int]] = {}
    repeats = 0
    for i, (epoch, out) in enumerate(outputs):
        if out is None:
            continue
        before = [name for _, name in outputs[max(0, i - 2) : i]]
        if conceal and before[-1:] == [out] and before != [out, out]:
            repeats += 1
        else:
            played.setdefault(epoch, []).append(out)
    for frames in played.values():
        assert frames == sorted(set(frames))
        assert set(frames) <= pushed
    stats = jb.stats
    assert stats.concealed == repeats
    assert stats.concealed <= stats.lost
    assert stats.received == sum(e is not None for e in events)
    dropped = stats.late + stats.duplicate + stats.overflow + stats.flushed
    assert stats.received == sum(map(len, played.values())) + dropped + len(jb)
