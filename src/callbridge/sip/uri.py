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
        raise NotImplementedError

    def param(self, name: str) -> str | None:
        """Value of a uri-parameter (case-insensitive name); ``""`` for a flag; None absent."""
        key = name.lower()
        for n, v in self.params:
            if n.lower() == key:
                return "" if v is None else v
        return None

    def __str__(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class TelUri:
    """``tel:+919812345678;phone-context=...`` (RFC 3966)."""

    number: str
    params: UriParams = ()

    @classmethod
    def parse(cls, text: str) -> TelUri:
        raise NotImplementedError

    def __str__(self) -> str:
        raise NotImplementedError


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
    raise NotImplementedError


__all__ = ["AbsoluteUri", "SipParseError", "SipUri", "TelUri", "Uri", "UriParams", "parse_uri"]
