"""Digest authentication client (sip/auth.py): RFC vectors, challenge parsing, the 401/407 flow.

The flow is stepped the way httpx's tests step its DigestAuth: ``next(flow)`` for the first
send, ``flow.send(response)`` for each final response, StopIteration meaning "report it".
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
from collections.abc import Generator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.sip.auth import (
    MAX_RETRIES,
    Challenge,
    DigestAuth,
    digest_response,
    hash_username,
    parse_challenges,
)
from callbridge.sip.errors import SipParseError
from callbridge.sip.message import Headers, Request, Response

# RFC 7616 §3.9.1 (the MD5 and SHA-256 examples share every input but the algorithm).
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_MD5 = "8ca523f5e9506fed4657c9700eebdbec"
RFC7616_SHA256 = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"

URI = "sip:+919812345678@trunk.example.net"


def make_auth(
    username: str = "alice", password: str = "secret", *, realm: str | None = None
) -> DigestAuth:
    counter = itertools.count(1)
    return DigestAuth(username, password, cnonce_factory=lambda: f"cn{next(counter)}", realm=realm)


def invite(method: str = "INVITE", uri: str = URI, body: bytes = b"") -> Request:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKone"),
            ("From", "<sip:agent@callbridge.example>;tag=ft1"),
            ("To", f"<{uri}>"),
            ("Call-ID", "call-1@callbridge.example"),
            ("CSeq", f"1 {method}"),
            ("Max-Forwards", "70"),
        ]
    )
    return Request(method, uri, headers, body)


def challenge_response(status: int, *values: str, header: str | None = None) -> Response:
    name = header or ("WWW-Authenticate" if status == 401 else "Proxy-Authenticate")
    reason = {401: "Unauthorized", 407: "Proxy Authentication Required"}.get(status, "Other")
    return Response(status, reason, Headers([(name, v) for v in values]))


def ok() -> Response:
    return Response(200, "OK")


def params(credentials: str) -> dict[str, str]:
    """Read back ``Digest a="1", b=2`` (values unquoted; enough for our own output)."""
    assert credentials.startswith("Digest ")
    pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)', credentials[len("Digest ") :])
    return {k: re.sub(r"\\(.)", r"\1", v[1:-1]) if v.startswith('"') else v for k, v in pairs}


def started(auth: DigestAuth, request: Request) -> Generator[Request, Response, None]:
    flow = auth.auth_flow(request)
    assert next(flow) is request  # the first send goes out unchanged
    return flow


# --- the pure computation against published examples ------------------------------------------


def test_rfc2617_section_3_5_example() -> None:
    assert (
        digest_response(
            username="Mufasa",
            password="Circle Of Life",
            realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            nc=1,
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("MD5", RFC7616_MD5), ("SHA-256", RFC7616_SHA256)]
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    assert (
        digest_response(
            username="Mufasa",
            password="Circle of Life",
            realm=RFC7616_REALM,
            nonce=RFC7616_NONCE,
            method="GET",
            uri="/dir/index.html",
            algorithm=algorithm,
            qop="auth",
            nc=1,
            cnonce=RFC7616_CNONCE,
        )
        == expected
    )


def test_rfc7616_section_3_9_2_userhash_example_as_corrected_by_erratum_4897() -> None:
    # The values printed in RFC 7616 §3.9.2 (488869..., ae66e6...) came from a pre-standard
    # SHA-512/256; erratum 4897 gives the ones FIPS 180-4 SHA-512/256 produces.
    realm, algorithm = "api@example.org", "SHA-512-256"
    assert hash_username("Jäsøn Doe", realm, algorithm) == (
        "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
    )
    assert (
        digest_response(
            username="Jäsøn Doe",
            password="Secret, or not?",
            realm=realm,
            nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK",
            method="GET",
            uri="/doe.json",
            algorithm=algorithm,
            qop="auth",
            nc=1,
            cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
        )
        == "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"
    )


def md5(text: str | bytes) -> str:
    return hashlib.md5(text.encode() if isinstance(text, str) else text).hexdigest()


def test_rfc2069_response_without_qop_leaves_out_nc_and_cnonce() -> None:
    ha1, ha2 = md5("u:r:p"), md5(f"BYE:{URI}")
    got = digest_response(username="u", password="p", realm="r", nonce="n", method="BYE", uri=URI)
    assert got == md5(f"{ha1}:n:{ha2}")


def test_sess_algorithm_folds_nonce_and_cnonce_into_a1() -> None:
    ha1 = md5(f"{md5('u:r:p')}:n:c")
    expected = md5(f"{ha1}:n:0000000a:c:auth:{md5('REGISTER:sip:r')}")
    got = digest_response(
        username="u",
        password="p",
        realm="r",
        nonce="n",
        method="REGISTER",
        uri="sip:r",
        algorithm="md5-SESS",
        qop="auth",
        nc=10,
        cnonce="c",
    )
    assert got == expected


def test_auth_int_covers_the_body() -> None:
    body = b"v=0\r\n"
    expected = md5(f"{md5('u:r:p')}:n:00000001:c:auth-int:{md5(f'INVITE:{URI}:{md5(body)}')}")
    got = digest_response(
        username="u",
        password="p",
        realm="r",
        nonce="n",
        method="INVITE",
        uri=URI,
        qop="auth-int",
        cnonce="c",
        body=body,
    )
    assert got == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"algorithm": "SHA3-256", "qop": "auth", "cnonce": "c"},
        {"qop": "auth-conf", "cnonce": "c"},
        {"qop": "auth"},
        {"algorithm": "MD5-sess"},
    ],
)
def test_digest_response_refuses_what_it_cannot_compute(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        digest_response(
            username="u", password="p", realm="r", nonce="n", method="M", uri="u", **kwargs
        )


# --- parsing challenges -----------------------------------------------------------------------


def test_parse_full_challenge() -> None:
    c = Challenge.parse(
        'Digest realm="atlanta.com", domain="sip:ss1.carrier.com", qop="auth,auth-int", '
        'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5'
    )
    assert c == Challenge(
        realm="atlanta.com",
        nonce="f84f1cec41e6cbe5aea9c8e88d359",
        algorithm="MD5",
        qop=("auth", "auth-int"),
        opaque="",
        stale=False,
        domain="sip:ss1.carrier.com",
    )


def test_parse_is_lenient_where_servers_are_sloppy() -> None:
    c = Challenge.parse('digest REALM = "a\\"b" ,NONCE=abc/+=,qop=auth, Stale="TRUE",userhash=true')
    assert (c.realm, c.nonce, c.qop, c.stale, c.userhash) == (
        'a"b',
        "abc/+=",
        ("auth",),
        True,
        True,
    )
    assert c.algorithm == "MD5"  # absent means MD5 (RFC 7616 §3.3)
    assert c.opaque is None


def test_parse_challenges_reads_several_in_one_line_and_skips_other_schemes() -> None:
    found = parse_challenges(
        'Basic realm="x", Digest realm="r", nonce="1", algorithm=SHA-256, '
        'Digest realm="r", nonce="2"'
    )
    assert [(c.nonce, c.algorithm) for c in found] == [("1", "SHA-256"), ("2", "MD5")]


def test_challenge_round_trips_through_str() -> None:
    c = Challenge("r\\1", 'n"1', "SHA-256", ("auth",), "op", True, "sip:d", True)
    assert Challenge.parse(str(c)) == c


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        'Basic realm="x"',
        'Digest realm="r"',
        'Digest nonce="n"',
        'Digest realm="r", nonce="n", realm="s"',
        'Digest realm="r, nonce="n"',
        'Digest realm="r" nonce="n"',
        'Digest realm="r", nonce="n",',
        'Digest realm="r", , nonce="n"',
        'Digest realm="r", nonce',
        'Digest realm="r", nonce="n", algorithm=""',
        'Digest realm="r", nonce="n\x01"',
        'Digest realm="r", nonce="n", opaque="a\\\r\nb"',
        'Digest realm="r", nonce="n"\r\nX-Injected: yes',
        'Digest realm="r", nonce="1", Digest realm="r", nonce="2"',
    ],
)
def test_malformed_challenges_raise_sip_parse_error(value: str) -> None:
    with pytest.raises(SipParseError):
        Challenge.parse(value)


@given(st.text(max_size=80))
def test_parse_raises_nothing_but_sip_parse_error(value: str) -> None:
    with contextlib.suppress(SipParseError):
        Challenge.parse(value)


@given(
    st.lists(
        st.sampled_from(["Digest", " ", "realm", "nonce", "qop", "=", '"', ",", "\\", "a"]),
        max_size=20,
    )
)
def test_parse_of_near_miss_grammar_raises_nothing_but_sip_parse_error(pieces: list[str]) -> None:
    with contextlib.suppress(SipParseError):
        Challenge.parse("".join(pieces))


# --- the flow: 401 and 407 --------------------------------------------------------------------

MD5_CHALLENGE = 'Digest realm="trunk", nonce="abc123", algorithm=MD5, qop="auth", opaque="op/1"'


def test_401_retry_carries_authorization_in_the_exact_common_format() -> None:
    request = invite()
    flow = started(make_auth(), request)
    retry = flow.send(challenge_response(401, MD5_CHALLENGE))

    expected = digest_response(
        username="alice",
        password="secret",
        realm="trunk",
        nonce="abc123",
        method="INVITE",
        uri=URI,
        qop="auth",
        nc=1,
        cnonce="cn1",
    )
    assert retry.headers.get("Authorization") == (
        f'Digest username="alice", realm="trunk", nonce="abc123", uri="{URI}", '
        f'response="{expected}", algorithm=MD5, cnonce="cn1", qop=auth, nc=00000001, '
        'opaque="op/1"'
    )
    assert "Proxy-Authorization" not in retry.headers


def test_retry_increments_cseq_and_keeps_dialog_identifiers() -> None:
    request = invite(body=b"v=0\r\n")
    flow = started(make_auth(), request)
    retry = flow.send(challenge_response(401, MD5_CHALLENGE))

    assert (retry.method, retry.uri, retry.body) == ("INVITE", URI, b"v=0\r\n")
    assert retry.cseq.seq == 2 and retry.cseq.method == "INVITE"
    for name in ("Call-ID", "From", "To", "Via", "Max-Forwards"):
        assert retry.headers.get(name) == request.headers.get(name)
    assert request.cseq.seq == 1 and "Authorization" not in request.headers  # not mutated


def test_success_after_the_retry_ends_the_flow() -> None:
    flow = started(make_auth(), invite())
    flow.send(challenge_response(401, MD5_CHALLENGE))
    with pytest.raises(StopIteration):
        flow.send(ok())


def test_407_is_answered_with_proxy_authorization() -> None:
    flow = started(make_auth(), invite())
    retry = flow.send(challenge_response(407, 'Digest realm="proxy", nonce="p1", qop="auth"'))
    assert "Authorization" not in retry.headers
    p = params(retry.headers.get("Proxy-Authorization") or "")
    assert (p["realm"], p["nonce"], p["uri"], p["nc"]) == ("proxy", "p1", URI, "00000001")


def test_407_then_401_carries_both_with_the_proxy_nonce_count_moving_on() -> None:
    flow = started(make_auth(), invite())
    flow.send(challenge_response(407, 'Digest realm="proxy", nonce="p1", qop="auth"'))
    retry = flow.send(challenge_response(401, 'Digest realm="trunk", nonce="t1", qop="auth"'))

    assert retry.cseq.seq == 3
    assert len(retry.headers.get_all("Proxy-Authorization")) == 1  # refreshed, not duplicated
    proxy = params(retry.headers.get("Proxy-Authorization") or "")
    www = params(retry.headers.get("Authorization") or "")
    assert (proxy["nonce"], proxy["nc"]) == ("p1", "00000002")
    assert (www["nonce"], www["nc"]) == ("t1", "00000001")
    with pytest.raises(StopIteration):
        flow.send(ok())


def test_rfc2617_example_through_the_flow() -> None:
    auth = DigestAuth("Mufasa", "Circle Of Life", cnonce_factory=lambda: "0a4f113b")
    request = Request("GET", "/dir/index.html", Headers([("CSeq", "1 GET")]))
    flow = started(auth, request)
    retry = flow.send(
        challenge_response(
            401,
            'Digest realm="testrealm@host.com", qop="auth,auth-int", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
        )
    )
    p = params(retry.headers.get("Authorization") or "")
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert (p["qop"], p["nc"], p["cnonce"]) == ("auth", "00000001", "0a4f113b")
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


def rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="{RFC7616_REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


def test_strongest_of_several_challenges_is_answered_rfc7616_vector() -> None:
    auth = DigestAuth("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    request = Request("GET", "/dir/index.html", Headers([("CSeq", "1 GET")]))
    flow = started(auth, request)
    # MD5 listed first: an on-path reordering must not downgrade us (RFC 8760 §3).
    retry = flow.send(
        challenge_response(401, rfc7616_challenge("MD5"), rfc7616_challenge("SHA-256"))
    )

    assert retry.headers.get_all("Authorization") == [
        'Digest username="Mufasa", realm="http-auth@example.org", '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", uri="/dir/index.html", '
        f'response="{RFC7616_SHA256}", algorithm=SHA-256, '
        'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, nc=00000001, '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    ]


def test_md5_is_answered_when_the_other_offer_is_unsupported() -> None:
    flow = started(make_auth(), invite())
    retry = flow.send(
        challenge_response(
            401,
            'Digest realm="trunk", nonce="x", algorithm=SHA3-256, qop="auth"',
            'Digest realm="trunk", nonce="y", qop="auth"',
        )
    )
    p = params(retry.headers.get("Authorization") or "")
    assert (p["algorithm"], p["nonce"]) == ("MD5", "y")


def test_userhash_through_the_flow_rfc7616_erratum_4897() -> None:
    cnonce = "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v"
    auth = DigestAuth("Jäsøn Doe", "Secret, or not?", cnonce_factory=lambda: cnonce)
    request = Request("GET", "/doe.json", Headers([("CSeq", "1 GET")]))
    flow = started(auth, request)
    retry = flow.send(
        challenge_response(
            401,
            'Digest realm="api@example.org", qop="auth", algorithm=SHA-512-256, '
            'nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", '
            'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", charset=UTF-8, userhash=true',
        )
    )
    p = params(retry.headers.get("Authorization") or "")
    assert p["username"] == "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
    assert p["response"] == "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"
    assert (p["algorithm"], p["userhash"]) == ("SHA-512-256", "true")


def test_rfc2069_challenge_gets_no_qop_nc_or_cnonce() -> None:
    flow = started(make_auth(), invite())
    retry = flow.send(challenge_response(401, 'Digest realm="trunk", nonce="n"'))
    value = retry.headers.get("Authorization") or ""
    assert not re.search(r"\b(qop|nc|cnonce)=", value)
    expected = md5(f"{md5('alice:trunk:secret')}:n:{md5(f'INVITE:{URI}')}")
    assert params(value)["response"] == expected


def test_auth_int_only_is_answered_over_the_body() -> None:
    flow = started(make_auth(), invite(body=b"v=0\r\n"))
    retry = flow.send(challenge_response(401, 'Digest realm="trunk", nonce="n", qop="auth-int"'))
    p = params(retry.headers.get("Authorization") or "")
    assert p["qop"] == "auth-int"
    assert p["response"] == digest_response(
        username="alice",
        password="secret",
        realm="trunk",
        nonce="n",
        method="INVITE",
        uri=URI,
        qop="auth-int",
        cnonce="cn1",
        body=b"v=0\r\n",
    )


def test_quotes_in_values_are_escaped_and_opaque_echoed_verbatim() -> None:
    flow = started(make_auth('al"ice'), invite())
    retry = flow.send(
        challenge_response(401, 'Digest realm="tr\\"unk", nonce="n", qop="auth", opaque="o\\\\p"')
    )
    value = retry.headers.get("Authorization") or ""
    assert 'username="al\\"ice", realm="tr\\"unk"' in value
    assert params(value)["opaque"] == "o\\p"


def test_two_realms_in_one_response_are_both_answered() -> None:
    response = Response(
        407,
        "Proxy Authentication Required",
        Headers(
            [
                ("Proxy-Authenticate", 'Digest realm="edge", nonce="e1", qop="auth"'),
                ("WWW-Authenticate", 'Digest realm="trunk", nonce="t1", qop="auth"'),
            ]
        ),
    )
    flow = started(make_auth(), invite())
    retry = flow.send(response)
    assert params(retry.headers.get("Proxy-Authorization") or "")["realm"] == "edge"
    assert params(retry.headers.get("Authorization") or "")["realm"] == "trunk"


# --- stale, refusal, limits -------------------------------------------------------------------


def test_stale_nonce_is_retried_with_the_new_nonce_and_a_fresh_count() -> None:
    flow = started(make_auth(), invite())
    flow.send(challenge_response(401, MD5_CHALLENGE))
    stale = 'Digest realm="trunk", nonce="fresh", qop="auth", stale=true'
    retry = flow.send(challenge_response(401, stale))

    p = params(retry.headers.get("Authorization") or "")
    assert (p["nonce"], p["nc"], p["cnonce"]) == ("fresh", "00000001", "cn2")
    assert "opaque" not in p  # the new challenge has none
    assert retry.cseq.seq == 3
    with pytest.raises(StopIteration):
        flow.send(ok())


def test_wrong_password_second_challenge_stops_the_flow() -> None:
    auth = make_auth(password="wrong")
    flow = started(auth, invite())
    flow.send(challenge_response(401, MD5_CHALLENGE))
    # A new nonce without stale=true: the server refused the credentials.
    with pytest.raises(StopIteration):
        flow.send(challenge_response(401, 'Digest realm="trunk", nonce="other", qop="auth"'))
    assert auth.authorize(invite("BYE")) is None  # nor are they offered again


@pytest.mark.parametrize(
    "response",
    [ok(), Response(486, "Busy Here"), Response(403, "Forbidden"), Response(404, "Not Found")],
    ids=["200", "486", "403", "404"],
)
def test_a_response_that_is_not_401_or_407_ends_the_flow(response: Response) -> None:
    flow = started(make_auth(), invite())
    with pytest.raises(StopIteration):
        flow.send(response)


@pytest.mark.parametrize(
    "response",
    [
        Response(401, "Unauthorized"),
        challenge_response(401, 'Digest realm="trunk"'),
        challenge_response(401, 'Digest realm="trunk", nonce="n", qop="auth'),
        challenge_response(401, "Basic realm=trunk"),
        challenge_response(401, 'Digest realm="trunk", nonce="n", algorithm=SHA3-256'),
        challenge_response(401, 'Digest realm="trunk", nonce="n", qop="auth-conf"'),
        challenge_response(401, 'Digest realm="trunk", nonce="n", algorithm=MD5-sess'),
        challenge_response(401, MD5_CHALLENGE, header="Proxy-Authenticate-Not"),
    ],
    ids=["none", "no-nonce", "unterminated", "basic", "sha3", "auth-conf", "sess-no-qop", "other"],
)
def test_unanswerable_or_malformed_challenges_stop_the_flow_cleanly(response: Response) -> None:
    flow = started(make_auth(), invite())
    with pytest.raises(StopIteration):
        flow.send(response)


def test_a_malformed_line_beside_a_good_one_does_not_prevent_the_answer() -> None:
    flow = started(make_auth(), invite())
    retry = flow.send(challenge_response(401, 'Digest realm="x", nonce="', MD5_CHALLENGE))
    assert params(retry.headers.get("Authorization") or "")["realm"] == "trunk"


def test_endless_stale_challenges_are_capped() -> None:
    flow = started(make_auth(), invite())
    retries = 0
    with pytest.raises(StopIteration):
        for n in range(MAX_RETRIES + 5):
            flow.send(challenge_response(401, f'Digest realm="trunk", nonce="n{n}", stale=true'))
            retries += 1
    assert retries == MAX_RETRIES


def test_configured_realm_limits_what_is_answered() -> None:
    auth = make_auth(realm="trunk")
    flow = started(auth, invite())
    with pytest.raises(StopIteration):
        flow.send(challenge_response(401, 'Digest realm="elsewhere", nonce="n", qop="auth"'))

    flow = started(auth, invite())
    retry = flow.send(
        challenge_response(
            401, 'Digest realm="elsewhere", nonce="n"', 'Digest realm="trunk", nonce="t"'
        )
    )
    assert [params(v)["realm"] for v in retry.headers.get_all("Authorization")] == ["trunk"]


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_ack_and_cancel_are_never_retried_or_preauthorised(method: str) -> None:
    auth = make_auth()
    started(auth, invite()).send(challenge_response(401, MD5_CHALLENGE))
    flow = started(auth, invite(method))
    with pytest.raises(StopIteration):
        flow.send(challenge_response(401, MD5_CHALLENGE))
    assert auth.authorize(invite(method)) is None


# --- remembered challenges: pre-authorising later requests ------------------------------------


def test_authorize_reuses_the_nonce_with_the_count_incremented() -> None:
    auth = make_auth()
    assert auth.authorize(invite("BYE")) is None  # nothing learned yet
    flow = started(auth, invite())
    flow.send(challenge_response(401, MD5_CHALLENGE))

    bye = invite("BYE")
    bye.headers.set("CSeq", "7 BYE")
    first, second = auth.authorize(bye), auth.authorize(bye)
    assert first is not None and second is not None
    p1 = params(first.headers.get("Authorization") or "")
    p2 = params(second.headers.get("Authorization") or "")
    assert (p1["nonce"], p1["nc"], p1["cnonce"]) == ("abc123", "00000002", "cn1")
    assert p2["nc"] == "00000003"
    assert p1["uri"] == URI and first.cseq.seq == 7  # CSeq is the caller's
    assert p1["response"] == digest_response(
        username="alice",
        password="secret",
        realm="trunk",
        nonce="abc123",
        method="BYE",
        uri=URI,
        qop="auth",
        nc=2,
        cnonce="cn1",
    )
    assert "Authorization" not in bye.headers


def test_preauthorised_request_refused_with_a_new_nonce_gets_one_retry() -> None:
    auth = make_auth()
    started(auth, invite()).send(challenge_response(401, MD5_CHALLENGE))
    bye = auth.authorize(invite("BYE"))
    assert bye is not None

    flow = started(auth, bye)  # the server forgot the nonce but did not say stale
    retry = flow.send(challenge_response(401, 'Digest realm="trunk", nonce="new", qop="auth"'))
    values = retry.headers.get_all("Authorization")
    assert len(values) == 1  # the pre-authorised line is replaced, not duplicated
    assert (params(values[0])["nonce"], params(values[0])["nc"]) == ("new", "00000001")
    with pytest.raises(StopIteration):  # but a second refusal is final
        flow.send(challenge_response(401, 'Digest realm="trunk", nonce="newer", qop="auth"'))


def test_foreign_credential_lines_are_kept() -> None:
    request = invite()
    request.headers.add("Authorization", 'Digest username="x", realm="other", nonce="z"')
    flow = started(make_auth(), request)
    retry = flow.send(challenge_response(401, MD5_CHALLENGE))
    realms = [params(v)["realm"] for v in retry.headers.get_all("Authorization")]
    assert realms == ["other", "trunk"]
