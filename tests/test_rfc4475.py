"""RFC 4475 (SIP torture tests) and RFC 5118 (IPv6 torture tests) against the parser.

Every vector is replayed as its MANIFEST.tsv verdict demands; where the RFC lets a parser
choose (REJECT_OR_LENIENT, SEMANTIC) our choice is pinned here, file by file, so a change of
behaviour is a visible decision. Then every prefix and a spread of byte flips of every vector
must give a message or SipParseError, nothing else, also through StreamParser and
salvage_request.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import NameAddr
from callbridge.sip.message import (
    Message,
    Request,
    Response,
    StreamParser,
    make_response,
    parse_message,
    salvage_request,
)
from callbridge.sip.uri import AbsoluteUri, SipUri

VECTORS = Path(__file__).parent / "vectors"
RFC4475 = VECTORS / "rfc4475"
RFC5118 = VECTORS / "rfc5118"


def manifest(folder: Path) -> dict[Path, str]:
    """file -> verdict, for the files present (variants/MANIFEST.tsv lists the whole corpus)."""
    with (folder / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {folder / r["file"]: r["rfc_verdict"] for r in rows if (folder / r["file"]).exists()}


VERDICTS = {**manifest(RFC4475), **manifest(RFC4475 / "variants"), **manifest(RFC5118)}
ALL_FILES = sorted(VERDICTS, key=lambda p: str(p.relative_to(VECTORS)))


def vector_id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def load(name: str) -> Message:
    folder = RFC5118 if (RFC5118 / name).exists() else RFC4475
    return parse_message((folder / name).read_bytes())


def test_manifests_cover_every_vector_file() -> None:
    on_disk = {
        *RFC4475.glob("*.dat"),
        *(RFC4475 / "variants").glob("*.dat"),
        *RFC5118.glob("*.dat"),
    }
    assert on_disk == set(VERDICTS)
    assert len(VERDICTS) == 51 + 12  # 50 RFC 4475 files + test.dat + the baddn variant; 12


# ---------------------------------------------------------------- ACCEPT: key facts per file


def _wsinv(m: Message) -> None:
    assert isinstance(m, Request) and m.method == "INVITE"
    assert m.request_uri == SipUri(
        "chair-dnrc.example.com", "vivekg", params=(("unknownparam", None),)
    )
    assert m.to.tag == "1918181833n" and m.from_.tag == "98asjd8"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.max_forwards == 68 and m.cseq.seq == 9 and m.cseq.method == "INVITE"
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("Subject") == ""
    contact = NameAddr.parse(m.headers.get("Contact") or "")
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert len(m.body) == 150


def _intmeth(m: Message) -> None:
    assert isinstance(m, Request)
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = m.request_uri
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def _esc01(m: Message) -> None:
    assert isinstance(m, Request)
    uri = m.request_uri
    assert isinstance(uri, SipUri) and uri.user == "sips:user@example.com"
    assert isinstance(m.to.uri, SipUri) and m.to.uri.user == "user"
    assert isinstance(m.from_.uri, SipUri) and m.from_.uri.user == "I have spaces"
    contact = NameAddr.parse(m.headers.get("Contact") or "").uri
    assert isinstance(contact, SipUri) and contact.user == "caller"
    # Decoded exactly once: %25%34%31 is "%41", not "A".
    assert contact.params == (("lr", None), ("name", "value%41"))


def _escnull(m: Message) -> None:
    assert isinstance(m.to.uri, SipUri) and m.to.uri.user == "null-\x00-null"
    users = [NameAddr.parse(c).uri for c in m.headers.values("Contact")]
    assert [u.user for u in users if isinstance(u, SipUri)] == ["\x00", "\x00\x00"]


def _esc02(m: Message) -> None:
    assert isinstance(m, Request) and m.method == "RE%47IST%45R" != "REGISTER"
    assert m.cseq.method == "RE%47IST%45R"
    assert m.to.display_name == "%Z%45"
    assert m.top_via.branch == "z9hG4bK209%fzsnel234"
    # C%6Fntact is a different (extension) header, not a third Contact.
    assert m.headers.values("Contact") == [
        "<sip:alias1@host1.example.com>",
        "<sip:alias3@host3.example.com>",
    ]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def _lwsdisp(m: Message) -> None:
    assert m.from_.display_name == "caller" and m.from_.tag == "323"


def _longreq(m: Message) -> None:
    assert len(m.vias) == 34
    assert m.vias[-1].received == "192.0.2.5"
    assert m.to.display_name is not None and len(m.to.display_name) > 90
    assert len(m.call_id) > 100 and len(m.body) == 150


def _dblreq(m: Message) -> None:
    assert isinstance(m, Request) and m.method == "REGISTER"
    assert m.body == b"" and m.call_id.startswith("dblreq.0ha0isndaksdj99")
    assert "INVITE" not in m.headers.get("Call-ID", "")


def _semiuri(m: Message) -> None:
    assert isinstance(m, Request)
    uri = m.request_uri
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u@example.net", "example.com", ())
    assert m.headers.values("Accept")[-1] == "message/sipfrag"
    assert len(m.headers.values("Accept")) == 6


def _transports(m: Message) -> None:
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def _mpart01(m: Message) -> None:
    raw = (RFC4475 / "mpart01.dat").read_bytes()
    assert len(m.body) == 553 and raw.endswith(m.body)
    assert b"\x00" in m.body and m.body.endswith(b"--7a9cbec02ceef655--\r\n")


def _unreason(m: Message) -> None:
    assert isinstance(m, Response) and m.status == 200
    assert m.reason == (
        "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e"
        "\u0441\u0442\u043e \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441"
        "\u0442\u043e\u0435"
    )


def _noreason(m: Message) -> None:
    assert isinstance(m, Response) and (m.status, m.reason) == (100, "")


# ------------------------------------------------------------- SEMANTIC: our choice per file


def _insuf(m: Message) -> None:
    # Parsed: what is missing is for the layer above to answer (400).
    assert m.missing_headers() == ("From", "To", "Call-ID")
    with pytest.raises(SipParseError):
        _ = m.call_id
    assert m.cseq.seq == 193942 and len(m.body) == 152


def _badbranch(m: Message) -> None:
    assert m.top_via.branch == "z9hG4bK"


def _unkscm(m: Message) -> None:
    assert isinstance(m, Request)
    assert m.request_uri == AbsoluteUri("nobodyKnowsThisScheme", "totallyopaquecontent")


def _novelsc(m: Message) -> None:
    assert isinstance(m, Request) and isinstance(m.request_uri, AbsoluteUri)
    assert m.request_uri.scheme == "soap.beep"


def _unksm2(m: Message) -> None:
    assert m.to.uri == AbsoluteUri("isbn", "2983792873")
    assert m.from_.uri == AbsoluteUri("http", "//www.example.com")
    assert NameAddr.parse(m.headers.get("Contact") or "").uri == AbsoluteUri("name", "John_Smith")


def _bext01(m: Message) -> None:
    assert m.headers.values("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert len(m.headers.values("Proxy-Require")) == 2


def _bcast(m: Message) -> None:
    assert [v.host for v in m.vias] == ["192.0.2.198", "255.255.255.255"]


def _zeromf(m: Message) -> None:
    assert m.max_forwards == 0


def _cparam01(m: Message) -> None:
    contact = NameAddr.parse(m.headers.get("Contact") or "")
    assert contact.params == (("unknownparam", None),)
    assert isinstance(contact.uri, SipUri) and contact.uri.params == ()


def _cparam02(m: Message) -> None:
    contact = NameAddr.parse(m.headers.get("Contact") or "")
    assert contact.params == ()
    assert isinstance(contact.uri, SipUri) and contact.uri.params == (("unknownparam", None),)


def _regescrt(m: Message) -> None:
    contact = NameAddr.parse(m.headers.get("Contact") or "")
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == (("Route", "<sip:sip.example.com>"),)
    assert "Route" not in m.headers  # an escaped URI header never becomes a real one


def _inv2543(m: Message) -> None:
    assert m.top_via.branch is None and m.from_.tag is None and m.max_forwards is None
    assert "Content-Length" not in m.headers
    raw = (RFC4475 / "inv2543.dat").read_bytes()
    assert raw.endswith(m.body) and m.body.startswith(b"v=0")


def _escruri(m: Message) -> None:
    assert isinstance(m, Request) and isinstance(m.request_uri, SipUri)
    assert m.request_uri.headers == (("Route", "<sip:example.com>"),)
    assert "Route" not in m.headers


def _regbadct(m: Message) -> None:
    # The message parses (Contact is not needed to frame or route it); the Contact itself is
    # refused when used: a URI holding '?' must be in <> (RFC 3261 §20.10).
    with pytest.raises(SipParseError):
        NameAddr.parse(m.headers.get("Contact") or "")


def _baddate(m: Message) -> None:
    assert m.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def _plain(m: Message) -> None:
    assert m.missing_headers() == ()


def _ipv6_good(m: Message) -> None:
    assert isinstance(m, Request) and m.request_uri == SipUri("[2001:db8::10]")
    assert m.top_via.host == "[2001:db8::9:1]"
    contact = NameAddr.parse(m.headers.get("Contact") or "").uri
    assert isinstance(contact, SipUri) and contact.host == "[2001:db8::1]"


def _port_ambiguous(m: Message) -> None:
    assert isinstance(m, Request) and m.request_uri == SipUri("[2001:db8::10:5070]", port=None)


def _port_unambiguous(m: Message) -> None:
    assert isinstance(m, Request) and m.request_uri == SipUri("[2001:db8::10]", port=5070)


def _received(expected: str) -> Callable[[Message], None]:
    def check(m: Message) -> None:
        assert m.top_via.received == expected

    return check


def _mult_ip_in_header(m: Message) -> None:
    assert [(v.host, v.port) for v in m.vias] == [
        ("[2001:db8::9:1]", 6050),
        ("192.0.2.1", None),
        ("[2001:db8::9:255]", None),
    ]
    assert m.vias[2].received == "192.0.2.200"


def _ipv4_mapped(m: Message) -> None:
    assert [v.host for v in m.vias] == ["[::ffff:192.0.2.10]", "[::ffff:192.0.2.2]"]
    assert m.top_via.port == 19823
    # Content-Length 236 is shorter than the SDP (245): UDP framing keeps 236 octets.
    assert len(m.body) == 236


def _three_colons(m: Message) -> None:
    assert isinstance(m, Request) and isinstance(m.request_uri, SipUri)
    assert m.request_uri.host == "[2001:db8:::192.0.2.1]"


def _sdp_v6(length: int) -> Callable[[Message], None]:
    def check(m: Message) -> None:
        assert len(m.body) == length and b"IN IP6" in m.body

    return check


ACCEPTED: dict[str, Callable[[Message], None]] = {
    "rfc4475/wsinv.dat": _wsinv,
    "rfc4475/intmeth.dat": _intmeth,
    "rfc4475/esc01.dat": _esc01,
    "rfc4475/escnull.dat": _escnull,
    "rfc4475/esc02.dat": _esc02,
    "rfc4475/lwsdisp.dat": _lwsdisp,
    "rfc4475/longreq.dat": _longreq,
    "rfc4475/dblreq.dat": _dblreq,
    "rfc4475/semiuri.dat": _semiuri,
    "rfc4475/transports.dat": _transports,
    "rfc4475/mpart01.dat": _mpart01,
    "rfc4475/unreason.dat": _unreason,
    "rfc4475/noreason.dat": _noreason,
    # REJECT_OR_LENIENT files we accept
    "rfc4475/escruri.dat": _escruri,
    "rfc4475/baddate.dat": _baddate,
    "rfc4475/regbadct.dat": _regbadct,
    # SEMANTIC files: parsed, the layer above decides
    "rfc4475/badbranch.dat": _badbranch,
    "rfc4475/insuf.dat": _insuf,
    "rfc4475/unkscm.dat": _unkscm,
    "rfc4475/novelsc.dat": _novelsc,
    "rfc4475/unksm2.dat": _unksm2,
    "rfc4475/bext01.dat": _bext01,
    "rfc4475/invut.dat": _plain,
    "rfc4475/regaut01.dat": _plain,
    "rfc4475/bcast.dat": _bcast,
    "rfc4475/zeromf.dat": _zeromf,
    "rfc4475/cparam01.dat": _cparam01,
    "rfc4475/cparam02.dat": _cparam02,
    "rfc4475/regescrt.dat": _regescrt,
    "rfc4475/sdp01.dat": _plain,
    "rfc4475/inv2543.dat": _inv2543,
    # RFC 5118
    "rfc5118/ipv6-good.dat": _ipv6_good,
    "rfc5118/port-ambiguous.dat": _port_ambiguous,
    "rfc5118/port-unambiguous.dat": _port_unambiguous,
    "rfc5118/via-received-param-with-delim.dat": _received("[2001:db8::9:255]"),
    "rfc5118/via-received-param-no-delim.dat": _received("2001:db8::9:255"),
    "rfc5118/ipv6-in-sdp.dat": _sdp_v6(241),
    "rfc5118/mult-ip-in-header.dat": _mult_ip_in_header,
    "rfc5118/mult-ip-in-sdp.dat": _sdp_v6(181),
    "rfc5118/ipv4-mapped-ipv6.dat": _ipv4_mapped,
    "rfc5118/ipv6-bug-abnf-3-colons.dat": _three_colons,
    "rfc5118/ipv6-correct-abnf-2-colons.dat": _plain,
}

#: Files we refuse, with the status and a word of the reason. REJECT verdicts, plus our
#: choices among REJECT_OR_LENIENT and SEMANTIC (multi01, mcl01: a message with two Call-IDs
#: or two Content-Lengths has no single meaning, so it is refused at parse time).
REJECTED: dict[str, tuple[int, str]] = {
    "rfc4475/badinv01.dat": (400, "parameter"),
    "rfc4475/clerr.dat": (400, "Content-Length"),
    "rfc4475/ncl.dat": (400, "Content-Length"),
    "rfc4475/scalar02.dat": (400, "Max-Forwards"),
    "rfc4475/scalarlg.dat": (400, "CSeq"),
    "rfc4475/badvers.dat": (505, "version"),
    "rfc4475/mismatch01.dat": (400, "CSeq method"),
    "rfc4475/mismatch02.dat": (400, "CSeq method"),
    "rfc4475/bigcode.dat": (400, "status code"),
    "rfc4475/test.dat": (400, "request line"),
    "rfc4475/quotbal.dat": (400, "unterminated"),
    "rfc4475/ltgtruri.dat": (400, "URI"),
    "rfc4475/lwsruri.dat": (400, "request line"),
    "rfc4475/lwsstart.dat": (400, "request line"),
    "rfc4475/trws.dat": (400, "request line"),
    "rfc4475/badaspec.dat": (400, "whitespace inside <>"),
    "rfc4475/baddn.dat": (400, "empty line"),  # this copy's header section is unterminated
    "rfc4475/variants/baddn.terminated.dat": (400, "must be quoted"),
    "rfc4475/multi01.dat": (400, "more than one"),
    "rfc4475/mcl01.dat": (400, "more than one Content-Length"),
    "rfc5118/ipv6-bad.dat": (400, "port"),
}


def test_every_file_has_a_pinned_outcome() -> None:
    assert set(ACCEPTED) | set(REJECTED) == {vector_id(p) for p in ALL_FILES}
    assert not set(ACCEPTED) & set(REJECTED)


@pytest.mark.parametrize("path", ALL_FILES, ids=vector_id)
def test_vector(path: Path) -> None:
    verdict, name = VERDICTS[path], vector_id(path)
    data = path.read_bytes()
    if name in ACCEPTED:
        assert verdict != "REJECT"
        message = parse_message(data)
        ACCEPTED[name](message)
        return
    assert verdict != "ACCEPT"
    status, words = REJECTED[name]
    with pytest.raises(SipParseError, match=words) as caught:
        parse_message(data)
    assert caught.value.status == status


def test_mismatch02_status_is_one_the_rfc_allows() -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message((RFC4475 / "mismatch02.dat").read_bytes())
    assert caught.value.status in (400, 501)


def test_scalar02_is_refused_for_its_cseq_alone() -> None:
    data = (
        (RFC4475 / "scalar02.dat").read_bytes().replace(b"Max-Forwards: 300", b"Max-Forwards: 70")
    )
    with pytest.raises(SipParseError, match="CSeq"):
        parse_message(data)


@pytest.mark.parametrize("path", [VECTORS / name for name in ACCEPTED], ids=vector_id)
def test_accepted_vector_survives_serialize(path: Path) -> None:
    """parse -> serialize -> parse gives the same message (Content-Length apart, when the
    file had none: serialize always writes one)."""
    first = parse_message(path.read_bytes())
    again = parse_message(first.serialize())
    if "Content-Length" not in first.headers:
        first.headers.add("Content-Length", str(len(first.body)))
    assert again == first


@pytest.mark.parametrize("path", [VECTORS / name for name in REJECTED], ids=vector_id)
def test_refused_requests_are_salvaged_for_an_answer(path: Path) -> None:
    """A refused request whose top Via is readable can still be answered."""
    data = path.read_bytes()
    salvaged = salvage_request(data)
    if data.startswith(b"SIP/"):
        assert salvaged is None
        return
    if salvaged is None:  # only where no Via at all survives
        assert vector_id(path) == "rfc4475/test.dat"
        return
    status = REJECTED[vector_id(path)][0]
    response = make_response(salvaged, status, to_tag="x1")
    answer = parse_message(response.serialize())
    assert isinstance(answer, Response) and answer.status == status
    assert answer.top_via == salvaged.top_via


# ------------------------------------------------------------------ robustness: never crash


def _outcome(data: bytes, salvage: bool = True) -> None:
    """Parse; a refusal must be SipParseError with a sane status, a success must leave every
    accessor usable (or SipParseError for absent headers). Salvage never raises."""
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
        message.serialize()
    if salvage:
        salvage_request(data)


FLIP_VALUES = (0x00, 0x0A, 0x0D, 0x20, 0x22, 0x25, 0x3A, 0x3B, 0x3C, 0xFF)


@pytest.mark.parametrize("path", ALL_FILES, ids=vector_id)
def test_every_prefix_and_byte_flip_fails_cleanly(path: Path) -> None:
    data = path.read_bytes()
    for n in range(len(data)):
        _outcome(data[:n], salvage=n % 5 == 0)
    for i in range(0, len(data), max(11, len(data) // 40)):
        for value in FLIP_VALUES:
            _outcome(data[:i] + bytes([value]) + data[i + 1 :])


@pytest.mark.parametrize("path", ALL_FILES, ids=vector_id)
def test_stream_parser_fed_byte_by_byte(path: Path) -> None:
    """Over a stream the same file, one octet at a time, frames like the datagram (when it
    has the Content-Length a stream needs) or fails with SipParseError."""
    data = path.read_bytes()
    parser = StreamParser()
    got: list[Message] = []
    try:
        for i in range(len(data)):
            got.extend(parser.feed(data[i : i + 1]))
    except SipParseError:
        return
    if got:
        assert got[0] == parse_message(data)
