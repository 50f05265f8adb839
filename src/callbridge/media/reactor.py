"""Readiness for many RTP sockets at the cost of one: an epoll set inside the event loop.

asyncio's datagram transports cost about 12 us per packet on the relay's hardware (a
callback handle, ``_read_ready``, the transport's checks) on top of the ``recvfrom`` and
``sendto`` system calls; a relay at 400 calls handles 40,000 packets per second. Instead, every
leg's socket joins one ``epoll`` set, and only that set's descriptor is registered with the
loop (``loop.add_reader``). When it is readable, one callback asks epoll which sockets are
ready and reads one datagram from each. Epoll is level-triggered, so a socket with more than
one datagram waiting is reported again on the next pass, and the loop's other work (SIP, HTTP,
timers) runs in between.

Two modes, chosen by the packet rate:

- **Woken** (light load): the loop wakes the reactor whenever a datagram arrives. Nothing waits,
  but every packet pays for a whole turn of the loop (its ``epoll_wait``, the handle, the
  timer heap): ~10-15 us, as much as relaying the packet itself.
- **Ticking** (from ``poll_rate`` packets a second, about 25 calls): the reactor leaves the
  loop's selector and polls the set once per ``tick`` (1 ms, the finest timeout asyncio's
  selector has) from a timer, taking everything that arrived meanwhile in one pass, so the
  loop's cost is paid per tick, not per packet. A packet waits for the next tick: at most
  ~1 ms, well inside the 150 ms one-way budget of ITU-T G.114 and the relay's 2 ms p99 aim.
  A few ticks in a row that find nothing return to woken mode.

Where epoll is missing (not Linux), each socket is registered with the loop directly: the
same behaviour, the loop's cost per packet.
"""

from __future__ import annotations

import asyncio
import logging
import select
import weakref
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["POLL_RATE", "TICK", "EpollReactor", "LoopReactor", "Reactor", "reactor_for"]

log = logging.getLogger(__name__)

#: Events taken per epoll pass; the rest wait for the next pass (level-triggered).
MAX_EVENTS: Final = 1024
#: Seconds between polls in ticking mode.
TICK: Final = 0.001
#: Packets per second from which polling once a tick is cheaper than being woken per packet.
POLL_RATE: Final = 2500.0
#: How long a rate is measured before it decides the mode.
_RATE_WINDOW: Final = 0.02
#: Passes per tick at most: a socket holding a second datagram is read again in the same tick,
#: but an overload (more packets than a core can relay) cannot keep the loop from its other
#: work (SIP, HTTP) for longer than two passes of MAX_EVENTS.
_PASSES_PER_TICK: Final = 2
#: Empty ticks in a row before going back to being woken: a sender that stalls for a moment
#: (a preempted process, a burst from a carrier) does not flip the mode.
_IDLE_TICKS: Final = 5


class Reactor(Protocol):
    """Calls ``on_readable()`` whenever the socket ``fd`` has a datagram waiting.

    ``now`` is the loop's clock (``loop.time()``) read once as the pass that makes the call
    began: the arrival time of whatever the call reads, without a clock read per packet.
    """

    now: float

    def add(self, fd: int, on_readable: Callable[[], None]) -> None: ...

    def remove(self, fd: int) -> None: ...


class EpollReactor:
    """Many sockets behind one epoll descriptor, woken by the loop or polled per tick."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        tick: float = TICK,
        poll_rate: float = POLL_RATE,
    ) -> None:
        self._loop = loop
        self._tick_seconds = tick
        self._poll_rate = poll_rate
        self._epoll: select.epoll | None = None
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._idle_ticks = 0
        self.now = loop.time()
        self._window_start = 0.0
        self._window_events = 0
        #: Passes made in each mode (``woken`` counts loop wake-ups, ``ticks`` timer polls).
        self.woken = 0
        self.ticks = 0
        #: Exceptions raised by the sockets' callbacks (logged, then carried on).
        self.errors = 0

    @property
    def ticking(self) -> bool:
        """True while the set is polled once a tick rather than woken per packet."""
        return self._timer is not None

    def add(self, fd: int, on_readable: Callable[[], None]) -> None:
        if self._epoll is None:
            self._epoll = select.epoll()
            self._listen()
        self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = on_readable

    def remove(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is None or self._epoll is None:
            return
        self._epoll.unregister(fd)
        if not self._callbacks:
            # Nothing left to watch: give the descriptor back, so a loop that closes
            # after its calls have ended leaks nothing.
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            else:
                self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None

    # -- woken mode -------------------------------------------------------------------------

    def _listen(self) -> None:
        assert self._epoll is not None
        self._loop.add_reader(self._epoll.fileno(), self._ready)
        self._window_start = self._loop.time()
        self._window_events = 0

    def _ready(self) -> None:
        self.woken += 1
        self._window_events += self._pass()
        now = self._loop.time()
        elapsed = now - self._window_start
        if elapsed < _RATE_WINDOW:
            return
        if self._window_events >= self._poll_rate * elapsed and self._epoll is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._idle_ticks = 0
            self._next_tick = now + self._tick_seconds
            self._timer = self._loop.call_at(self._next_tick, self._on_tick)
        else:
            self._window_start, self._window_events = now, 0

    # -- ticking mode -----------------------------------------------------------------------

    def _on_tick(self) -> None:
        self.ticks += 1
        self._timer = None
        handled = 0
        for _ in range(_PASSES_PER_TICK):
            events = self._pass()
            handled += events
            if events == 0:
                break
        if self._epoll is None:
            return  # the last socket went during the pass
        self._idle_ticks = 0 if handled else self._idle_ticks + 1
        if self._idle_ticks >= _IDLE_TICKS:
            self._listen()  # quiet: back to being woken
        else:
            # A steady cadence, not "a tick after this one ended": when a pass takes most of
            # a tick (a busy relay), the next one is due at once rather than a tick later.
            self._next_tick = max(self._next_tick + self._tick_seconds, self.now)
            self._timer = self._loop.call_at(self._next_tick, self._on_tick)

    # -- both -------------------------------------------------------------------------------

    def _pass(self) -> int:
        """Read one datagram from every ready socket; how many were ready."""
        epoll, callbacks = self._epoll, self._callbacks
        if epoll is None:
            return 0
        events = epoll.poll(0, MAX_EVENTS)
        self.now = self._loop.time()
        for fd, _ in events:
            callback = callbacks.get(fd)
            if callback is not None:  # removed by an earlier callback of this pass
                try:
                    callback()
                except Exception:  # one leg's bug must not stop the others, or the ticks
                    self.errors += 1
                    if self.errors & (self.errors - 1) == 0:  # 1st, 2nd, 4th, ...: no flood
                        log.exception("rtp: reading fd %d failed (%d so far)", fd, self.errors)
        return len(events)


class LoopReactor:
    """Each socket registered with the loop itself (platforms without epoll)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.now = loop.time()

    def add(self, fd: int, on_readable: Callable[[], None]) -> None:
        self._loop.add_reader(fd, self._call, on_readable)

    def _call(self, on_readable: Callable[[], None]) -> None:
        self.now = self._loop.time()
        on_readable()

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
