"""RTP packets (RFC 3550 §5.1), RTCP demultiplexing (RFC 5761 §4), serial-number arithmetic."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.media.rtp import (
    HeaderExtension,
    RtpError,
    RtpPacket,
    extend_seq,
    is_rtcp,
    rewrite_header,
    seq_add,
    seq_diff,
    seq_newer,
    ts_add,
    ts_diff,
    ts_newer,
    unpack_header,
)

VECTORS = Path(__file__).parent / "vectors" / "rtp"

SHORT = "RTP packet is shorter than the 12-byte header"
CSRC = "RTP CSRC list extends beyond the packet"
EXTENSION = "RTP header extension extends beyond the packet"
PADDING_ZERO = "RTP padding count is zero"
PADDING_OVER = "RTP padding count exceeds the payload"
RTCP = "RTCP packet on the RTP port (RFC 5761)"

MALFORMED = {
    "empty.bin": SHORT,
    "short11.bin": SHORT,
    "version0.bin": "RTP packet has version 0, expected 2",
    "version1.bin": "RTP packet has version 1, expected 2",
    "version3.bin": "RTP packet has version 3, expected 2",
    "csrc_truncated.bin": CSRC,
    "csrc15_empty.bin": CSRC,
    "ext_header_truncated.bin": EXTENSION,
    "ext_data_truncated.bin": EXTENSION,
    "ext_after_csrc_truncated.bin": EXTENSION,
    "padding_zero.bin": PADDING_ZERO,
    "padding_overflow.bin": PADDING_OVER,
    "padding_into_header.bin": PADDING_OVER,
    "padding_into_ext.bin": PADDING_OVER,
    "rtcp_sr.bin": RTCP,
    "rtcp_rr.bin": RTCP,
    "rtcp_sdes.bin": RTCP,
    "rtcp_bye.bin": RTCP,
    "rtcp_app.bin": RTCP,
}

SEQ, TS, SSRC = 0x1234, 0xDEADBEEF, 0x01020304
PCMU = b"\xff" * 160

WELL_FORMED = {
    "pcmu.bin": RtpPacket(0, SEQ, TS, SSRC, payload=PCMU),
    "marker_pt101.bin": RtpPacket(101, 0xFFFF, 0, SSRC, marker=True, payload=b"\x05\x0a\x00\xa0"),
    "csrc2.bin": RtpPacket(8, SEQ, TS, SSRC, csrc=(0xAAAAAAAA, 0xBBBBBBBB), payload=b"\xd5" * 160),
    "ext_bede.bin": RtpPacket(
        0, SEQ, TS, SSRC, extension=HeaderExtension(0xBEDE, b"\x10\x7f\x00\x00"), payload=PCMU
    ),
    "ext_empty.bin": RtpPacket(
        0, SEQ, TS, SSRC, extension=HeaderExtension(0x1000, b""), payload=b"\x01\x02"
    ),
    "padding4.bin": RtpPacket(0, SEQ, TS, SSRC, payload=PCMU, padding=4),
    "padding_only.bin": RtpPacket(0, SEQ, TS, SSRC, payload=b"", padding=3),
    "all_features.bin": RtpPacket(
        0,
        SEQ,
        TS,
        SSRC,
        marker=True,
        csrc=(0xCAFEBABE,),
        extension=HeaderExtension(0xBEDE, b"\x22\x01\x02\x03\x00\x00\x00\x00"),
        payload=b"\x7f" * 80,
        padding=2,
    ),
}


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_every_fixture_has_an_expectation() -> None:
    on_disk = {p.name for p in VECTORS.glob("*.bin")}
    assert on_disk == set(MALFORMED) | set(WELL_FORMED)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_vector_raises_exact_message(name: str) -> None:
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(vector(name))
    assert str(info.value) == MALFORMED[name]


def test_rtp_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="shorter"):
        RtpPacket.parse(b"\x80")


@pytest.mark.parametrize("name", sorted(WELL_FORMED))
def test_well_formed_vector_parses_and_round_trips(name: str) -> None:
    data = vector(name)
    packet = RtpPacket.parse(data)
    assert packet == WELL_FORMED[name]
    assert packet.serialize() == data


def test_padding_is_stripped_from_the_payload() -> None:
    packet = RtpPacket.parse(vector("padding4.bin"))
    assert packet.payload == PCMU
    assert packet.padding == 4


def test_padding_content_other_than_the_count_is_ignored() -> None:
    data = bytearray(vector("padding4.bin"))
    data[-4:-1] = b"\x99\x98\x97"
    assert RtpPacket.parse(bytes(data)).payload == PCMU


def test_serialized_padding_is_zeros_then_the_count() -> None:
    data = RtpPacket(0, 1, 2, 3, payload=b"ab", padding=5).serialize()
    assert data[12:] == b"ab\x00\x00\x00\x00\x05"
    assert data[0] & 0x20


def test_extension_length_counts_32_bit_words() -> None:
    packet = RtpPacket(extension=HeaderExtension(0xBEDE, bytes(12)), payload=b"x")
    data = packet.serialize()
    assert data[0] & 0x10
    assert struct.unpack_from("!HH", data, 12) == (0xBEDE, 3)
    assert data[16 + 12 :] == b"x"


def test_csrc_count_lands_in_the_first_octet() -> None:
    data = RtpPacket(csrc=tuple(range(15))).serialize()
    assert data[0] == 0x80 | 15
    assert len(data) == 12 + 15 * 4


def test_payload_type_72_without_marker_is_rtp() -> None:
    # Only marker=1 + PT 64-95 collides with RTCP types 192-223 (RFC 5761 §4).
    packet = RtpPacket(payload_type=72, payload=b"\x00")
    assert not is_rtcp(packet.serialize())
    assert RtpPacket.parse(packet.serialize()) == packet


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtpPacket(payload_type=128), "RTP payload type must be 0-127"),
        (RtpPacket(payload_type=-1), "RTP payload type must be 0-127"),
        (
            RtpPacket(payload_type=72, marker=True),
            "RTP payload type 64-95 with the marker bit set would read as RTCP",
        ),
        (RtpPacket(sequence_number=65536), "RTP sequence number must be 0-65535"),
        (RtpPacket(timestamp=1 << 32), "RTP timestamp and SSRC must be 32-bit unsigned"),
        (RtpPacket(ssrc=-1), "RTP timestamp and SSRC must be 32-bit unsigned"),
        (
            RtpPacket(csrc=tuple(range(16))),
            "RTP CSRC list must hold at most 15 32-bit identifiers",
        ),
        (RtpPacket(csrc=(1 << 32,)), "RTP CSRC list must hold at most 15 32-bit identifiers"),
        (
            RtpPacket(extension=HeaderExtension(0x10000)),
            "RTP header extension profile must be 16-bit",
        ),
        (
            RtpPacket(extension=HeaderExtension(0xBEDE, b"abc")),
            "RTP header extension data must be whole 32-bit words",
        ),
        (RtpPacket(padding=256), "RTP padding must be 0-255 octets"),
        (RtpPacket(version=1), "RTP version must be 2"),
    ],
)
def test_serialize_refuses_fields_that_do_not_fit(packet: RtpPacket, message: str) -> None:
    with pytest.raises(RtpError) as info:
        packet.serialize()
    assert str(info.value) == message


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        HeaderExtension,
        st.integers(0, 0xFFFF),
        st.integers(0, 4).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    payload=st.binary(max_size=200),
    padding=st.integers(0, 255),
).filter(lambda p: not (p.marker and 64 <= p.payload_type <= 95))


@settings(max_examples=200)
@given(packets)
def test_round_trip(packet: RtpPacket) -> None:
    data = packet.serialize()
    assert not is_rtcp(data)
    assert RtpPacket.parse(data) == packet
    assert unpack_header(data) == (
        packet.payload_type,
        packet.marker,
        packet.sequence_number,
        packet.timestamp,
        packet.ssrc,
    )


# --- RTCP on the RTP port ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["rtcp_sr", "rtcp_rr", "rtcp_sdes", "rtcp_bye", "rtcp_app"])
def test_rtcp_packets_are_recognised(name: str) -> None:
    assert is_rtcp(vector(f"{name}.bin"))


@pytest.mark.parametrize("packet_type", [192, 200, 201, 202, 203, 204, 205, 206, 207, 223])
def test_rtcp_type_range(packet_type: int) -> None:
    assert is_rtcp(bytes((0x80, packet_type, 0, 1)) + bytes(4))


@pytest.mark.parametrize("payload_type", [0, 8, 101, 96, 127])
@pytest.mark.parametrize("marker", [False, True], ids=["m0", "m1"])
def test_rtp_payload_types_are_not_rtcp(payload_type: int, marker: bool) -> None:
    data = RtpPacket(payload_type=payload_type, marker=marker, payload=PCMU).serialize()
    assert not is_rtcp(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80", bytes((0x00, 0x01, 0x00, 0x00)) + bytes(16), bytes((0x40, 200, 0, 1))],
    ids=["empty", "one-octet", "stun-binding-request", "version-1"],
)
def test_other_datagrams_are_not_rtcp(data: bytes) -> None:
    assert not is_rtcp(data)


# --- the relay's fast path ----------------------------------------------------------------


def test_unpack_header_reads_the_fixed_header() -> None:
    assert unpack_header(vector("marker_pt101.bin")) == (101, True, 0xFFFF, 0, SSRC)
    assert unpack_header(vector("pcmu.bin")) == (0, False, SEQ, TS, SSRC)


@pytest.mark.parametrize("name", ["short11.bin", "version1.bin", "rtcp_sr.bin", "rtcp_rr.bin"])
def test_unpack_header_refuses_what_parse_refuses(name: str) -> None:
    with pytest.raises(RtpError) as info:
        unpack_header(vector(name))
    assert str(info.value) == MALFORMED[name]


def rewrite(buf: bytearray, data: bytes, marker: bool | None = None) -> int:
    return rewrite_header(
        buf,
        data,
        payload_type=8,
        sequence_number=0xBEEF,
        timestamp=0x11223344,
        ssrc=0x55667788,
        marker=marker,
    )


@pytest.mark.parametrize("name", sorted(WELL_FORMED))
def test_rewrite_header_changes_only_the_four_fields(name: str) -> None:
    data = vector(name)
    original = WELL_FORMED[name]
    buf = bytearray(1500)
    length = rewrite(buf, data)
    assert length == len(data)
    assert len(buf) == 1500
    rewritten = RtpPacket.parse(bytes(buf[:length]))
    assert (rewritten.payload_type, rewritten.sequence_number) == (8, 0xBEEF)
    assert (rewritten.timestamp, rewritten.ssrc) == (0x11223344, 0x55667788)
    assert rewritten.marker == original.marker
    assert (rewritten.csrc, rewritten.extension) == (original.csrc, original.extension)
    assert (rewritten.payload, rewritten.padding) == (original.payload, original.padding)


def test_rewrite_header_sets_or_clears_the_marker() -> None:
    buf = bytearray(200)
    rewrite(buf, vector("pcmu.bin"), marker=True)
    assert buf[1] == 0x88
    rewrite(buf, vector("marker_pt101.bin"), marker=False)
    assert buf[1] == 0x08


def test_rewrite_header_reuses_the_buffer_for_a_shorter_packet() -> None:
    buf = bytearray(200)
    rewrite(buf, vector("pcmu.bin"))
    length = rewrite(buf, vector("marker_pt101.bin"))
    assert length == 16
    assert buf[12:16] == b"\x05\x0a\x00\xa0"
    assert buf[16:172] == PCMU[4:]  # the previous packet's tail is left, not cleared


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload_type": 128}, "RTP payload type must be 0-127"),
        (
            {"payload_type": 72, "marker": True},
            "RTP payload type 64-95 with the marker bit set would read as RTCP",
        ),
        ({"sequence_number": 1 << 16}, "RTP sequence number, timestamp or SSRC out of range"),
        ({"timestamp": -1}, "RTP sequence number, timestamp or SSRC out of range"),
        ({"ssrc": 1 << 32}, "RTP sequence number, timestamp or SSRC out of range"),
    ],
)
def test_rewrite_header_refuses_fields_out_of_range(
    kwargs: dict[str, int | bool], message: str
) -> None:
    fields: dict[str, int | bool] = {
        "payload_type": 0,
        "sequence_number": 0,
        "timestamp": 0,
        "ssrc": 0,
        "marker": False,
    }
    fields.update(kwargs)
    buf = bytearray(200)
    with pytest.raises(RtpError) as info:
        rewrite_header(buf, vector("pcmu.bin"), **fields)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["short11.bin", "version1.bin", "rtcp_sr.bin"])
def test_rewrite_header_refuses_non_rtp(name: str) -> None:
    with pytest.raises(RtpError) as info:
        rewrite(bytearray(200), vector(name))
    assert str(info.value) == MALFORMED[name]


def test_rewrite_header_refuses_a_small_buffer() -> None:
    with pytest.raises(RtpError) as info:
        rewrite(bytearray(171), vector("pcmu.bin"))
    assert str(info.value) == "RTP packet does not fit the output buffer"


def test_rewrite_header_accepts_a_memoryview() -> None:
    buf = bytearray(200)
    data = vector("pcmu.bin")
    assert rewrite(buf, memoryview(data)) == len(data)  # type: ignore[arg-type]
    assert buf[12:172] == PCMU


# --- sequence and timestamp arithmetic ------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "newer"),
    [
        (1, 0, True),
        (0, 1, False),
        (5, 5, False),
        (0, 0xFFFF, True),  # across the wrap
        (0xFFFF, 0, False),
        (10, 0xFFF0, True),
        (0x7FFF, 0, True),  # just under half the space ahead
        (0x8000, 0, False),  # exactly half: neither is newer (RFC 1982 §3.2)
        (0, 0x8000, False),
    ],
)
def test_seq_newer(a: int, b: int, newer: bool) -> None:
    assert seq_newer(a, b) is newer


@pytest.mark.parametrize(
    ("a", "b", "diff"),
    [(1, 0, 1), (0, 1, -1), (0, 0xFFFF, 1), (0xFFFF, 0, -1), (3, 0xFFFE, 5), (0x8000, 0, -0x8000)],
)
def test_seq_diff(a: int, b: int, diff: int) -> None:
    assert seq_diff(a, b) == diff


@given(st.integers(0, 0xFFFF), st.integers(-0x8000, 0x7FFF))
def test_seq_add_and_diff_agree(seq: int, n: int) -> None:
    later = seq_add(seq, n)
    assert 0 <= later <= 0xFFFF
    assert seq_diff(later, seq) == n
    assert seq_newer(later, seq) is (n > 0)


@pytest.mark.parametrize(
    ("seq", "reference", "extended"),
    [
        (2, 0xFFFF, 0x10002),  # wrapped forward
        (0xFFFE, 0x10002, 0xFFFE),  # a late packet from before the wrap
        (7, 0x30005, 0x30007),
        (0xFFFB, 5, -5),  # older than the first packet seen
    ],
)
def test_extend_seq(seq: int, reference: int, extended: int) -> None:
    assert extend_seq(seq, reference) == extended


def test_extend_seq_counts_cycles_over_a_long_stream() -> None:
    highest = 65000
    for true_seq in range(65000, 65000 + 5 * 65536, 997):
        highest = max(highest, extend_seq(true_seq & 0xFFFF, highest))
        assert highest == true_seq


@pytest.mark.parametrize(
    ("a", "b", "newer", "diff"),
    [
        (160, 0, True, 160),
        (0, 160, False, -160),
        (80, 0xFFFFFFB0, True, 160),  # across the 32-bit wrap
        (0xFFFFFFB0, 80, False, -160),
        (0x80000000, 0, False, -0x80000000),
    ],
)
def test_timestamp_wrap(a: int, b: int, newer: bool, diff: int) -> None:
    assert ts_newer(a, b) is newer
    assert ts_diff(a, b) == diff


@given(st.integers(0, 0xFFFFFFFF), st.integers(-0x80000000, 0x7FFFFFFF))
def test_ts_add_and_diff_agree(ts: int, n: int) -> None:
    later = ts_add(ts, n)
    assert 0 <= later <= 0xFFFFFFFF
    assert ts_diff(later, ts) == n
    assert ts_newer(later, ts) is (n > 0)
