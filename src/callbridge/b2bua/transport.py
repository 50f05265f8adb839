"""SIP over sockets (RFC 3261 §18): a UDP socket, and TCP listening and outgoing
connections framed by Content-Length.

Transports only move bytes. Whatever arrives goes to ``on_datagram(data, source)`` or
``on_message(message, source)``; what the user agent produced goes out with ``send(data,
address)``. OSError becomes a log line and a counter here, never an exception upward.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import cast

from callbridge.sip.errors import SipParseError
from callbridge.sip.message import Message, StreamParser

log = logging.getLogger(__name__)

Address = tuple[str, int]
#: RFC 3261 §18.1.1: a UDP datagram is at most 65,535 bytes; the default asyncio read size
#: (256 KiB) only costs time per datagram.
MAX_DATAGRAM = 65535


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self._on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.send_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (Python 3.11's selector datagram transport does not subclass DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 0)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier send; the transaction's timers cover it.
        log.debug("udp error: %s", exc)

    def send(self, data: bytes, address: Address) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self.transport.sendto(data, address)
        except OSError as exc:
            self.send_errors += 1
            log.warning("udp send to %s:%d failed: %s", address[0], address[1], exc)

    @property
    def local_address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _StreamConnection(asyncio.Protocol):
    """One TCP connection, either direction."""

    def __init__(self, owner: TcpTransport) -> None:
        self._owner = owner
        self._parser = StreamParser()
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = (host, port)
        self._owner.connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._parser.feed(data)
        except SipParseError as exc:
            # §18.3: a framing error on a stream cannot be recovered from: close it.
            log.info("tcp %s:%d framing error, closing: %s", *self.peer, exc)
            self._owner.framing_errors += 1
            if self.transport is not None:
                self.transport.close()
            return
        for message in messages:
            self._owner.on_message(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._owner.connections.get(self.peer) is self:
            del self._owner.connections[self.peer]


class TcpTransport:
    """A listening socket plus connections keyed by peer address; ``send`` reuses the
    connection a peer opened, or opens one (RFC 3261 §18.2.2)."""

    def __init__(self, on_message: Callable[[Message, Address], None]) -> None:
        self.on_message = on_message
        self.connections: dict[Address, _StreamConnection] = {}
        self.framing_errors = 0
        self._server: asyncio.Server | None = None
        self._pending: dict[Address, list[bytes]] = {}
        self._connecting: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _StreamConnection(self), host, port)

    @property
    def local_address(self) -> Address:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    def send(self, data: bytes, address: Address) -> None:
        conn = self.connections.get(address)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(data)
            return
        queued = self._pending.setdefault(address, [])
        queued.append(data)
        if len(queued) == 1:
            task = asyncio.get_running_loop().create_task(self._connect(address))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, address: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _StreamConnection(self), *address)
        except OSError as exc:
            log.warning("tcp connect to %s:%d failed: %s", address[0], address[1], exc)
            self._pending.pop(address, None)
            return
        assert conn.transport is not None
        for data in self._pending.pop(address, []):
            conn.transport.write(data)

    def close(self) -> None:
        for task in self._connecting:
            task.cancel()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            self._server.close()
