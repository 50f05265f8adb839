"""SIP transaction timers: RFC 3261 §17 Table 4, plus Timers L and M from RFC 6026.

Each timer keeps the letter RFC 3261 (or RFC 6026) gives it, and nothing here gives a letter
another meaning. Durations derive from T1, T2 and T4 (:class:`TimerSettings`); on a reliable
transport (TCP) the retransmission timers A, E and G are not used at all and the "wait for
retransmissions" timers D, I, J and K are zero, exactly as Table 4 says.

This module is pure: durations are computed, never waited for. :class:`TimerQueue` keeps the
absolute deadlines the transaction layer builds from the ``now`` it is given.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

#: Table 4: Timer D is "> 32 s for UDP", independent of T1 (it outlasts the far side's
#: retransmissions of a final response, which last 64*T1 at the default T1 = 0.5 s).
TIMER_D_UNRELIABLE = 32.0


@dataclass(frozen=True)
class TimerSettings:
    """RFC 3261 Table 4 base values, in seconds."""

    #: RTT estimate: first retransmission interval, and 64*T1 is every transaction timeout.
    t1: float = 0.5
    #: Cap on the retransmission interval for non-INVITE requests and INVITE responses.
    t2: float = 4.0
    #: Longest time a message may stay in the network (Timers I and K on unreliable transports).
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0:
            raise ValueError("timer settings need 0 < t1 <= t2 and t4 > 0")


class Timer(enum.StrEnum):
    """A transaction timer; the value is its RFC letter, so ``Timer.B == "B"``."""

    #: Client INVITE: request retransmit interval, doubling without a cap (§17.1.1.2).
    A = "A"
    #: Client INVITE: transaction timeout, 64*T1 (§17.1.1.2).
    B = "B"
    #: Client INVITE: wait time for retransmitted non-2xx finals (§17.1.1.2).
    D = "D"
    #: Client non-INVITE: request retransmit interval, doubling up to T2 (§17.1.2.2).
    E = "E"
    #: Client non-INVITE: transaction timeout, 64*T1 (§17.1.2.2).
    F = "F"
    #: Server INVITE: non-2xx final retransmit interval, doubling up to T2 (§17.2.1).
    G = "G"
    #: Server INVITE: wait time for the ACK, 64*T1 (§17.2.1).
    H = "H"
    #: Server INVITE: wait time for ACK retransmissions (§17.2.1).
    I = "I"  # noqa: E741 - the RFC's own name
    #: Server non-INVITE: wait time for request retransmissions (§17.2.2).
    J = "J"
    #: Client non-INVITE: wait time for response retransmissions (§17.1.2.2).
    K = "K"
    #: Server INVITE: wait time for retransmitted INVITEs after a 2xx (RFC 6026 §8.7).
    L = "L"
    #: Client INVITE: wait time for retransmitted 2xx responses (RFC 6026 §8.4).
    M = "M"
    #: Not a Table 4 timer: RFC 3261 §9.1 lets the client give up an INVITE that has no final
    #: response 64*T1 after its CANCEL was sent (the far end never sent 487).
    CANCEL_WAIT = "cancel-wait"


#: Timers that retransmit and back off; everything else fires once.
RETRANSMIT_TIMERS = frozenset({Timer.A, Timer.E, Timer.G})
#: Timers that become zero on a reliable transport (Table 4: "0s for TCP/SCTP").
_ZERO_WHEN_RELIABLE = frozenset({Timer.D, Timer.I, Timer.J, Timer.K})


def initial_duration(timer: Timer, settings: TimerSettings, reliable: bool) -> float | None:
    """How long ``timer`` runs when first started; None when it is not used at all.

    Zero means "fire at once": the state it guards lasts no time on a reliable transport.
    """
    if timer in RETRANSMIT_TIMERS:
        return None if reliable else settings.t1
    if reliable and timer in _ZERO_WHEN_RELIABLE:
        return 0.0
    if timer is Timer.D:
        return TIMER_D_UNRELIABLE
    if timer in (Timer.I, Timer.K):
        return settings.t4
    return 64 * settings.t1  # B, F, H, J, L, M and the §9.1 CANCEL wait


def backoff(timer: Timer, interval: float, settings: TimerSettings) -> float:
    """The next retransmit interval after ``interval``: doubled; capped at T2 except for
    Timer A, which RFC 3261 §17.1.1.2 lets grow until Timer B ends the transaction."""
    doubled = 2 * interval
    return doubled if timer is Timer.A else min(doubled, settings.t2)


Owner = TypeVar("Owner", bound=Hashable)


class TimerQueue(Generic[Owner]):
    """The running timers of many owners (transactions), earliest deadline first.

    A heap of ``(deadline, order, owner, timer)``: stopping or re-arming a timer only updates
    ``_running``, and a heap entry that no longer agrees with it is dropped when it surfaces.
    An owner with no running timer holds no memory here.
    """

    def __init__(self) -> None:
        self._running: dict[Owner, dict[Timer, float]] = {}
        self._heap: list[tuple[float, int, Owner, Timer]] = []
        self._order = itertools.count()

    def arm(self, owner: Owner, timer: Timer, deadline: float) -> None:
        """Start (or restart) ``timer`` for ``owner``, due at ``deadline``."""
        self._running.setdefault(owner, {})[timer] = deadline
        heapq.heappush(self._heap, (deadline, next(self._order), owner, timer))

    def stop(self, owner: Owner, keep: Iterable[Timer] = ()) -> None:
        """Stop every timer of ``owner`` except those in ``keep``."""
        timers = self._running.pop(owner, {})
        kept = {timer: timers[timer] for timer in keep if timer in timers}
        if kept:
            self._running[owner] = kept

    def running(self, owner: Owner) -> dict[Timer, float]:
        """``owner``'s running timers and their deadlines (a copy)."""
        return dict(self._running.get(owner, {}))

    def next_deadline(self) -> float | None:
        while self._heap:
            deadline, _, owner, timer = self._heap[0]
            if self._running.get(owner, {}).get(timer) == deadline:
                return deadline
            heapq.heappop(self._heap)  # stopped or re-armed since
        return None

    def pop_due(self, now: float) -> tuple[Owner, Timer] | None:
        """The earliest timer due at ``now``, stopped as it is returned; None if none is due."""
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return None
        _, _, owner, timer = heapq.heappop(self._heap)
        timers = self._running[owner]
        del timers[timer]
        if not timers:
            del self._running[owner]
        return owner, timer
