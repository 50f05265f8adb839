"""SIP messages: parsing, validation, serialization, make_response, salvage_request and the
TCP StreamParser."""

from __future__ import annotations

import pytest

from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import CSeq, Headers, Via
from callbridge.sip.message import (
    REASON_PHRASES,
    Request,
    Response,
    StreamParser,
    default_reason,
    make_response,
    parse_message,
    salvage_request,
)
from callbridge.sip.uri import SipUri

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK1, SIP/2.0/TCP [2001:db8::1]:5070\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Timestamp: 54\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def request(data: bytes = INVITE) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def reparsed(message: Request | Response) -> Request | Response:
    """The message as the peer reads it, less the Content-Length serialize() writes."""
    again = parse_message(message.serialize())
    again.headers.remove("Content-Length")
    return again


def refused(data: bytes, status: int = 400, match: str | None = None) -> SipParseError:
    with pytest.raises(SipParseError, match=match) as caught:
        parse_message(data)
    assert caught.value.status == status
    return caught.value


# ------------------------------------------------------------------------------- parsing


def test_request_and_its_accessors() -> None:
    m = request()
    assert (m.method, m.uri, m.version, m.body) == (
        "INVITE", "sip:bob@biloxi.example.com", "SIP/2.0", b"v=0\n"
    )  # fmt: skip
    assert m.request_uri == SipUri("biloxi.example.com", "bob")
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.cseq == CSeq(314159, "INVITE")
    assert [v.host for v in m.vias] == [
        "pc33.atlanta.example.com",
        "proxy.example.com",
        "[2001:db8::1]",
    ]
    assert m.top_via.branch == "z9hG4bK776asdhds" and m.top_via.rport == ""
    assert m.from_.tag == "1928301774" and m.from_.display_name == "Alice"
    assert m.to.tag is None and m.to.display_name == "Bob"
    assert m.max_forwards == 70
    assert m.missing_headers() == ()


def test_response_keeps_the_whole_reason_phrase() -> None:
    m = parse_message(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(m, Response) and (m.status, m.reason) == (486, "Busy Here")
    m = parse_message("SIP/2.0 200 Très bien, merci\r\n\r\n".encode())
    assert isinstance(m, Response) and m.reason == "Très bien, merci"
    m = parse_message(b"SIP/2.0 180\r\n\r\n")  # no SP at all: read as an empty reason
    assert isinstance(m, Response) and m.reason == ""


def test_compact_forms_case_and_folding() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"f: <sip:x@y>;tag=1\r\nT: sip:a@b\r\nI: id@h\r\nCSEQ: 1 OPTIONS\r\n"
        b"k: path,\r\n\t timer\r\n"
        b"s:\r\n"
        b"m: <sip:x@h>\r\nc: text/plain\r\nL  : 2\r\n"
        b"Subject-Long:  folded\r\n   over\r\n two lines  \r\n"
        b"\r\nhi"
    )
    m = request(data)
    names = [n for n, _ in m.headers]
    assert names == ["Via", "From", "To", "Call-ID", "CSeq", "Supported", "Subject", "Contact",
                     "Content-Type", "Content-Length", "Subject-Long"]  # fmt: skip
    assert m.headers.values("k") == ["path", "timer"]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("subject-long") == "folded over two lines"
    assert m.body == b"hi"


def test_udp_framing() -> None:
    """RFC 3261 §18.3: octets past Content-Length are ignored; without it the body is the
    rest of the datagram. Leading CRLFs are skipped (§7.5)."""
    assert request(INVITE + b"garbage INVITE sip:x SIP/2.0\r\n").body == b"v=0\n"
    no_length = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert request(no_length + b"tail").body == b"v=0\ntail"
    assert request(b"\r\n\r\n" + INVITE).method == "INVITE"


@pytest.mark.parametrize(
    ("data", "status", "match"),
    [
        (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505, "version"),
        (INVITE.replace(b"SIP/2.0\r\n", b"HTTP/1.1\r\n", 1), 400, "version"),
        (b"SIP/1.0 200 OK\r\n\r\n", 505, "version"),
        (b"SIP/2.0 099 Low\r\n\r\n", 400, "status"),
        (b"SIP/2.0 700 High\r\n\r\n", 400, "status"),
        (b"SIP/2.0 4294967301 Big\r\n\r\n", 400, "status"),
        (b"SIP/2.0 20x OK\r\n\r\n", 400, "status"),
        (b"SIP/2.0 200 O\x00K\r\n\r\n", 400, "reason"),
        (INVITE.replace(b"\r\n\r\n", b"\r\n"), 400, "empty line"),
        (INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n"), 400, "bare"),
        (INVITE.replace(b"Timestamp: 54", b"Time\rstamp: 54"), 400, "bare"),
        (INVITE.replace(b"Timestamp: 54", b"Timestamp 54"), 400, "header line"),
        (INVITE.replace(b"Timestamp: 54", b"Time stamp: 54"), 400, "header line"),
        (INVITE.replace(b"Timestamp: 54", b": 54"), 400, "header line"),
        (INVITE.replace(b"Timestamp: 54", b"Timestamp: \xff\xfe"), 400, "UTF-8"),
        (INVITE.replace(b"SIP/2.0\r\n", b"SIP/2.0\r\n continued\r\n", 1), 400, "continuation"),
        (INVITE.replace(b"INVITE sip:", b"INV ITE sip:", 1), 400, "request line"),
        (INVITE.replace(b"INVITE sip:", b"INV(ITE sip:", 1), 400, "request line"),
        (INVITE.replace(b"sip:bob@biloxi.example.com SIP", b"sip:bob@bi loxi SIP"), 400, None),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 5"), 400, "shorter"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: -4"), 400, "Content-Length"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 4x"), 400, "Content-Length"),
        (INVITE.replace(b"Content-Length: 4", "Content-Length: \u0664".encode()), 400, None),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: " + b"9" * 5000), 400, None),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 4\r\nl: 4"), 400, "more than one"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400, "Max-Forwards"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: -1"), 400, "Max-Forwards"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nMax-Forwards: 69"), 400, None),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 2147483648 INVITE"), 400, "CSeq"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 1 BYE"), 400, "CSeq method"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 1 invite"), 400, "CSeq method"),
        (INVITE.replace(b"Call-ID: a84b", b"Call-ID: a 84b"), 400, "Call-ID"),
        (INVITE.replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com", b"i:"), 400, None),
        (INVITE.replace(b"Call-ID: a84b", b"i: x\r\nCall-ID: a84b"), 400, "more than one"),
        (INVITE.replace(b"Max-Forwards: 70", b"To: <sip:x@y>"), 400, "more than one To"),
        (INVITE.replace(b"branch=z9hG4bK1,", b"branch=z9hG4bK1,,"), 400, "empty Via"),
        (INVITE.replace(b"SIP/2.0/TCP [2001", b"SIP/2.0/TCP [2001 "), 400, None),
        (INVITE.replace(b'To: "Bob" <', b'To: "Bob <'), 400, "quoted"),
        (b"", 400, "empty line"),
        (b"\r\n\r\n", 400, "empty line"),
    ],
)
def test_malformed_messages(data: bytes, status: int, match: str | None) -> None:
    refused(data, status, match)


def test_missing_mandatory_headers_are_left_to_the_layer_above() -> None:
    """RFC 4475 §3.3.1: parse, name what lacks; the accessors refuse with SipParseError."""
    m = request(b"OPTIONS sip:a@b SIP/2.0\r\nl: 0\r\n\r\n")
    assert m.missing_headers() == ("Via", "From", "To", "Call-ID", "CSeq")
    for name in ("call_id", "cseq", "top_via", "from_", "to"):
        with pytest.raises(SipParseError, match="missing"):
            getattr(m, name)
    assert m.vias == [] and m.max_forwards is None


def test_accessors_follow_header_changes() -> None:
    m = request()
    assert m.cseq.seq == 314159
    m.headers.set("CSeq", "7 INVITE")
    assert m.cseq.seq == 7
    m.headers.set("CSeq", "garbage")
    with pytest.raises(SipParseError):
        _ = m.cseq
    m.headers.prepend("Via", "SIP/2.0/TCP new.example.com;branch=z9hG4bKnew")
    assert m.top_via.host == "new.example.com" and len(m.vias) == 4


# ------------------------------------------------------------------------- serialization


def test_serialize_round_trip_keeps_order_and_writes_the_right_length() -> None:
    m = request()
    assert m.serialize() == INVITE
    assert parse_message(m.serialize()) == m
    m.body = b"longer body"
    again = request(m.serialize())
    assert again.body == b"longer body" and again.headers.get("Content-Length") == "11"
    assert [n for n, _ in again.headers][-3:] == ["Contact", "Content-Type", "Content-Length"]


def test_serialize_adds_a_missing_content_length_last_and_drops_duplicates() -> None:
    r = Request("BYE", "sip:a@b", Headers([("l", "9"), ("To", "<sip:a@b>"), ("l", "3")]), b"xy")
    assert r.serialize() == b"BYE sip:a@b SIP/2.0\r\nContent-Length: 2\r\nTo: <sip:a@b>\r\n\r\nxy"
    bare = Response(200, "OK")
    assert bare.serialize() == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_serialize_refuses_header_injection() -> None:
    r = Request("BYE", "sip:a@b", Headers([("Subject", "hi\r\nVia: SIP/2.0/UDP evil")]))
    with pytest.raises(ValueError, match="CR or LF"):
        r.serialize()


# ------------------------------------------------------------------------- make_response


def test_reason_phrases() -> None:
    assert REASON_PHRASES[183] == "Session Progress"
    assert REASON_PHRASES[481] == "Call/Transaction Does Not Exist"
    assert (
        REASON_PHRASES[487] == "Request Terminated" and REASON_PHRASES[513] == "Message Too Large"
    )
    assert {100, 180, 200, 400, 401, 407, 415, 420, 482, 486, 488, 491, 500, 503, 505, 603} <= set(
        REASON_PHRASES
    )
    assert default_reason(499) == "Client Error" and default_reason(299) == "Success"


def test_make_response_copies_per_rfc3261_8_2_6_2() -> None:
    req = request()
    resp = make_response(req, 180, to_tag="as83kd9bs")
    assert (resp.status, resp.reason, resp.body) == (180, "Ringing", b"")
    assert [n for n, _ in resp.headers] == ["Via", "Via", "From", "To", "Call-ID", "CSeq"]
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.vias == req.vias
    assert resp.to.tag == "as83kd9bs" and resp.to.display_name == "Bob"
    assert resp.headers.get("From") == req.headers.get("From")
    assert (resp.call_id, resp.cseq) == (req.call_id, req.cseq)
    assert "Timestamp" not in resp.headers and "Contact" not in resp.headers
    assert reparsed(resp) == resp


def test_make_response_keeps_an_existing_to_tag_and_adds_headers() -> None:
    req = request(INVITE.replace(b'To: "Bob" <sip:bob@biloxi.example.com>', b"To: sip:b@h;tag=old"))
    resp = make_response(req, 200, "Fine", to_tag="new", headers=[("Contact", "<sip:b@h>")])
    assert resp.reason == "Fine" and resp.to.tag == "old"
    assert resp.headers.get("Contact") == "<sip:b@h>"
    bare = request(INVITE.replace(b'To: "Bob" <sip:bob@biloxi.example.com>', b"To: sip:b@h"))
    assert make_response(bare, 486, to_tag="t1").headers.get("To") == "sip:b@h;tag=t1"


def test_100_trying_copies_timestamp_and_may_go_without_tag() -> None:
    resp = make_response(request(), 100)
    assert resp.headers.get("Timestamp") == "54" and resp.to.tag is None
    assert resp.reason == "Trying"


def test_make_response_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        make_response(request(), 700)
    with pytest.raises(ValueError):
        make_response(request(), 200, to_tag="bad tag")


# ------------------------------------------------------------------------ salvage_request


def test_salvage_a_request_with_a_broken_header() -> None:
    data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 999")
    refused(data)
    got = salvage_request(data)
    assert got is not None and (got.method, got.uri) == ("INVITE", "sip:bob@biloxi.example.com")
    assert [n for n, _ in got.headers] == ["Via", "Via", "Via", "To", "From", "Call-ID", "CSeq"]
    assert got.vias == request().vias and got.cseq == CSeq(314159, "INVITE")
    answer = make_response(got, 400, to_tag="z")
    assert reparsed(answer) == answer


def test_salvage_keeps_only_valid_pieces() -> None:
    data = (
        b"INVITE  sip:x@y  SIP/2.0\n"  # extra SP and bare LF: salvage is lenient
        b"v: SIP/2.0/UDP good.example.com;branch=z9hG4bK1\n"
        b"Via: SIP/2.0/UDP bad host\n"
        b"Via: SIP/2.0/UDP after-broken.example.com\n"
        b"From: broken <\n"
        b"t: <sip:x@y>\n"
        b"CSeq: 99999999999 INVITE\n"
        b"i: ok@h\n"
        b"Call-ID: second@h\n"
    )
    got = salvage_request(data)
    assert got is not None
    assert [v.host for v in got.vias] == ["good.example.com"]
    assert "From" not in got.headers and "CSeq" not in got.headers
    assert got.headers.get("To") == "<sip:x@y>" and got.call_id == "ok@h"


def test_salvaged_values_never_carry_a_bare_cr() -> None:
    """A bare CR inside a quoted string would break the answer's framing: such values are
    left out, and the answer always serializes."""
    data = INVITE.replace(b'To: "Bob" <', b'To: "Bo\rb" <').replace(b"z9hG4bK1", b'x="\r"')
    refused(data)
    got = salvage_request(data)
    assert got is not None and "To" not in got.headers
    assert got.headers.get_all("Via")[1] == "SIP/2.0/UDP proxy.example.com"  # x="\r" dropped
    wire = make_response(got, 400, to_tag="t").serialize()
    assert wire.count(b"\r") == wire.count(b"\n")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n",  # a response
        b"INVITE sip:x@y SIP/2.0\r\nTo: <sip:x@y>\r\n\r\n",  # no Via
        b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP\r\n\r\n",  # no readable Via
        b"INVITE sip:x@y SIP/2.0\r\nVia: ;branch=z9hG4bK1, SIP/2.0/UDP h\r\n\r\n",  # top broken
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # not SIP at all (a TLS hello)
    ],
)
def test_salvage_gives_up_on_responses_and_without_a_readable_top_via(data: bytes) -> None:
    assert salvage_request(data) is None


@pytest.mark.parametrize(
    ("start_line", "method", "uri"),
    [
        (b" sip:x@y SIP/2.0", "", "sip:x@y"),  # empty method
        (b"\x00INVITE sip:x@y SIP/2.0", "?INVITE", "sip:x@y"),
        (b"\xe5\xe4\xf6 sip:x@y SIP/2.0", "\ufffd\ufffd\ufffd", "sip:x@y"),
        (b"INVITE", "INVITE", ""),
    ],
)
def test_salvage_a_garbage_start_line_when_the_via_is_intact(
    start_line: bytes, method: str, uri: str
) -> None:
    """PROTOS c07-sip group sip-method: whatever the method, an intact Via routes a 400."""
    data = start_line + INVITE[INVITE.index(b"\r\n") :]
    refused(data)
    got = salvage_request(data)
    assert got is not None and (got.method, got.uri) == (method, uri)
    assert got.top_via.branch == "z9hG4bK776asdhds"
    assert make_response(got, 400).serialize().startswith(b"SIP/2.0 400 Bad Request\r\n")


def test_salvage_repairs_a_via_with_empty_parameters() -> None:
    """RFC 4475 §3.1.2.1 badinv01: ``;;,;,,`` after a readable sent-by."""
    data = INVITE.replace(b";branch=z9hG4bK776asdhds;rport", b";;branch=z9hG4bKb;;,;,,")
    refused(data)
    got = salvage_request(data)
    assert got is not None
    assert got.headers.get_all("Via") == ["SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKb"]


def test_salvage_answers_an_unsupported_version_with_505() -> None:
    data = INVITE.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1)
    error = refused(data, 505)
    got = salvage_request(data)
    assert got is not None
    answer = make_response(got, error.status)
    assert answer.serialize().startswith(b"SIP/2.0 505 Version Not Supported\r\n")


# --------------------------------------------------------------------------- StreamParser


def test_stream_partial_and_several_messages_per_chunk() -> None:
    parser = StreamParser()
    assert parser.feed(INVITE[:10]) == []
    assert parser.feed(INVITE[10:-2]) == []
    first = parser.feed(INVITE[-2:] + INVITE + INVITE[:50])
    assert first == [request(), request()]
    assert parser.feed(INVITE[50:]) == [request()]


def test_stream_byte_at_a_time() -> None:
    parser = StreamParser()
    got = []
    for i in range(len(INVITE) * 2):
        got += parser.feed((INVITE * 2)[i : i + 1])
    assert got == [request(), request()]


def test_stream_skips_keepalives() -> None:
    """RFC 5626 §3.5.1: CRLFCRLF pings and CRLF pongs between messages."""
    parser = StreamParser()
    assert parser.feed(b"\r\n\r\n") == []
    assert parser.feed(b"\r\n" + INVITE + b"\r\n\r\n\r") == [request()]
    assert parser.feed(b"\n" + INVITE) == [request()]


def test_stream_requires_content_length() -> None:
    parser = StreamParser()
    with pytest.raises(SipParseError, match="Content-Length is mandatory") as caught:
        parser.feed(INVITE.replace(b"Content-Length: 4\r\n", b""))
    assert caught.value.status == 400
    with pytest.raises(SipParseError):  # the stream is dead: every later feed says so
        parser.feed(INVITE)


def test_stream_enforces_the_size_limit_with_513() -> None:
    parser = StreamParser(max_message_size=300)
    with pytest.raises(SipParseError) as caught:
        parser.feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: 400"))
    assert caught.value.status == 513
    endless = StreamParser(max_message_size=300)
    endless.feed(b"INVITE sip:x@y SIP/2.0\r\n")
    with pytest.raises(SipParseError) as caught:
        for _ in range(100):
            endless.feed(b"X-Filler: " + b"a" * 50 + b"\r\n")
    assert caught.value.status == 513
    huge = StreamParser()
    with pytest.raises(SipParseError) as caught:
        huge.feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: 99999999999999"))
    assert caught.value.status == 513


def test_stream_a_bad_message_in_good_framing_is_dropped_alone() -> None:
    bad = INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    parser = StreamParser()
    assert parser.feed(INVITE + bad + INVITE[:20]) == [request()]  # the error waits its turn
    with pytest.raises(SipParseError, match="CSeq method"):
        parser.feed(INVITE[20:40])
    assert parser.feed(INVITE[40:]) == [request()]  # framing was intact: go on


def test_stream_framing_error_after_good_messages() -> None:
    parser = StreamParser()
    assert parser.feed(INVITE + b"BROKEN\r\n\r\n") == [request()]
    with pytest.raises(SipParseError):
        parser.feed(b"")
    with pytest.raises(SipParseError):
        parser.feed(INVITE)


def test_via_of_a_parsed_message_is_a_value() -> None:
    via = request().top_via
    assert isinstance(via, Via) and hash(via) == hash(Via.parse(str(via)))
