"""SIP messages: parse and serialize requests and responses (RFC 3261 §7, §18.3, §25).

``parse_message(datagram)`` takes one UDP datagram and returns a :class:`Request` or
:class:`Response`; octets past the body that Content-Length announces are ignored (§18.3).
:class:`StreamParser` frames messages out of a TCP byte stream by Content-Length.
Every malformed input raises :class:`SipParseError` carrying the status to answer with.

Header names are kept in their canonical long form (compact forms such as ``v`` and ``i``
are expanded on parse); lookups are case-insensitive. Header *values* are kept as text;
structured views (Via, From/To, CSeq) come from :mod:`callbridge.sip.headers`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import CSeq, NameAddr, Via, split_header_values

SIP_VERSION = "SIP/2.0"

#: RFC 3261 §7.3.3 compact forms, plus RFC 3515 (r), 3841 (j, d), 4028 (x) and 3891/3892 (b).
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
        "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
        "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
        "Error-Info", "Expires", "From", "In-Reply-To", "Max-Forwards", "MIME-Version",
        "Min-Expires", "Organization", "P-Asserted-Identity", "Priority", "Proxy-Authenticate",
        "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Reply-To",
        "Require", "Retry-After", "Route", "RSeq", "Server", "Session-Expires", "Subject",
        "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
        "WWW-Authenticate", "Event", "Allow-Events", "Refer-To", "Referred-By", "Min-SE",
        "Privacy", "P-Preferred-Identity", "Remote-Party-ID", "Diversion", "Identity",
    )
}

#: Headers whose value may never be a comma-separated list (RFC 3261 §7.3.1): one line each.
SINGLE_VALUE_HEADERS = frozenset(
    {"Call-ID", "Content-Length", "Content-Type", "CSeq", "From", "To", "Max-Forwards", "Expires"}
)

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: compact forms expanded, known names cased."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


class Headers:
    """An ordered, case-insensitive multi-map of header lines.

    Each entry is one header *line* (after unfolding). ``values(name)`` additionally splits
    comma-separated lists (outside quotes and angle brackets) into single values.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name).lower()
        return any(n.lower() == key for n, _ in self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first line's value for ``name``, or ``default``."""
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every line's value for ``name``, in order (lists not split)."""
        key = canonical_name(name).lower()
        return [v for n, v in self._items if n.lower() == key]

    def values(self, name: str) -> list[str]:
        """Every value for ``name``: lines in order, comma-separated lists split."""
        out: list[str] = []
        for line in self.get_all(name):
            out.extend(split_header_values(line))
        return out

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a line before any other (a new top Via, Record-Route)."""
        self._items.insert(0, (canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line holding ``value`` (in the first's place)."""
        cname = canonical_name(name)
        key = cname.lower()
        for i, (n, _) in enumerate(self._items):
            if n.lower() == key:
                self._items[i] = (cname, value)
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0].lower() != key]
                return
        self._items.append((cname, value))

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [it for it in self._items if it[0].lower() != key]

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new


class _MessageBase:
    """Accessors shared by requests and responses."""

    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return _required(self.headers, "Call-ID")

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(_required(self.headers, "CSeq"))

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.values("Via")]

    @property
    def top_via(self) -> Via:
        values = self.headers.values("Via")
        if not values:
            raise SipParseError("missing Via header")
        return Via.parse(values[0])

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(_required(self.headers, "From"))

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(_required(self.headers, "To"))

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        lines.extend(f"{n}: {v}" for n, v in self.headers if n != "Content-Length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name} header")
    return value


@dataclass(eq=True)
class Request(_MessageBase):
    """A SIP request. ``uri`` is the Request-URI exactly as text (parse it with sip.uri)."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length is always written from the body."""
        return self._serialize(f"{self.method} {self.uri} {self.version}")


@dataclass(eq=True)
class Response(_MessageBase):
    """A SIP response; ``reason`` is the whole reason phrase (it may hold spaces and UTF-8)."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def serialize(self) -> bytes:
        return self._serialize(f"{self.version} {self.status} {self.reason}")


Message = Request | Response


def parse_message(data: bytes) -> Message:
    """Parse one datagram; trailing octets past Content-Length are ignored (RFC 3261 §18.3)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipParseError("no end of header section")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("header section is not UTF-8") from exc
    lines = _unfold(head.split("\r\n"))
    headers = Headers(_header_line(line) for line in lines[1:])
    body_start = end + 4
    length_text = headers.get("Content-Length")
    if length_text is None:
        body = data[body_start:]
    else:
        if not length_text.strip().isdigit():
            raise SipParseError(f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if body_start + length > len(data):
            raise SipParseError("body shorter than Content-Length")
        body = data[body_start : body_start + length]
    return _start_line(lines[0], headers, body)


def _unfold(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return out


def _header_line(line: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    name = name.strip()
    if not colon or not _TOKEN.match(name):
        raise SipParseError(f"bad header line {line!r}")
    return name, value.strip()


def _start_line(line: str, headers: Headers, body: bytes) -> Message:
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != SIP_VERSION:
            raise SipParseError(f"unsupported version {version!r}", 505)
        if len(code) != 3 or not code.isdigit():
            raise SipParseError(f"bad status code {code!r}")
        return Response(int(code), reason, headers, body, version)
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]):
        raise SipParseError(f"bad request line {line!r}")
    if parts[2] != SIP_VERSION:
        raise SipParseError(f"unsupported version {parts[2]!r}", 505)
    return Request(parts[0], parts[1], headers, body, parts[2])


class StreamParser:
    """Frames SIP messages out of a reliable byte stream (RFC 3261 §18.3: Content-Length
    is mandatory there). ``feed()`` returns every complete message received so far."""

    def __init__(self, max_message_size: int = 65536) -> None:
        self._buffer = bytearray()
        self._max = max_message_size

    def feed(self, data: bytes) -> list[Message]:
        raise NotImplementedError
