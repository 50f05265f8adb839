"""Property tests: what we serialize we parse back unchanged, and no input makes the parser
raise anything but SipParseError."""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import COMPACT_FORMS, Headers, NameAddr, Via, canonical_name
from callbridge.sip.message import (
    Request,
    Response,
    StreamParser,
    parse_message,
    salvage_request,
)
from callbridge.sip.uri import SipUri, TelUri, Uri, parse_uri

# Modest example counts: the whole file stays within a few seconds.
SETTINGS = settings(max_examples=100, deadline=None)
MESSAGES = settings(max_examples=40, deadline=None)

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
#: Any text a URI component could hold once decoded (escaping is the parser's business).
anything = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
some_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)

labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: f"[{ipaddress.IPv6Address(n).compressed}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(0, 65535)

sip_uris = st.builds(
    SipUri,
    host=hosts,
    user=st.none() | some_text,
    password=st.none() | anything,
    port=ports,
    params=st.lists(st.tuples(some_text, st.none() | some_text), max_size=3).map(tuple),
    headers=st.lists(st.tuples(some_text, anything), max_size=2).map(tuple),
    scheme=st.sampled_from(["sip", "sips"]),
).map(lambda u: u if u.user is not None else dataclasses.replace(u, password=None))
tel_uris = st.builds(
    TelUri,
    number=st.from_regex(r"\+[0-9][0-9().\-]{0,12}", fullmatch=True),
    params=st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9\-]{0,8}", fullmatch=True),
            st.none() | st.from_regex(r"[A-Za-z0-9+.\-()\[\]/:&$]{1,8}", fullmatch=True),
        ),
        max_size=2,
    ).map(tuple),
)
uris: st.SearchStrategy[Uri] = st.one_of(sip_uris, tel_uris)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: gen-value: a token, or a quoted string holding separators (kept quoted, as sent).
gen_values = st.one_of(
    tokens, st.text(TOKEN_CHARS + ' ;,=<>:@"\\', min_size=0, max_size=10).map(_quote)
)
generic_params = st.lists(st.tuples(tokens, st.none() | gen_values), max_size=3).map(tuple)
display_names = st.none() | st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    min_size=1,
    max_size=15,
)
name_addrs = st.builds(NameAddr, uri=uris, display_name=display_names, params=generic_params)
vias = st.builds(
    Via,
    transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "FOO"]),
    host=hosts,
    port=ports,
    params=st.tuples(st.tuples(st.just("branch"), tokens.map("z9hG4bK".__add__)))
    | st.tuples(st.just(("rport", None)), st.tuples(st.just("received"), ipv4)),
)
CALL_ID_CHARS = TOKEN_CHARS + '()<>:\\"/[]?{}'
call_ids = st.tuples(
    st.text(CALL_ID_CHARS, min_size=1, max_size=20), st.just("") | hostnames.map("@".__add__)
).map("".join)
#: Extension header values: no CR/LF, no SP/HTAB at either end (parsing strips them).
ext_values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20
).map(lambda v: v.strip(" \t"))
bodies = st.binary(max_size=40)


@st.composite
def header_lists(draw: st.DrawFn, method: str) -> list[tuple[str, str]]:
    via_values = draw(st.lists(vias, min_size=1, max_size=3))
    if len(via_values) > 1 and draw(st.booleans()):
        via_lines = [", ".join(map(str, via_values))]  # several via-parms on one line
    else:
        via_lines = [str(v) for v in via_values]
    headers = [("Via", line) for line in via_lines]
    headers += [
        ("From", str(draw(name_addrs))),
        ("To", str(draw(name_addrs))),
        ("Call-ID", draw(call_ids)),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
    ]
    extras = draw(st.lists(st.tuples(tokens.map("X-".__add__), ext_values), max_size=3))
    headers += extras
    return draw(st.permutations(headers))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(tokens)
    headers = draw(header_lists(method))
    body = draw(bodies)
    headers.insert(draw(st.integers(0, len(headers))), ("Content-Length", str(len(body))))
    return Request(method, str(draw(uris)), Headers(headers), body)


reasons = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t"), max_size=20
)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    headers = draw(header_lists(draw(tokens)))
    body = draw(bodies)
    headers.append(("Content-Length", str(len(body))))
    return Response(draw(st.integers(100, 699)), draw(reasons), Headers(headers), body)


# ------------------------------------------------------------------------------ round trips


@SETTINGS
@given(uris)
def test_uri_round_trip(uri: Uri) -> None:
    assert parse_uri(str(uri)) == uri


@SETTINGS
@given(name_addrs)
def test_name_addr_round_trip(na: NameAddr) -> None:
    assert NameAddr.parse(str(na)) == na


@SETTINGS
@given(vias)
def test_via_round_trip(via: Via) -> None:
    assert Via.parse(str(via)) == via


@MESSAGES
@given(requests())
def test_request_round_trip(req: Request) -> None:
    parsed = parse_message(req.serialize())
    assert parsed == req
    assert isinstance(parsed, Request) and parsed.cseq.method == req.method
    assert parsed.request_uri == parse_uri(req.uri)
    assert parsed.vias == [Via.parse(v) for v in req.headers.values("Via")]
    assert parsed.from_ == NameAddr.parse(req.headers.get("From") or "")


@MESSAGES
@given(responses())
def test_response_round_trip(resp: Response) -> None:
    assert parse_message(resp.serialize()) == resp


@st.composite
def wire_forms(draw: st.DrawFn) -> tuple[bytes, Request]:
    """A request written as a peer might: compact or odd-case names, SP before the colon,
    values folded over several lines. Parsing gives the plain request."""
    req = draw(requests())
    compact = {long.lower(): short for short, long in COMPACT_FORMS.items()}
    lines = [f"{req.method} {req.uri} SIP/2.0"]
    for name, value in req.headers:
        if name.lower() in compact and draw(st.booleans()):
            name = compact[name.lower()]
        if canonical_name(name.lower()) == name:  # a known name: any case reads the same
            name = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)
        gap = draw(st.sampled_from(["", " ", "\t "]))
        lines.append(f"{name}{gap}:{draw(st.sampled_from(['', ' ', '   ']))}{_fold(draw, value)}")
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode() + req.body
    return wire, req


def _fold(draw: st.DrawFn, value: str) -> str:
    """Fold at single spaces between other characters: unfolding gives back one SP."""
    out = []
    for i, ch in enumerate(value):
        single = 0 < i < len(value) - 1 and value[i - 1] not in " \t" and value[i + 1] not in " \t"
        if ch == " " and single and draw(st.booleans()):
            out.append(draw(st.sampled_from(["\r\n ", "\r\n\t", "\r\n    "])))
        else:
            out.append(ch)
    return "".join(out)


@MESSAGES
@given(wire_forms())
def test_folded_and_compact_wire_forms_parse_to_the_plain_request(
    case: tuple[bytes, Request],
) -> None:
    wire, req = case
    assert parse_message(wire) == req


@settings(max_examples=25, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=3), st.data())
def test_stream_framing_of_random_chunks(reqs: list[Request], data: st.DataObject) -> None:
    stream = b"".join(b"\r\n" * data.draw(st.integers(0, 2)) + r.serialize() for r in reqs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser = StreamParser()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += parser.feed(stream[start:end])
    assert got == reqs


# ------------------------------------------------------------------------------- fuzzing

FRAGMENTS = [
    b"INVITE ", b"SIP/2.0 ", b"SIP/2.0", b"200 ", b"sip:", b"tel:+1", b"user", b"@", b"host",
    b":5060", b"[::1]", b"\r\n", b"\r\n\r\n", b"\n", b"\r", b" ", b"\t", b"Via: ", b"v: ",
    b"SIP/2.0/UDP ", b";branch=z9hG4bK", b";rport", b";received=", b"From: ", b"To: ",
    b"Call-ID: ", b"i: ", b"CSeq: ", b"1 INVITE", b"Max-Forwards: ", b"Content-Length: ",
    b"l: ", b"0", b"9", b"-1", b"<", b">", b'"', b"\\", b",", b";", b":", b"=", b"%", b"%4",
    b"%00", b"?", b"&", b";tag=", b"\x00", b"\xff", b"\xc3\xa9",
]  # fmt: skip
sipish = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join)


def _never_crashes(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError as exc:
        assert exc.status in (400, 505)
    else:
        for name in ("call_id", "cseq", "vias", "top_via", "from_", "to", "max_forwards"):
            try:
                getattr(message, name)
            except SipParseError as exc:
                assert str(exc).startswith("missing")
        if isinstance(message, Request):
            assert parse_uri(message.uri) == message.request_uri
        assert parse_message(message.serialize()).body == message.body
    salvaged = salvage_request(data)
    if salvaged is not None:
        assert salvaged.vias and salvaged.top_via is not None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    _never_crashes(data)


@settings(max_examples=300, deadline=None)
@given(sipish)
def test_sip_like_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    _never_crashes(data)


@MESSAGES
@given(requests(), st.data())
def test_mutated_requests_raise_only_sip_parse_error(req: Request, data: st.DataObject) -> None:
    wire = bytearray(req.serialize())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(wire) - 1))
        wire[at : at + 1] = data.draw(st.sampled_from(FRAGMENTS))
    _never_crashes(bytes(wire))
    parser = StreamParser(max_message_size=2048)
    try:
        parser.feed(bytes(wire))
    except SipParseError as exc:
        assert exc.status in (400, 505, 513)
