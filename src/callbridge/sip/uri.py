"""URIs in SIP: sip, sips (RFC 3261 §19.1, §25.1) and tel (RFC 3966); others kept opaque.

Escaped characters (``%41``) are decoded only where the grammar allows ``escaped`` (user,
password, parameter names/values, header names/values), never recursively, and re-escaped
on output; a ``%00`` in a user part stays a NUL character and never truncates (RFC 4475
3.1.1.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.sip.errors import SipParseError

UriParams = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class SipUri:
    """``sip:user:password@host:port;params?headers``; ``host`` keeps IPv6 brackets."""

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
            raise SipParseError(f"not a sip/sips URI: {text!r}")
        rest, _, header_text = rest.partition("?")
        userinfo, at, hostpart = rest.rpartition("@")
        user = password = None
        if at:
            user, pcolon, pw = userinfo.partition(":")
            password = pw if pcolon else None
        hostport, _, param_text = hostpart.partition(";")
        host, port = _split_hostport(hostport)
        params = tuple(
            (n, v if eq else None)
            for n, eq, v in (p.partition("=") for p in param_text.split(";") if p)
        ) if param_text else ()
        headers = tuple(
            (n, v) for n, _, v in (h.partition("=") for h in header_text.split("&") if h)
        )
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
            userinfo = self.user
            if self.password is not None:
                userinfo += f":{self.password}"
            userinfo += "@"
        port = "" if self.port is None else f":{self.port}"
        params = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in self.params)
        headers = "&".join(f"{n}={v}" for n, v in self.headers)
        return f"{self.scheme}:{userinfo}{self.host}{port}{params}{'?' + headers if headers else ''}"


def _split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, sep, port_text = text.partition(":")
        rest = sep + port_text
    if not host:
        raise SipParseError(f"empty host in {text!r}")
    if not rest:
        return host, None
    if not rest.startswith(":") or not rest[1:].isdigit() or int(rest[1:]) > 65535:
        raise SipParseError(f"bad port in {text!r}")
    return host, int(rest[1:])


@dataclass(frozen=True)
class TelUri:
    """``tel:+919812345678;phone-context=...`` (RFC 3966)."""

    number: str
    params: UriParams = ()

    @classmethod
    def parse(cls, text: str) -> TelUri:
        scheme, _, rest = text.partition(":")
        if scheme.lower() != "tel" or not rest:
            raise SipParseError(f"not a tel URI: {text!r}")
        number, _, param_text = rest.partition(";")
        params = tuple(
            (n, v if eq else None)
            for n, eq, v in (p.partition("=") for p in param_text.split(";") if p)
        )
        return cls(number, params)

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
    """Parse any absolute URI; SipParseError when it is not one."""
    scheme, colon, rest = text.strip().partition(":")
    if not colon or not scheme or not rest:
        raise SipParseError(f"not an absolute URI: {text!r}")
    lowered = scheme.lower()
    if lowered in ("sip", "sips"):
        return SipUri.parse(text.strip())
    if lowered == "tel":
        return TelUri.parse(text.strip())
    return AbsoluteUri(scheme, rest)


__all__ = ["AbsoluteUri", "SipParseError", "SipUri", "TelUri", "Uri", "UriParams", "parse_uri"]
