"""DTMF as SIP INFO end to end: when the customer's phone answers without telephone-event,
``POST /calls/{id}/dtmf`` presses the keys as in-dialog INFO requests (application/dtmf-relay,
one per key) instead of RFC 4733 events. SIPp plays both parties with uas_info_dtmf.xml
(PCMU only, every INFO answered 200), and its message log shows what reached each leg.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from api_support import check_response, error_of
from e2e_support import bridged, rig, run, wait_for_view
from sipp import Sipp, SippMessage

pytestmark = pytest.mark.sipp

AGENT = "9876543400"
CUSTOMER = "9876543100"
DTMF = "/calls/{call_id}/dtmf"


def no_telephone_event_trunk() -> Sipp:
    """SIPp answering both legs (agent, then customer) with PCMU only: two INVITEs."""
    return Sipp("uas_info_dtmf.xml", variables={"calls": 2}, recv_timeout=10)


def cseq(message: SippMessage) -> tuple[int, str]:
    number, method = (message.header("CSeq") or "").split()
    return int(number), method


def tag(value: str | None) -> str:
    return (value or "").rpartition(";tag=")[2]


def test_dtmf_to_a_customer_without_telephone_event_goes_as_one_info_per_key(
        tmp_path: Path) -> None:
    async def body() -> None:
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT, to_number=CUSTOMER)
            await wait_for_view(r, call_id, bridged)
            loop = asyncio.get_running_loop()
            pressed = loop.time()
            response = await r.http.post(f"/calls/{call_id}/dtmf", headers=r.auth,
                                         json={"digits": "12#"})
            assert response.status_code == 200, response.text
            check_response(response, DTMF)
            # Paced like keypresses (100 ms + 60 ms gap), not a burst that UDP may reorder.
            assert loop.time() - pressed >= 2 * 0.16
            # The INFOs left before the 200 above; the BYE goes out after them.
            hangup = await r.http.post(f"/calls/{call_id}/hangup", headers=r.auth)
            assert hangup.status_code == 200, hangup.text
            payload = await r.callback()
            assert payload["status"] == "ANSWER" and payload["hangup_source"] == "api"
            assert await trunk.wait() == 0, trunk.report()

    trunk = no_telephone_event_trunk()
    run(body)
    agent, customer = trunk.calls_to(AGENT), trunk.calls_to(CUSTOMER)
    assert [m for m in agent if m.method == "INFO"] == [], trunk.report()

    invite = next(m for m in customer if m.method == "INVITE")
    answer = next(m for m in customer if m.status == 200 and cseq(m)[1] == "INVITE")
    infos = [m for m in customer if m.direction == "received" and m.method == "INFO"]
    assert len(infos) == 3, trunk.report()
    for info, key in zip(infos, "12#", strict=True):  # in the order pressed
        assert info.header("Content-Type") == "application/dtmf-relay"
        assert info.body == f"Signal={key}\r\nDuration=100\r\n"
        assert info.header("Content-Length") == str(len(info.body))
        # In the customer's dialog: its Call-ID and tags (the To tag is the one SIPp's 200
        # gave the INVITE), sent to the Contact of that 200.
        assert info.header("Call-ID") == invite.header("Call-ID")
        assert tag(info.header("From")) == tag(invite.header("From"))
        assert tag(info.header("To")) == tag(answer.header("To"))
        assert info.request_uri == (answer.header("Contact") or "").strip("<>")
    numbers = [cseq(m)[0] for m in infos]
    assert [cseq(m)[1] for m in infos] == ["INFO"] * 3
    assert cseq(invite)[0] < numbers[0] < numbers[1] < numbers[2], numbers
    answered = [cseq(m) for m in customer if m.direction == "sent" and m.status == 200]
    assert all((n, "INFO") in answered for n in numbers), trunk.report()
    # Each INFO reached SIPp once (answered in time: no retransmission), all before the BYE.
    requests = [m.method for m in customer if m.direction == "received" and m.method != "ACK"]
    assert requests == ["INVITE", "INFO", "INFO", "INFO", "BYE"], trunk.report()


def test_invalid_digits_are_refused_and_send_no_info(tmp_path: Path) -> None:
    async def body() -> None:
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT, to_number=CUSTOMER)
            await wait_for_view(r, call_id, bridged)
            response = await r.http.post(f"/calls/{call_id}/dtmf", headers=r.auth,
                                         json={"digits": "12a"})  # a-d are not keys: A-D are
            assert response.status_code == 400, response.text
            assert error_of(response) == "INVALID_DIGITS"
            check_response(response, DTMF)
            assert bridged(await r.view(call_id))  # the call goes on
            await r.http.post(f"/calls/{call_id}/hangup", headers=r.auth)
            assert (await r.callback())["status"] == "ANSWER"
            assert await trunk.wait() == 0, trunk.report()

    trunk = no_telephone_event_trunk()
    run(body)
    assert trunk.received("INFO") == []  # not even the valid "12" before the "a"
    assert len(trunk.received("INVITE")) == 2  # the refusal came from a bridged call
