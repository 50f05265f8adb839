"""SIP messages: parse and serialize requests and responses (RFC 3261 §7, §18.3, §25).

``parse_message(datagram)`` takes one UDP datagram and returns a :class:`Request` or
:class:`Response`; octets past the body that Content-Length announces are ignored (§18.3), and
without Content-Length the body runs to the end of the datagram. :class:`StreamParser` frames
messages out of a TCP byte stream by Content-Length, which is mandatory there.

Every malformed input raises :class:`SipParseError` carrying the status to answer with (400;
505 for a SIP version other than 2.0; 513 for an oversized stream message), and nothing else.

What is checked at parse time, so that the accessors of a parsed message cannot fail on it:
the start-line (method token, Request-URI, status 100..699, reason phrase without control
characters), header names (tokens), CRLF line ends, folding, Content-Length (digits, once),
and, *when present*, every Via value, From, To, Call-ID, CSeq (number < 2**31, method equal to
the request method) and Max-Forwards (0..255). Call-ID, CSeq, From, To, Max-Forwards and
Content-Length may each appear only once (RFC 4475 §3.3.8, §3.3.9).
What is *not* checked: that the mandatory headers are present. A request without From/To/
Call-ID (RFC 4475 §3.3.1 insuf) is returned; :meth:`missing_headers` names what lacks and
the layer above answers 400. Other headers (Contact, Route, Date, ...) are parsed lazily.

Header names are kept in their canonical long form (compact forms such as ``v`` and ``i``
are expanded on parse); lookups are case-insensitive. Header *values* are kept as text
(unfolded, SP/HTAB-stripped); structured views come from :mod:`callbridge.sip.headers`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar, cast

from callbridge.sip.errors import SipParseError, excerpt
from callbridge.sip.headers import (
    COMPACT_FORMS,
    SINGLE_VALUE_HEADERS,
    TOKEN_RE,
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    parse_params,
    split_header_values,
)
from callbridge.sip.uri import Uri, parse_uri

SIP_VERSION = "SIP/2.0"

#: RFC 3261 §21 reason phrases, plus the common ones of later RFCs.
REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 428: "Use Identity Header",
    429: "Provide Referrer Identity", 430: "Flow Failed", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 440: "Max-Breadth Exceeded",
    469: "Bad Info Package", 470: "Consent Needed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}  # fmt: skip

_CLASS_REASONS = {1: "Provisional", 2: "Success", 3: "Redirection", 4: "Client Error",
                  5: "Server Error", 6: "Global Failure"}  # fmt: skip

#: May appear once at most (RFC 3261 §7.3.1; RFC 4475 §3.3.8 multi01, §3.3.9 mcl01).
_UNIQUE = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length")
#: What RFC 3261 §8.1.1 requires in every request (Max-Forwards left out: RFC 2543 peers,
#: RFC 4475 §3.4.1).
MANDATORY_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.I)
_STATUS_RE = re.compile(r"[1-6][0-9][0-9]")
_DIGITS_RE = re.compile(r"[0-9]{1,18}")
#: Call-ID = word ["@" word]; accepted loosely as visible ASCII, since real Call-IDs hold
#: base64 ``=`` and such, but never whitespace (it is a dialog key).
_CALL_ID_RE = re.compile(r"[\x21-\x7e]+")
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_LWS_RE = re.compile(r"[ \t]+")

T = TypeVar("T")


class _MessageBase:
    """Accessors shared by requests and responses. Structured values are parsed on first
    use and remembered per raw header text, so changing a header is seen at once."""

    headers: Headers
    body: bytes
    _cache: dict[tuple[str, str], object]

    def _memo(self, kind: str, raw: str, parse: Callable[[str], T]) -> T:
        key = (kind, raw)
        hit = self._cache.get(key)
        if hit is None:
            hit = parse(raw)
            self._cache[key] = hit
        return cast(T, hit)

    @property
    def call_id(self) -> str:
        return _required(self.headers, "Call-ID")

    @property
    def cseq(self) -> CSeq:
        return self._memo("CSeq", _required(self.headers, "CSeq"), CSeq.parse)

    @property
    def vias(self) -> list[Via]:
        return [self._memo("Via", v, Via.parse) for v in self.headers.values("Via")]

    @property
    def top_via(self) -> Via:
        values = self.headers.values("Via")
        if not values:
            raise SipParseError("missing Via header")
        return self._memo("Via", values[0], Via.parse)

    @property
    def from_(self) -> NameAddr:
        return self._memo("NameAddr", _required(self.headers, "From"), NameAddr.parse)

    @property
    def to(self) -> NameAddr:
        return self._memo("NameAddr", _required(self.headers, "To"), NameAddr.parse)

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0..255), None when absent."""
        value = self.headers.get("Max-Forwards")
        return None if value is None else self._memo("Max-Forwards", value, _parse_max_forwards)

    def missing_headers(self) -> tuple[str, ...]:
        """The mandatory headers (RFC 3261 §8.1.1) this message lacks; () when complete."""
        return tuple(name for name in MANDATORY_HEADERS if name not in self.headers)

    def _serialize(self, start_line: str) -> bytes:
        """Content-Length is always written from the body: in the place of the first one when
        present (kept as sent if it already agrees), else last. CR/LF in a header would
        inject headers and raise ValueError."""
        length = len(self.body)
        lines = [start_line]
        seen_length = False
        for name, value in self.headers:
            if name == "Content-Length":
                if seen_length:
                    continue
                seen_length = True
                if not (_DIGITS_RE.fullmatch(value) and int(value) == length):
                    value = str(length)
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"CR or LF in header {name!r}")
            lines.append(f"{name}: {value}")
        if not seen_length:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name} header")
    return value


def _parse_max_forwards(text: str) -> int:
    if not _DIGITS_RE.fullmatch(text) or int(text) > 255:
        raise SipParseError(f"bad Max-Forwards {excerpt(text)}")
    return int(text)


@dataclass(eq=True)
class Request(_MessageBase):
    """A SIP request. ``uri`` is the Request-URI exactly as text (``request_uri`` parses it)."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION
    _cache: dict[tuple[str, str], object] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def request_uri(self) -> Uri:
        return self._memo("Uri", self.uri, parse_uri)

    def serialize(self) -> bytes:
        """Wire bytes; Content-Length is always written from the body."""
        return self._serialize(f"{self.method} {self.uri} {self.version}")


@dataclass(eq=True)
class Response(_MessageBase):
    """A SIP response; ``reason`` is the whole reason phrase (it may hold spaces and UTF-8,
    or be empty)."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION
    _cache: dict[tuple[str, str], object] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def serialize(self) -> bytes:
        return self._serialize(f"{self.version} {self.status} {self.reason}")


Message = Request | Response

#: A parsed start-line: ("request", method, uri) or ("response", status, reason).
_StartLine = tuple[str, str, str]


def parse_message(data: bytes) -> Message:
    """Parse one datagram; trailing octets past Content-Length are ignored (RFC 3261 §18.3).

    CRLFs before the start-line are skipped (§7.5; keep-alives)."""
    start = len(data) - len(data.lstrip(b"\r\n"))
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("no empty line ending the header section")
    start_line, headers = _parse_head(data[start:end])
    length = _content_length(headers)
    body_start = end + 4
    if length is None:
        body = data[body_start:]
    elif body_start + length > len(data):  # RFC 4475 §3.1.2.2 clerr
        raise SipParseError("body shorter than Content-Length")
    else:
        body = data[body_start : body_start + length]
    return _build(start_line, headers, body)


def _parse_head(head: bytes) -> tuple[_StartLine, Headers]:
    """The start-line and header fields (unfolded) of a header section without its CRLFCRLF."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("header section is not UTF-8") from exc
    lines = text.split("\r\n")
    if text.count("\r") != len(lines) - 1 or text.count("\n") != len(lines) - 1:
        raise SipParseError("bare CR or LF in the header section")
    return _parse_start_line(lines[0]), Headers(_header_fields(lines[1:]))


def _header_fields(lines: list[str]) -> list[tuple[str, str]]:
    # Folding (RFC 3261 §7.3.1): a line starting with SP/HTAB continues the previous field;
    # each fold becomes one SP. Parts are joined once at the end so this stays linear.
    fields: list[tuple[str, list[str]]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not fields:
                raise SipParseError("continuation line before the first header")
            part = line.strip(" \t")
            if part:
                fields[-1][1].append(part)
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad header line {excerpt(line)}")
        value = value.strip(" \t")
        fields.append((name, [value] if value else []))
    return [(name, " ".join(parts)) for name, parts in fields]


def _parse_start_line(line: str) -> _StartLine:
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        _check_version(version)
        code, _, reason = rest.partition(" ")
        if not _STATUS_RE.fullmatch(code):  # RFC 4475 §3.1.2.19 bigcode
            raise SipParseError(f"bad status code {excerpt(code)}")
        if _CTL_RE.search(reason):
            raise SipParseError("control character in reason phrase")
        return ("response", code, reason)
    parts = line.split(" ")
    # RFC 4475 §3.1.2.7-3.1.2.10: <> around, LWS inside, runs of SP or trailing SP: all 400.
    if len(parts) != 3 or not TOKEN_RE.fullmatch(parts[0]):
        raise SipParseError(f"bad request line {excerpt(line)}")
    _check_version(parts[2])
    return ("request", parts[0], parts[1])  # the URI is checked by _validate


def _check_version(version: str) -> None:
    if not _VERSION_RE.fullmatch(version):
        raise SipParseError(f"bad SIP version {excerpt(version)}")
    if version.upper() != SIP_VERSION:
        raise SipParseError(f"unsupported version {excerpt(version)}", 505)


def _content_length(headers: Headers) -> int | None:
    values = headers.get_all("Content-Length")
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("more than one Content-Length")
    if not _DIGITS_RE.fullmatch(values[0]):  # RFC 4475 §3.1.2.3 ncl: never negative
        raise SipParseError(f"bad Content-Length {excerpt(values[0])}")
    return int(values[0])


def _build(start_line: _StartLine, headers: Headers, body: bytes) -> Message:
    kind, first, second = start_line
    message: Message
    if kind == "request":
        message = Request(first, second, headers, body)
    else:
        message = Response(int(first), second, headers, body)
    _validate(message)
    return message


def _validate(message: Message) -> None:
    headers = message.headers
    if isinstance(message, Request):
        message.request_uri  # noqa: B018 - parsed for validation and remembered
    for name in _UNIQUE:
        if headers.count(name) > 1:
            raise SipParseError(f"more than one {name} header")
    for line in headers.get_all("Via"):
        for value in split_header_values(line, keep_empty=True):
            if not value:
                raise SipParseError(f"empty Via value in {excerpt(line)}")
            message._memo("Via", value, Via.parse)
    if "From" in headers:
        message.from_  # noqa: B018 - parsed for validation and remembered
    if "To" in headers:
        message.to  # noqa: B018
    call_id = headers.get("Call-ID")
    if call_id is not None and not _CALL_ID_RE.fullmatch(call_id):
        raise SipParseError(f"bad Call-ID {excerpt(call_id)}")
    message.max_forwards  # noqa: B018
    if "CSeq" in headers:
        cseq = message.cseq
        # RFC 4475 §3.1.2.17-18 mismatch01/02: a request's CSeq names its own method.
        if isinstance(message, Request) and cseq.method != message.method:
            raise SipParseError(f"CSeq method {excerpt(cseq.method)} is not the request's")


class StreamParser:
    """Frames SIP messages out of a reliable byte stream (RFC 3261 §18.3: Content-Length
    is mandatory there). ``feed()`` returns every complete message received so far.

    CRLFs between messages are keep-alives (RFC 5626 §3.5.1) and skipped. Framing errors (no
    or bad Content-Length, a broken header section: 400; more than ``max_message_size``
    octets: 513) leave the stream unusable: that error is raised by this and every later
    ``feed()``, and the connection should be closed. An error inside a well-framed message
    drops that message only. When messages completed in the same call before an error, they
    are returned and the error is raised by the next ``feed()``.
    """

    def __init__(self, max_message_size: int = 65536) -> None:
        self._buffer = bytearray()
        self._max = max_message_size
        self._scan_from = 0  # where to resume looking for CRLFCRLF
        self._head: tuple[_StartLine, Headers, int, int] | None = None
        self._failed: SipParseError | None = None
        self._pending: SipParseError | None = None

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error
        out: list[Message] = []
        while True:
            try:
                message = self._next()
            except SipParseError as exc:
                if not out:
                    raise
                if self._failed is None:
                    self._pending = exc
                return out
            if message is None:
                return out
            out.append(message)

    def _next(self) -> Message | None:
        if self._head is None:
            self._head = self._read_head()
            if self._head is None:
                return None
        start_line, headers, body_start, total = self._head
        if len(self._buffer) < total:
            return None
        body = bytes(self._buffer[body_start:total])
        del self._buffer[:total]
        self._head = None
        self._scan_from = 0
        return _build(start_line, headers, body)

    def _read_head(self) -> tuple[_StartLine, Headers, int, int] | None:
        skip = 0
        while self._buffer.startswith(b"\r\n", skip):
            skip += 2
        if skip:
            del self._buffer[:skip]
            self._scan_from = max(0, self._scan_from - skip)
        end = self._buffer.find(b"\r\n\r\n", self._scan_from)
        if end < 0:
            if len(self._buffer) > self._max:
                self._fail("header section larger than the message size limit", 513)
            self._scan_from = max(0, len(self._buffer) - 3)
            return None
        try:
            start_line, headers = _parse_head(bytes(self._buffer[:end]))
            length = _content_length(headers)
        except SipParseError as exc:
            self._fail(str(exc), exc.status)
        if length is None:
            self._fail("Content-Length is mandatory on a stream transport", 400)
        total = end + 4 + length
        if total > self._max:
            self._fail(f"message of {total} octets exceeds {self._max}", 513)
        return start_line, headers, end + 4, total

    def _fail(self, reason: str, status: int) -> NoReturn:
        self._failed = SipParseError(reason, status)
        raise self._failed


def default_reason(status: int) -> str:
    """The reason phrase for ``status``: REASON_PHRASES, else one naming its class."""
    return REASON_PHRASES.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6.2: every Via line in order, From, To
    (with ``to_tag`` added when To has no tag yet), Call-ID and CSeq copied as sent; a
    100 Trying also copies Timestamp (§8.2.6.1). ``headers`` are appended. Works on a
    :func:`salvage_request` result too: absent headers are simply not copied."""
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} is not 100..699")
    if to_tag is not None and not TOKEN_RE.fullmatch(to_tag):
        raise ValueError(f"tag {to_tag!r} is not a token")
    out = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_all(name):
            if name == "To" and to_tag is not None and _lacks_tag(value):
                value = f"{value};tag={to_tag}"  # a bare addr-spec's ;params are header params
            out.add(name, value)
    if status == 100:
        for value in request.headers.get_all("Timestamp"):
            out.add("Timestamp", value)
    for name, value in headers:
        out.add(name, value)
    return Response(status, default_reason(status) if reason is None else reason, out)


def _lacks_tag(value: str) -> bool:
    try:
        return NameAddr.parse(value).tag is None
    except SipParseError:
        return False  # unparseable: leave it as it is


def salvage_request(data: bytes) -> Request | None:
    """Best effort on a datagram that failed :func:`parse_message`, so that the transport can
    answer 400 (or 505) to the top Via: a Request holding the start-line's first two words as
    method and URI (as found, control characters as ``?``: for logs and the ACK test only) and
    whichever Via, From, To, Call-ID and CSeq can be read. Via values are kept while they
    parse, a broken one repaired by dropping its unreadable parameters (RFC 4475 §3.1.2.1
    badinv01), and the run stops at the first whose sent-by cannot be read. None for a
    response or when no Via survives. Never raises."""
    end = data.find(b"\r\n\r\n")
    text = (data if end < 0 else data[:end]).decode("utf-8", "replace")
    lines = [line.rstrip("\r") for line in text.lstrip("\r\n").split("\n")]
    if lines[0][:4].upper() == "SIP/":
        return None  # a response is never answered
    method, _, rest = lines[0].partition(" ")
    uri = rest.strip(" \t").partition(" ")[0]
    found = Headers()
    vias_intact = True
    for name, value in _salvage_fields(lines[1:]):
        if name == "Via":
            vias_intact = vias_intact and _salvage_vias(found, value)
        elif name not in found and _salvageable(name, value):
            found.add(name, value)
    if "Via" not in found:
        return None
    return Request(_CTL_RE.sub("?", method), _CTL_RE.sub("?", uri), found)


_SALVAGED = frozenset({"Via", "From", "To", "Call-ID", "CSeq"})


def _salvage_fields(lines: list[str]) -> list[tuple[str, str]]:
    fields: list[tuple[str, list[str]]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if fields:
                fields[-1][1].append(line.strip(" \t"))
            continue
        name, colon, value = line.partition(":")
        name = canonical_name(name.strip(" \t"))
        if colon and name in _SALVAGED:
            fields.append((name, [value.strip(" \t")]))
    return [(name, " ".join(parts)) for name, parts in fields]


def _salvage_vias(found: Headers, line: str) -> bool:
    """Add the readable Via values of ``line``; False at the first unreadable one (what
    follows it is not trusted: responses travel by the top Via only)."""
    for value in split_header_values(line, keep_empty=True):
        via = _salvage_via(value)
        if via is None:
            return False
        found.add("Via", via)
    return True


def _salvage_via(value: str) -> str | None:
    """``value`` when it parses; else its sent-protocol and sent-by with the parameters that
    parse on their own (``;;`` and such dropped); None when even the sent-by is unreadable."""
    try:
        Via.parse(value)
        return value
    except SipParseError:
        pass
    head, _, params = value.partition(";")
    try:
        via = Via.parse(head)
    except SipParseError:
        return None
    kept: list[tuple[str, str | None]] = []
    for item in params.split(";"):
        try:
            kept.extend(parse_params(item))
        except SipParseError:
            continue
    return str(Via(via.transport, via.host, via.port, tuple(kept), via.protocol))


def _salvageable(name: str, value: str) -> bool:
    parse: Callable[[str], object] = {
        "From": NameAddr.parse, "To": NameAddr.parse, "CSeq": CSeq.parse,
    }.get(name, _parse_call_id)  # fmt: skip
    try:
        parse(value)
    except SipParseError:
        return False
    return True


def _parse_call_id(value: str) -> str:
    if not _CALL_ID_RE.fullmatch(value):
        raise SipParseError("bad Call-ID")
    return value


__all__ = [
    "COMPACT_FORMS",
    "MANDATORY_HEADERS",
    "REASON_PHRASES",
    "SINGLE_VALUE_HEADERS",
    "SIP_VERSION",
    "Headers",
    "Message",
    "Request",
    "Response",
    "SipParseError",
    "StreamParser",
    "canonical_name",
    "default_reason",
    "make_response",
    "parse_message",
    "salvage_request",
]
