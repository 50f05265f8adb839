"""SDP parse/serialize (RFC 8866) and offer/answer (RFC 3264) in callbridge.sip.sdp."""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sip.errors import SipParseError
from callbridge.sip.sdp import (
    PCMA,
    PCMU,
    Attribute,
    Codec,
    Connection,
    Direction,
    LocalSdp,
    Media,
    MediaCapabilities,
    NotAcceptable,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    accept_answer,
    build_offer,
    negotiate,
)


def sdp(text: str) -> bytes:
    """A sample written one line per source line, sent with CRLF."""
    return "".join(line.strip() + "\r\n" for line in text.strip().splitlines()).encode()


def parse(text: str) -> SessionDescription:
    return SessionDescription.parse(sdp(text))


SIPP_OFFER = """
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

# A desktop softphone: wideband codecs first, telephone-event at two clock rates.
SOFTPHONE_OFFER = """
v=0
o=alice 3724394400 3724394401 IN IP4 198.51.100.7
s=Talk
c=IN IP4 198.51.100.7
b=AS:380
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7078 RTP/AVP 96 9 0 8 101 102
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:101 telephone-event/48000
a=rtpmap:102 telephone-event/8000
a=fmtp:102 0-16
a=ptime:30
a=rtcp:7079
a=rtcp-fb:* trr-int 1000
"""

CHROME_OFFER = """
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS 5b8a0b3e-6c1e-4b35-9d0b-1a2f3c4d5e6f
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Ae9q
a=ice-pwd:Zx3vbBQrHw6Rj2D6KqTmGx8r
a=ice-options:trickle
a=fingerprint:sha-256 0F:74:31:25:CB:A2:13:EC:28:6F:6D:2C:61:FF:5D:C2:BC:B9:DB:3D:98:14:8D:1A
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=sendrecv
a=msid:5b8a0b3e-6c1e-4b35-9d0b-1a2f3c4d5e6f 0c8e7d1a-aaaa-bbbb-cccc-123456789abc
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3735928559 cname:Hk3lU2wq4nZ8yRvV
"""

RFC4475_SDP01 = """
v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.5
s=-
c=IN IP4 192.0.2.5
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
"""

ORIGIN = Origin("callbridge", "42", 1, "192.0.2.10")
CAPS = MediaCapabilities(address="192.0.2.10", port=20000)

VECTORS = Path(__file__).parent / "vectors"


def vector_body(name: str) -> bytes:
    """The SDP body of a vector message: everything after the blank line (the RFC 5118 files'
    Content-Length values undercount it, see their PROVENANCE.txt)."""
    return (VECTORS / name).read_bytes().split(b"\r\n\r\n", 1)[1]


# -- Parsing ----


def test_parses_a_sipp_offer() -> None:
    desc = parse(SIPP_OFFER)
    assert desc.origin == Origin("user1", "53655765", 2353687637, "127.0.0.1")
    assert desc.session_name == "-"
    assert desc.connection == Connection("127.0.0.1")
    assert desc.time == Timing(0, 0)
    (audio,) = desc.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        6000,
        "RTP/AVP",
        ("0",),
    )
    assert audio.codecs == (PCMU,)
    assert audio.connection is None and desc.connection_for(audio) == Connection("127.0.0.1")
    assert desc.direction_of(audio) is Direction.SENDRECV
    assert not desc.on_hold(audio)


def test_parses_a_softphone_offer_with_its_extras() -> None:
    desc = parse(SOFTPHONE_OFFER)
    assert desc.extra_lines == (("b", "AS:380"),)
    assert (
        desc.attribute("rtcp-xr")
        == "rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics"
    )
    (audio,) = desc.media
    assert audio.codecs == (
        Codec("opus", 96, 48000, 2),
        Codec("G722", 9, 8000),
        PCMU,
        PCMA,
        Codec("telephone-event", 101, 48000),
        Codec("telephone-event", 102, 8000),
    )
    assert audio.fmtp(96) == "useinbandfec=1"
    assert audio.fmtp(102) == "0-16"
    assert audio.fmtp(0) is None
    assert (audio.ptime, audio.maxptime, audio.rtcp_port) == (30, None, 7079)
    assert audio.attribute("rtcp-fb") == "* trr-int 1000"


def test_parses_a_chrome_offer_keeping_every_attribute() -> None:
    desc = parse(CHROME_OFFER)
    assert desc.origin.username == "-" and desc.origin.session_version == 2
    assert desc.attribute("group") == "BUNDLE 0"
    assert desc.attribute("extmap-allow-mixed") == ""
    (audio,) = desc.media
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert [c.name for c in audio.codecs] == [
        "opus", "red", "G722", "PCMU", "PCMA", "CN", "telephone-event", "telephone-event"
    ]  # fmt: skip
    assert audio.direction is Direction.SENDRECV
    assert audio.rtcp_port == 9
    assert audio.attribute("setup") == "actpass"
    assert Attribute("rtcp-mux") in audio.attributes
    assert len(audio.attributes) == 24
    assert desc.serialize() == sdp(CHROME_OFFER)


def test_parses_ipv6_addresses_in_sdp_rfc5118_4_6() -> None:
    desc = SessionDescription.parse(vector_body("rfc5118/ipv6-in-sdp.dat"))
    assert desc.origin == Origin("assistant", "971731711378798081", 0, "2001:db8::20", "IN", "IP6")
    assert desc.session_name == "Live video feed for today's meeting"
    assert desc.connection == Connection("2001:db8::20", "IN", "IP6")
    assert desc.time == Timing(3338481189, 3370017201)
    audio, video = desc.media
    assert audio.codecs == (Codec("G726-32", 2, 8000),)
    assert (video.media, video.port, video.codecs) == (
        "video",
        6024,
        (Codec("H263-1998", 107, 90000),),
    )


def test_parses_per_media_connections_rfc5118_4_8() -> None:
    desc = SessionDescription.parse(vector_body("rfc5118/mult-ip-in-sdp.dat"))
    assert desc.session_name == ""
    assert desc.connection is None
    audio, video = desc.media
    assert desc.connection_for(audio) == Connection("192.0.2.1", "IN", "IP4")
    assert desc.connection_for(video) == Connection("2001:db8::1", "IN", "IP6")
    answer = negotiate(desc, CAPS, ORIGIN)
    assert answer.media.remote_address == "192.0.2.1"
    assert answer.media.remote_port == 22334
    assert [m.port for m in answer.answer.media] == [20000, 0]


def test_parses_ipv4_mapped_ipv6_addresses_rfc5118_4_9() -> None:
    desc = SessionDescription.parse(vector_body("rfc5118/ipv4-mapped-ipv6.dat"))
    assert desc.origin.address == "::ffff:192.0.2.2"
    assert desc.connection == Connection("::ffff:192.0.2.2", "IN", "IP6")


def test_the_rfc4475_sdp01_body_matches_the_inline_sample() -> None:
    assert SessionDescription.parse(vector_body("rfc4475/sdp01.dat")) == parse(RFC4475_SDP01)


def test_media_connection_wins_over_session_connection() -> None:
    desc = parse(SIPP_OFFER + "c=IN IP4 203.0.113.9\n")
    assert desc.connection_for(desc.media[0]) == Connection("203.0.113.9")
    assert negotiate(desc, CAPS, ORIGIN).media.remote_address == "203.0.113.9"


def test_static_payload_types_need_no_rtpmap() -> None:
    desc = parse(RFC4475_SDP01)
    assert desc.media[0].codecs == (PCMU, Codec("QCELP", 12, 8000))
    assert desc.media[1].codecs == ()  # "a=rtpmap:31 LPC" lacks a clock rate: not trusted


def test_unreadable_values_of_known_attributes_are_ignored_not_fatal() -> None:
    desc = parse(
        SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 0 8 96")
        + "a=rtpmap:8 PCMA\na=rtpmap:96\na=ptime:soon\na=maxptime:\na=rtcp:x\n"
    )
    (audio,) = desc.media
    assert audio.codecs == (PCMU, PCMA)  # 8 falls back to the static table, 96 is unknown
    assert (audio.ptime, audio.maxptime, audio.rtcp_port) == (None, None, None)
    assert negotiate(desc, CAPS, ORIGIN).media.ptime == 20
    with pytest.raises(SdpError):
        Codec.parse_rtpmap("8 PCMA")


def test_accepts_lf_only_line_endings_and_trailing_blank_lines() -> None:
    crlf = SessionDescription.parse(sdp(SIPP_OFFER))
    assert SessionDescription.parse(sdp(SIPP_OFFER).replace(b"\r\n", b"\n")) == crlf
    assert SessionDescription.parse(sdp(SIPP_OFFER) + b"\r\n\r\n") == crlf


def test_keeps_non_utf8_octets_through_a_round_trip() -> None:
    body = sdp(SIPP_OFFER).replace(b"s=-", b"s=Caf\xe9")
    desc = SessionDescription.parse(body)
    assert desc.serialize() == body


def test_keeps_unknown_lines_in_grammar_order() -> None:
    body = sdp("""
        v=0
        o=- 1 1 IN IP4 192.0.2.1
        s=x
        i=session info
        u=http://example.com/
        e=ops@example.com
        c=IN IP4 192.0.2.1
        b=CT:128
        t=0 0
        r=7d 1h 0 25h
        t=10 20
        z=2882844526 -1h
        a=tool:test
        m=audio 4000/2 RTP/AVP 0
        i=media info
        c=IN IP4 224.2.1.1/127
        c=IN IP4 224.2.1.2/127
        b=AS:64
        k=prompt
        a=quality:10
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel
        c=IN IP4 0.0.0.0
        a=sctp-port:5000
    """)
    body = sdp(  # the same with its body re-indented
        "\n".join(line.strip() for line in body.decode().splitlines())
    )
    desc = SessionDescription.parse(body)
    assert [k for k, _ in desc.extra_lines] == ["i", "u", "e", "b", "r", "t", "z"]
    audio, app = desc.media
    assert audio.port_count == 2
    assert audio.connection == Connection("224.2.1.1/127")
    assert audio.connection.host == "224.2.1.1"
    assert audio.extra_lines == (
        ("i", "media info"), ("c", "IN IP4 224.2.1.2/127"), ("b", "AS:64"), ("k", "prompt")
    )  # fmt: skip
    assert app.formats == ("webrtc-datachannel",) and app.codecs == ()
    assert desc.serialize() == body


def test_serializes_out_of_order_lines_in_grammar_order() -> None:
    desc = parse("""
        v=0
        o=- 1 1 IN IP4 192.0.2.1
        s=-
        t=0 0
        c=IN IP4 192.0.2.1
        a=recvonly
        b=AS:64
        m=audio 4000 RTP/AVP 8
        a=ptime:20
        c=IN IP4 192.0.2.2
        b=TIAS:64000
    """)
    text = desc.serialize().decode()
    assert text.index("c=IN IP4 192.0.2.1") < text.index("b=AS:64") < text.index("t=0 0")
    assert text.endswith(
        "m=audio 4000 RTP/AVP 8\r\nc=IN IP4 192.0.2.2\r\nb=TIAS:64000\r\na=ptime:20\r\n"
    )
    assert SessionDescription.parse(desc.serialize()) == desc


@pytest.mark.parametrize("text", [SIPP_OFFER, SOFTPHONE_OFFER, CHROME_OFFER, RFC4475_SDP01])
def test_samples_round_trip_byte_for_byte(text: str) -> None:
    desc = parse(text)
    assert desc.serialize() == sdp(text)
    assert SessionDescription.parse(desc.serialize()) == desc


def test_reads_a_fractional_ptime() -> None:
    desc = parse(SIPP_OFFER + "a=ptime:20.0\na=maxptime:40\n")
    assert (desc.media[0].ptime, desc.media[0].maxptime) == (20, 40)


MINIMAL = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
AUDIO = ["m=audio 4000 RTP/AVP 0"]


def _with(lines: list[str], index: int, new: str | None) -> bytes:
    out = list(lines)
    if new is None:
        del out[index]
    else:
        out[index] = new
    return "".join(f"{line}\r\n" for line in out).encode()


MALFORMED = {
    "empty": b"",
    "only blank lines": b"\r\n\r\n",
    "not sdp": b"<html>hello</html>\r\n",
    "spaces round =": b"v = 0\r\n",
    "no v first": _with(MINIMAL + AUDIO, 0, None),
    "version 1": _with(MINIMAL + AUDIO, 0, "v=1"),
    "no o": _with(MINIMAL + AUDIO, 1, None),
    "no s": _with(MINIMAL + AUDIO, 2, None),
    "no t": _with(MINIMAL + AUDIO, 4, None),
    "short o": _with(MINIMAL + AUDIO, 1, "o=- 1 1 IN IP4"),
    "o version not a number": _with(MINIMAL + AUDIO, 1, "o=- 1 x IN IP4 192.0.2.1"),
    "repeated s": _with(MINIMAL + AUDIO, 3, "s=again"),
    "two session c": _with([*MINIMAL, "c=IN IP4 192.0.2.2", *AUDIO], 0, "v=0"),
    "c with two fields": _with(MINIMAL + AUDIO, 3, "c=IN IP4"),
    "bad ipv4": _with(MINIMAL + AUDIO, 3, "c=IN IP4 192.0.2.256"),
    "bad ipv6": _with(MINIMAL + AUDIO, 3, "c=IN IP6 2001:db8:::1::2"),
    "ipv4 host with a space-like junk": _with(MINIMAL + AUDIO, 3, "c=IN IP4 _host"),
    "t not numbers": _with(MINIMAL + AUDIO, 4, "t=now later"),
    "unknown type letter": _with(MINIMAL + AUDIO, 4, "x=1"),
    "upper-case type": _with(MINIMAL + AUDIO, 4, "T=0 0"),
    "m with no format": _with(MINIMAL + AUDIO, 5, "m=audio 4000 RTP/AVP"),
    "m port too big": _with(MINIMAL + AUDIO, 5, "m=audio 70000 RTP/AVP 0"),
    "m port not a number": _with(MINIMAL + AUDIO, 5, "m=audio x RTP/AVP 0"),
    "m bad port count": _with(MINIMAL + AUDIO, 5, "m=audio 4000/ RTP/AVP 0"),
    "s= inside media": _with(MINIMAL + AUDIO + ["s=late"], 0, "v=0"),
    "attribute without name": _with(MINIMAL + AUDIO + ["a=:x"], 0, "v=0"),
    "active stream without c": _with(MINIMAL + AUDIO, 3, None),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_rejects_malformed_sdp_with_400(body: bytes) -> None:
    with pytest.raises(SdpError) as caught:
        SessionDescription.parse(body)
    assert isinstance(caught.value, SipParseError)
    assert caught.value.status == 400


def test_the_malformed_cases_differ_from_a_valid_body_only_in_their_defect() -> None:
    assert SessionDescription.parse(_with(MINIMAL + AUDIO, 0, "v=0")).media[0].codecs == (PCMU,)


def test_rejects_text_instead_of_bytes() -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse("v=0\r\n")  # type: ignore[arg-type]


def test_rejected_stream_may_lack_a_connection_line() -> None:
    desc = SessionDescription.parse(_with([*MINIMAL, "m=audio 0 RTP/AVP 0"], 3, None))
    assert desc.media[0].port == 0


def test_fqdn_connection_addresses_are_allowed() -> None:
    desc = SessionDescription.parse(_with(MINIMAL + AUDIO, 3, "c=IN IP4 media.example.com"))
    assert desc.connection == Connection("media.example.com")


# -- Building ----


def test_builds_our_offer_byte_for_byte() -> None:
    assert build_offer(CAPS, ORIGIN).serialize() == (
        b"v=0\r\n"
        b"o=callbridge 42 1 IN IP4 192.0.2.10\r\n"
        b"s=callbridge\r\n"
        b"c=IN IP4 192.0.2.10\r\n"
        b"t=0 0\r\n"
        b"m=audio 20000 RTP/AVP 0 8 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )


def test_builds_an_ipv6_offer_without_brackets() -> None:
    caps = replace(CAPS, address="2001:db8::10", telephone_event=False)
    offer = build_offer(caps, replace(ORIGIN, addrtype="IP6", address="2001:db8::10"))
    text = offer.serialize().decode()
    assert "c=IN IP6 2001:db8::10\r\n" in text and "o=callbridge 42 1 IN IP6 2001:db8::10" in text
    assert "m=audio 20000 RTP/AVP 0 8\r\n" in text and "telephone-event" not in text


_token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
_value = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=12)
_attrs = st.lists(st.builds(Attribute, _token, st.none() | _value), max_size=4).map(tuple)
_conn = st.none() | st.builds(
    Connection.for_host, st.sampled_from(["192.0.2.1", "2001:db8::1", "a.b"])
)
_media = st.builds(
    Media,
    media=_token,
    port=st.integers(1, 65535),
    proto=st.sampled_from(["RTP/AVP", "RTP/SAVP", "udp"]),
    formats=st.lists(_token, min_size=1, max_size=4).map(tuple),
    port_count=st.none() | st.integers(1, 4),
    connection=st.just(Connection("192.0.2.9")),
    attributes=_attrs,
    extra_lines=st.lists(st.tuples(st.sampled_from("ibk"), _value), max_size=3).map(
        lambda lines: tuple(sorted(lines, key=lambda line: line[0] != "i"))  # i= comes first
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    name=_value,
    conn=_conn,
    attrs=_attrs,
    media=st.lists(_media, max_size=3).map(tuple),
    version=st.integers(0, 2**64),
)
def test_build_then_parse_round_trips(
    name: str,
    conn: Connection | None,
    attrs: tuple[Attribute, ...],
    media: tuple[Media, ...],
    version: int,
) -> None:
    origin = Origin("-", "7", version, "192.0.2.1")
    desc = SessionDescription(origin, name, media, conn, Timing(0, 0), attrs)
    assert SessionDescription.parse(desc.serialize()) == desc


# -- Answering an offer (RFC 3264 §6) ----


def audio_lines(desc: SessionDescription) -> list[str]:
    return desc.serialize().decode().split("m=audio", 1)[1].splitlines()


def test_answers_a_sipp_offer() -> None:
    result = negotiate(parse(SIPP_OFFER), CAPS, ORIGIN)
    assert result.answer.serialize() == (
        b"v=0\r\no=callbridge 42 1 IN IP4 192.0.2.10\r\ns=callbridge\r\nc=IN IP4 192.0.2.10\r\n"
        b"t=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )
    media = result.media
    assert (media.remote_address, media.remote_port, media.codec) == ("127.0.0.1", 6000, PCMU)
    assert (media.telephone_event_pt, media.ptime, media.direction) == (
        None,
        20,
        Direction.SENDRECV,
    )
    assert not media.on_hold


def test_answer_picks_our_preferred_codec_and_the_offers_payload_types() -> None:
    result = negotiate(parse(SOFTPHONE_OFFER), replace(CAPS, codecs=(PCMA, PCMU)), ORIGIN)
    assert audio_lines(result.answer) == [
        " 20000 RTP/AVP 8 102",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:102 telephone-event/8000",
        "a=fmtp:102 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    assert result.media.codec == PCMA
    assert result.media.telephone_event_pt == 102  # the 8 kHz one, not 101 at 48 kHz
    assert result.media.ptime == 30  # the offerer's packetization
    assert negotiate(parse(SOFTPHONE_OFFER), CAPS, ORIGIN).media.codec == PCMU


def test_answer_reuses_a_dynamic_payload_type_for_a_codec_we_also_have() -> None:
    offer = parse(SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 97").replace("0 PCMU", "97 PCMU"))
    result = negotiate(offer, CAPS, ORIGIN)
    assert result.media.codec == Codec("PCMU", 97, 8000)
    assert audio_lines(result.answer)[:2] == [" 20000 RTP/AVP 97", "a=rtpmap:97 PCMU/8000"]


@pytest.mark.parametrize(
    ("offered_fmtp", "answered"),
    [
        (None, "0-15"),  # RFC 4733 §7.1.1: no fmtp means 0-15
        ("0-15", "0-15"),
        ("0-11,16", "0-11,16"),
        ("0-16,32-40", "0-16"),
        ("32-40", None),
        ("nonsense", None),
    ],
)
def test_answer_keeps_only_the_dtmf_events_both_sides_support(
    offered_fmtp: str | None, answered: str | None
) -> None:
    text = SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 0 96") + "a=rtpmap:96 telephone-event/8000\n"
    if offered_fmtp:
        text += f"a=fmtp:96 {offered_fmtp}\n"
    result = negotiate(parse(text), CAPS, ORIGIN)
    (audio,) = result.answer.media
    assert audio.fmtp(96) == answered
    assert result.media.telephone_event_pt == (96 if answered else None)
    assert audio.formats == (("0", "96") if answered else ("0",))


def test_answer_leaves_out_telephone_event_when_we_do_not_relay_it() -> None:
    caps = replace(CAPS, telephone_event=False)
    result = negotiate(parse(SOFTPHONE_OFFER), caps, ORIGIN)
    assert result.answer.media[0].formats == ("0",)
    assert result.media.telephone_event_pt is None


def test_telephone_event_must_share_the_audio_clock_rate() -> None:
    text = SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 0 101") + "a=rtpmap:101 telephone-event/16000\n"
    assert negotiate(parse(text), CAPS, ORIGIN).media.telephone_event_pt is None


def test_answer_keeps_every_m_line_in_order_and_rejects_the_others_with_port_0() -> None:
    offer = parse("""
        v=0
        o=- 1 1 IN IP4 192.0.2.1
        s=-
        c=IN IP4 192.0.2.1
        t=0 0
        m=video 5000 RTP/AVP 31
        m=audio 0 RTP/AVP 0
        m=audio 4000 RTP/AVP 18
        m=audio 4002 RTP/AVP 8
        m=audio 4004 RTP/AVP 0
        m=application 9 UDP/BFCP *
    """)
    result = negotiate(offer, CAPS, ORIGIN)
    summary = [(m.media, m.port, m.proto, m.formats) for m in result.answer.media]
    assert summary == [
        ("video", 0, "RTP/AVP", ("31",)),
        ("audio", 0, "RTP/AVP", ("0",)),  # offered with port 0: not used
        ("audio", 0, "RTP/AVP", ("18",)),  # G.729 only: nothing in common
        ("audio", 20000, "RTP/AVP", ("8",)),  # the first usable stream
        ("audio", 0, "RTP/AVP", ("0",)),  # one audio stream is all we relay
        ("application", 0, "UDP/BFCP", ("*",)),
    ]
    assert result.answer.media[0].attributes == ()
    assert (result.media.remote_port, result.media.codec) == (4002, PCMA)


def test_answer_copies_the_offers_time_and_uses_our_address_family() -> None:
    offer = SessionDescription.parse(vector_body("rfc5118/mult-ip-in-sdp.dat"))
    offer = replace(offer, time=Timing(3338481189, 3370017201))
    caps = replace(CAPS, address="2001:db8::10")
    answer = negotiate(offer, caps, ORIGIN).answer
    assert answer.time == Timing(3338481189, 3370017201)
    assert answer.connection == Connection("2001:db8::10", "IN", "IP6")


@pytest.mark.parametrize(
    ("offer_extra", "ours", "answered", "on_hold"),
    [
        ("", Direction.SENDRECV, Direction.SENDRECV, False),
        ("a=sendonly\n", Direction.SENDRECV, Direction.RECVONLY, True),
        ("a=recvonly\n", Direction.SENDRECV, Direction.SENDONLY, False),
        ("a=inactive\n", Direction.SENDRECV, Direction.INACTIVE, True),
        ("a=sendrecv\n", Direction.SENDONLY, Direction.SENDONLY, False),  # we hold them
        ("a=sendonly\n", Direction.SENDONLY, Direction.INACTIVE, True),
    ],
)
def test_answer_mirrors_the_offered_direction(
    offer_extra: str, ours: Direction, answered: Direction, on_hold: bool
) -> None:
    result = negotiate(parse(SIPP_OFFER + offer_extra), replace(CAPS, direction=ours), ORIGIN)
    assert result.answer.media[0].direction is answered
    assert result.media.direction is answered
    assert result.media.on_hold is on_hold


def test_session_level_direction_applies_unless_the_media_overrides_it() -> None:
    held = parse(SIPP_OFFER.replace("t=0 0", "t=0 0\na=sendonly"))
    assert held.direction_of(held.media[0]) is Direction.SENDONLY and held.on_hold(held.media[0])
    assert negotiate(held, CAPS, ORIGIN).media.direction is Direction.RECVONLY
    resumed = parse(SIPP_OFFER.replace("t=0 0", "t=0 0\na=sendonly") + "a=sendrecv\n")
    assert resumed.direction_of(resumed.media[0]) is Direction.SENDRECV


def test_rfc2543_hold_with_a_null_connection_address() -> None:
    offer = parse(SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
    assert offer.on_hold(offer.media[0])
    result = negotiate(offer, CAPS, ORIGIN)
    assert result.answer.media[0].direction is Direction.RECVONLY
    assert result.media.on_hold and result.media.remote_address == "0.0.0.0"
    inactive = parse(SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0") + "a=recvonly\n")
    assert inactive.direction_of(inactive.media[0]) is Direction.INACTIVE


def test_no_common_codec_is_488_not_a_parse_error() -> None:
    offer = parse(SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 18").replace("0 PCMU", "18 G729"))
    with pytest.raises(NotAcceptable) as caught:
        negotiate(offer, CAPS, ORIGIN)
    assert caught.value.status == 488 and caught.value.warn_code == 305
    assert "codec" in caught.value.reason
    assert not isinstance(caught.value, SipParseError)


@pytest.mark.parametrize(
    "text",
    [
        SIPP_OFFER.replace("m=audio 6000", "m=audio 0"),  # the only audio stream is refused
        SIPP_OFFER.replace("m=audio", "m=video"),
    ],
    ids=["port 0", "video only"],
)
def test_no_usable_audio_stream_is_488(text: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate(parse(text), CAPS, ORIGIN)
    assert caught.value.status == 488 and caught.value.warn_code == 304


def test_srtp_and_webrtc_audio_are_not_acceptable() -> None:
    with pytest.raises(NotAcceptable):
        negotiate(parse(CHROME_OFFER), CAPS, ORIGIN)
    with pytest.raises(NotAcceptable):
        negotiate(parse(SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP")), CAPS, ORIGIN)


def test_the_rfc5118_ipv6_offer_has_no_codec_we_relay() -> None:
    offer = SessionDescription.parse(vector_body("rfc5118/ipv6-in-sdp.dat"))
    with pytest.raises(NotAcceptable):
        negotiate(offer, CAPS, ORIGIN)
    g711 = replace(offer, media=(replace(offer.media[0], formats=("0",)), offer.media[1]))
    result = negotiate(g711, CAPS, ORIGIN)
    assert (result.media.remote_address, result.media.remote_port) == ("2001:db8::20", 6000)
    assert [m.port for m in result.answer.media] == [20000, 0]


def test_answer_parses_back_to_itself() -> None:
    answer = negotiate(parse(SOFTPHONE_OFFER), CAPS, ORIGIN).answer
    assert SessionDescription.parse(answer.serialize()) == answer


# -- Reading the answer to our offer (RFC 3264 §7) ----

OUR_OFFER = build_offer(CAPS, ORIGIN)


def answer_to_us(media_lines: str, session_extra: str = "") -> SessionDescription:
    return parse(
        "v=0\no=peer 9 9 IN IP4 203.0.113.5\ns=-\nc=IN IP4 203.0.113.5\nt=0 0\n"
        + session_extra
        + media_lines
    )


def test_reads_the_codec_address_and_dtmf_from_the_answer() -> None:
    answer = answer_to_us(
        "m=audio 30000 RTP/AVP 8 0 100\nc=IN IP4 203.0.113.6\na=rtpmap:100 telephone-event/8000\n"
        "a=ptime:30\n"
    )
    media = accept_answer(OUR_OFFER, answer)
    assert media.codec == PCMA  # the first one the answer lists
    assert (media.remote_address, media.remote_port) == ("203.0.113.6", 30000)
    assert media.telephone_event_pt == 100  # the answerer's number, to send with
    assert (media.ptime, media.direction, media.on_hold) == (30, Direction.SENDRECV, False)


def test_answer_without_telephone_event_or_ptime() -> None:
    media = accept_answer(OUR_OFFER, answer_to_us("m=audio 30000 RTP/AVP 0\n"))
    assert (media.codec, media.telephone_event_pt, media.ptime) == (PCMU, None, 20)


def test_ignores_telephone_event_we_did_not_offer() -> None:
    offer = build_offer(replace(CAPS, telephone_event=False), ORIGIN)
    answer = answer_to_us("m=audio 30000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n")
    assert accept_answer(offer, answer).telephone_event_pt is None


@pytest.mark.parametrize(
    ("ours", "theirs", "direction", "on_hold"),
    [
        (Direction.SENDRECV, "a=recvonly\n", Direction.SENDONLY, False),
        (Direction.SENDRECV, "a=sendonly\n", Direction.RECVONLY, True),
        (Direction.SENDONLY, "a=recvonly\n", Direction.SENDONLY, False),
        (Direction.SENDRECV, "a=inactive\n", Direction.INACTIVE, True),
        (Direction.INACTIVE, "a=inactive\n", Direction.INACTIVE, True),
    ],
)
def test_our_direction_follows_the_answer(
    ours: Direction, theirs: str, direction: Direction, on_hold: bool
) -> None:
    offer = build_offer(replace(CAPS, direction=ours), ORIGIN)
    media = accept_answer(offer, answer_to_us("m=audio 30000 RTP/AVP 0\n" + theirs))
    assert (media.direction, media.on_hold) == (direction, on_hold)


@pytest.mark.parametrize(
    ("media_lines", "warn_code"),
    [
        ("m=audio 0 RTP/AVP 0\n", 304),  # stream rejected
        ("m=audio 30000 RTP/AVP 18\n", 305),  # a codec we never offered
        ("m=audio 30000 RTP/SAVP 0\n", 302),
        ("m=audio 30000 RTP/AVP 0\nm=video 0 RTP/AVP 31\n", 305),  # more m-lines than offered
        ("", 305),  # no m-line at all
    ],
)
def test_unusable_answers_are_not_acceptable(media_lines: str, warn_code: int) -> None:
    with pytest.raises(NotAcceptable) as caught:
        accept_answer(OUR_OFFER, answer_to_us(media_lines))
    assert caught.value.status == 488 and caught.value.warn_code == warn_code


def test_our_offer_round_trips_through_a_peer_answer() -> None:
    """Offer from one leg, answered by negotiate() acting as the peer, read back."""
    peer = negotiate(OUR_OFFER, replace(CAPS, address="203.0.113.5", port=40000), ORIGIN)
    media = accept_answer(OUR_OFFER, peer.answer)
    assert (media.codec, media.telephone_event_pt) == (PCMU, 101)
    assert (media.remote_address, media.remote_port) == ("203.0.113.5", 40000)


# -- Origin versions (RFC 3264 §8) ----


def test_sess_version_moves_only_when_our_sdp_changes() -> None:
    local = LocalSdp(Origin("callbridge", "8123", 5, "192.0.2.10"))
    first = local.offer(CAPS)
    assert first.origin.session_version == 5
    again = local.offer(CAPS)  # e.g. a session refresh re-INVITE
    assert again.serialize() == first.serialize()
    held = local.offer(replace(CAPS, direction=Direction.SENDONLY))
    assert held.origin.session_version == 6
    assert held.origin.session_id == "8123"
    resumed = local.offer(CAPS)
    assert resumed.origin.session_version == 7
    answer = local.answer(parse(SIPP_OFFER), CAPS)
    assert answer.answer.origin.session_version == 8  # one codec instead of three: changed
    assert local.answer(parse(SIPP_OFFER), CAPS).answer.origin.session_version == 8


def test_stamping_ignores_the_origin_it_is_given() -> None:
    local = LocalSdp(ORIGIN)
    offer = local.offer(CAPS)
    assert local.stamp(replace(offer, origin=Origin("x", "1", 99, "a.b"))) == offer


# -- Robustness ----

SAMPLES = [sdp(t) for t in (SIPP_OFFER, SOFTPHONE_OFFER, CHROME_OFFER, RFC4475_SDP01)]
SAMPLES.append(OUR_OFFER.serialize())


def _mutate(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    lines = data.split(b"\r\n")
    choice = rng.randrange(6)
    if choice == 0:  # flip a byte
        i = rng.randrange(len(data))
        return data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]
    if choice == 1:  # truncate
        return data[: rng.randrange(len(data))]
    if choice == 2:  # drop a line
        del lines[rng.randrange(len(lines))]
    elif choice == 3:  # duplicate a line somewhere else
        lines.insert(rng.randrange(len(lines)), rng.choice(lines))
    elif choice == 4:  # replace a token in a line with a nasty one
        i = rng.randrange(len(lines))
        parts = lines[i].split(b" ")
        parts[rng.randrange(len(parts))] = rng.choice(
            [b"", b"-1", b"99999999999999999999999", b"::", b"0.0.0.0", b"/", b":", b"\xff", b"a="]
        )
        lines[i] = b" ".join(parts)
    else:  # swap two lines
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    return b"\r\n".join(lines)


def test_mutated_samples_raise_only_sdp_error() -> None:
    rng = random.Random(3264)
    parsed = rejected = 0
    for n in range(3000):
        body = SAMPLES[n % len(SAMPLES)]
        for _ in range(rng.randrange(1, 4)):
            body = _mutate(rng, body)
        try:
            desc = SessionDescription.parse(body)
        except SdpError:
            rejected += 1
            continue
        parsed += 1
        assert SessionDescription.parse(desc.serialize()) == desc
        with contextlib.suppress(NotAcceptable):
            negotiate(desc, CAPS, ORIGIN)
        with contextlib.suppress(NotAcceptable):
            accept_answer(OUR_OFFER, desc)
    assert parsed > 300 and rejected > 300  # the fuzz reaches both sides
