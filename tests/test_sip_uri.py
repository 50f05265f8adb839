"""sip/sips/tel URIs: grammar, %-escaping where RFC 3261 §25.1 allows it, IPv6, ports."""

from __future__ import annotations

import pytest

from callbridge.sip.errors import SipParseError
from callbridge.sip.uri import (
    AbsoluteUri,
    SipUri,
    TelUri,
    is_valid_host,
    parse_hostport,
    parse_port,
    parse_uri,
)


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def test_every_component() -> None:
    uri = sip("sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=hi&priority=urgent")
    assert uri == SipUri(
        host="Example.COM",
        user="alice",
        password="secret",
        port=5061,
        params=(("transport", "tcp"), ("lr", None)),
        headers=(("subject", "hi"), ("priority", "urgent")),
        scheme="sips",
    )
    assert uri.param("TRANSPORT") == "tcp" and uri.param("lr") == "" and uri.param("x") is None
    assert (
        str(uri) == "sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=hi&priority=urgent"
    )


def test_scheme_is_case_insensitive_and_kept_lower() -> None:
    assert sip("SIP:bob@host").scheme == "sip"
    assert str(sip("SIP:bob@host")) == "sip:bob@host"


def test_host_only_and_empty_password() -> None:
    assert sip("sip:example.com") == SipUri("example.com")
    assert sip("sip:bob:@example.com").password == ""


def test_user_part_may_hold_semicolons_question_marks_and_slashes() -> None:
    """RFC 4475 §3.1.1.9: the user part ends at '@', not at ';'."""
    uri = sip("sip:user;par=u%40example.net@example.com")
    assert (uri.user, uri.host, uri.params) == ("user;par=u@example.net", "example.com", ())
    assert str(uri) == "sip:user;par=u%40example.net@example.com"
    assert sip("sip:a?b/c@host").user == "a?b/c"


def test_escapes_are_decoded_once_and_reencoded() -> None:
    uri = sip("sip:%75se%72@example.com;n%61me=v%61lue%25%34%31")
    assert uri.user == "user"
    assert uri.params == (("name", "value%41"),)  # %25 -> '%', never decoded again
    assert str(uri) == "sip:user@example.com;name=value%2541"


def test_escaped_nul_does_not_truncate() -> None:
    uri = sip("sip:null-%00-null@example.com")
    assert uri.user == "null-\x00-null"
    assert str(uri) == "sip:null-%00-null@example.com"


def test_escaped_utf8_and_raw_octets() -> None:
    assert sip("sip:%C3%A9t%C3%A9@h").user == "\u00e9t\u00e9"
    odd = sip("sip:%FF@h")  # not UTF-8: kept as a surrogate escape, written back the same
    assert str(odd) == "sip:%FF@h"


def test_characters_needing_escape_are_escaped_on_output() -> None:
    uri = SipUri("h", user="a b@c:d", password="p@ss:w", params=(("k", "v;w"),))
    assert str(uri) == "sip:a%20b%40c%3Ad:p%40ss%3Aw@h;k=v%3Bw"
    assert parse_uri(str(uri)) == uri


def test_uri_headers_are_decoded_and_never_real_headers() -> None:
    uri = sip("sip:user@example.com?Route=%3Csip:example.com%3E&Subject=")
    assert uri.headers == (("Route", "<sip:example.com>"), ("Subject", ""))
    assert str(uri) == "sip:user@example.com?Route=%3Csip:example.com%3E&Subject="


@pytest.mark.parametrize(
    "text",
    [
        "sip:us er@host",  # space in user
        "sip:user@ho st",
        "sip:a%2@host",  # truncated escape
        "sip:a%ZZ@host",  # not hex
        "sip:@host",  # empty user
        "sip:user@",  # empty host
        "sip:",
        "sip:user@host;",  # empty parameter
        "sip:user@host;;lr",
        "sip:user@host;=v",
        "sip:user@host;a=",
        "sip:user@host?",  # '?' without headers
        "sip:user@host?noequals",
        "sip:user@host?a=b&",
        "sip:user@host:",
        "sip:user@host:65536",
        "sip:user@host:-1",
        "sip:user@host:1x",
        "sip:user@host:\u00b2",  # a Unicode digit: no int() surprise
        "sip:user@host:99999999999999999999999",
        "sip:user@h\u00e9st",  # raw non-ASCII host
        "sip:\u00e9@host",  # raw non-ASCII user must be escaped
        "sip:user@[2001:db8::1",  # unclosed reference
        "sip:user@[2001:db8::1]x",
        "sip:user@[]",
        "sip:user@[zz::1]",
        "sip:user@host>",
        "sip:user@host;lr<",
    ],
)
def test_malformed_sip_uris(text: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_uri(text)
    assert caught.value.status == 400


@pytest.mark.parametrize("port", [0, 1, 5060, 65535])
def test_ports_in_range(port: int) -> None:
    assert sip(f"sip:h:{port}").port == port
    assert parse_port(str(port)) == port


def test_ipv6_references() -> None:
    """RFC 5118: brackets kept; a port only outside them; three colons tolerated (§4.10)."""
    assert sip("sip:[2001:db8::10]:5070") == SipUri("[2001:db8::10]", port=5070)
    assert sip("sip:[2001:db8::10:5070]").port is None
    assert sip("sip:user@[2001:db8:::192.0.2.1]").host == "[2001:db8:::192.0.2.1]"
    assert sip("sip:[::ffff:192.0.2.2]").host == "[::ffff:192.0.2.2]"
    with pytest.raises(SipParseError, match="port"):
        parse_uri("sip:2001:db8::10")  # RFC 5118 §4.2: no brackets


def test_hostport_helpers() -> None:
    assert parse_hostport("[::1]:5060") == ("[::1]", 5060)
    assert parse_hostport("host.example.com") == ("host.example.com", None)
    assert is_valid_host("sip_gw-1.example.com.")
    assert not is_valid_host("a..b") and not is_valid_host("") and not is_valid_host("[1.2.3.4]")


def test_tel_uri() -> None:
    uri = parse_uri("tel:+91-98123-45678;phone-context=+91;ext=12")
    assert uri == TelUri("+91-98123-45678", (("phone-context", "+91"), ("ext", "12")))
    assert isinstance(uri, TelUri) and uri.param("PHONE-CONTEXT") == "+91"
    assert str(uri) == "tel:+91-98123-45678;phone-context=+91;ext=12"
    assert parse_uri("TEL:*21#") == TelUri("*21#")


@pytest.mark.parametrize(
    "text", ["tel:", "tel:+", "tel:12 34", "tel:+1;=x", "tel:+1;a=", "tel:+1;"]
)
def test_malformed_tel_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_other_schemes_are_opaque() -> None:
    assert parse_uri("soap.beep://192.0.2.103:3002") == AbsoluteUri(
        "soap.beep", "//192.0.2.103:3002"
    )
    assert parse_uri("  mailto:a@b.example  ") == AbsoluteUri("mailto", "a@b.example")
    assert str(parse_uri("urn:service:sos")) == "urn:service:sos"


@pytest.mark.parametrize(
    "text", ["", "nocolon", ":rest", "<sip:a@b>", "1sip:a", "sip ", "http:", "http:a b", 'x:"']
)
def test_not_absolute_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_intmeth_request_uri_with_password() -> None:
    """RFC 4475 §3.1.1.2: every user-unreserved and mark character, and a password."""
    uri = sip(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:"
        "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    )
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert parse_uri(str(uri)) == uri


def test_long_hostile_input_is_refused_quickly() -> None:
    """No regex backtracking blow-up: linear time on long near-misses."""
    for text in (
        "sip:" + "a" * 50_000 + "!",
        "sip:h;" + "a" * 50_000 + "\x00",
        "tel:" + "1" * 50_000 + "x",
    ):
        with pytest.raises(SipParseError):
            parse_uri(text)
