"""RFC 4733 telephone-events: payload, receiver (once per keypress), sender (§2.5.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.media.dtmf import (
    DIGITS,
    MAX_DURATION,
    DtmfDigit,
    DtmfError,
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    event_code,
)

# --- payload (§2.3) -------------------------------------------------------------------------


def test_parse_an_update_block() -> None:
    # event 5, E=0, R=0, volume 10, duration 160
    assert TelephoneEvent.parse(b"\x05\x0a\x00\xa0") == TelephoneEvent(5, False, 10, 160)


def test_parse_an_end_block() -> None:
    event = TelephoneEvent.parse(b"\x0b\x8a\x03\x20")
    assert event == TelephoneEvent(11, True, 10, 800)
    assert event.digit == "#"


def test_reserved_bit_is_ignored_and_sent_as_zero() -> None:
    event = TelephoneEvent.parse(b"\x01\x7f\x00\xa0")  # R=1, volume 63
    assert (event.end, event.volume) == (False, 63)
    assert event.serialize() == b"\x01\x3f\x00\xa0"


@pytest.mark.parametrize("data", [b"", b"\x05", b"\x05\x0a\x00"])
def test_short_payload_is_refused(data: bytes) -> None:
    with pytest.raises(DtmfError) as info:
        TelephoneEvent.parse(data)
    assert str(info.value) == "telephone-event payload is shorter than 4 bytes"
    with pytest.raises(ValueError, match="shorter than 4 bytes"):
        TelephoneEvent.parse_all(data)


def test_parse_reads_the_first_of_several_blocks() -> None:
    # §2.5.1.5: several events packed in one packet; extra and trailing bytes are tolerated.
    data = b"\x01\x8a\x00\xa0" + b"\x02\x0a\x01\x40" + b"\xff\xff"
    assert TelephoneEvent.parse(data) == TelephoneEvent(1, True, 10, 160)
    assert TelephoneEvent.parse_all(data) == (
        TelephoneEvent(1, True, 10, 160),
        TelephoneEvent(2, False, 10, 320),
    )


@pytest.mark.parametrize(("code", "digit"), list(enumerate("0123456789*#ABCD")))
def test_dtmf_codes_map_to_digits(code: int, digit: str) -> None:
    assert TelephoneEvent(code).digit == digit
    assert event_code(digit) == code


@pytest.mark.parametrize("code", [16, 32, 255])
def test_other_events_are_not_digits(code: int) -> None:
    assert TelephoneEvent(code).digit is None


@pytest.mark.parametrize("digit", ["a", "E", "", "12", "+", " "])
def test_unknown_digits_are_refused(digit: str) -> None:
    with pytest.raises(ValueError) as info:
        event_code(digit)
    assert isinstance(info.value, DtmfError)
    assert str(info.value) == f"not a DTMF digit: {digit!r}"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (TelephoneEvent(256), "telephone-event code must be 0-255"),
        (TelephoneEvent(1, volume=64), "telephone-event volume must be 0-63"),
        (TelephoneEvent(1, duration=0x10000), "telephone-event duration must be 0-65535"),
        (TelephoneEvent(1, duration=-1), "telephone-event duration must be 0-65535"),
    ],
)
def test_serialize_refuses_fields_that_do_not_fit(event: TelephoneEvent, message: str) -> None:
    with pytest.raises(DtmfError) as info:
        event.serialize()
    assert str(info.value) == message


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_round_trip(code: int, end: bool, volume: int, duration: int) -> None:
    event = TelephoneEvent(code, end, volume, duration)
    data = event.serialize()
    assert len(data) == 4
    assert TelephoneEvent.parse(data) == event


# --- receiver -------------------------------------------------------------------------------

Packet = tuple[int, bool, TelephoneEvent]


def keypress(digit: str, timestamp: int, duration: int = 800) -> list[Packet]:
    """What a typical phone sends: marked first packet, updates, three end packets."""
    code = event_code(digit)
    packets: list[Packet] = [
        (timestamp, elapsed == 160, TelephoneEvent(code, False, 10, elapsed))
        for elapsed in range(160, duration, 160)
    ]
    packets += [(timestamp, False, TelephoneEvent(code, True, 10, duration))] * 3
    return packets


def feed(receiver: DtmfReceiver, packets: list[Packet]) -> list[DtmfDigit]:
    reports = (receiver.receive(*packet) for packet in packets)
    return [report for report in reports if report is not None]


def test_one_keypress_is_reported_once_despite_three_end_packets() -> None:
    digits = feed(DtmfReceiver(), keypress("5", 1000))
    assert digits == [DtmfDigit("5", 1000, 10)]


def test_the_report_comes_with_the_first_packet() -> None:
    receiver = DtmfReceiver()
    first, *rest = keypress("7", 1000)
    assert receiver.receive(*first) == DtmfDigit("7", 1000, 10)
    assert feed(receiver, rest) == []


def test_the_same_digit_twice_is_two_keypresses() -> None:
    packets = keypress("1", 1000) + keypress("1", 3000)
    assert [d.timestamp for d in feed(DtmfReceiver(), packets)] == [1000, 3000]


def test_a_dialled_number_comes_out_in_order() -> None:
    packets = [p for i, d in enumerate("0800*12#") for p in keypress(d, 1000 + 2000 * i)]
    assert "".join(d.digit for d in feed(DtmfReceiver(), packets)) == "0800*12#"


def test_reordered_packets_report_the_digit_once() -> None:
    packets = keypress("9", 1000)
    reordered = [packets[4], packets[1], packets[0], packets[6], packets[2], packets[5]]
    reordered += [packets[3]]
    assert feed(DtmfReceiver(), reordered) == [DtmfDigit("9", 1000, 10)]


def test_a_keypress_whose_start_was_lost_is_still_reported() -> None:
    ends_only = keypress("3", 1000)[-3:]
    assert feed(DtmfReceiver(), ends_only) == [DtmfDigit("3", 1000, 10)]


def test_a_keypress_whose_end_packets_were_all_lost_is_still_reported() -> None:
    packets = keypress("3", 1000)[:-3] + keypress("4", 3000)
    assert [d.digit for d in feed(DtmfReceiver(), packets)] == ["3", "4"]


def test_retransmissions_of_an_earlier_event_are_not_reported_again() -> None:
    first = keypress("1", 1000)
    second = keypress("2", 3000)
    packets = first + second[:2] + first[-3:] + second[2:]
    assert [d.digit for d in feed(DtmfReceiver(), packets)] == ["1", "2"]


def test_an_earlier_event_arriving_late_is_reported_once() -> None:
    first = keypress("1", 1000)
    second = keypress("2", 3000)
    packets = second[:3] + first + second[3:]
    assert [(d.digit, d.timestamp) for d in feed(DtmfReceiver(), packets)] == [
        ("2", 3000),
        ("1", 1000),
    ]


def test_events_across_the_timestamp_wrap() -> None:
    packets = keypress("6", 0xFFFFFF00) + keypress("6", 0x00000100)
    assert [d.timestamp for d in feed(DtmfReceiver(), packets)] == [0xFFFFFF00, 0x100]


def test_non_dtmf_events_are_ignored() -> None:
    flash = [(1000, True, TelephoneEvent(16, False, 10, 160))]
    assert feed(DtmfReceiver(), flash) == []


def test_history_bounds_what_is_remembered() -> None:
    receiver = DtmfReceiver(history=2)
    packets = keypress("1", 1000) + keypress("2", 3000) + keypress("3", 5000)
    assert len(feed(receiver, packets)) == 3
    # "1" has been forgotten, "3" has not.
    assert feed(receiver, keypress("1", 1000)[-1:] + keypress("3", 5000)[-1:]) == [
        DtmfDigit("1", 1000, 10)
    ]


def test_reset_forgets_every_event() -> None:
    receiver = DtmfReceiver()
    feed(receiver, keypress("8", 1000))
    receiver.reset()
    assert feed(receiver, keypress("8", 1000)[-1:]) == [DtmfDigit("8", 1000, 10)]


def test_history_must_be_positive() -> None:
    with pytest.raises(ValueError, match="history must be at least 1"):
        DtmfReceiver(history=0)


def long_segment(timestamp: int, code: int = 5) -> list[Packet]:
    """A segment that reaches the largest duration (§2.5.1.3); not ended."""
    return [
        (timestamp, False, TelephoneEvent(code, False, 10, 160)),
        (timestamp, False, TelephoneEvent(code, False, 10, MAX_DURATION)),
    ]


@pytest.mark.parametrize("start", [1000, 0xFFFF0000], ids=["plain", "wrapping"])
def test_a_long_event_continues_in_the_next_segment(start: int) -> None:
    nxt = (start + MAX_DURATION) & 0xFFFFFFFF
    packets = long_segment(start) + [(nxt, False, TelephoneEvent(5, True, 10, 800))] * 3
    assert feed(DtmfReceiver(), packets) == [DtmfDigit("5", start, 10)]


@pytest.mark.parametrize(
    "packet",
    [
        (1000 + MAX_DURATION, True, TelephoneEvent(5, False, 10, 160)),  # marked: a new press
        (1000 + MAX_DURATION, False, TelephoneEvent(6, False, 10, 160)),  # another digit
        (1000 + MAX_DURATION + 160, False, TelephoneEvent(5, False, 10, 160)),  # not adjacent
    ],
    ids=["marked", "other-digit", "not-adjacent"],
)
def test_what_is_not_a_next_segment_is_a_new_keypress(packet: Packet) -> None:
    assert len(feed(DtmfReceiver(), [*long_segment(1000), packet])) == 2


def test_a_short_event_has_no_next_segment() -> None:
    packets = keypress("5", 1000, duration=800)[:-3]
    packets.append((1000 + MAX_DURATION, False, TelephoneEvent(5, False, 10, 160)))
    assert len(feed(DtmfReceiver(), packets)) == 2


# --- sender (§2.5.1) ------------------------------------------------------------------------


def decoded(packets: tuple[DtmfPacket, ...]) -> list[TelephoneEvent]:
    return [TelephoneEvent.parse(p.payload) for p in packets]


def test_a_100_ms_keypress_field_by_field() -> None:
    packets = DtmfSender().packets("5", 100, timestamp=48000)
    events = decoded(packets)
    assert [len(p.payload) for p in packets] == [4] * 7
    assert [e.event for e in events] == [5] * 7
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [e.volume for e in events] == [10] * 7
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert [p.timestamp for p in packets] == [48000] * 7
    assert [p.send_at for p in packets] == [160, 320, 480, 640, 800, 960, 1120]


def test_the_three_end_packets_are_identical() -> None:
    packets = DtmfSender().packets("#", 100, timestamp=0)
    assert packets[-1].payload == packets[-2].payload == packets[-3].payload == b"\x0b\x8a\x03\x20"


def test_a_keypress_shorter_than_ptime_is_three_end_packets() -> None:
    packets = DtmfSender().packets("0", 20, timestamp=7)
    assert [p.marker for p in packets] == [True, False, False]
    assert decoded(packets) == [TelephoneEvent(0, True, 10, 160)] * 3
    assert [p.send_at for p in packets] == [160, 320, 480]


def test_a_duration_between_ptimes_ends_on_the_exact_duration() -> None:
    events = decoded(DtmfSender().packets("A", 90, timestamp=0))
    assert [e.duration for e in events] == [160, 320, 480, 640, 720, 720, 720]


def test_clock_rate_ptime_and_volume_are_honoured() -> None:
    sender = DtmfSender(clock_rate=16000, ptime=30, volume=20)
    packets = sender.packets("D", 90, timestamp=0)
    events = decoded(packets)
    assert [e.duration for e in events] == [480, 960, 1440, 1440, 1440]
    assert {e.volume for e in events} == {20}
    assert {e.event for e in events} == {15}


def test_what_the_sender_sends_the_receiver_reports_once() -> None:
    sender = DtmfSender()
    receiver = DtmfReceiver()
    reports = [
        receiver.receive(p.timestamp, p.marker, TelephoneEvent.parse(p.payload))
        for i, digit in enumerate(DIGITS)
        for p in sender.packets(digit, 120, timestamp=i * 2000)
    ]
    assert "".join(r.digit for r in reports if r is not None) == DIGITS


@pytest.mark.parametrize("digit", ["x", "a", "55", ""])
def test_sender_refuses_unknown_digits(digit: str) -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        DtmfSender().packets(digit, 100, timestamp=0)


@pytest.mark.parametrize(
    ("duration_ms", "message"),
    [
        (0, "DTMF duration must be positive"),
        (-20, "DTMF duration must be positive"),
        (8192, "DTMF duration must fit 65535 timestamp units"),
    ],
)
def test_sender_refuses_durations_it_cannot_send(duration_ms: int, message: str) -> None:
    with pytest.raises(DtmfError) as info:
        DtmfSender().packets("1", duration_ms, timestamp=0)
    assert str(info.value) == message


def test_the_longest_single_segment_keypress() -> None:
    packets = DtmfSender().packets("1", 8191, timestamp=0)
    assert TelephoneEvent.parse(packets[-1].payload).duration == 65528


@pytest.mark.parametrize(
    "kwargs",
    [{"clock_rate": 0}, {"ptime": 0}, {"clock_rate": 11025, "ptime": 20}, {"volume": 64}],
)
def test_sender_settings_are_checked(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        DtmfSender(**kwargs)


# --- a string of digits -----------------------------------------------------------------------


def test_a_sequence_spaces_events_by_duration_and_gap() -> None:
    packets = DtmfSender().sequence("1#", 100, 60, timestamp=1000)
    assert len(packets) == 14
    assert [p.timestamp for p in packets] == [1000] * 7 + [1000 + 1280] * 7
    assert [p.marker for p in packets] == ([True] + [False] * 6) * 2
    assert [e.digit for e in decoded(packets)] == ["1"] * 7 + ["#"] * 7
    # Due on the clock: each packet's timestamp + send_at, strictly increasing.
    due = [p.timestamp + p.send_at for p in packets]
    assert due == sorted(set(due))


def test_a_short_gap_still_lets_the_end_packets_go_out_first() -> None:
    # §2.5.1.4: the final packet goes out three times, one ptime apart; the next event
    # starts after the third, whatever gap was asked for.
    packets = DtmfSender().sequence("12", 100, 0, timestamp=0)
    last_end_of_1 = packets[6].timestamp + packets[6].send_at
    first_of_2 = packets[7].timestamp + packets[7].send_at
    assert packets[7].timestamp == 800 + 320
    assert first_of_2 - last_end_of_1 == 160


def test_a_sequence_wraps_the_timestamp() -> None:
    packets = DtmfSender().sequence("00", 100, 60, timestamp=0xFFFFFF00)
    assert {p.timestamp for p in packets} == {0xFFFFFF00, (0xFFFFFF00 + 1280) & 0xFFFFFFFF}


@pytest.mark.parametrize(
    ("digits", "gap_ms", "message"),
    [
        ("", 60, "no DTMF digits to send"),
        ("123x", 60, "not a DTMF digit: 'x'"),
        ("12", -1, "the gap between DTMF digits must not be negative"),
    ],
)
def test_a_sequence_is_checked_before_anything_is_built(
    digits: str, gap_ms: int, message: str
) -> None:
    with pytest.raises(DtmfError) as info:
        DtmfSender().sequence(digits, 100, gap_ms)
    assert str(info.value) == message
