"""What the user agent accepts and where it may send: checks that run before any dialog logic.

RFC 3261 §8.2 (a UAS's order of checks) and RFC 4475's lessons: mandatory headers, URI
schemes, Require, and never a datagram to a broadcast, multicast or unroutable address.
"""

from __future__ import annotations

import ipaddress

from callbridge.sip.errors import SipParseError
from callbridge.sip.message import REASON_PHRASES, Message, Request
from callbridge.sip.uri import SipUri, TelUri, parse_uri

Address = tuple[str, int]
#: Option tags of Require we support (RFC 3261 §8.2.2.3): none yet.
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()


def is_sendable(address: Address) -> bool:
    """Never send to port 0, a bad port, a broadcast, multicast or unspecified address
    (RFC 4475 §3.3.10: a Via claiming 255.255.255.255 must not make us broadcast)."""
    host, port = address
    if not 0 < port < 65536:
        return False
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True  # a name: resolved (and checked again) at the edge
    # Subnet broadcasts cannot be told from here: the edge's sockets never set SO_BROADCAST,
    # so the kernel refuses them (EACCES).
    return not (ip.is_multicast or ip.is_unspecified or ip == _LIMITED_BROADCAST)


_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def missing_mandatory(message: Message) -> str | None:
    """§8.1.1: To, From, CSeq, Call-ID, Max-Forwards (requests; tolerated), Via."""
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in message.headers:
            return f"Missing {name}"
    for name in ("From", "To", "Call-ID", "CSeq"):
        if len(message.headers.get_all(name)) > 1:
            return f"Multiple {name}"
    try:
        message.top_via  # noqa: B018 - validates the Via
        message.cseq  # noqa: B018
        message.from_  # noqa: B018
        message.to  # noqa: B018
    except SipParseError as exc:
        return str(exc)
    return None


def precheck(request: Request) -> tuple[int, tuple[tuple[str, str], ...]] | None:
    """§8.2.2: Request-URI scheme (416) and Require (420) before any method logic."""
    try:
        uri = parse_uri(request.uri)
    except SipParseError:
        return (400, ())
    if not isinstance(uri, SipUri | TelUri):
        return (416, ())
    unsupported = [
        opt for opt in request.headers.values("Require")
        if opt.lower() not in SUPPORTED_EXTENSIONS
    ]
    if unsupported and request.method not in ("ACK", "CANCEL"):
        return (420, (("Unsupported", ", ".join(unsupported)),))
    return None


def is_sdp(request: Request) -> bool:
    content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return content_type == "application/sdp"


def short_reason(status: int, detail: str | None) -> str | None:
    if detail is None:
        return None
    base = REASON_PHRASES.get(status, "Error")
    clean = "".join(ch for ch in detail if ch.isprintable())[:80]
    return f"{base} ({clean})" if clean else base
