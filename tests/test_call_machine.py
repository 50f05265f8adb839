"""The two-leg call machine, row by row of DESIGN.md's status table, with a fake clock."""

from __future__ import annotations

import pytest

from callbridge.b2bua.call import (
    AGENT,
    CUSTOMER,
    AddLeg,
    BridgeLegs,
    Bye,
    CallEnded,
    CallMachine,
    CallPhase,
    Cancel,
    ConfirmTimeout,
    ConnectEarlyMedia,
    Dial,
    DtmfReceived,
    HangupRequested,
    JoinRoom,
    LeaveRoom,
    LegAnswered,
    LegChanged,
    LegEarlyMedia,
    LegFailed,
    LegHungUp,
    PlayPrompt,
    PlayRingback,
    RingTimeout,
    TimeLimitReached,
)
from callbridge.store.models import CallStatus, HangupSource, LegStatus


def bridged_call() -> CallMachine:
    call = CallMachine(max_ring_time=30, now=0.0)
    call.start()
    call.handle(LegAnswered(AGENT), 5.0)
    call.handle(LegAnswered(CUSTOMER), 12.0)
    return call


def test_agent_first_then_customer_then_bridge() -> None:
    call = CallMachine(max_ring_time=30, now=0.0)
    assert call.start() == [Dial(AGENT)]
    assert call.next_deadline() == (30.0, RingTimeout(AGENT))
    assert call.handle(LegAnswered(AGENT), 5.0) == [
        LegChanged(AGENT, LegStatus.JOINED), Dial(CUSTOMER), PlayRingback()]
    assert call.phase is CallPhase.CUSTOMER_DIALING
    assert call.next_deadline() == (35.0, RingTimeout(CUSTOMER))  # per leg
    assert call.handle(LegEarlyMedia(CUSTOMER), 6.0) == [ConnectEarlyMedia()]
    assert call.handle(LegEarlyMedia(CUSTOMER), 6.5) == []  # once
    assert call.handle(LegAnswered(CUSTOMER), 12.0) == [
        LegChanged(CUSTOMER, LegStatus.JOINED), BridgeLegs()]
    assert call.phase is CallPhase.BRIDGED and call.next_deadline() is None


@pytest.mark.parametrize(("leg", "source"), [(AGENT, HangupSource.AGENT),
                                             (CUSTOMER, HangupSource.DESTINATION)])
def test_bridged_call_ends_when_either_hangs_up(leg: int, source: HangupSource) -> None:
    call = bridged_call()
    other = CUSTOMER if leg == AGENT else AGENT
    actions = call.handle(LegHungUp(leg), 162.9)
    assert actions == [
        LegChanged(leg, LegStatus.LEFT), Bye(other), LegChanged(other, LegStatus.LEFT),
        CallEnded(CallStatus.ANSWER, source, "BYE"),
    ]
    assert call.duration == 150  # bridge (12.0) to hang-up, whole seconds


@pytest.mark.parametrize(("code", "status"), [
    (486, CallStatus.BUSY), (600, CallStatus.BUSY), (603, CallStatus.BUSY),
    (480, CallStatus.NO_ANSWER), (408, CallStatus.NO_ANSWER), (487, CallStatus.NO_ANSWER),
    (403, CallStatus.FAILED), (404, CallStatus.FAILED), (503, CallStatus.FAILED),
])
def test_agent_leg_failures(code: int, status: CallStatus) -> None:
    call = CallMachine(max_ring_time=30, now=0.0)
    call.start()
    actions = call.handle(LegFailed(AGENT, code, "why"), 3.0)
    assert actions[0] == LegChanged(AGENT, LegStatus.FAILED, code, "why")
    ended = actions[-1]
    assert isinstance(ended, CallEnded) and ended.status is status
    assert CUSTOMER not in call.legs  # the customer was never dialled


def test_timer_b_on_the_agent_leg_is_a_failure_not_no_answer() -> None:
    call = CallMachine(max_ring_time=30, now=0.0)
    call.start()
    ended = call.handle(LegFailed(AGENT, 408, "Request Timeout", local_timeout=True), 32.0)[-1]
    assert isinstance(ended, CallEnded) and ended.status is CallStatus.FAILED


def test_agent_rings_out() -> None:
    call = CallMachine(max_ring_time=30, now=0.0)
    call.start()
    assert call.handle(RingTimeout(AGENT), 30.0) == [
        Cancel(AGENT), LegChanged(AGENT, LegStatus.FAILED, 487, "RING_TIMEOUT"),
        CallEnded(CallStatus.NO_ANSWER, HangupSource.SYSTEM, "RING_TIMEOUT"),
    ]
    assert call.handle(LegFailed(AGENT, 487, "Request Terminated"), 30.1) == []  # late news


@pytest.mark.parametrize(("code", "status"), [
    (486, CallStatus.BUSY), (480, CallStatus.NO_ANSWER), (503, CallStatus.FAILED)])
def test_customer_leg_failures_release_the_agent(code: int, status: CallStatus) -> None:
    call = CallMachine(max_ring_time=30, now=0.0)
    call.start()
    call.handle(LegAnswered(AGENT), 5.0)
    actions = call.handle(LegFailed(CUSTOMER, code, "why"), 9.0)
    assert actions[:3] == [LegChanged(CUSTOMER, LegStatus.FAILED, code, "why"),
                           Bye(AGENT), LegChanged(AGENT, LegStatus.LEFT)]
    ended = actions[-1]
    assert isinstance(ended, CallEnded) and ended.status is status
    assert call.duration == 0


def test_customer_rings_out() -> None:
    call = CallMachine(max_ring_time=20, now=0.0)
    call.start()
    call.handle(LegAnswered(AGENT), 5.0)
    assert call.next_deadline() == (25.0, RingTimeout(CUSTOMER))
    actions = call.handle(RingTimeout(CUSTOMER), 25.0)
    assert actions == [
        Cancel(CUSTOMER), LegChanged(CUSTOMER, LegStatus.FAILED, 487, "RING_TIMEOUT"),
        Bye(AGENT), LegChanged(AGENT, LegStatus.LEFT),
        CallEnded(CallStatus.NO_ANSWER, HangupSource.SYSTEM, "RING_TIMEOUT"),
    ]


def test_agent_hangs_up_while_customer_rings_is_canceled() -> None:
    call = CallMachine(max_ring_time=30, now=0.0)
    call.start()
    call.handle(LegAnswered(AGENT), 5.0)
    assert call.handle(LegHungUp(AGENT), 8.0) == [
        Cancel(CUSTOMER), LegChanged(CUSTOMER, LegStatus.FAILED, 487, "AGENT_HANGUP"),
        LegChanged(AGENT, LegStatus.LEFT),
        CallEnded(CallStatus.CANCELED, HangupSource.AGENT, "AGENT_HANGUP"),
    ]


def test_api_hangup_while_agent_rings_is_canceled() -> None:
    call = CallMachine(max_ring_time=30, now=0.0)
    call.start()
    assert call.handle(HangupRequested(HangupSource.API, "API_HANGUP"), 2.0) == [
        Cancel(AGENT), LegChanged(AGENT, LegStatus.FAILED, 487, "API_HANGUP"),
        CallEnded(CallStatus.CANCELED, HangupSource.API, "API_HANGUP"),
    ]


def test_system_hangup_of_a_bridged_call() -> None:
    call = bridged_call()
    actions = call.handle(HangupRequested(HangupSource.SYSTEM, "SHUTDOWN"), 20.0)
    assert actions == [
        Bye(AGENT), LegChanged(AGENT, LegStatus.LEFT), Bye(CUSTOMER),
        LegChanged(CUSTOMER, LegStatus.LEFT),
        CallEnded(CallStatus.ANSWER, HangupSource.SYSTEM, "SHUTDOWN"),
    ]
    assert call.handle(LegHungUp(CUSTOMER), 21.0) == []  # over: nothing more happens


# -- live call control (issue 7) ---------------------------------------------------------------


def test_agent_confirmation_dials_the_customer_only_after_a_1() -> None:
    call = CallMachine(max_ring_time=20, now=0.0, agent_confirm=True)
    call.start()
    assert call.handle(LegAnswered(AGENT), 4.0) == [LegChanged(AGENT, LegStatus.JOINED),
                                                    PlayPrompt()]
    assert call.phase is CallPhase.AGENT_CONFIRMING
    assert call.next_deadline() == (24.0, ConfirmTimeout())
    assert call.handle(DtmfReceived(AGENT, "2"), 5.0) == []
    assert call.handle(DtmfReceived(AGENT, "1"), 6.0) == [Dial(CUSTOMER), PlayRingback()]
    assert call.next_deadline() == (26.0, RingTimeout(CUSTOMER))


def test_no_confirmation_within_the_ring_time_is_no_answer() -> None:
    call = CallMachine(max_ring_time=20, now=0.0, agent_confirm=True)
    call.start()
    call.handle(LegAnswered(AGENT), 4.0)
    assert call.handle(ConfirmTimeout(), 24.0) == [
        Bye(AGENT), LegChanged(AGENT, LegStatus.LEFT, None, "AGENT_NOT_CONFIRMED"),
        CallEnded(CallStatus.NO_ANSWER, HangupSource.SYSTEM, "AGENT_NOT_CONFIRMED"),
    ]
    assert CUSTOMER not in call.legs


def three_way_call() -> CallMachine:
    call = bridged_call()
    assert call.handle(AddLeg(3, 20.0), 30.0) == [Dial(3)]
    assert call.next_deadline() == (50.0, RingTimeout(3))
    assert call.handle(LegAnswered(3), 35.0) == [LegChanged(3, LegStatus.JOINED), JoinRoom(3)]
    return call


def test_warm_transfer_the_agent_leaves_and_the_others_talk_on() -> None:
    call = three_way_call()
    assert call.handle(LegHungUp(AGENT), 40.0) == [LegChanged(AGENT, LegStatus.LEFT),
                                                   LeaveRoom(AGENT)]
    assert call.phase is CallPhase.BRIDGED
    assert call.handle(LegHungUp(3), 70.0) == [
        LegChanged(3, LegStatus.LEFT), Bye(CUSTOMER), LegChanged(CUSTOMER, LegStatus.LEFT),
        CallEnded(CallStatus.ANSWER, HangupSource.DESTINATION, "BYE"),
    ]
    assert call.duration == 58  # bridged at 12.0


@pytest.mark.parametrize("event", [LegFailed(3, 486, "Busy Here"), RingTimeout(3)])
def test_an_added_leg_that_fails_leaves_the_call_untouched(event: object) -> None:
    call = bridged_call()
    call.handle(AddLeg(3, 20.0), 30.0)
    actions = call.handle(event, 50.0)  # type: ignore[arg-type]
    assert actions[-1].status is LegStatus.FAILED  # type: ignore[union-attr]
    assert call.phase is CallPhase.BRIDGED and not any(isinstance(a, CallEnded) for a in actions)


def test_hangup_lets_go_of_everyone_including_a_ringing_participant() -> None:
    call = bridged_call()
    call.handle(AddLeg(3, 20.0), 30.0)
    assert call.handle(HangupRequested(HangupSource.API, "API_HANGUP"), 31.0) == [
        Bye(AGENT), LegChanged(AGENT, LegStatus.LEFT), Bye(CUSTOMER),
        LegChanged(CUSTOMER, LegStatus.LEFT), Cancel(3),
        LegChanged(3, LegStatus.FAILED, 487, "CANCELED"),
        CallEnded(CallStatus.ANSWER, HangupSource.API, "API_HANGUP"),
    ]


def test_time_limit_hangs_up_a_bridged_call() -> None:
    call = CallMachine(max_ring_time=30, now=0.0, time_limit=60)
    call.start()
    call.handle(LegAnswered(AGENT), 5.0)
    call.handle(LegAnswered(CUSTOMER), 12.0)
    assert call.next_deadline() == (72.0, TimeLimitReached())
    actions = call.handle(TimeLimitReached(), 72.0)
    assert actions[-1] == CallEnded(CallStatus.ANSWER, HangupSource.SYSTEM, "TIME_LIMIT")
    assert call.duration == 60
