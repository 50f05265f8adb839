"""The two-leg call machine, row by row of DESIGN.md's status table, with a fake clock."""

from __future__ import annotations

import pytest

from callbridge.b2bua.call import (
    AGENT,
    CUSTOMER,
    BridgeLegs,
    Bye,
    CallEnded,
    CallMachine,
    CallPhase,
    Cancel,
    ConnectEarlyMedia,
    Dial,
    HangupRequested,
    LegAnswered,
    LegChanged,
    LegEarlyMedia,
    LegFailed,
    LegHungUp,
    PlayRingback,
    RingTimeout,
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
    assert call.next_deadline() == (30.0, AGENT)
    assert call.handle(LegAnswered(AGENT), 5.0) == [
        LegChanged(AGENT, LegStatus.JOINED), Dial(CUSTOMER), PlayRingback()]
    assert call.phase is CallPhase.CUSTOMER_DIALING
    assert call.next_deadline() == (35.0, CUSTOMER)  # each leg has its own max_ring_time
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
    assert call.next_deadline() == (25.0, CUSTOMER)
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
