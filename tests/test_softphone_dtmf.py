"""The page's keypad: ``{"type": "dtmf", "call_id", "digits"}`` reaches the call service's
send_dtmf for the customer leg (RFC 4733 there), only for the agent's own call, with the
REST API's validation and error codes."""

from __future__ import annotations

from typing import Any

import pytest

from api_support import FakeCalls
from softphone_support import Softphone
from test_softphone_launch_call import call, phone, started, ws

__all__ = ["phone", "ws"]  # the fixtures, shared with the launch tests


def fake_calls(phone: Softphone) -> FakeCalls:
    calls = phone.app.state.ctx.calls
    assert isinstance(calls, FakeCalls)
    return calls


def press(ws: Any, **fields: Any) -> Any:
    """Send a dtmf message; its error, or the echo of a state message sent after it."""
    ws.send_json({"type": "dtmf", **fields})
    ws.send_json({"type": "state", "sync": True})
    answer = ws.receive_json()
    if answer["type"] == "error":
        assert ws.receive_json() == {"type": "state", "sync": True}
    return answer


@pytest.fixture
def call_id(phone: Softphone, ws: Any) -> str:
    """A call the signed-in agent placed from the page."""
    assert call(ws, to_number="9876543104", uuid="u-dtmf")["type"] == "state"
    [placed] = started(phone)
    return placed.call_id


def test_keys_go_to_the_customer_leg_of_the_agents_call(
        phone: Softphone, ws: Any, call_id: str) -> None:
    assert press(ws, call_id=call_id, digits="1") == {"type": "state", "sync": True}
    assert press(ws, call_id=call_id, digits="#*9")["type"] == "state"
    assert fake_calls(phone).dtmf == [(call_id, "1", None), (call_id, "#*9", None)]


@pytest.mark.parametrize(("digits", "code"), [
    ("1x", "INVALID_DIGITS"), ("", "INVALID_DIGITS"), ("1" * 33, "INVALID_DIGITS"),
    (None, "MISSING_FIELD"), (5, "INVALID_FIELD"),
])
def test_bad_digits_are_refused_as_the_api_refuses_them(
        phone: Softphone, ws: Any, call_id: str, digits: Any, code: str) -> None:
    assert press(ws, call_id=call_id, digits=digits)["code"] == code
    assert fake_calls(phone).dtmf == []


def test_only_the_agents_own_call_takes_keys(phone: Softphone, ws: Any, call_id: str) -> None:
    for other in ("00000000-0000-4000-8000-000000000000", None, 7):
        answer = press(ws, call_id=other, digits="1")
        assert (answer["type"], answer["code"]) == ("error", "NO_SUCH_CALL")
    assert fake_calls(phone).dtmf == []


def test_a_call_that_is_not_bridged_refuses_keys(
        phone: Softphone, ws: Any, call_id: str) -> None:
    fake_calls(phone).not_active = "call is ringing"
    answer = press(ws, call_id=call_id, digits="1")
    assert (answer["code"], answer["message"]) == ("CALL_NOT_ACTIVE", "call is ringing")
    fake_calls(phone).not_active, fake_calls(phone).bad_leg = None, "leg 2 has ended"
    assert press(ws, call_id=call_id, digits="1")["code"] == "INVALID_LEG"
