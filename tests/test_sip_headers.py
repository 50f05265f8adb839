"""Header values: Via, name-addr, CSeq, generic parameters, splitting, the Headers map."""

from __future__ import annotations

import pytest

from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    get_param,
    has_param,
    parse_params,
    split_header_values,
)
from callbridge.sip.uri import AbsoluteUri, SipUri, TelUri

# ------------------------------------------------------------------------------------ Via


def test_via_fields_and_parameters() -> None:
    via = Via.parse("SIP/2.0/udp pc33.example.com:5066;branch=z9hG4bK776asdhds;rport")
    assert via == Via(
        "UDP", "pc33.example.com", 5066, (("branch", "z9hG4bK776asdhds"), ("rport", None))
    )
    assert via.branch == "z9hG4bK776asdhds"
    assert via.rport == "" and via.received is None
    assert str(via) == "SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776asdhds;rport"


def test_via_filled_rport_and_received() -> None:
    """RFC 3581 §4: the server fills rport and adds received; the client reads them back."""
    via = Via.parse("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport")
    stamped = via.with_param("received", "203.0.113.9").with_param("rport", "61000")
    assert (
        str(stamped) == "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport=61000;received=203.0.113.9"
    )
    again = Via.parse(str(stamped))
    assert (again.received, again.rport) == ("203.0.113.9", "61000")


def test_via_lws_everywhere_the_grammar_allows_it() -> None:
    """RFC 4475 §3.1.1.1 wsinv: SWS around '/', ':' and ';', '=' in a Via."""
    via = Via.parse(
        "SIP  / 2.0  / TCP     spindle.example.com  :  5061 ;  branch  =   z9hG4bK9ikj8"
    )
    assert via == Via("TCP", "spindle.example.com", 5061, (("branch", "z9hG4bK9ikj8"),))


def test_via_ipv6_sent_by_and_received() -> None:
    via = Via.parse("SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255];branch=z9hG4bKa")
    assert (via.host, via.port, via.received) == ("[2001:db8::9:1]", 6050, "[2001:db8::9:255]")
    assert Via.parse("SIP/2.0/UDP [::1];received=2001:db8::9:255").received == "2001:db8::9:255"


def test_via_quoted_parameter_value_may_hold_semicolons() -> None:
    via = Via.parse('SIP/2.0/UDP h;x="a;b";branch=z9hG4bK1')
    assert via.params == (("x", '"a;b"'), ("branch", "z9hG4bK1"))


def test_via_keeps_a_foreign_protocol_version() -> None:
    via = Via.parse("SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw")
    assert via.protocol == "SIP/7.0" and str(via).startswith("SIP/7.0/UDP ")
    assert Via.parse("sip/2.0/udp h").protocol == "SIP/2.0"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",  # no sent-by
        "SIP/2.0 host",
        "SIP/2.0/UDP host;;",  # RFC 4475 §3.1.2.1 badinv01
        "SIP/2.0/UDP host;",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;branch=a b",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host port",
        "SIP/2.0/UDP [::1",
        'SIP/2.0/UDP host;x="unterminated',
        "SIP/2.0/U@P host",
    ],
)
def test_malformed_vias(text: str) -> None:
    with pytest.raises(SipParseError):
        Via.parse(text)


# ------------------------------------------------------------------------------ name-addr


def test_name_addr_with_quoted_display_name_holding_escapes_and_commas() -> None:
    na = NameAddr.parse(r'"Bell, \"Alec\" \\ Co" <sip:a.g.bell@example.com>;tag=43')
    assert na.display_name == 'Bell, "Alec" \\ Co'
    assert na.tag == "43"
    assert isinstance(na.uri, SipUri) and na.uri.user == "a.g.bell"
    assert str(na) == r'"Bell, \"Alec\" \\ Co" <sip:a.g.bell@example.com>;tag=43'
    assert NameAddr.parse(str(na)) == na


def test_name_addr_quoted_display_with_angle_brackets_inside() -> None:
    na = NameAddr.parse('"a <b> c"<sip:x@y>')
    assert na.display_name == "a <b> c" and na.uri == SipUri("y", "x")


def test_name_addr_token_display_names() -> None:
    assert NameAddr.parse("caller<sip:caller@example.com>;tag=323").display_name == "caller"
    assert NameAddr.parse("A. Bell <sip:a@b>").display_name == "A. Bell"
    assert NameAddr.parse("<sip:a@b>").display_name is None
    assert NameAddr.parse('"" <sip:a@b>').display_name is None
    assert NameAddr.parse("<sip:a@b>;tag").tag == ""  # a flag: legal, if odd


def test_name_addr_bare_addr_spec_parameters_are_header_parameters() -> None:
    """RFC 3261 §20.10: without <>, ';' ends the URI."""
    na = NameAddr.parse("sip:+19725552222@gw1.example.net;unknownparam;tag=7")
    assert na.uri == SipUri("gw1.example.net", "+19725552222")
    assert na.params == (("unknownparam", None), ("tag", "7"))
    inside = NameAddr.parse("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert isinstance(inside.uri, SipUri) and inside.uri.params == (("unknownparam", None),)
    assert inside.params == ()


def test_name_addr_lws_around_parameters() -> None:
    na = NameAddr.parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    assert na.tag == "1918181833n"


def test_name_addr_other_schemes() -> None:
    assert NameAddr.parse("tel:+911234567890;tag=1").uri == TelUri("+911234567890")
    assert NameAddr.parse("<http://www.example.com>").uri == AbsoluteUri(
        "http", "//www.example.com"
    )


def test_name_addr_with_tag_and_control_characters_in_display_name() -> None:
    na = NameAddr(SipUri("h", "u"), 'BEL:\x07 "q"').with_tag("abc")
    assert str(na) == '"BEL:\\\x07 \\"q\\"" <sip:u@h>;tag=abc'
    assert NameAddr.parse(str(na)) == na
    assert na.with_tag("def").tag == "def" and len(na.with_tag("def").params) == 1
    # CR/LF cannot be carried in a quoted-string: they become spaces, never a new line.
    assert "\r" not in str(NameAddr(SipUri("h"), "a\r\nb"))


@pytest.mark.parametrize(
    "text",
    [
        '"Mr. J. User <sip:j.user@example.com>',  # RFC 4475 §3.1.2.6 quotbal
        '"Watson, Thomas" < sip:t.watson@example.org >',  # §3.1.2.14 badaspec
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # §3.1.2.15 baddn
        "sip:user@example.com?Route=%3Csip:sip.example.com%3E",  # §3.1.2.13 regbadct
        "<sip:a@b",
        "<sip:a@b> junk",
        '"x" sip:a@b',
        "<sip:a@b>;;",
        "",
        "*",  # Contact: * is for the caller to test first
        "alan@jasomi.com",
        "sip:a@b, sip:c@d",
    ],
)
def test_malformed_name_addrs(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


# ----------------------------------------------------------------------------------- CSeq


def test_cseq() -> None:
    assert CSeq.parse("0009\t INVITE ") == CSeq(9, "INVITE")
    assert str(CSeq(4711, "BYE")) == "4711 BYE"
    assert CSeq.parse(f"{2**31 - 1} ACK").seq == 2**31 - 1


@pytest.mark.parametrize(
    "text",
    [f"{2**31} INVITE", "36893488147419103232 REGISTER", "-1 INVITE", "1", "INVITE", "1 IN VITE",
     "\u0661 INVITE", "1 INV/ITE", ""],
)  # fmt: skip
def test_malformed_cseq(text: str) -> None:
    with pytest.raises(SipParseError):
        CSeq.parse(text)


# ------------------------------------------------------------------- params and splitting


def test_parse_params() -> None:
    params = parse_params(' ; Tag = abc ; lr ; x="a,b;c" ; maddr=[::1]')
    assert params == (("Tag", "abc"), ("lr", None), ("x", '"a,b;c"'), ("maddr", "[::1]"))
    assert get_param(params, "tag") == "abc" and get_param(params, "LR") == ""
    assert get_param(params, "none") is None
    assert has_param(params, "MADDR") and not has_param(params, "ttl")
    assert parse_params("") == () and parse_params("a=b") == (("a", "b"),)


def test_split_header_values() -> None:
    value = '"Doe, J" <sip:a@b;x=1,2>, <sip:c@d>;q=0.5 ,sip:e@f'
    assert split_header_values(value) == ['"Doe, J" <sip:a@b;x=1,2>', "<sip:c@d>;q=0.5", "sip:e@f"]
    assert split_header_values(r'"a\",b", c') == [r'"a\",b"', "c"]
    assert split_header_values("a,,b, ") == ["a", "b"]
    assert split_header_values("a,,b", keep_empty=True) == ["a", "", "b"]


# --------------------------------------------------------------------------------- Headers


def test_headers_case_insensitive_and_compact_forms() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("VIA", "SIP/2.0/UDP b"), ("i", "x@y"), ("X-Foo", "1")])
    assert list(h) == [("Via", "SIP/2.0/UDP a"), ("Via", "SIP/2.0/UDP b"), ("Call-ID", "x@y"),
                       ("X-Foo", "1")]  # fmt: skip
    assert h.get("call-id") == "x@y" and h.get("I") == "x@y" and h.get("x-foo") == "1"
    assert "via" in h and "V" in h and "Route" not in h and 3 not in h
    assert h.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"] and h.count("v") == 2
    assert h.get("Route") is None and h.get("Route", "d") == "d"
    assert canonical_name("cseq") == "CSeq" and canonical_name("x-Odd") == "x-Odd"


def test_headers_values_split_lists_but_not_single_value_headers() -> None:
    h = Headers([("Accept", "a/b, c/d"), ("Date", "Fri, 01 Jan 2010 16:00:00 GMT"),
                 ("Authorization", 'Digest username="a", realm="b"')])  # fmt: skip
    assert h.values("Accept") == ["a/b", "c/d"]
    assert h.values("Date") == ["Fri, 01 Jan 2010 16:00:00 GMT"]
    assert len(h.values("Authorization")) == 1


def test_headers_mutation() -> None:
    h = Headers([("Via", "1"), ("To", "t"), ("Via", "2"), ("Route", "r")])
    h.prepend("v", "0")
    assert h.get_all("Via") == ["0", "1", "2"] and h.get("Via") == "0"
    copy = h.copy()
    h.set("via", "only")
    assert list(h) == [("Via", "only"), ("To", "t"), ("Route", "r")]
    h.set("Contact", "c")
    assert list(h)[-1] == ("Contact", "c")
    h.remove("ROUTE")
    assert "Route" not in h and len(h) == 3
    h.add("l", "0")
    assert h.get("Content-Length") == "0"
    assert copy.get_all("Via") == ["0", "1", "2"] and copy != h
    assert Headers([("To", "t")]) == Headers([("t", "t")])
