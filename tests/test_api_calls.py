"""POST /calls and GET /calls/{call_id}: validation, caller IDs and agents, idempotency, the
trunk check, and the call status shape, each answer checked against the served spec.

The app runs on a real SQLite store; the call control is a fake that records start() calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api_support import (
    AGENT,
    BODY,
    CALLER_ID,
    NOW,
    Api,
    add_key,
    check_response,
    error_of,
    load_spec,
    run_api,
)
from callbridge.store.models import CallStatus, HangupSource, LegRole, LegStatus

SPEC_EXAMPLES = load_spec()["paths"]["/calls"]["post"]["requestBody"]["content"][
    "application/json"]["examples"]


def with_(**changes: Any) -> dict[str, Any]:
    """BODY with fields changed; a value of ... removes the field."""
    body = {**BODY, **changes}
    return {k: v for k, v in body.items() if v is not ...}


async def assert_nothing_placed(api: Api) -> None:
    assert await api.store.list_calls(api.account.id) == []
    assert api.calls.started == []


# -- a call placed ---------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(SPEC_EXAMPLES))
def test_the_spec_examples_place_a_call(tmp_path: Path, example: str) -> None:
    async def scenario(api: Api) -> None:
        response = await api.post_call(SPEC_EXAMPLES[example]["value"])

        assert response.status_code == 200
        body = check_response(response, "/calls")
        assert body["status"] == "success" and body["message"] == "Call initiated"
        assert "idempotent-replayed" not in response.headers
        [started] = api.calls.started
        assert started.call_id == body["call_id"]
        assert await api.store.get_call(body["call_id"]) == started

    run_api(tmp_path, scenario)


def test_the_stored_call_is_normalized_with_defaults_and_the_agent_leg_dialing(
        tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        response = await api.post_call(with_(from_number="+91 98000-00000"))

        call = await api.store.get_call(response.json()["call_id"])
        assert call is not None
        assert (call.account_id, call.uuid) == (api.account.id, BODY["uuid"])
        assert (call.from_number, call.to_number) == (CALLER_ID, "+919876543210")
        assert (call.agent_number, call.crm_username) == ("+919876543211", None)
        assert (call.recording, call.max_ring_time) == (True, 30)
        assert (call.call_status, call.created_at) == (CallStatus.INITIATED, NOW)
        assert len(call.request_hash) == 64
        [leg] = call.legs
        assert (leg.leg_id, leg.role, leg.number, leg.status) == (
            1, LegRole.AGENT, "+919876543211", LegStatus.DIALING)

    run_api(tmp_path, scenario)


def test_a_softphone_agent_leg_is_the_crm_username_and_options_are_kept(
        tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        body = with_(agent_number=..., crm_username=AGENT, recording=False, max_ring_time=45)
        response = await api.post_call(body)

        assert response.status_code == 200
        [call] = api.calls.started
        assert (call.agent_number, call.crm_username) == (None, AGENT)
        assert (call.recording, call.max_ring_time) == (False, 45)
        assert call.legs[0].number == AGENT

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(
    "changes",
    [
        {"agent_number": "011-2345-6789"},  # an agent may be a landline
        {"max_ring_time": 5},
        {"max_ring_time": 120},
        {"uuid": "u" * 128},
        {"uuid": "crm-call 42 ✓"},
        {"crm_username": None},  # null is "not given"
        {"crm_username": ""},  # and so is an empty agent field
        {"recording": None, "max_ring_time": None},
        {"agent_confirm": "dtmf", "time_limit": 10},
        {"agent_confirm": None, "time_limit": 14400},
        {"time_limit": None},
    ],
)
def test_accepted_edge_values(tmp_path: Path, changes: dict[str, Any]) -> None:
    async def scenario(api: Api) -> None:
        response = await api.post_call(with_(**changes))
        assert response.status_code == 200, response.json()
        assert len(api.calls.started) == 1

    run_api(tmp_path, scenario)


# -- agent confirmation and the time limit ---------------------------------------------------


async def call_options(api: Api, body: dict[str, Any]) -> tuple[Any, ...]:
    """(agent_confirm, time_limit) as stored and as GET /calls/{call_id} shows them."""
    response = await api.post_call(body)
    assert response.status_code == 200, response.json()
    call = await api.store.get_call(response.json()["call_id"])
    assert call is not None
    shown = check_response(await api.client.get(f"/calls/{call.call_id}", headers=api.auth),
                           "/calls/{call_id}")
    assert (shown["agent_confirm"], shown["time_limit"]) == (call.agent_confirm,
                                                             call.time_limit)
    return call.agent_confirm, call.time_limit


@pytest.mark.parametrize(
    ("defaults", "changes", "expected"),
    [
        ({}, {}, (None, None)),  # no account default, nothing asked: neither
        ({}, {"agent_confirm": "dtmf", "time_limit": 60}, ("dtmf", 60)),
        ({"agent_confirm": "dtmf", "time_limit": 600}, {}, ("dtmf", 600)),  # the defaults
        ({"agent_confirm": "dtmf", "time_limit": 600}, {"time_limit": 90}, ("dtmf", 90)),
        # null turns an account default off for this one call
        ({"agent_confirm": "dtmf", "time_limit": 600}, {"agent_confirm": None,
                                                        "time_limit": None}, (None, None)),
    ],
)
def test_agent_confirm_and_time_limit_from_the_request_else_the_account(
        tmp_path: Path, defaults: dict[str, Any], changes: dict[str, Any],
        expected: tuple[Any, ...]) -> None:
    async def scenario(api: Api) -> None:
        await api.switch_account("options", **defaults)
        assert await call_options(api, with_(**changes)) == expected
        [started] = api.calls.started
        assert (started.agent_confirm, started.time_limit) == expected

    run_api(tmp_path, scenario)


def test_a_retry_that_omits_the_options_replays_after_the_account_default_changed(
        tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        await api.switch_account("options", agent_confirm="dtmf", time_limit=600)
        first = await api.post_call()
        # An operator changes the account's defaults (no command does it yet: plain SQL).
        with sqlite3.connect(tmp_path / "callbridge.db") as conn:
            conn.execute("UPDATE accounts SET agent_confirm = NULL, time_limit = 60"
                         " WHERE id = ?", (api.account.id,))
        conn.close()
        again = await api.post_call()

        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        call = await api.store.get_call(first.json()["call_id"])
        assert call is not None and (call.agent_confirm, call.time_limit) == ("dtmf", 600)

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(
    ("first", "retry", "status"),
    [
        ({"time_limit": 60}, {"time_limit": 60}, 200),
        ({"agent_confirm": "dtmf"}, {"agent_confirm": "dtmf"}, 200),
        ({"time_limit": 60}, {}, 409),  # as given: an omitted option is another request
        ({}, {"time_limit": 60}, 409),
        ({}, {"agent_confirm": None}, 409),  # null is "off", not "absent"
        ({"time_limit": 60}, {"time_limit": 61}, 409),
    ],
)
def test_the_options_are_part_of_the_request_as_given(
        tmp_path: Path, first: dict[str, Any], retry: dict[str, Any], status: int) -> None:
    async def scenario(api: Api) -> None:
        assert (await api.post_call(with_(**first))).status_code == 200
        response = await api.post_call(with_(**retry))
        assert response.status_code == status
        check_response(response, "/calls")
        assert len(api.calls.started) == 1

    run_api(tmp_path, scenario)


def test_a_request_without_the_options_hashes_as_before_they_existed(tmp_path: Path) -> None:
    """A call stored by the previous release must still replay on a retry."""

    async def scenario(api: Api) -> None:
        call = await api.store.get_call((await api.post_call()).json()["call_id"])
        assert call is not None
        before = {"from_number": CALLER_ID, "to_number": "+919876543210",
                  "agent_number": "+919876543211", "crm_username": None,
                  "uuid": BODY["uuid"], "recording": True, "max_ring_time": 30}
        text = json.dumps(before, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert call.request_hash == hashlib.sha256(text.encode()).hexdigest()

    run_api(tmp_path, scenario)


# -- refused before anything is stored ----------------------------------------------------


INVALID_BODIES: list[tuple[str, bytes | dict[str, Any]]] = [
    ("INVALID_JSON", b"{not json"),
    ("INVALID_JSON", b""),
    ("INVALID_JSON", b"[1, 2]"),
    ("INVALID_JSON", b'"a string"'),
    ("INVALID_JSON", b"\xff\xfe{}"),
    ("INVALID_JSON", b'{"uuid": "a", "uuid": "b"}'),
    ("INVALID_JSON", b'{"max_ring_time": NaN}'),
    ("UNKNOWN_FIELD", with_(agent_numbr="9876543211")),
    ("MISSING_FIELD", with_(from_number=...)),
    ("MISSING_FIELD", with_(to_number=...)),
    ("MISSING_FIELD", with_(uuid=...)),
    ("MISSING_FIELD", with_(uuid=None)),
    ("INVALID_FIELD", with_(to_number=9876543210)),
    ("INVALID_FIELD", with_(from_number=919800000000)),
    ("INVALID_FIELD", with_(agent_number=9876543211)),
    ("INVALID_FIELD", with_(uuid=42)),
    ("INVALID_FIELD", with_(agent_number=..., crm_username=["agent.017"])),
    ("INVALID_FIELD", with_(recording="yes")),
    ("INVALID_FIELD", with_(recording=1)),
    ("INVALID_FIELD", with_(max_ring_time="30")),
    ("INVALID_FIELD", with_(max_ring_time=30.0)),
    ("INVALID_FIELD", with_(max_ring_time=True)),
    ("INVALID_UUID", with_(uuid="")),
    ("INVALID_UUID", with_(uuid="u" * 129)),
    ("INVALID_UUID", with_(uuid="line\nbreak")),
    ("AGENT_REQUIRED", with_(agent_number=...)),
    ("AGENT_REQUIRED", with_(agent_number="")),
    ("AGENT_CONFLICT", with_(crm_username=AGENT)),
    ("INVALID_NUMBER", with_(to_number="12345")),
    ("INVALID_NUMBER", with_(to_number="+14155550100")),
    ("INVALID_NUMBER", with_(to_number="011-2345-6789")),  # customers must be mobiles
    ("INVALID_NUMBER", with_(agent_number="not a number")),
    ("INVALID_RING_TIME", with_(max_ring_time=4)),
    ("INVALID_RING_TIME", with_(max_ring_time=121)),
    ("INVALID_RING_TIME", with_(max_ring_time=-30)),
    ("INVALID_FIELD", with_(agent_confirm=1)),
    ("INVALID_FIELD", with_(agent_confirm=True)),
    ("INVALID_FIELD", with_(time_limit="60")),
    ("INVALID_FIELD", with_(time_limit=60.0)),
    ("INVALID_FIELD", with_(time_limit=True)),
    ("INVALID_AGENT_CONFIRM", with_(agent_confirm="yes")),
    ("INVALID_AGENT_CONFIRM", with_(agent_confirm="DTMF")),
    ("INVALID_AGENT_CONFIRM", with_(agent_confirm="")),
    ("INVALID_TIME_LIMIT", with_(time_limit=9)),
    ("INVALID_TIME_LIMIT", with_(time_limit=14401)),
    ("INVALID_TIME_LIMIT", with_(time_limit=0)),
    ("UNKNOWN_FIELD", with_(timelimit=60)),
    ("CALLER_ID_NOT_ALLOWED", with_(from_number="9812345678")),
    ("CALLER_ID_NOT_ALLOWED", with_(from_number="junk")),
    ("UNKNOWN_AGENT", with_(agent_number=..., crm_username="agent.999")),
]


@pytest.mark.parametrize(("code", "body"), INVALID_BODIES,
                         ids=[f"{code}-{i}" for i, (code, _) in enumerate(INVALID_BODIES)])
def test_invalid_requests_are_400_with_a_precise_code(
        tmp_path: Path, code: str, body: bytes | dict[str, Any]) -> None:
    async def scenario(api: Api) -> None:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await api.client.post("/calls", content=content, headers=api.auth)

        assert response.status_code == 400
        assert error_of(response) == code
        check_response(response, "/calls")
        await assert_nothing_placed(api)

    run_api(tmp_path, scenario)


def test_messages_name_the_problem(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        typo = await api.post_call(with_(agent_numbr="9876543211"))
        landline = await api.post_call(with_(to_number="011-2345-6789"))
        ring = await api.post_call(with_(max_ring_time=121))

        assert typo.json()["message"] == \
            "unknown field 'agent_numbr' (did you mean 'agent_number'?)"
        assert landline.json()["message"] == \
            "to_number: '011-2345-6789' is not an Indian mobile number"
        assert ring.json()["message"] == "max_ring_time must be 5..120 seconds"

    run_api(tmp_path, scenario)


def test_a_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        big = with_(uuid="u" * 2000)
        response = await api.post_call(big)

        assert response.status_code == 413
        assert error_of(response) == "PAYLOAD_TOO_LARGE"
        check_response(response, "/calls")
        await assert_nothing_placed(api)

    run_api(tmp_path, scenario, max_body_bytes=1024)


def test_trunk_unavailable_is_502_and_stores_nothing_so_a_retry_places_the_call(
        tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        api.calls.unavailable = "trunk down: no answer to OPTIONS"
        refused = await api.post_call()

        assert refused.status_code == 502
        assert error_of(refused) == "TRUNK_UNAVAILABLE"
        assert "trunk down: no answer to OPTIONS" in refused.json()["message"]
        check_response(refused, "/calls")
        await assert_nothing_placed(api)

        api.calls.unavailable = None
        retried = await api.post_call()
        assert retried.status_code == 200
        assert "idempotent-replayed" not in retried.headers
        assert len(api.calls.started) == 1

    run_api(tmp_path, scenario)


# -- authentication and origin ----------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer cb_unknown", "Bearer a b",
     "Token {key}", "Bearer {key}x"],
)
def test_bad_credentials_are_401_with_a_bearer_challenge(
        tmp_path: Path, authorization: str | None) -> None:
    async def scenario(api: Api) -> None:
        headers = {} if authorization is None else {
            "Authorization": authorization.format(key=api.key)}
        response = await api.client.post("/calls", json=BODY, headers=headers)

        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert error_of(response) == "UNAUTHORIZED"
        check_response(response, "/calls")
        await assert_nothing_placed(api)

    run_api(tmp_path, scenario)


def test_a_revoked_key_is_401_and_another_key_of_the_account_still_works(
        tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        second = await add_key(api.store, api.account)
        assert await api.store.revoke_api_key(api.key[:8])

        revoked = await api.post_call()
        works = await api.client.post("/calls", json=BODY,
                                      headers={"Authorization": f"bearer {second}"})

        assert revoked.status_code == 401 and error_of(revoked) == "UNAUTHORIZED"
        assert works.status_code == 200

    run_api(tmp_path, scenario)


def test_a_source_network_restriction(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        await api.restrict(cidrs=("10.0.0.0/8", "192.0.2.7"))
        outside = await api.post_call()
        # X-Forwarded-For from a peer that is not a trusted proxy proves nothing.
        spoofed = await api.post_call(**{"X-Forwarded-For": "10.1.2.3"})

        for response in (outside, spoofed):
            assert response.status_code == 403
            assert error_of(response) == "ORIGIN_NOT_ALLOWED"
            check_response(response, "/calls")
        assert "127.0.0.1" in outside.json()["message"]
        await assert_nothing_placed(api)

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(("client_host", "status"), [("10.9.8.7", 200), ("192.0.2.7", 200),
                                                     ("192.0.2.8", 403)])
def test_a_client_inside_the_networks_is_let_in(
        tmp_path: Path, client_host: str, status: int) -> None:
    async def scenario(api: Api) -> None:
        await api.restrict(cidrs=("10.0.0.0/8", "192.0.2.7"))
        api.build(client_host=client_host)
        async with api.client:
            assert (await api.post_call()).status_code == status

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(
    ("forwarded_for", "status"),
    [
        ("10.1.2.3", 200),
        ("203.0.113.9, 10.1.2.3", 200),  # the client's own claims, left of it, are ignored
        ("10.1.2.3, 203.0.113.9", 403),  # the proxy says 203.0.113.9 connected to it
        ("10.1.2.3, 127.0.0.2", 200),  # a second trusted proxy is skipped
        ("garbage", 403),  # an address we cannot establish is outside
    ],
)
def test_x_forwarded_for_from_a_trusted_proxy(
        tmp_path: Path, forwarded_for: str, status: int) -> None:
    async def scenario(api: Api) -> None:
        await api.restrict(cidrs=("10.0.0.0/8",))
        response = await api.post_call(**{"X-Forwarded-For": forwarded_for})
        assert response.status_code == status, response.json()

    run_api(tmp_path, scenario, trusted_proxies=("127.0.0.0/24",))


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 200),  # a server: an origin list does not apply
        ("https://crm.example.com", 200),
        ("HTTPS://CRM.example.com:443", 200),
        ("https://crm.example.com:8443", 403),
        ("http://crm.example.com", 403),
        ("https://evil.example", 403),
        ("null", 403),
    ],
)
def test_a_browser_origin_restriction(tmp_path: Path, origin: str | None, status: int) -> None:
    async def scenario(api: Api) -> None:
        await api.restrict(origins=("https://crm.example.com/",))
        headers = {} if origin is None else {"Origin": origin}
        response = await api.post_call(**headers)

        assert response.status_code == status
        if status == 403:
            assert error_of(response) == "ORIGIN_NOT_ALLOWED"
            await assert_nothing_placed(api)

    run_api(tmp_path, scenario)


# -- idempotency ---------------------------------------------------------------------------


def test_a_repeat_replays_the_first_answer_and_dials_nothing(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        first = await api.post_call()
        # The same request written another way: number forms, defaults spelled out.
        same = with_(to_number="+91 98765 43210", agent_number="09876543211",
                     from_number="+919800000000", recording=True, max_ring_time=30)
        again = await api.post_call(same)

        assert again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        check_response(again, "/calls")
        assert len(api.calls.started) == 1
        assert len(await api.store.list_calls(api.account.id)) == 1

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(
    "changes",
    [{"to_number": "9876543219"}, {"recording": False}, {"max_ring_time": 31},
     {"agent_number": ..., "crm_username": AGENT}],
)
def test_the_same_uuid_with_another_request_is_409(
        tmp_path: Path, changes: dict[str, Any]) -> None:
    async def scenario(api: Api) -> None:
        await api.post_call()
        response = await api.post_call(with_(**changes))

        assert response.status_code == 409
        assert error_of(response) == "DUPLICATE_UUID"
        check_response(response, "/calls")
        assert len(api.calls.started) == 1

    run_api(tmp_path, scenario)


def test_the_same_uuid_in_another_account_is_another_call(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        first = await api.post_call()
        await api.restrict()  # a second account, same onboarding
        second = await api.post_call()

        assert second.status_code == 200
        assert "idempotent-replayed" not in second.headers
        assert second.json()["call_id"] != first.json()["call_id"]
        assert len(api.calls.started) == 2

    run_api(tmp_path, scenario)


def test_concurrent_duplicates_place_one_call(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        responses = await asyncio.gather(*(api.post_call() for _ in range(10)))

        assert {r.status_code for r in responses} == {200}
        assert len({r.json()["call_id"] for r in responses}) == 1
        replayed = [r.headers.get("idempotent-replayed") for r in responses]
        assert replayed.count(None) == 1 and replayed.count("true") == 9
        assert len(api.calls.started) == 1

    run_api(tmp_path, scenario)


# -- GET /calls/{call_id} ------------------------------------------------------------------


def test_a_new_call_reads_back_initiated_with_the_agent_leg_dialing(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        call_id = (await api.post_call()).json()["call_id"]
        response = await api.client.get(f"/calls/{call_id}", headers=api.auth)

        assert response.status_code == 200
        body = check_response(response, "/calls/{call_id}")
        assert body == {
            "status": "success", "call_id": call_id, "uuid": BODY["uuid"],
            "call_status": "INITIATED", "duration": 0, "recording_url": None,
            "start_time": None, "end_time": None, "hangup_source": None,
            "agent_confirm": None, "time_limit": None,
            "legs": [{"leg_id": 1, "role": "agent", "number": "9876543211",
                      "status": "DIALING", "sip_code": None, "reason": None,
                      "answered_at": None, "ended_at": None}],
        }

    run_api(tmp_path, scenario)


def test_a_finished_call_shows_times_in_utc_legs_in_order_and_numbers_as_ten_digits(
        tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        call_id = (await api.post_call()).json()["call_id"]
        call = await api.store.get_call(call_id)
        assert call is not None

        def at(**delta: int) -> datetime:
            return NOW + timedelta(**delta)

        agent = replace(call.legs[0], status=LegStatus.LEFT, sip_code=200, reason="OK",
                        answered_at=at(seconds=4), ended_at=at(seconds=160, microseconds=7))
        customer = replace(agent, leg_id=2, role=LegRole.DESTINATION, number="+919876543210",
                           answered_at=at(seconds=10), ended_at=at(seconds=160))
        await api.store.save_leg(customer)
        await api.store.save_leg(agent)
        await api.store.update_call(replace(
            call, call_status=CallStatus.ANSWER, start_time=at(seconds=10),
            end_time=at(seconds=160), duration=150, hangup_source=HangupSource.DESTINATION,
            recording_url=f"http://127.0.0.1:8080/recordings/crm_{call_id}.wav"))

        body = check_response(await api.client.get(f"/calls/{call_id}", headers=api.auth),
                              "/calls/{call_id}")

        assert (body["call_status"], body["duration"]) == ("ANSWER", 150)
        assert (body["start_time"], body["end_time"]) == (
            "2026-07-03T10:00:10Z", "2026-07-03T10:02:40Z")
        assert body["hangup_source"] == "destination"
        assert body["recording_url"].endswith(f"/recordings/crm_{call_id}.wav")
        assert [(leg["leg_id"], leg["role"], leg["number"], leg["status"], leg["sip_code"])
                for leg in body["legs"]] == [(1, "agent", "9876543211", "LEFT", 200),
                                             (2, "destination", "9876543210", "LEFT", 200)]
        assert body["legs"][0]["answered_at"] == "2026-07-03T10:00:04Z"
        assert body["legs"][0]["ended_at"] == "2026-07-03T10:02:40Z"

    run_api(tmp_path, scenario)


def test_a_softphone_call_shows_the_crm_username_as_the_agent_number(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        body = with_(agent_number=..., crm_username=AGENT)
        call_id = (await api.post_call(body)).json()["call_id"]
        got = (await api.client.get(f"/calls/{call_id}", headers=api.auth)).json()
        assert got["legs"][0]["number"] == AGENT

    run_api(tmp_path, scenario)


def test_the_call_id_is_case_insensitive(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        call_id = (await api.post_call()).json()["call_id"]
        response = await api.client.get(f"/calls/{call_id.upper()}", headers=api.auth)
        assert response.json()["call_id"] == call_id

    run_api(tmp_path, scenario)


@pytest.mark.parametrize("which", ["unknown", "not-a-uuid", "other-account"])
def test_calls_not_ours_are_404(tmp_path: Path, which: str) -> None:
    async def scenario(api: Api) -> None:
        call_id = (await api.post_call()).json()["call_id"]
        ids = {"unknown": "5deb67aa-d54d-4536-9a25-a29813b3bddd", "not-a-uuid": "x' OR 1=1",
               "other-account": call_id}
        if which == "other-account":
            await api.restrict()
        response = await api.client.get(f"/calls/{ids[which]}", headers=api.auth)

        assert response.status_code == 404
        assert error_of(response) == "CALL_NOT_FOUND"
        check_response(response, "/calls/{call_id}")

    run_api(tmp_path, scenario)


def test_get_needs_a_key_and_passes_the_origin_policy(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        call_id = (await api.post_call()).json()["call_id"]
        anonymous = await api.client.get(f"/calls/{call_id}")
        await api.restrict(origins=("https://crm.example.com",))
        foreign = await api.client.get(f"/calls/{call_id}",
                                       headers={**api.auth, "Origin": "https://evil.example"})

        assert anonymous.status_code == 401 and error_of(anonymous) == "UNAUTHORIZED"
        check_response(anonymous, "/calls/{call_id}")
        assert foreign.status_code == 403 and error_of(foreign) == "ORIGIN_NOT_ALLOWED"
        check_response(foreign, "/calls/{call_id}")

    run_api(tmp_path, scenario)
