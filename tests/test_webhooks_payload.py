"""The status callback's JSON against the spec's example, and the outbox entry carrying it."""

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from callbridge.store.models import (
    Account,
    Call,
    CallStatus,
    HangupSource,
    Leg,
    LegRole,
    LegStatus,
    OutboxStatus,
)
from callbridge.webhooks.payload import build_callback, iso_utc, new_event_id, new_outbox_entry

SPEC = Path("/work/shared/spec/click-to-call.openapi.yaml")
CALL_ID = "5deb67aa-d54d-4536-9a25-a29813b3bddd"
T0 = datetime(2026, 7, 3, 10, 0, 0, 250_000, tzinfo=UTC)
EVENT = "evt_0190a1b2c3d4e5f60718293a4b5c6d7e"


def spec_example() -> dict[str, Any]:
    """The JSON under "Call status callback" in the spec's description."""
    description = yaml.safe_load(SPEC.read_text())["info"]["description"]
    section = description.split("## Call status callback", 1)[1]
    match = re.search(r"```json\n(.*?)```", section, re.S)
    assert match is not None
    example: dict[str, Any] = json.loads(match.group(1))
    return example


def answered_call(**changes: Any) -> Call:
    legs = (
        Leg(
            CALL_ID,
            2,
            LegRole.DESTINATION,
            "+919876543210",
            LegStatus.LEFT,
            200,
            "OK",
            T0,
            T0 + timedelta(seconds=150),
        ),
        Leg(
            CALL_ID,
            1,
            LegRole.AGENT,
            "+919876543211",
            LegStatus.LEFT,
            200,
            "OK",
            T0 - timedelta(seconds=8),
            T0 + timedelta(seconds=150),
        ),
    )
    call = Call(
        call_id=CALL_ID,
        account_id="acc_1",
        uuid="your-own-call-id",
        from_number="+919800000000",
        to_number="+919876543210",
        agent_number="+919876543211",
        crm_username=None,
        recording=True,
        max_ring_time=30,
        request_hash="0" * 64,
        call_status=CallStatus.ANSWER,
        start_time=T0,
        end_time=T0 + timedelta(seconds=150),
        duration=150,
        hangup_source=HangupSource.DESTINATION,
        legs=legs,
    )
    return Call(**{**call.__dict__, **changes})


def test_spec_fields_come_first_in_the_spec_order_with_the_spec_types() -> None:
    example = spec_example()
    body = json.loads(build_callback(answered_call(), EVENT, example["recording_url"]))
    spec_keys = [key for key in body if key in example]
    assert spec_keys == list(example)
    spec = list(example)
    extras = ["event_id", "hangup_source", "legs"]
    assert list(body) == [*spec[:6], "crm_username", *spec[6:], *extras]
    for key, value in example.items():
        assert type(body[key]) is type(value), key


def test_answered_call_reads_like_the_spec_example() -> None:
    example = spec_example()
    body = json.loads(build_callback(answered_call(), EVENT, example["recording_url"]))
    # Same call as the spec's example: every spec field has the example's value.
    assert {key: body[key] for key in example} == example
    assert body["event_id"] == EVENT
    assert body["hangup_source"] == "destination"
    assert body["crm_username"] is None


def test_legs_are_listed_by_leg_id_with_their_details() -> None:
    body = json.loads(build_callback(answered_call(), EVENT, None))
    assert body["legs"] == [
        {
            "leg_id": 1,
            "role": "agent",
            "number": "9876543211",
            "status": "LEFT",
            "sip_code": 200,
            "reason": "OK",
            "answered_at": "2026-07-03T09:59:52Z",
            "ended_at": "2026-07-03T10:02:30Z",
        },
        {
            "leg_id": 2,
            "role": "destination",
            "number": "9876543210",
            "status": "LEFT",
            "sip_code": 200,
            "reason": "OK",
            "answered_at": "2026-07-03T10:00:00Z",
            "ended_at": "2026-07-03T10:02:30Z",
        },
    ]


def test_unanswered_softphone_call_has_nulls_where_nothing_happened() -> None:
    legs = (
        Leg(CALL_ID, 1, LegRole.AGENT, "agent.017", LegStatus.LEFT, 200, "OK", T0, T0),
        Leg(
            CALL_ID,
            2,
            LegRole.DESTINATION,
            "+919876543210",
            LegStatus.FAILED,
            486,
            "Busy Here",
            None,
            T0,
        ),
    )
    call = answered_call(
        agent_number=None,
        crm_username="agent.017",
        call_status=CallStatus.BUSY,
        start_time=None,
        duration=0,
        hangup_source=HangupSource.DESTINATION,
        legs=legs,
    )
    body = json.loads(build_callback(call, EVENT, None))
    assert body["status"] == "BUSY"
    assert body["duration"] == 0
    assert body["agent_number"] is None
    assert body["crm_username"] == "agent.017"
    assert body["start_time"] is None
    assert body["end_time"] == "2026-07-03T10:02:30Z"
    assert body["recording_url"] is None
    assert body["legs"][0]["number"] == "agent.017"
    assert body["legs"][1]["sip_code"] == 486
    assert body["legs"][1]["reason"] == "Busy Here"
    assert body["legs"][1]["answered_at"] is None


def test_a_call_ended_before_any_leg_has_an_empty_leg_list_and_no_hangup_source() -> None:
    call = answered_call(call_status=CallStatus.FAILED, legs=(), hangup_source=None)
    body = json.loads(build_callback(call, EVENT, None))
    assert body["legs"] == []
    assert body["hangup_source"] is None


def test_foreign_numbers_stay_in_e164() -> None:
    call = answered_call(agent_number="+14155550123")
    body = json.loads(build_callback(call, EVENT, None))
    assert body["agent_number"] == "+14155550123"
    assert body["customer_number"] == "9876543210"


def test_the_text_is_compact_ascii_and_the_same_every_time() -> None:
    call = answered_call(legs=(Leg(CALL_ID, 1, LegRole.AGENT, "agent.é", LegStatus.LEFT),))
    text = build_callback(call, EVENT, None)
    assert text == build_callback(call, EVENT, None)
    assert text.isascii()
    assert ": " not in text and ", " not in text
    assert json.loads(text)["legs"][0]["number"] == "agent.é"


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 7, 3, 10, 0, 0, 999_999, tzinfo=UTC), "2026-07-03T10:00:00Z"),
        (
            datetime(2026, 7, 3, 15, 30, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2026-07-03T10:00:05Z",
        ),
        (datetime(2026, 7, 3, 10, 0, 5), "2026-07-03T10:00:05Z"),  # naive: taken as UTC
        (None, None),
    ],
)
def test_times_are_utc_seconds_with_z(moment: datetime | None, expected: str | None) -> None:
    assert iso_utc(moment) == expected


def test_event_ids_are_unique_and_sort_by_time() -> None:
    earlier = [new_event_id(T0) for _ in range(50)]
    later = new_event_id(T0 + timedelta(milliseconds=1))
    assert len(set(earlier)) == 50
    assert all(re.fullmatch(r"evt_[0-9a-f]{32}", e) for e in [*earlier, later])
    assert max(earlier) < later


def test_new_outbox_entry_is_pending_due_now_to_the_account_url() -> None:
    account = Account("acc_1", "acme", "https://crm.example/hooks", "whsec_" + "A" * 44)
    call = answered_call()
    entry = new_outbox_entry(account, call, "https://cb.example/recordings/crm_x.wav", T0)
    assert entry.event_id.startswith("evt_")
    assert entry.account_id == "acc_1"
    assert entry.call_id == CALL_ID
    assert entry.url == "https://crm.example/hooks"
    assert entry.status is OutboxStatus.PENDING
    assert entry.attempts == 0
    assert entry.next_attempt_at == T0
    assert entry.created_at == T0
    body = json.loads(entry.payload)
    assert body["event_id"] == entry.event_id
    assert body["recording_url"] == "https://cb.example/recordings/crm_x.wav"
    assert entry.payload == build_callback(
        call, entry.event_id, "https://cb.example/recordings/crm_x.wav"
    )
