"""Minimal reproducers of what the UDP robustness run (test_robustness_udp.py) found.

Each test drives the pure :class:`UserAgent` with one datagram and checks what it would send.
Each was an ``xfail(strict=True)`` until its fix landed; they now guard against regressions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.sip.message import Response, parse_message
from callbridge.sip.useragent import UserAgent, UserAgentConfig

RFC4475 = Path(__file__).parent / "vectors" / "rfc4475"
SOURCE = ("192.0.2.7", 5062)


def replies(datagram: bytes, source: tuple[str, int] = SOURCE) -> list[tuple[int, int]]:
    """(status, destination port) of everything the user agent sends for ``datagram``."""
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", port=5070), token=lambda: "tok")
    ua.receive_datagram(datagram, source, 0.0)
    sent = []
    for data, (_, port) in ua.datagrams_to_send():
        response = parse_message(data)
        assert isinstance(response, Response)
        sent.append((response.status, port))
    return sent


def options(via: str, method: bytes = b"OPTIONS", cseq_method: bytes | None = None) -> bytes:
    """An out-of-dialog request; its CSeq names ``cseq_method`` (default: ``method``)."""
    cseq = b"CSeq: 1 " + (method if cseq_method is None else cseq_method) + b"\r\n"
    return (
        method + b" sip:callbridge@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP " + via.encode() + b"\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:a@example.com>;tag=1\r\n"
        b"To: <sip:callbridge@127.0.0.1>\r\n"
        b"Call-ID: regression-1\r\n" + cseq + b"Content-Length: 0\r\n\r\n"
    )


def test_a_well_formed_options_is_answered_at_its_via_port() -> None:
    """The control case for the reproducers below."""
    assert replies(options("192.0.2.7:5064;branch=z9hG4bKok")) == [(200, 5064)]


@pytest.mark.parametrize(
    "datagram",
    [
        options("192.0.2.7:0;branch=z9hG4bKp0"),  # stateful: the 200 goes to 5060
        options("192.0.2.7:0;branch=z9hG4bKp1", method=b"INVITE"),  # 100 and 403 to 5060
        options("192.0.2.7:0;branch=z9hG4bKp2", cseq_method=b"BYE"),  # mismatch: 400 to 5060
    ],
    ids=["OPTIONS", "INVITE", "stateless 400"],
)
def test_via_port_0_gets_no_reply(datagram: bytes) -> None:
    assert replies(datagram) == []


@pytest.mark.parametrize(
    "method", [b"", b"\x00INVITE", b"\xe5\xe4\xf6"], ids=["empty", "NUL", "latin-1"]
)
def test_request_with_garbage_method_but_intact_via_gets_400(method: bytes) -> None:
    datagram = options("192.0.2.7:5064;branch=z9hG4bKgm", method=method, cseq_method=b"INVITE")
    assert replies(datagram) == [(400, 5064)]


def test_badinv01_gets_400() -> None:
    datagram = (RFC4475 / "badinv01.dat").read_bytes()
    assert replies(datagram, ("192.0.2.15", 5060)) == [(400, 5060)]


@pytest.mark.parametrize("name", ["unkscm.dat", "novelsc.dat"])
def test_options_with_unsupported_uri_scheme_gets_416(name: str) -> None:
    assert replies((RFC4475 / name).read_bytes()) == [(416, 5060)]


def test_options_requiring_unsupported_extensions_gets_420() -> None:
    # bext01's Via says TLS with no port: the stateful reply goes to 5061.
    assert replies((RFC4475 / "bext01.dat").read_bytes()) == [(420, 5061)]
