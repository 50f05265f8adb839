"""The two-leg call machine (DESIGN.md, "Call flow and status"), pure and clock-free.

The agent is dialled first; when the agent answers (and, with agent confirmation, presses 1),
the customer; when the customer answers, the two are bridged. While bridged, participants may
be added (leg 3 and up: everyone then hears everyone, mixed) and may leave; the call lasts
while two or more remain. :class:`CallMachine` takes what happened to the legs as events and
returns what to do as actions; timers (ring timeouts, the confirmation wait, the call's time
limit) are deadlines the driver arms (``next_deadline``) and feeds back as the event it names.
Like h11's state machine it keeps every rule of the call in one place and knows nothing of
SIP, sockets or storage.

Outcome table (a leg's SIP code decides the call status when the call ends before the bridge):

=========================================  ===========  ==========  ============
outcome                                    call_status  agent leg   customer leg
=========================================  ===========  ==========  ============
agent ringing                              INITIATED    DIALING     absent
customer ringing                           INITIATED    JOINED      DIALING
bridged / completed                        ANSWER       JOINED/LEFT JOINED/LEFT
agent busy (486, 600, 603)                 BUSY         FAILED      absent
agent unanswered, 480/408/487 from trunk   NO_ANSWER    FAILED      absent
customer busy                              BUSY         LEFT        FAILED
customer unanswered                        NO_ANSWER    LEFT        FAILED
trunk refuses or times out, either leg     FAILED       ...         ...
agent hangs up / cancelled before answer   CANCELED     LEFT        FAILED
=========================================  ===========  ==========  ============
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from callbridge.store.models import CallStatus, HangupSource, LegStatus

AGENT = 1
CUSTOMER = 2

#: Final responses that mean "the person is busy" or declined (RFC 3261 §21.4.24, §21.6).
BUSY_CODES = frozenset({486, 600, 603})
#: Final responses that mean "nobody picked up" (§21.4.18, §21.4.9, §21.4.26).
NO_ANSWER_CODES = frozenset({480, 408, 487})


class CallPhase(enum.Enum):
    #: Leg 1 (the agent) is being dialled.
    AGENT_DIALING = "agent_dialing"
    #: The agent answered and hears a prompt; the customer is dialled once they press 1.
    AGENT_CONFIRMING = "agent_confirming"
    #: The agent answered; leg 2 (the customer) is being dialled.
    CUSTOMER_DIALING = "customer_dialing"
    #: Both answered and bridged: talk time runs.
    BRIDGED = "bridged"
    #: Over: every leg is gone or going.
    ENDED = "ended"


# --- events (what happened) -----------------------------------------------------------------


@dataclass(frozen=True)
class LegAnswered:
    leg: int


@dataclass(frozen=True)
class LegEarlyMedia:
    """The leg sent early media (183 with SDP): the agent hears it instead of ringback."""

    leg: int


@dataclass(frozen=True)
class LegFailed:
    """The leg's INVITE ended without an answer. ``local_timeout``: our Timer B, not a 408
    from the trunk."""

    leg: int
    sip_code: int
    reason: str
    local_timeout: bool = False


@dataclass(frozen=True)
class LegHungUp:
    """The far end of an answered leg sent BYE (or its media died: ``reason`` says)."""

    leg: int
    reason: str = "BYE"


@dataclass(frozen=True)
class RingTimeout:
    leg: int


@dataclass(frozen=True)
class DtmfReceived:
    leg: int
    digit: str


@dataclass(frozen=True)
class AddLeg:
    """The API adds a participant to a bridged call (the leg is stored DIALING already)."""

    leg: int
    ring_time: float


@dataclass(frozen=True)
class ConfirmTimeout:
    """The agent pressed no 1 within the ring time."""


@dataclass(frozen=True)
class TimeLimitReached:
    """The bridged call reached its ``time_limit``."""


@dataclass(frozen=True)
class HangupRequested:
    """The API, or the system (shutdown, media failure), ends the call."""

    source: HangupSource
    reason: str


CallEvent = (
    LegAnswered | LegEarlyMedia | LegFailed | LegHungUp | RingTimeout | HangupRequested
    | DtmfReceived | AddLeg | ConfirmTimeout | TimeLimitReached
)


# --- actions (what to do) --------------------------------------------------------------------


@dataclass(frozen=True)
class Dial:
    leg: int


@dataclass(frozen=True)
class Cancel:
    """CANCEL an unanswered leg."""

    leg: int


@dataclass(frozen=True)
class Bye:
    """BYE an answered leg."""

    leg: int


@dataclass(frozen=True)
class PlayRingback:
    """Local ringback tone to the agent while the customer rings without early media."""


@dataclass(frozen=True)
class PlayPrompt:
    """The agent-confirmation prompt to the agent ("press 1 to connect")."""


@dataclass(frozen=True)
class JoinRoom:
    """An added participant answered: into the call (a conference from three on)."""

    leg: int


@dataclass(frozen=True)
class LeaveRoom:
    """A participant left a call that goes on without them."""

    leg: int


@dataclass(frozen=True)
class ConnectEarlyMedia:
    """The customer's early media to the agent (stops local ringback)."""


@dataclass(frozen=True)
class BridgeLegs:
    """Customer answered: bridge agent and customer (and start recording)."""


@dataclass(frozen=True)
class LegChanged:
    """Leg ``leg`` has a new status: store it (and report it)."""

    leg: int
    status: LegStatus
    sip_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class CallEnded:
    status: CallStatus
    hangup_source: HangupSource
    reason: str


CallAction = (
    Dial | Cancel | Bye | PlayRingback | PlayPrompt | ConnectEarlyMedia | BridgeLegs | JoinRoom
    | LeaveRoom | LegChanged | CallEnded
)


@dataclass
class _LegState:
    status: LegStatus = LegStatus.DIALING
    dial_started: float = 0.0
    ring_time: float = 30.0
    early_media: bool = False


class CallMachine:
    """One click-to-call's rules. ``handle(event, now)`` returns the actions to take, in order.

    The machine never waits for a leg to confirm a CANCEL or BYE: once a leg is told to go,
    its outcome no longer changes the call (late events for it are ignored).
    """

    def __init__(self, max_ring_time: float, now: float, *, agent_confirm: bool = False,
                 time_limit: float | None = None) -> None:
        self.max_ring_time = max_ring_time
        self.agent_confirm = agent_confirm
        self.time_limit = time_limit
        self.phase = CallPhase.AGENT_DIALING
        self.legs: dict[int, _LegState] = {AGENT: self._dialing(now, max_ring_time)}
        self.confirm_until: float | None = None
        self.bridged_at: float | None = None
        self.ended_at: float | None = None
        self.result: CallEnded | None = None

    def start(self) -> list[CallAction]:
        return [Dial(AGENT)]

    def next_deadline(self) -> tuple[float, CallEvent] | None:
        """(when, the event to feed back then) of the next timer, or None."""
        if self.phase is CallPhase.ENDED:
            return None
        deadlines: list[tuple[float, CallEvent]] = [
            (state.dial_started + state.ring_time, RingTimeout(leg))
            for leg, state in self.legs.items()
            if state.status is LegStatus.DIALING
        ]
        if self.phase is CallPhase.AGENT_CONFIRMING and self.confirm_until is not None:
            deadlines.append((self.confirm_until, ConfirmTimeout()))
        if self.phase is CallPhase.BRIDGED and self.time_limit and self.bridged_at is not None:
            deadlines.append((self.bridged_at + self.time_limit, TimeLimitReached()))
        return min(deadlines, key=lambda d: d[0], default=None)

    def handle(self, event: CallEvent, now: float) -> list[CallAction]:
        handler = _HANDLERS.get((self.phase, type(event)))
        if handler is None:
            return []  # e.g. a late event for a leg we already let go
        return handler(self, event, now)

    # -- the rules -------------------------------------------------------------------------

    def _agent_answered(self, event: CallEvent, now: float) -> list[CallAction]:
        if not self._is(event, AGENT):
            return []
        self.legs[AGENT].status = LegStatus.JOINED
        if self.agent_confirm:
            self.phase = CallPhase.AGENT_CONFIRMING
            self.confirm_until = now + self.max_ring_time
            return [LegChanged(AGENT, LegStatus.JOINED), PlayPrompt()]
        return [LegChanged(AGENT, LegStatus.JOINED), *self._dial_customer(now)]

    def _dial_customer(self, now: float) -> list[CallAction]:
        self.legs[CUSTOMER] = self._dialing(now, self.max_ring_time)
        self.phase = CallPhase.CUSTOMER_DIALING
        return [Dial(CUSTOMER), PlayRingback()]

    def _agent_pressed(self, event: CallEvent, now: float) -> list[CallAction]:
        assert isinstance(event, DtmfReceived)
        if event.leg != AGENT or event.digit != "1":
            return []
        return self._dial_customer(now)

    def _agent_not_confirmed(self, event: CallEvent, now: float) -> list[CallAction]:
        reason = "AGENT_NOT_CONFIRMED"
        self.legs[AGENT].status = LegStatus.LEFT
        return [Bye(AGENT), LegChanged(AGENT, LegStatus.LEFT, None, reason),
                *self._end(now, CallStatus.NO_ANSWER, HangupSource.SYSTEM, reason)]

    def _agent_left_unconfirmed(self, event: CallEvent, now: float) -> list[CallAction]:
        if isinstance(event, HangupRequested):
            return [*self._release(AGENT),
                    *self._end(now, CallStatus.CANCELED, event.source, event.reason)]
        if not self._is(event, AGENT):
            return []
        self.legs[AGENT].status = LegStatus.LEFT
        return [LegChanged(AGENT, LegStatus.LEFT),
                *self._end(now, CallStatus.CANCELED, HangupSource.AGENT, "AGENT_HANGUP")]

    def _agent_failed(self, event: CallEvent, now: float) -> list[CallAction]:
        assert isinstance(event, LegFailed)
        if event.leg != AGENT:
            return []
        self.legs[AGENT].status = LegStatus.FAILED
        status = _failure_status(event)
        return [
            LegChanged(AGENT, LegStatus.FAILED, event.sip_code, event.reason),
            *self._end(now, status, HangupSource.AGENT if status is not CallStatus.FAILED
                       else HangupSource.SYSTEM, event.reason),
        ]

    def _agent_ring_timeout(self, event: CallEvent, now: float) -> list[CallAction]:
        if not self._is(event, AGENT):
            return []
        self.legs[AGENT].status = LegStatus.FAILED
        return [
            Cancel(AGENT),
            LegChanged(AGENT, LegStatus.FAILED, 487, "RING_TIMEOUT"),
            *self._end(now, CallStatus.NO_ANSWER, HangupSource.SYSTEM, "RING_TIMEOUT"),
        ]

    def _hangup_while_agent_dialing(self, event: CallEvent, now: float) -> list[CallAction]:
        assert isinstance(event, HangupRequested)
        self.legs[AGENT].status = LegStatus.FAILED
        return [
            Cancel(AGENT),
            LegChanged(AGENT, LegStatus.FAILED, 487, event.reason),
            *self._end(now, CallStatus.CANCELED, event.source, event.reason),
        ]

    def _customer_early_media(self, event: CallEvent, now: float) -> list[CallAction]:
        if not self._is(event, CUSTOMER) or self.legs[CUSTOMER].early_media:
            return []
        self.legs[CUSTOMER].early_media = True
        return [ConnectEarlyMedia()]

    def _customer_answered(self, event: CallEvent, now: float) -> list[CallAction]:
        if not self._is(event, CUSTOMER):
            return []
        self.legs[CUSTOMER].status = LegStatus.JOINED
        self.phase = CallPhase.BRIDGED
        self.bridged_at = now
        return [LegChanged(CUSTOMER, LegStatus.JOINED), BridgeLegs()]

    def _customer_failed(self, event: CallEvent, now: float) -> list[CallAction]:
        assert isinstance(event, LegFailed)
        if event.leg != CUSTOMER:
            return []
        self.legs[CUSTOMER].status = LegStatus.FAILED
        status = _failure_status(event)
        return [
            LegChanged(CUSTOMER, LegStatus.FAILED, event.sip_code, event.reason),
            *self._release(AGENT),
            *self._end(now, status, HangupSource.DESTINATION if status is not CallStatus.FAILED
                       else HangupSource.SYSTEM, event.reason),
        ]

    def _customer_ring_timeout(self, event: CallEvent, now: float) -> list[CallAction]:
        if not self._is(event, CUSTOMER):
            return []
        self.legs[CUSTOMER].status = LegStatus.FAILED
        return [
            Cancel(CUSTOMER),
            LegChanged(CUSTOMER, LegStatus.FAILED, 487, "RING_TIMEOUT"),
            *self._release(AGENT),
            *self._end(now, CallStatus.NO_ANSWER, HangupSource.SYSTEM, "RING_TIMEOUT"),
        ]

    def _agent_left_before_answer(self, event: CallEvent, now: float) -> list[CallAction]:
        """The agent hung up (or the API cancelled) while the customer was ringing."""
        if isinstance(event, LegHungUp) and event.leg != AGENT:
            return []
        source = event.source if isinstance(event, HangupRequested) else HangupSource.AGENT
        reason = event.reason if isinstance(event, HangupRequested) else "AGENT_HANGUP"
        self.legs[CUSTOMER].status = LegStatus.FAILED
        actions: list[CallAction] = [Cancel(CUSTOMER),
                                     LegChanged(CUSTOMER, LegStatus.FAILED, 487, reason)]
        if isinstance(event, HangupRequested):
            actions += self._release(AGENT)
        else:
            self.legs[AGENT].status = LegStatus.LEFT
            actions.append(LegChanged(AGENT, LegStatus.LEFT))
        return [*actions, *self._end(now, CallStatus.CANCELED, source, reason)]

    def _bridged_hangup(self, event: CallEvent, now: float) -> list[CallAction]:
        """Someone left. With two or more still in, the call goes on (a warm transfer: the
        agent may drop out); otherwise everyone is let go."""
        if isinstance(event, HangupRequested | TimeLimitReached):
            source = event.source if isinstance(event, HangupRequested) else HangupSource.SYSTEM
            reason = event.reason if isinstance(event, HangupRequested) else "TIME_LIMIT"
            return [*self._release_all(), *self._end(now, CallStatus.ANSWER, source, reason)]
        assert isinstance(event, LegHungUp)
        state = self.legs.get(event.leg)
        if state is None or state.status is not LegStatus.JOINED:
            return []
        state.status = LegStatus.LEFT
        actions: list[CallAction] = [LegChanged(event.leg, LegStatus.LEFT)]
        if len(self._joined()) >= 2:
            return [*actions, LeaveRoom(event.leg)]
        source = HangupSource.AGENT if event.leg == AGENT else HangupSource.DESTINATION
        return [*actions, *self._release_all(),
                *self._end(now, CallStatus.ANSWER, source, event.reason)]

    def _add_leg(self, event: CallEvent, now: float) -> list[CallAction]:
        assert isinstance(event, AddLeg)
        self.legs[event.leg] = self._dialing(now, event.ring_time)
        return [Dial(event.leg)]

    def _added_leg_answered(self, event: CallEvent, now: float) -> list[CallAction]:
        assert isinstance(event, LegAnswered)
        state = self.legs.get(event.leg)
        if event.leg <= CUSTOMER or state is None or state.status is not LegStatus.DIALING:
            return []
        state.status = LegStatus.JOINED
        return [LegChanged(event.leg, LegStatus.JOINED), JoinRoom(event.leg)]

    def _added_leg_failed(self, event: CallEvent, now: float) -> list[CallAction]:
        """An added participant who does not answer leaves the call untouched."""
        leg = getattr(event, "leg", 0)
        state = self.legs.get(leg)
        if leg <= CUSTOMER or state is None or state.status is not LegStatus.DIALING:
            return []
        state.status = LegStatus.FAILED
        if isinstance(event, LegFailed):
            return [LegChanged(leg, LegStatus.FAILED, event.sip_code, event.reason)]
        return [Cancel(leg), LegChanged(leg, LegStatus.FAILED, 487, "RING_TIMEOUT")]

    # -- helpers ---------------------------------------------------------------------------

    def _is(self, event: CallEvent, leg: int) -> bool:
        return getattr(event, "leg", None) == leg

    def _dialing(self, now: float, ring_time: float) -> _LegState:
        return _LegState(dial_started=now, ring_time=ring_time)

    def _joined(self) -> list[int]:
        return [leg for leg, state in self.legs.items() if state.status is LegStatus.JOINED]

    def _release_all(self) -> list[CallAction]:
        return [action for leg in sorted(self.legs) for action in self._release(leg)]

    def _release(self, leg: int) -> list[CallAction]:
        """Let an answered leg go (BYE), or an unanswered one (CANCEL)."""
        state = self.legs.get(leg)
        if state is None or state.status in (LegStatus.LEFT, LegStatus.FAILED):
            return []
        if state.status is LegStatus.JOINED:
            state.status = LegStatus.LEFT
            return [Bye(leg), LegChanged(leg, LegStatus.LEFT)]
        state.status = LegStatus.FAILED
        return [Cancel(leg), LegChanged(leg, LegStatus.FAILED, 487, "CANCELED")]

    def _end(self, now: float, status: CallStatus, source: HangupSource,
             reason: str) -> list[CallAction]:
        self.phase = CallPhase.ENDED
        self.ended_at = now
        self.result = CallEnded(status, source, reason)
        return [self.result]

    @property
    def duration(self) -> int:
        """Talk time: bridge to hang-up, whole seconds."""
        if self.bridged_at is None or self.ended_at is None:
            return 0
        return int(self.ended_at - self.bridged_at)


def _failure_status(event: LegFailed) -> CallStatus:
    if event.local_timeout:
        return CallStatus.FAILED  # our Timer B: the trunk never answered at all
    if event.sip_code in BUSY_CODES:
        return CallStatus.BUSY
    if event.sip_code in NO_ANSWER_CODES:
        return CallStatus.NO_ANSWER
    return CallStatus.FAILED


_Handler = Callable[[CallMachine, CallEvent, float], list[CallAction]]

#: (phase, event type) -> rule. A pair that is absent is ignored: late news of a leg that
#: was already let go, or of a call that has ended.
_HANDLERS: dict[tuple[CallPhase, type], _Handler] = {
    (CallPhase.AGENT_DIALING, LegAnswered): CallMachine._agent_answered,
    (CallPhase.AGENT_DIALING, LegFailed): CallMachine._agent_failed,
    (CallPhase.AGENT_DIALING, RingTimeout): CallMachine._agent_ring_timeout,
    (CallPhase.AGENT_DIALING, HangupRequested): CallMachine._hangup_while_agent_dialing,
    (CallPhase.AGENT_CONFIRMING, DtmfReceived): CallMachine._agent_pressed,
    (CallPhase.AGENT_CONFIRMING, ConfirmTimeout): CallMachine._agent_not_confirmed,
    (CallPhase.AGENT_CONFIRMING, LegHungUp): CallMachine._agent_left_unconfirmed,
    (CallPhase.AGENT_CONFIRMING, HangupRequested): CallMachine._agent_left_unconfirmed,
    (CallPhase.CUSTOMER_DIALING, LegEarlyMedia): CallMachine._customer_early_media,
    (CallPhase.CUSTOMER_DIALING, LegAnswered): CallMachine._customer_answered,
    (CallPhase.CUSTOMER_DIALING, LegFailed): CallMachine._customer_failed,
    (CallPhase.CUSTOMER_DIALING, RingTimeout): CallMachine._customer_ring_timeout,
    (CallPhase.CUSTOMER_DIALING, LegHungUp): CallMachine._agent_left_before_answer,
    (CallPhase.CUSTOMER_DIALING, HangupRequested): CallMachine._agent_left_before_answer,
    (CallPhase.BRIDGED, LegHungUp): CallMachine._bridged_hangup,
    (CallPhase.BRIDGED, HangupRequested): CallMachine._bridged_hangup,
    (CallPhase.BRIDGED, TimeLimitReached): CallMachine._bridged_hangup,
    (CallPhase.BRIDGED, AddLeg): CallMachine._add_leg,
    (CallPhase.BRIDGED, LegAnswered): CallMachine._added_leg_answered,
    (CallPhase.BRIDGED, LegFailed): CallMachine._added_leg_failed,
    (CallPhase.BRIDGED, RingTimeout): CallMachine._added_leg_failed,
}
