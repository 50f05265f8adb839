"""Header fields: the :class:`Headers` multi-map and structured values (Via, name-addr, CSeq).

Each value type is a frozen dataclass with ``parse(text)`` (raising only SipParseError, status
400) and ``__str__`` giving the wire form. Parameter names compare case-insensitively; values
are kept as sent (a quoted value keeps its quotes). Parsers take one *unfolded* value: LWS is
allowed wherever RFC 3261 §25.1 puts SWS/LWS (around ``/`` in Via, ``;`` and ``=``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from callbridge.sip.errors import SipParseError, excerpt
from callbridge.sip.uri import Uri, format_host, parse_hostport, parse_uri

Params = tuple[tuple[str, str | None], ...]

#: RFC 3261 §25.1 token: what method names, header names and parameter names are made of.
TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~\-]+")
#: quoted-string: qdtext and quoted-pairs, never CR or LF (RFC 3261 §25.1).
_QUOTED_RE = re.compile(r'"(?:[^"\\\r\n]|\\[^\r\n])*"')
#: gen-value = token / host / quoted-string (IPv6 references bring ``[``, ``]`` and ``:``).
_GEN_VALUE_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~\-\[\]:]+|" + _QUOTED_RE.pattern)
_CSEQ_RE = re.compile(r"[ \t]*([0-9]{1,10})[ \t]+([A-Za-z0-9.!%*_+`'~\-]+)[ \t]*")
_LWS = " \t"
_LWS_RE = re.compile(r"[ \t]+")

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

# fmt: off
_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Authentication-Info",
        "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
        "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
        "Error-Info", "Expires", "From", "In-Reply-To", "Max-Forwards", "MIME-Version",
        "Min-Expires", "Organization", "P-Asserted-Identity", "Priority", "Proxy-Authenticate",
        "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Reply-To",
        "Require", "Retry-After", "Route", "RSeq", "Server", "Session-Expires", "Subject",
        "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
        "WWW-Authenticate", "Event", "Allow-Events", "Refer-To", "Referred-By", "Min-SE",
        "Privacy", "P-Preferred-Identity", "Remote-Party-ID", "Diversion", "Identity",
        "Accept-Contact", "Reject-Contact", "Request-Disposition",
    )
}

#: Headers whose value is never a comma-separated list (RFC 3261 §7.3.1): ``values()`` keeps
#: each line whole, so commas in a Date or in digest parameters are not split.
SINGLE_VALUE_HEADERS = frozenset({
    "Call-ID", "Content-Length", "Content-Type", "CSeq", "From", "To", "Max-Forwards", "Expires",
    "Authentication-Info", "Authorization", "Content-Disposition", "Date", "Identity",
    "MIME-Version", "Min-Expires", "Min-SE", "Organization", "Priority", "Proxy-Authenticate",
    "Proxy-Authorization", "RAck", "Refer-To", "Referred-By", "Reply-To", "Retry-After", "RSeq",
    "Server", "Session-Expires", "Subject", "Timestamp", "User-Agent", "WWW-Authenticate",
})
# fmt: on


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: compact forms expanded, known names cased."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, name)


def split_header_values(value: str, *, keep_empty: bool = False) -> list[str]:
    """Split a comma-separated header line into values, ignoring commas inside quoted
    strings and angle brackets (RFC 3261 §7.3.1). Each item is stripped; empty items are
    dropped unless ``keep_empty`` (a strict caller then rejects them)."""
    if '"' not in value and "<" not in value:  # the common case, done in C
        out = [item.strip(_LWS) for item in value.split(",")]
    else:
        out = _split_quoted(value)
    return out if keep_empty else [item for item in out if item]


def _split_quoted(value: str) -> list[str]:
    out: list[str] = []
    start = 0
    quoted = escaped = False
    depth = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append(value[start:i].strip(_LWS))
            start = i + 1
    out.append(value[start:].strip(_LWS))
    return out


def parse_params(text: str) -> Params:
    """Parse generic-params ``;name=value;flag`` (RFC 3261 §25.1; the leading ``;`` may be
    omitted). Names are tokens; values are tokens, hosts or quoted strings (kept quoted);
    LWS around ``;`` and ``=`` is dropped; an empty parameter (``;;``) is an error."""
    text = text.strip(_LWS)
    if not text:
        return ()
    items = _split_unquoted(text, ";")
    if text[0] == ";":
        items = items[1:]
    params: list[tuple[str, str | None]] = []
    for item in items:
        name, eq, value = item.partition("=")
        name, value = name.strip(_LWS), value.strip(_LWS)
        if not TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad parameter name {excerpt(name)} in {excerpt(text)}")
        if eq and not _GEN_VALUE_RE.fullmatch(value):
            raise SipParseError(f"bad value for parameter {excerpt(name)} in {excerpt(text)}")
        params.append((name, value if eq else None))
    return tuple(params)


def _split_unquoted(text: str, sep: str) -> list[str]:
    if '"' not in text:
        return text.split(sep)
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise SipParseError(f"unterminated quoted string in {excerpt(text)}")
    parts.append(text[start:])
    return parts


def format_params(params: Params) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def get_param(params: Params, name: str) -> str | None:
    """The value of ``name`` (case-insensitive), ``""`` for a flag, None when absent."""
    key = name.lower()
    for n, v in params:
        if n.lower() == key:
            return "" if v is None else v
    return None


def has_param(params: Params, name: str) -> bool:
    key = name.lower()
    return any(n.lower() == key for n, _ in params)


def _replace_param(params: Params, name: str, value: str | None) -> Params:
    key = name.lower()
    if not any(n.lower() == key for n, _ in params):
        return (*params, (name, value))
    return tuple((n, value) if n.lower() == key else (n, v) for n, v in params)


@dataclass(frozen=True)
class Via:
    """One via-parm: ``SIP/2.0/UDP host:port;branch=...;rport`` (RFC 3261 §20.42).

    ``transport`` is upper-cased; unknown transports are legal (RFC 4475 §3.1.1.10).
    ``protocol`` is name/version as sent (LWS dropped): any tokens parse, so that a request
    with ``SIP/7.0`` Vias can still be answered 505 (RFC 4475 §3.1.2.16). ``host`` keeps IPv6
    brackets; ``received`` may carry an IPv6 address with or without them (RFC 5118 §4.5).
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        semi = text.find(";")
        head, params = (text, "") if semi < 0 else (text[:semi], text[semi:])
        # sent-protocol: SLASH is SWS "/" SWS, then LWS before sent-by.
        pieces = head.split("/", 2)
        if len(pieces) != 3:
            raise SipParseError(f"bad Via sent-protocol in {excerpt(text)}")
        name, version = pieces[0].strip(_LWS), pieces[1].strip(_LWS)
        transport, sent_by = _split_lws(pieces[2].strip(_LWS))
        if not all(TOKEN_RE.fullmatch(t) for t in (name, version, transport)) or not sent_by:
            raise SipParseError(f"bad Via sent-protocol or sent-by in {excerpt(text)}")
        host, port = _parse_sent_by(sent_by)
        protocol = "SIP/2.0" if f"{name}/{version}".upper() == "SIP/2.0" else f"{name}/{version}"
        return cls(transport.upper(), host, port, parse_params(params), protocol)

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def rport(self) -> str | None:
        """``""`` when the flag is present without a value, the port text when filled in."""
        return get_param(self.params, "rport")

    def with_param(self, name: str, value: str | None) -> Via:
        """A copy with ``name`` set (replaced in place, else appended): the transport adds
        ``received`` and fills ``rport`` this way (RFC 3261 §18.2.1, RFC 3581 §4)."""
        params = _replace_param(self.params, name, value)
        return Via(self.transport, self.host, self.port, params, self.protocol)

    def __str__(self) -> str:
        hostport = format_host(self.host, self.port)
        return f"{self.protocol}/{self.transport} {hostport}{format_params(self.params)}"


def _split_lws(text: str) -> tuple[str, str]:
    """Split at the first run of SP/HTAB: ``("UDP", "host:5060")``."""
    for i, ch in enumerate(text):
        if ch in _LWS:
            return text[:i], text[i:].strip(_LWS)
    return text, ""


def _parse_sent_by(text: str) -> tuple[str, int | None]:
    # sent-by = host [ COLON port ], and COLON = SWS ":" SWS: drop LWS around the colon.
    if text.startswith("["):
        end = text.find("]") + 1
        host, rest = text[:end], text[end:].strip(_LWS)
    else:
        host, sep, port = text.partition(":")
        host, rest = host.rstrip(_LWS), sep + port
    if rest.startswith(":"):
        rest = ":" + rest[1:].strip(_LWS)
    return parse_hostport(host + rest)


@dataclass(frozen=True)
class NameAddr:
    """``"Display" <uri>;tag=...`` or a bare addr-spec (From, To, Contact, Route, ...).

    ``display_name`` is the decoded text (quoted-pairs resolved) or None. A bare addr-spec may
    not hold ``,``, ``;`` or ``?`` (RFC 3261 §20.10): its ``;`` parameters are header
    parameters. ``Contact: *`` is not a name-addr; callers test for it first.
    """

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip(_LWS)
        display: str | None = None
        if text.startswith('"'):
            match = _QUOTED_RE.match(text)
            if match is None:
                raise SipParseError(f"unterminated quoted display name in {excerpt(text)}")
            display = _unquote(match.group())
            lt = _skip_lws(text, match.end())
            if not text.startswith("<", lt):
                raise SipParseError(f"no <uri> after display name in {excerpt(text)}")
        else:
            lt = text.find("<")
            if lt < 0:
                return cls._parse_addr_spec(text)
            display = _token_display_name(text[:lt])
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"unclosed <> in {excerpt(text)}")
        uri_text = text[lt + 1 : gt]
        if uri_text != uri_text.strip(_LWS):  # RFC 4475 §3.1.2.14: no LWS inside <>
            raise SipParseError(f"whitespace inside <> in {excerpt(text)}")
        rest = text[gt + 1 :].lstrip(_LWS)
        if rest and not rest.startswith(";"):
            raise SipParseError(f"junk after <uri> in {excerpt(text)}")
        return cls(parse_uri(uri_text), display or None, parse_params(rest))

    @classmethod
    def _parse_addr_spec(cls, text: str) -> NameAddr:
        uri_text, _, params = text.partition(";")
        uri_text = uri_text.rstrip(_LWS)
        if "?" in uri_text or "," in uri_text:
            raise SipParseError(f"URI with '?' or ',' must be enclosed in <>: {excerpt(text)}")
        return cls(parse_uri(uri_text), None, parse_params(params))

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        kept = tuple(p for p in self.params if p[0].lower() != "tag")
        return NameAddr(self.uri, self.display_name, (*kept, ("tag", tag)))

    def __str__(self) -> str:
        display = f"{_quote(self.display_name)} " if self.display_name else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _skip_lws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _LWS:
        pos += 1
    return pos


def _token_display_name(text: str) -> str | None:
    """display-name = *(token LWS): commas and other separators must be quoted (RFC 4475
    §3.1.2.15 baddn)."""
    text = text.strip(_LWS)
    if text and not all(TOKEN_RE.fullmatch(word) for word in _LWS_RE.split(text)):
        raise SipParseError(f"display name {excerpt(text)} must be quoted")
    return text or None


def _unquote(quoted: str) -> str:
    inner = quoted[1:-1]
    return re.sub(r"\\(.)", r"\1", inner, flags=re.S) if "\\" in inner else inner


def _quote(text: str) -> str:
    """A quoted-string for ``text``: ``"`` ``\\`` and control characters become quoted-pairs
    (RFC 3261 §25.1); CR and LF cannot be carried at all and become spaces."""
    out = []
    for ch in text:
        if ch in "\r\n":
            out.append(" ")
        elif ch in '"\\' or (ch < " " and ch != "\t") or ch == "\x7f":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class CSeq:
    """``CSeq: 4711 INVITE``; the number is below 2**31 (RFC 3261 §8.1.1.5)."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        match = _CSEQ_RE.fullmatch(text)
        if match is None:
            raise SipParseError(f"bad CSeq {excerpt(text)}")
        seq = int(match.group(1))
        if seq >= 2**31:
            raise SipParseError(f"CSeq number out of range in {excerpt(text)}")
        return cls(seq, match.group(2))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def _key(name: str) -> str:
    """The lookup key of a header name: canonical form, lower-cased. Hot, so short names
    (all real ones) are cached; long ones, which only an attacker sends, are not."""
    return _short_key(name) if len(name) <= 40 else canonical_name(name).lower()


@lru_cache(maxsize=1024)
def _short_key(name: str) -> str:
    return canonical_name(name).lower()


class Headers:
    """An ordered, case-insensitive multi-map of header lines.

    Each entry is one header *line* (after unfolding), its name in canonical form (compact
    forms expanded). ``values(name)`` also splits comma-separated lists (outside quotes and
    angle brackets) into single values, except for :data:`SINGLE_VALUE_HEADERS`.
    """

    __slots__ = ("_items", "_keys")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]
        self._keys: list[str] = [_key(n) for n, _ in self._items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first line's value for ``name``, or ``default``."""
        key = _key(name)
        if key not in self._keys:
            return default
        return self._items[self._keys.index(key)][1]

    def get_all(self, name: str) -> list[str]:
        """Every line's value for ``name``, in order (lists not split)."""
        key = _key(name)
        return [item[1] for k, item in zip(self._keys, self._items, strict=True) if k == key]

    def count(self, name: str) -> int:
        """How many lines ``name`` has."""
        return self._keys.count(_key(name))

    def values(self, name: str) -> list[str]:
        """Every value for ``name``: lines in order, comma-separated lists split."""
        lines = self.get_all(name)
        if canonical_name(name) in SINGLE_VALUE_HEADERS:
            return lines
        out: list[str] = []
        for line in lines:
            out.extend(split_header_values(line))
        return out

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))
        self._keys.append(_key(name))

    def prepend(self, name: str, value: str) -> None:
        """Insert a line before any other (a new top Via, Record-Route)."""
        self._items.insert(0, (canonical_name(name), value))
        self._keys.insert(0, _key(name))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line holding ``value`` (in the first's place)."""
        key = _key(name)
        if key not in self._keys:
            self.add(name, value)
            return
        first = self._keys.index(key)
        self._items[first] = (canonical_name(name), value)
        self._keep(lambda i, k: i <= first or k != key)

    def remove(self, name: str) -> None:
        key = _key(name)
        self._keep(lambda _, k: k != key)

    def _keep(self, keep: Callable[[int, str], bool]) -> None:
        kept = [i for i, k in enumerate(self._keys) if keep(i, k)]
        self._items = [self._items[i] for i in kept]
        self._keys = [self._keys[i] for i in kept]

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        new._keys = list(self._keys)
        return new


__all__ = [
    "COMPACT_FORMS",
    "SINGLE_VALUE_HEADERS",
    "TOKEN_RE",
    "CSeq",
    "Headers",
    "NameAddr",
    "Params",
    "SipParseError",
    "Via",
    "canonical_name",
    "format_params",
    "get_param",
    "has_param",
    "parse_params",
    "parse_uri",
    "split_header_values",
]
