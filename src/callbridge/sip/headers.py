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
    raise NotImplementedError


def parse_params(text: str) -> Params:
    """Parse ``;name=value;flag`` generic-params (RFC 3261 §25.1); values may be quoted."""
    raise NotImplementedError


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
        raise NotImplementedError

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
        raise NotImplementedError


@dataclass(frozen=True)
class NameAddr:
    """``"Display" <uri>;tag=...`` or a bare addr-spec (From, To, Contact, Route, ...)."""

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        raise NotImplementedError

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        kept = tuple(p for p in self.params if p[0].lower() != "tag")
        return NameAddr(self.uri, self.display_name, (*kept, ("tag", tag)))

    def __str__(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class CSeq:
    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        raise NotImplementedError

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
