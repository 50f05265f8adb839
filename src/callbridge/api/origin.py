"""Where a request comes from, and whether its account lets it in.

An account may restrict its API keys to source networks (``allow_cidrs``) and to browser
origins (``allow_origins``); every authenticated request must pass both, else 403
``ORIGIN_NOT_ALLOWED``:

- ``allow_cidrs`` set: the client address must be inside one of them. An address we cannot
  establish (a garbled ``X-Forwarded-For`` from a trusted proxy) is outside.
- ``allow_origins`` set: a request that carries ``Origin`` must name one of them. A request
  without ``Origin`` is allowed: it comes from a server (the spec's server-to-server use),
  and browsers send ``Origin`` on every cross-origin request and on every POST (Fetch
  standard, "origin header"), which is what an origin list can usefully stop. ``Origin:
  null`` (sandboxed frames, file: pages) matches nothing.

The client address is the socket's peer, unless the peer is one of our configured trusted
proxies: then ``X-Forwarded-For`` is read from the right, skipping trusted proxies, and the
first address that is not one is the client. Entries left of it were written by the client
itself and prove nothing.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from callbridge.api.errors import ApiError
from callbridge.store.models import Account

__all__ = ["Address", "Network", "check_origin", "client_address", "parse_networks"]

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (a bare address is a /32 or /128); ValueError names the first bad one."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def parse_address(text: str) -> Address | None:
    """An IP address, IPv4-mapped IPv6 (``::ffff:10.0.0.1``) as IPv4; None if malformed."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: Sequence[str],
                   trusted: Sequence[Network]) -> Address | None:
    """The client's address: ``peer`` (the socket's), or from ``forwarded_for`` (the values of
    every X-Forwarded-For header, in order) when ``peer`` is a trusted proxy."""
    address = parse_address(peer) if peer else None
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    while address is not None and _within(address, trusted) and hops:
        address = parse_address(hops.pop())
    return address


def check_origin(account: Account, client: Address | None, origin: str | None) -> None:
    """Raise ApiError 403 unless the request passes the account's restrictions."""
    if account.allow_cidrs and (client is None or not _within(client, _networks(account))):
        raise _forbidden(f"client address {client or 'unknown'} is not allowed for this account")
    if account.allow_origins and origin is not None:
        allowed = {normalize_origin(o) for o in account.allow_origins}
        if normalize_origin(origin) not in allowed:
            raise _forbidden(f"origin {origin!r} is not allowed for this account")


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without a default port or trailing slash, so
    that ``https://CRM.example.com:443/`` in an allow-list matches the browser's
    ``https://crm.example.com``. Anything unparseable compares as itself."""
    text = origin.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    if not parts.scheme or not parts.hostname:
        return text
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address in network for network in networks)


def _networks(account: Account) -> list[Network]:
    # The admin commands check CIDRs when they are stored; one that is bad anyway is left
    # out (so it allows nothing) rather than failing every request of the account.
    networks = []
    for cidr in account.allow_cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            log.warning("account %s: ignoring malformed allow_cidrs entry %r", account.id, cidr)
    return networks


def _forbidden(message: str) -> ApiError:
    return ApiError(403, "ORIGIN_NOT_ALLOWED", message)
