"""Structured header values: Via, name-addr (From/To/Contact/Route), CSeq, parameter lists.

Each type is a frozen dataclass with ``parse(text)`` (raising SipParseError) and ``__str__``
giving the wire form. Parameter names compare case-insensitively; values are kept as sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.sip.errors import SipParseError
from callbridge.sip.uri import Uri, parse_uri

Params = tuple[tuple[str, str | None], ...]


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header line into values, ignoring commas inside quoted
    strings and angle brackets (RFC 3261 §7.3.1). Empty items are dropped; each is stripped."""
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
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [item for item in out if item]


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` generic-params (RFC 3261 §25.1); values may be quoted."""
    params: list[tuple[str, str | None]] = []
    for item in _split_unquoted(text, ";"):
        item = item.strip()
        if not item:
            continue
        name, eq, value = item.partition("=")
        name = name.strip()
        if not name:
            raise SipParseError(f"empty parameter name in {text!r}")
        params.append((name, value.strip() if eq else None))
    return tuple(params)


def _split_unquoted(text: str, sep: str) -> list[str]:
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
        raise SipParseError(f"unterminated quoted string in {text!r}")
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


@dataclass(frozen=True)
class Via:
    """One via-parm: ``SIP/2.0/UDP host:port;branch=...;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> Via:
        sent, _, rest = text.strip().partition(";")
        proto, _, hostport = sent.strip().partition(" ")
        pieces = [p.strip() for p in proto.split("/")]
        if len(pieces) != 3 or not all(pieces) or not hostport.strip():
            raise SipParseError(f"bad Via {text!r}")
        host, port = _split_hostport(hostport.strip())
        return cls(pieces[2].upper(), host, port, parse_params(rest) if rest else ())

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

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hostport}{format_params(self.params)}"


def _split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text!r}")
        host, rest = text[: end + 1], text[end + 1 :].strip()
    else:
        host, sep, rest = text.partition(":")
        rest = sep + rest
        host = host.strip()
    if not rest:
        return host, None
    port_text = rest.lstrip(":").strip()
    if not rest.startswith(":") or not port_text.isdigit() or int(port_text) > 65535:
        raise SipParseError(f"bad port in {text!r}")
    return host, int(port_text)


@dataclass(frozen=True)
class NameAddr:
    """``"Display" <uri>;tag=...`` or a bare addr-spec (From, To, Contact, Route, ...)."""

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        lt = text.find("<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"unclosed <> in {text!r}")
            display = text[:lt].strip() or None
            if display and display.startswith('"') and display.endswith('"') and len(display) > 1:
                display = display[1:-1]
            return cls(parse_uri(text[lt + 1 : gt]), display, parse_params(text[gt + 1 :]))
        uri, _, params = text.partition(";")
        return cls(parse_uri(uri.strip()), None, parse_params(params) if params else ())

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        kept = tuple(p for p in self.params if p[0].lower() != "tag")
        return NameAddr(self.uri, self.display_name, (*kept, ("tag", tag)))

    def __str__(self) -> str:
        display = f'"{self.display_name}" ' if self.display_name else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


@dataclass(frozen=True)
class CSeq:
    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
            raise SipParseError(f"bad CSeq {text!r}")
        seq = int(parts[0])
        if seq >= 2**31:  # RFC 3261 §8.1.1.5: less than 2**31
            raise SipParseError(f"CSeq number out of range in {text!r}")
        return cls(seq, parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


__all__ = [
    "CSeq",
    "NameAddr",
    "Params",
    "SipParseError",
    "Via",
    "format_params",
    "get_param",
    "has_param",
    "parse_params",
    "parse_uri",
    "split_header_values",
]
