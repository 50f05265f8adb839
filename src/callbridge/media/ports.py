"""RTP port allocation over the configured range (``[media] rtp_port_min/max``).

Every leg gets an even port: RTP takes even ports and RTCP the odd port above (RFC 3550 §11),
so a pair is only handed out when both ports lie in the range. Ports are reused least recently
freed first, so a late packet of an ended call is unlikely to reach the next call on the same
port; a port some other program holds is skipped.

Where the platform has SO_REUSEPORT, a leg's port carries two sockets: the one the endpoint
connects to the leg's remote (the kernel then hands it that peer's packets only, and it sends
without an address per packet) and a ``stray`` one for every other source (counted, or latched
to behind NAT). Both set SO_REUSEPORT, which would also let another process of the same user
join the port; so the port is first bound without it, as a probe that fails if anyone at all
holds the port (another callbridge on an overlapping range included), and the pair is bound
right after the probe is closed.

A port is leased together with its bound socket (:class:`PortLease`) and returns to the pool
exactly once, whichever way the lease ends: the endpoint closing, or failing to start.
:class:`MediaPortsExhausted` says no port could be bound; the REST API answers it with 502
``TRUNK_UNAVAILABLE`` (DESIGN.md, "Decisions").
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Callable

from callbridge.config import MediaSettings
from callbridge.errors import CallbridgeError, map_os_errors
from callbridge.media.endpoint import LegEndpoint, MediaTimeout

__all__ = ["MediaPortsExhausted", "PortAllocator", "PortLease"]

log = logging.getLogger(__name__)

#: Bind failures that mean "this port is taken, try another", not "this host is wrong".
_PORT_TAKEN = {errno.EADDRINUSE, errno.EACCES}


class MediaPortsExhausted(CallbridgeError):
    """No even port of the RTP range could be bound: all leased, or held by other programs."""

    def __init__(self, port_min: int, port_max: int, leased: int) -> None:
        super().__init__(
            f"no free RTP port in {port_min}-{port_max} ({leased} leased by callbridge)"
        )
        self.port_min = port_min
        self.port_max = port_max
        self.leased = leased


class PortLease:
    """One leased port and the UDP socket bound to it; :meth:`release` is idempotent."""

    def __init__(self, port: int, sock: socket.socket, allocator: PortAllocator,
                 stray: socket.socket | None = None) -> None:
        self.port = port
        self.sock = sock
        #: The second socket on the port (SO_REUSEPORT), for sources ``sock`` does not take.
        self.stray = stray
        self._allocator: PortAllocator | None = allocator

    @property
    def released(self) -> bool:
        return self._allocator is None

    def release(self) -> None:
        """Close the socket (if no transport owns it yet) and return the port to the pool."""
        allocator, self._allocator = self._allocator, None
        if allocator is not None:
            self.sock.close()
            if self.stray is not None:
                self.stray.close()
            allocator._give_back(self.port)


class PortAllocator:
    """Even RTP ports of ``port_min..port_max`` on ``host``, advertised as ``public_host``.

    ``host`` is the address sockets bind to (an IP literal); ``public_host`` is what the call
    layer writes in SDP ``c=`` lines, ``host`` when empty (NAT: the public address).
    """

    def __init__(self, host: str, port_min: int, port_max: int, *, public_host: str = "") -> None:
        first = port_min + port_min % 2
        if port_min < 1 or port_max > 65535 or first + 1 > port_max:
            raise ValueError(f"RTP port range {port_min}-{port_max} holds no even/odd pair")
        self.host = host
        self.public_host = public_host or host
        self.port_min = port_min
        self.port_max = port_max
        self._family = _family(host)
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._leased: set[int] = set()
        #: Two sockets per leg, the leg's connected to its remote (see the module docstring).
        self.reuse_port = hasattr(socket, "SO_REUSEPORT")

    @classmethod
    def from_settings(cls, media: MediaSettings, host: str) -> PortAllocator:
        """The allocator for ``[media]``, binding on ``host`` (the SIP host)."""
        return cls(host, media.rtp_port_min, media.rtp_port_max, public_host=media.public_host)

    @property
    def capacity(self) -> int:
        """How many legs the range can hold at once."""
        return len(self._free) + len(self._leased)

    @property
    def leased(self) -> int:
        return len(self._leased)

    def lease(self) -> PortLease:
        """Bind a UDP socket on the next free even port; raise :class:`MediaPortsExhausted`.

        Raises ``TransportError`` when binding fails for a reason other than the port being
        taken (a host this machine does not have, say): no other port would do better.
        """
        for _ in range(len(self._free)):
            port = self._free.popleft()
            try:
                sockets = self._bind(port)
            except BaseException:
                self._free.appendleft(port)
                raise
            if sockets is not None:
                self._leased.add(port)
                return PortLease(port, sockets[0], self, stray=sockets[1])
            self._free.append(port)
        raise MediaPortsExhausted(self.port_min, self.port_max, len(self._leased))

    async def open(
        self,
        key: str,
        *,
        symmetric: bool = False,
        inactivity_timeout: float | None = None,
        on_event: Callable[[MediaTimeout], None] | None = None,
    ) -> LegEndpoint:
        """A started :class:`LegEndpoint` named ``key`` on a newly leased port, reading on the
        running loop. Its port returns to the pool when it is closed, or at once if it
        cannot be started. (Nothing here waits today; a coroutine keeps the door open.)"""
        lease = self.lease()
        try:
            endpoint = LegEndpoint(
                key,
                lease.sock,
                stray=lease.stray,
                symmetric=symmetric,
                inactivity_timeout=inactivity_timeout,
                on_event=on_event,
                advertised_host=self.public_host,
                on_close=lease.release,
            )
            endpoint.start()
        except BaseException:
            lease.release()
            raise
        return endpoint

    def _bind(self, port: int) -> tuple[socket.socket, socket.socket | None] | None:
        """The leg's socket and its ``stray`` twin (None without SO_REUSEPORT), bound to
        ``port`` and non-blocking; None if the port is taken."""
        probe = self._socket(port, reuse_port=False)
        if probe is None or not self.reuse_port:
            return None if probe is None else (probe, None)
        probe.close()
        try:
            stray = self._socket(port, reuse_port=True)
        except _NoReusePort as exc:  # a kernel or sandbox that refuses the option
            log.warning("SO_REUSEPORT refused (%s): one unconnected socket per RTP leg", exc)
            self.reuse_port = False
            return self._bind(port)
        if stray is None:
            return None  # taken in the moment since the probe
        sock = self._socket(port, reuse_port=True)
        if sock is None:
            stray.close()
            return None
        return sock, stray

    def _socket(self, port: int, *, reuse_port: bool) -> socket.socket | None:
        """A non-blocking UDP socket bound to ``port``, or None if the port is taken."""
        with map_os_errors(f"udp socket for {self.host}"):
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # Never SO_REUSEADDR: a second socket on a live RTP port could steal its media.
            if reuse_port:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                except OSError as exc:
                    sock.close()
                    raise _NoReusePort(exc) from exc
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in _PORT_TAKEN:
                log.debug("rtp port %d taken, skipping: %s", port, exc)
                return None
            with map_os_errors(f"bind udp {self.host}:{port}"):
                raise
        return sock

    def _give_back(self, port: int) -> None:
        if port in self._leased:
            self._leased.remove(port)
            self._free.append(port)


class _NoReusePort(Exception):
    """Setting SO_REUSEPORT failed: the platform has the name but not the option."""


def _family(host: str) -> socket.AddressFamily:
    try:
        version = ipaddress.ip_address(host).version
    except ValueError as exc:
        raise ValueError(f"media bind host must be an IP address, got {host!r}") from exc
    return socket.AF_INET6 if version == 6 else socket.AF_INET
