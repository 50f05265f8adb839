"""URIs in SIP: sip, sips (RFC 3261 §19.1, §25.1) and tel (RFC 3966); others kept opaque.

Escaped characters (``%41``) are decoded only where the grammar allows ``escaped`` (user,
password, uri-parameter names/values, header names/values), exactly once (never recursively:
``%2541`` is ``%41``), and re-escaped on output. A ``%00`` in a user part stays a NUL
character and never truncates (RFC 4475 §3.1.1.4). Octets that are not UTF-8 decode to lone
surrogates (``surrogateescape``) so that ``str(uri)`` gives back the same escapes.

Each component accepts only the characters its ABNF allows; anything else raises
:class:`SipParseError` (status 400). The user part may hold ``;``, ``?`` and ``/``
(user-unreserved): ``sip:user;par=u%40example.net@example.com`` has the user
``user;par=u@example.net`` (RFC 4475 §3.1.1.9), so the userinfo is everything before the first
``@``, which the grammar allows nowhere else unescaped. IPv6 references keep their brackets in
``host`` and are checked for hex digits, colons and dots only, so the RFC 3261 ABNF bug form
``[2001:db8:::192.0.2.1]`` is tolerated (RFC 5118 §4.10); ``[2001:db8::10:5070]`` is an
address with no port (RFC 5118 §4.3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callbridge.sip.errors import SipParseError, excerpt

UriParams = tuple[tuple[str, str | None], ...]

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_UNRESERVED = _ALNUM + "-_.!~*'()"  # RFC 3261 §25.1: alphanum / mark
#: Characters each component may carry unescaped (RFC 3261 §25.1).
_USER_SAFE = frozenset(_UNRESERVED + "&=+$,;?/")  # user-unreserved
_PASSWORD_SAFE = frozenset(_UNRESERVED + "&=+$,")
_PARAM_SAFE = frozenset(_UNRESERVED + "[]/:&+$")  # param-unreserved
_HEADER_SAFE = frozenset(_UNRESERVED + "[]/?:+$")  # hnv-unreserved


def _component_re(safe: frozenset[str], at_least_one: bool) -> re.Pattern[str]:
    # One alternative per character, no nested quantifier: matching stays linear.
    chars = "".join(sorted(re.escape(c) for c in safe))
    return re.compile(f"(?:[{chars}]|%[0-9A-Fa-f]{{2}})" + ("+" if at_least_one else "*"))


_USER_RE = _component_re(_USER_SAFE, True)
_PASSWORD_RE = _component_re(_PASSWORD_SAFE, False)
_PARAM_RE = _component_re(_PARAM_SAFE, True)
_HNAME_RE = _component_re(_HEADER_SAFE, True)
_HVALUE_RE = _component_re(_HEADER_SAFE, False)

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*\.?")
_IPV6_REF_RE = re.compile(r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]")
_PORT_RE = re.compile(r"[0-9]{1,5}")
#: Opaque text of other schemes: visible ASCII except ``"``, ``<`` and ``>`` (RFC 3986 §2).
_OPAQUE_RE = re.compile(r"[\x21\x23-\x3b\x3d\x3f-\x7e]+")
_TEL_NUMBER_RE = re.compile(r"\+[0-9().\-]+|[0-9A-Fa-f*#().\-]+")
_TEL_PNAME_RE = re.compile(r"[A-Za-z0-9\-]+")


def _unescape(text: str, pattern: re.Pattern[str], what: str) -> str:
    """Validate ``text`` against its component grammar and decode its %-escapes once."""
    if not pattern.fullmatch(text):
        raise SipParseError(f"invalid characters or escapes in URI {what} {excerpt(text)}")
    if "%" not in text:
        return text
    pieces = text.split("%")
    octets = bytearray(pieces[0].encode("ascii"))
    for piece in pieces[1:]:
        octets.append(int(piece[:2], 16))
        octets += piece[2:].encode("ascii")
    return octets.decode("utf-8", "surrogateescape")


def _escape(text: str, safe: frozenset[str]) -> str:
    """%-escape every character of ``text`` outside ``safe`` (as UTF-8 octets)."""
    if all(ch in safe for ch in text):
        return text
    out: list[str] = []
    for ch in text:
        if ch in safe:
            out.append(ch)
            continue
        try:
            octets = ch.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that no escape produced
            octets = ch.encode("utf-8", "surrogatepass")
        out.extend(f"%{b:02X}" for b in octets)
    return "".join(out)


def is_valid_host(host: str) -> bool:
    """A hostname, IPv4 address or bracketed IPv6 reference (RFC 3261 §25.1, RFC 5118).

    Underscores are tolerated in hostnames: real carriers use them although RFC 1123 does not.
    """
    if host.startswith("["):
        return _IPV6_REF_RE.fullmatch(host) is not None
    return _HOSTNAME_RE.fullmatch(host) is not None


def parse_port(text: str) -> int:
    """A port number, 0..65535, ASCII digits only."""
    if not _PORT_RE.fullmatch(text) or int(text) > 65535:
        raise SipParseError(f"bad port {excerpt(text)}")
    return int(text)


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 references bracketed); both parts are validated."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unclosed IPv6 reference in {excerpt(text)}")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, sep, port_text = text.partition(":")
        rest = sep + port_text
    if not is_valid_host(host):
        raise SipParseError(f"bad host in {excerpt(text)}")
    if not rest:
        return host, None
    if rest[0] != ":":
        raise SipParseError(f"junk after host in {excerpt(text)}")
    return host, parse_port(rest[1:])


def format_host(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@dataclass(frozen=True)
class SipUri:
    """``sip:user:password@host:port;params?headers``; ``host`` keeps IPv6 brackets.

    ``user``, ``password``, parameter and header names and values hold *decoded* text;
    ``str()`` escapes them again where their grammar requires it.
    """

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: UriParams = ()
    headers: tuple[tuple[str, str], ...] = ()
    scheme: str = "sip"

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        if not colon or scheme.lower() not in ("sip", "sips"):
            raise SipParseError(f"not a sip/sips URI: {excerpt(text)}")
        user = password = None
        at = rest.find("@")
        if at >= 0:
            user_text, pcolon, password_text = rest[:at].partition(":")
            user = _unescape(user_text, _USER_RE, "user")
            if pcolon:
                password = _unescape(password_text, _PASSWORD_RE, "password")
            rest = rest[at + 1 :]
        rest, qmark, header_text = rest.partition("?")
        hostport, semi, param_text = rest.partition(";")
        host, port = parse_hostport(hostport)
        params = _parse_uri_params(param_text) if semi else ()
        headers = _parse_uri_headers(header_text) if qmark else ()
        return cls(host, user, password, port, params, headers, scheme.lower())

    def param(self, name: str) -> str | None:
        """Value of a uri-parameter (case-insensitive name); ``""`` for a flag; None absent."""
        key = name.lower()
        for n, v in self.params:
            if n.lower() == key:
                return "" if v is None else v
        return None

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = _escape(self.user, _USER_SAFE)
            if self.password is not None:
                userinfo += ":" + _escape(self.password, _PASSWORD_SAFE)
            userinfo += "@"
        params = "".join(
            f";{_escape(n, _PARAM_SAFE)}" + ("" if v is None else f"={_escape(v, _PARAM_SAFE)}")
            for n, v in self.params
        )
        headers = "&".join(
            f"{_escape(n, _HEADER_SAFE)}={_escape(v, _HEADER_SAFE)}" for n, v in self.headers
        )
        query = f"?{headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{format_host(self.host, self.port)}{params}{query}"


def _parse_uri_params(text: str) -> UriParams:
    params: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        params.append(
            (
                _unescape(name, _PARAM_RE, "parameter name"),
                _unescape(value, _PARAM_RE, "parameter value") if eq else None,
            )
        )
    return tuple(params)


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for item in text.split("&"):
        name, eq, value = item.partition("=")
        if not eq:
            raise SipParseError(f"URI header without '=' in {excerpt(text)}")
        headers.append(
            (_unescape(name, _HNAME_RE, "header name"), _unescape(value, _HVALUE_RE, "header"))
        )
    return tuple(headers)


@dataclass(frozen=True)
class TelUri:
    """``tel:+919812345678;phone-context=...`` (RFC 3966); parameters kept as sent."""

    number: str
    params: UriParams = ()

    @classmethod
    def parse(cls, text: str) -> TelUri:
        scheme, _, rest = text.partition(":")
        if scheme.lower() != "tel":
            raise SipParseError(f"not a tel URI: {excerpt(text)}")
        number, semi, param_text = rest.partition(";")
        if not _TEL_NUMBER_RE.fullmatch(number) or not any(c.isalnum() for c in number):
            raise SipParseError(f"bad telephone number in {excerpt(text)}")
        params: list[tuple[str, str | None]] = []
        for item in param_text.split(";") if semi else ():
            name, eq, value = item.partition("=")
            if not _TEL_PNAME_RE.fullmatch(name) or (eq and not _PARAM_RE.fullmatch(value)):
                raise SipParseError(f"bad tel URI parameter {excerpt(item)}")
            params.append((name, value if eq else None))
        return cls(number, tuple(params))

    def param(self, name: str) -> str | None:
        """Value of a parameter (case-insensitive name); ``""`` for a flag; None absent."""
        key = name.lower()
        for n, v in self.params:
            if n.lower() == key:
                return "" if v is None else v
        return None

    def __str__(self) -> str:
        params = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in self.params)
        return f"tel:{self.number}{params}"


@dataclass(frozen=True)
class AbsoluteUri:
    """Any other scheme (``mailto:``, ``http:``, unknown ones): scheme plus opaque text."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse any absolute URI (surrounding SP/HTAB ignored); SipParseError when it is not one.

    RFC 4475 §3.3.2-3.3.4: unknown schemes parse (as :class:`AbsoluteUri`); refusing them
    (416) is a decision for the layer above.
    """
    text = text.strip(" \t")
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise SipParseError(f"not an absolute URI: {excerpt(text)}")
    lowered = scheme.lower()
    if lowered in ("sip", "sips"):
        return SipUri.parse(text)
    if lowered == "tel":
        return TelUri.parse(text)
    if not _OPAQUE_RE.fullmatch(rest):
        raise SipParseError(f"bad characters in URI {excerpt(text)}")
    return AbsoluteUri(scheme, rest)


__all__ = [
    "AbsoluteUri",
    "SipParseError",
    "SipUri",
    "TelUri",
    "Uri",
    "UriParams",
    "format_host",
    "is_valid_host",
    "parse_hostport",
    "parse_port",
    "parse_uri",
]
