"""The status callback's JSON, and the outbox entry that carries it.

The body is the spec's "Call status callback" object (call_id, uuid, status, duration,
customer_number, agent_number, direction, start_time, end_time, recording_url) followed by what
DESIGN.md adds: ``crm_username``, ``event_id``, ``hangup_source`` and ``legs``. No spec field
changes meaning, so a CRM written against the spec's example reads ours unchanged. Numbers
are written as the spec's example writes them (:func:`callbridge.numbers.display_number`):
Indian numbers as their 10 national digits, others in E.164.

The text is built once, when the call ends, and stored in the outbox: every retry POSTs the
same bytes, and the signature covers exactly those bytes.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from callbridge.numbers import display_number
from callbridge.store.models import Account, Call, Leg, OutboxEntry, OutboxStatus


def build_callback(call: Call, event_id: str, recording_url: str | None) -> str:
    """The exact JSON text POSTed for ``call``'s final state. Keys keep the order below."""
    body: dict[str, Any] = {
        "call_id": call.call_id,
        "uuid": call.uuid,
        "status": call.call_status.value,
        "duration": int(call.duration),
        "customer_number": display_number(call.to_number),
        # A softphone call has no agent number; the spec's field stays and is null.
        "agent_number": display_number(call.agent_number) if call.agent_number else None,
        "crm_username": call.crm_username,
        "direction": "outbound",
        "start_time": iso_utc(call.start_time),
        "end_time": iso_utc(call.end_time),
        "recording_url": recording_url,
        "event_id": event_id,
        "hangup_source": call.hangup_source.value if call.hangup_source else None,
        "legs": [leg_body(leg) for leg in sorted(call.legs, key=lambda leg: leg.leg_id)],
    }
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"))


def leg_body(leg: Leg) -> dict[str, Any]:
    """One leg as the callback and GET /calls show it."""
    return {
        "leg_id": leg.leg_id,
        "role": leg.role.value,
        "number": display_number(leg.number),
        "status": leg.status.value,
        "sip_code": leg.sip_code,
        "reason": leg.reason,
        "answered_at": iso_utc(leg.answered_at),
        "ended_at": iso_utc(leg.ended_at),
    }


def iso_utc(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC to the second with a "Z" ("2026-07-03T10:00:00Z"), or None.
    Fractions are dropped, not rounded: a call never ends in a second after it ended."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        # The store hands out aware UTC datetimes; a naive one can only mean UTC too.
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_event_id(now: datetime) -> str:
    """``evt_`` + 32 hex digits: milliseconds since the epoch (12 digits), then 80 random
    bits. Ids sort by creation time, like a ULID, which keeps outbox listings in order."""
    millis = int(now.timestamp() * 1000)
    return f"evt_{millis:012x}{secrets.token_hex(10)}"


def new_outbox_entry(
    account: Account, call: Call, recording_url: str | None, now: datetime
) -> OutboxEntry:
    """The pending callback for ``call``'s final state, due at once, to be stored with that
    state in one transaction (``Store.finish_call``)."""
    event_id = new_event_id(now)
    return OutboxEntry(
        event_id=event_id,
        account_id=account.id,
        call_id=call.call_id,
        url=account.callback_url,
        payload=build_callback(call, event_id, recording_url),
        status=OutboxStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
