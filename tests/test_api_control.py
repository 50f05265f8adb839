"""Live call control over REST: POST /calls/{call_id}/add-leg, /hangup and /dtmf. Each route
checks the key, the origin and the call's owner, validates its body, and hands the stored
call to the call control (a fake here, which records what it is asked and raises
CallNotActive or ValueError when told to); every answer is checked against the served spec.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from api_support import NOW, Api, check_response, error_of, run_api
from callbridge.store.models import CallStatus, HangupSource

ADD_LEG = "/calls/{call_id}/add-leg"
HANGUP = "/calls/{call_id}/hangup"
DTMF = "/calls/{call_id}/dtmf"
#: A valid body for each route.
BODIES: dict[str, Any] = {ADD_LEG: {"number": "9123456780"}, HANGUP: None, DTMF: {"digits": "1"}}


async def a_call(api: Api) -> str:
    response = await api.post_call()
    assert response.status_code == 200
    return str(response.json()["call_id"])


async def post(api: Api, route: str, call_id: str, body: Any = None,
               **headers: str) -> Any:
    """POST ``body`` (JSON, or bytes as they are, or nothing for None) to ``route``."""
    content = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body)
    return await api.client.post(route.format(call_id=call_id), content=content,
                                 headers={**api.auth, **headers})


def nothing_asked(api: Api) -> bool:
    return api.calls.added == [] and api.calls.hung_up == [] and api.calls.dtmf == []


# -- add-leg ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "number", "ring"),
    [
        ({"number": "9123456780"}, "+919123456780", 30),  # the spec's example, the default
        ({"number": "+91 91234-56780", "max_ring_time": 45}, "+919123456780", 45),
        ({"number": "011-2345-6789", "max_ring_time": 5}, "+911123456789", 5),  # a desk phone
        ({"number": "09123456780", "max_ring_time": None}, "+919123456780", 30),
    ],
)
def test_add_leg_answers_at_once_with_the_new_leg_id(
        tmp_path: Path, body: dict[str, Any], number: str, ring: int) -> None:
    async def scenario(api: Api) -> None:
        call_id = await a_call(api)
        response = await post(api, ADD_LEG, call_id, body)

        assert response.status_code == 200
        assert check_response(response, ADD_LEG) == {
            "status": "success", "message": "Leg queued", "leg_id": 3}
        assert api.calls.added == [(call_id, number, ring)]

    run_api(tmp_path, scenario)


def test_each_added_leg_gets_the_id_the_call_control_gave(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        call_id = await a_call(api)
        first = await post(api, ADD_LEG, call_id, {"number": "9123456780"})
        second = await post(api, ADD_LEG, call_id, {"number": "9123456781"})

        assert [first.json()["leg_id"], second.json()["leg_id"]] == [3, 4]
        assert [number for _, number, _ in api.calls.added] == ["+919123456780",
                                                                "+919123456781"]

    run_api(tmp_path, scenario)


ADD_LEG_REFUSALS: list[tuple[str, Any]] = [
    ("INVALID_JSON", b""),
    ("INVALID_JSON", b"[]"),
    ("INVALID_JSON", b'{"number": "9123456780", "number": "9123456781"}'),
    ("MISSING_FIELD", {}),
    ("MISSING_FIELD", {"number": None}),
    ("UNKNOWN_FIELD", {"number": "9123456780", "ring_time": 30}),
    ("INVALID_FIELD", {"number": 9123456780}),
    ("INVALID_FIELD", {"number": "9123456780", "max_ring_time": "30"}),
    ("INVALID_FIELD", {"number": "9123456780", "max_ring_time": True}),
    ("INVALID_NUMBER", {"number": "12345"}),
    ("INVALID_NUMBER", {"number": "+14155550100"}),
    ("INVALID_NUMBER", {"number": ""}),
    ("INVALID_RING_TIME", {"number": "9123456780", "max_ring_time": 4}),
    ("INVALID_RING_TIME", {"number": "9123456780", "max_ring_time": 121}),
]


@pytest.mark.parametrize(("code", "body"), ADD_LEG_REFUSALS,
                         ids=[f"{code}-{i}" for i, (code, _) in enumerate(ADD_LEG_REFUSALS)])
def test_add_leg_refuses_a_bad_body_and_dials_nothing(
        tmp_path: Path, code: str, body: Any) -> None:
    async def scenario(api: Api) -> None:
        response = await post(api, ADD_LEG, await a_call(api), body)

        assert response.status_code == 400
        assert error_of(response) == code
        check_response(response, ADD_LEG)
        assert nothing_asked(api)

    run_api(tmp_path, scenario)


def test_add_leg_messages_name_the_problem(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        call_id = await a_call(api)
        typo = await post(api, ADD_LEG, call_id, {"numbr": "9123456780"})
        bad = await post(api, ADD_LEG, call_id, {"number": "12345"})

        assert typo.json()["message"] == "unknown field 'numbr' (did you mean 'number'?)"
        assert bad.json()["message"].startswith("number: '12345' has 5 digits")

    run_api(tmp_path, scenario)


def test_add_leg_on_a_call_not_bridged_is_call_not_active(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        api.calls.not_active = "the call is not bridged (INITIATED)"
        response = await post(api, ADD_LEG, await a_call(api), {"number": "9123456780"})

        assert response.status_code == 400
        assert error_of(response) == "CALL_NOT_ACTIVE"
        assert response.json()["message"] == "the call is not bridged (INITIATED)"
        check_response(response, ADD_LEG)
        assert api.calls.added == []

    run_api(tmp_path, scenario)


# -- hangup --------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, {}, b"  \r\n", b" { } "])
def test_hangup_needs_no_body(tmp_path: Path, body: Any) -> None:
    async def scenario(api: Api) -> None:
        call_id = await a_call(api)
        response = await post(api, HANGUP, call_id, body)

        assert response.status_code == 200
        assert check_response(response, HANGUP) == {"status": "success",
                                                    "message": "Hangup requested"}
        assert api.calls.hung_up == [call_id]

    run_api(tmp_path, scenario)


def test_hangup_is_idempotent_and_answers_200_for_an_ended_call(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        call_id = await a_call(api)
        first = await post(api, HANGUP, call_id)
        call = await api.store.get_call(call_id)
        assert call is not None
        await api.store.update_call(replace(
            call, call_status=CallStatus.CANCELED, end_time=NOW + timedelta(seconds=3),
            hangup_source=HangupSource.API))
        again = await post(api, HANGUP, call_id.upper())

        for response in (first, again):
            assert response.status_code == 200
            check_response(response, HANGUP)
        # The call control is the one that knows the call ended; it is asked each time, and
        # its hangup is a no-op for an ended call.
        assert api.calls.hung_up == [call_id, call_id]

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(("code", "body"), [("INVALID_JSON", b"[]"), ("INVALID_JSON", b"{"),
                                            ("UNKNOWN_FIELD", {"reason": "done"})])
def test_hangup_refuses_a_body_with_anything_in_it(tmp_path: Path, code: str, body: Any) -> None:
    async def scenario(api: Api) -> None:
        response = await post(api, HANGUP, await a_call(api), body)

        assert response.status_code == 400
        assert error_of(response) == code
        check_response(response, HANGUP)
        assert api.calls.hung_up == []

    run_api(tmp_path, scenario)


# -- dtmf --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"digits": "12#"}, ("12#", None)),  # the customer leg, chosen by the call control
        ({"digits": "0123456789*#ABCD", "leg": 3}, ("0123456789*#ABCD", 3)),
        ({"digits": "1", "leg": 1}, ("1", 1)),
        ({"digits": "9" * 32, "leg": None}, ("9" * 32, None)),
    ],
)
def test_dtmf_is_queued(tmp_path: Path, body: dict[str, Any], sent: tuple[str, Any]) -> None:
    async def scenario(api: Api) -> None:
        call_id = await a_call(api)
        response = await post(api, DTMF, call_id, body)

        assert response.status_code == 200
        assert check_response(response, DTMF) == {"status": "success",
                                                  "message": "DTMF queued"}
        assert api.calls.dtmf == [(call_id, *sent)]

    run_api(tmp_path, scenario)


DTMF_REFUSALS: list[tuple[str, Any]] = [
    ("INVALID_JSON", b""),
    ("MISSING_FIELD", {}),
    ("MISSING_FIELD", {"digits": None, "leg": 2}),
    ("UNKNOWN_FIELD", {"digits": "1", "legs": 2}),
    ("INVALID_FIELD", {"digits": 12}),
    ("INVALID_FIELD", {"digits": ["1", "2"]}),
    ("INVALID_FIELD", {"digits": "1", "leg": "2"}),
    ("INVALID_FIELD", {"digits": "1", "leg": 2.0}),
    ("INVALID_FIELD", {"digits": "1", "leg": True}),
    ("INVALID_DIGITS", {"digits": ""}),
    ("INVALID_DIGITS", {"digits": "12a"}),  # A-D are upper case, as RFC 4733 names them
    ("INVALID_DIGITS", {"digits": "E"}),
    ("INVALID_DIGITS", {"digits": "1 2"}),
    ("INVALID_DIGITS", {"digits": "1,2"}),
    ("INVALID_DIGITS", {"digits": "12\n"}),
    ("INVALID_DIGITS", {"digits": "\uff11\uff12"}),  # fullwidth digits are not 0-9
    ("INVALID_DIGITS", {"digits": "1" * 33}),
    ("INVALID_LEG", {"digits": "1", "leg": 0}),
    ("INVALID_LEG", {"digits": "1", "leg": -2}),
]


@pytest.mark.parametrize(("code", "body"), DTMF_REFUSALS,
                         ids=[f"{code}-{i}" for i, (code, _) in enumerate(DTMF_REFUSALS)])
def test_dtmf_refuses_a_bad_body_and_sends_nothing(
        tmp_path: Path, code: str, body: Any) -> None:
    async def scenario(api: Api) -> None:
        response = await post(api, DTMF, await a_call(api), body)

        assert response.status_code == 400
        assert error_of(response) == code
        check_response(response, DTMF)
        assert api.calls.dtmf == []

    run_api(tmp_path, scenario)


def test_dtmf_to_a_leg_the_call_does_not_have_is_invalid_leg(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        api.calls.bad_leg = "leg 7 is not on this call"
        response = await post(api, DTMF, await a_call(api), {"digits": "1", "leg": 7})

        assert response.status_code == 400
        assert error_of(response) == "INVALID_LEG"
        assert response.json()["message"] == "leg 7 is not on this call"
        check_response(response, DTMF)

    run_api(tmp_path, scenario)


def test_dtmf_on_a_call_not_bridged_is_call_not_active(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        api.calls.not_active = "the call has ended"
        response = await post(api, DTMF, await a_call(api), {"digits": "5"})

        assert response.status_code == 400
        assert error_of(response) == "CALL_NOT_ACTIVE"
        check_response(response, DTMF)
        assert api.calls.dtmf == []

    run_api(tmp_path, scenario)


# -- what every control route shares ----------------------------------------------------------

ROUTES = [ADD_LEG, HANGUP, DTMF]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("which", ["unknown", "not-a-uuid", "other-account"])
def test_calls_not_ours_are_404_and_nothing_is_asked(
        tmp_path: Path, route: str, which: str) -> None:
    async def scenario(api: Api) -> None:
        call_id = await a_call(api)
        ids = {"unknown": "5deb67aa-d54d-4536-9a25-a29813b3bddd", "not-a-uuid": "x' OR 1=1",
               "other-account": call_id}
        if which == "other-account":
            await api.switch_account("other")
        response = await post(api, route, ids[which], BODIES[route])

        assert response.status_code == 404
        assert error_of(response) == "CALL_NOT_FOUND"
        check_response(response, route)
        assert nothing_asked(api)

    run_api(tmp_path, scenario)


@pytest.mark.parametrize("route", ROUTES)
def test_the_key_and_the_origin_policy_apply(tmp_path: Path, route: str) -> None:
    async def scenario(api: Api) -> None:
        await api.restrict(origins=("https://crm.example.com",))
        call_id = await a_call(api)
        anonymous = await api.client.post(route.format(call_id=call_id),
                                          json=BODIES[route] or {})
        foreign = await post(api, route, call_id, BODIES[route],
                             Origin="https://evil.example")
        allowed = await post(api, route, call_id, BODIES[route],
                             Origin="https://crm.example.com")

        assert anonymous.status_code == 401 and error_of(anonymous) == "UNAUTHORIZED"
        assert foreign.status_code == 403 and error_of(foreign) == "ORIGIN_NOT_ALLOWED"
        for response in (anonymous, foreign):
            check_response(response, route)
        assert allowed.status_code == 200
        check_response(allowed, route)
        assert len(api.calls.added) + len(api.calls.hung_up) + len(api.calls.dtmf) == 1

    run_api(tmp_path, scenario)


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_over_the_limit_is_413(tmp_path: Path, route: str) -> None:
    async def scenario(api: Api) -> None:
        response = await post(api, route, await a_call(api), {"digits": "1" * 2000})

        assert response.status_code == 413
        assert error_of(response) == "PAYLOAD_TOO_LARGE"
        check_response(response, route)
        assert nothing_asked(api)

    run_api(tmp_path, scenario, max_body_bytes=1024)
