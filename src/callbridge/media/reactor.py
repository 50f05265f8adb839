"""Readiness for many RTP sockets at the cost of one: an epoll set inside the event loop.

asyncio's datagram transports cost about 12 us per packet on the relay's hardware (a
callback handle, ``_read_ready``, the transport's checks) on top of the ``recvfrom`` and
``sendto`` system calls; a relay at 400 calls handles 40,000 packets per second. Instead, every
leg's socket joins one ``epoll`` set, and only that set's descriptor is registered with the
loop (``loop.add_reader``). When it is readable, one callback asks epoll which sockets are
ready and reads one datagram from each: about 8 us per packet all told (``bench/relay.py``).
Epoll is level-triggered, so a socket with more than one datagram waiting is reported again
on the next pass, and the loop's other work (SIP, HTTP, timers) runs in between.

Where epoll is missing (not Linux), each socket is registered with the loop directly: the
same behaviour, the loop's cost per packet.
"""

from __future__ import annotations

import asyncio
import select
import weakref
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["Reactor", "reactor_for"]

#: Events taken per epoll pass; the rest wait for the next pass (level-triggered).
MAX_EVENTS: Final = 1024


class Reactor(Protocol):
    """Calls ``on_readable()`` whenever the socket ``fd`` has a datagram waiting."""

    def add(self, fd: int, on_readable: Callable[[], None]) -> None: ...

    def remove(self, fd: int) -> None: ...


class EpollReactor:
    """Many sockets behind one epoll descriptor registered with the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll: select.epoll | None = None
        self._callbacks: dict[int, Callable[[], None]] = {}

    def add(self, fd: int, on_readable: Callable[[], None]) -> None:
        if self._epoll is None:
            self._epoll = select.epoll()
            self._loop.add_reader(self._epoll.fileno(), self._ready)
        self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = on_readable

    def remove(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is None or self._epoll is None:
            return
        self._epoll.unregister(fd)
        if not self._callbacks:
            # Nothing left to watch: give the descriptor back, so a loop that closes
            # after its calls have ended leaks nothing.
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None

    def _ready(self) -> None:
        epoll, callbacks = self._epoll, self._callbacks
        if epoll is None:
            return
        for fd, _ in epoll.poll(0, MAX_EVENTS):
            callback = callbacks.get(fd)
            if callback is not None:  # removed by an earlier callback of this pass
                callback()


class LoopReactor:
    """Each socket registered with the loop itself (platforms without epoll)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add(self, fd: int, on_readable: Callable[[], None]) -> None:
        self._loop.add_reader(fd, on_readable)

    def remove(self, fd: int) -> None:
        self._loop.remove_reader(fd)


_reactors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Reactor] = (
    weakref.WeakKeyDictionary()
)


def reactor_for(loop: asyncio.AbstractEventLoop) -> Reactor:
    """The loop's reactor, made on first use."""
    reactor = _reactors.get(loop)
    if reactor is None:
        reactor = EpollReactor(loop) if hasattr(select, "epoll") else LoopReactor(loop)
        _reactors[loop] = reactor
    return reactor
