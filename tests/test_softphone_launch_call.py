"""The launch-URL Call flow (issue 6): a CRM's launch token opens the softphone with the call
ready, the agent clicks Call, and the call runs as ``POST /calls`` with ``crm_username`` would,
except that nothing rings: the page's offer answers leg 1 at once and the customer is dialled.

The whole server, SIPp as the trunk (by_number), headless Chromium and Firefox with a 440 Hz
microphone.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import soundfile
from starlette.exceptions import StarletteDeprecationWarning

from api_support import FakeCalls
from browser import BROWSERS
from callbridge.media.g711 import ulaw_decode
from callbridge.softphone.auth import SESSION_COOKIE, mint_launch_token
from callbridge.softphone.leg import BrowserPhone
from e2e_support import dominant_hz, legs_of, rig, run
from rtp_sniffer import LoopbackRtpSniffer, can_sniff
from sipp import by_number_trunk, free_udp_port
from softphone_support import PASSWORD, PUBLIC_URL, Softphone, make_softphone
from test_softphone_calls import (
    AGENT,
    CUSTOMER_HANGS_UP,
    TOLERANCE_HZ,
    page_hears,
    page_until,
    signed_in_page,
)

with warnings.catch_warnings():
    # Starlette 1.x would rather its test client ran on httpx2; httpx does the same job here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

LAUNCH_SECRET = "lsec_launch-test"
CALLER_ID = "+918069001234"
OFFER = "v=0 (the page's offer: BrowserPhone answers it when the call rings the agent)"


@pytest.mark.sipp
@pytest.mark.skipif(not can_sniff(), reason="capturing what the customer heard needs root")
@pytest.mark.parametrize("browser", BROWSERS)
def test_a_launched_call_clicked_on_the_page_is_placed_heard_and_reported(
        tmp_path: Path, browser: str) -> None:
    media_port = free_udp_port()
    call_ids: list[str] = []

    async def body() -> None:
        trunk = by_number_trunk(calls=1, variables={"hangup_ms": 3000}, recv_timeout=20,
                                extra_args=("-mp", str(media_port)))
        async with trunk, rig(trunk, tmp_path) as r, signed_in_page(r, browser) as page:
            store = r.server.store
            assert store is not None
            await store.set_launch_secret(r.account.id, LAUNCH_SECRET)
            account = await store.get_account(r.account.id)
            assert account is not None
            token = mint_launch_token(account, AGENT, CUSTOMER_HANGS_UP, "crm-launch-1",
                                      now=datetime.now(UTC).timestamp())
            url = f"{r.server.settings.http.public_url}/softphone/launch?token={token}"
            await page.goto(url)
            assert "ticket=" in page.url and "token=" not in page.url  # spent, carried on
            await page.click("#call", timeout=10_000)  # the user gesture that dials
            heard = await page_hears(page, 1000.0)
            assert heard == pytest.approx(1000.0, abs=TOLERANCE_HZ)
            payload = await r.callback()
            assert payload["status"] == "ANSWER" and payload["crm_username"] == AGENT
            assert payload["uuid"] == "crm-launch-1"
            call_ids.append(payload["call_id"])
            view = await r.view(payload["call_id"])
            assert legs_of(view) == [("agent", "LEFT", None), ("destination", "LEFT", None)]
            await page_until(page, "document.getElementById('state').textContent"
                                   ".startsWith('Call ended')", 5.0)
            assert await trunk.wait() == 0, trunk.report()
            again = await page.goto(url)  # a launch token works once
            assert again is not None and again.status == 403
        assert [m.request_uri.split("@")[0] for m in trunk.received("INVITE")] == [  # type: ignore[union-attr]
            f"sip:{CUSTOMER_HANGS_UP}"]  # the agent was the page: it offered, nothing rang

    with LoopbackRtpSniffer(dst_port=media_port) as sniffer:
        run(body, timeout=90)
    # The customer heard the agent's microphone (the fake 440 Hz capture), decoded off lo.
    to_customer = max(sniffer.streams().values(), key=len)
    heard = ulaw_decode(b"".join(to_customer[-100:-10]))
    assert dominant_hz(heard.astype(float)) == pytest.approx(440.0, abs=TOLERANCE_HZ)
    # The recording: the page (agent) on the left, the customer on the right.
    audio, rate = soundfile.read(tmp_path / "recordings" / f"crm_{call_ids[0]}.wav",
                                 dtype="int16")
    middle = audio[rate // 2: -rate // 2]
    assert dominant_hz(middle[:, 0]) == pytest.approx(440.0, abs=TOLERANCE_HZ)
    assert dominant_hz(middle[:, 1]) == pytest.approx(1000.0, abs=TOLERANCE_HZ)


# -- the server's side of a call message, without a browser ---------------------------------


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Softphone]:
    softphone = asyncio.run(make_softphone(tmp_path))
    asyncio.run(softphone.store.add_caller_id(softphone.account.id, CALLER_ID))
    softphone.presence.calls = BrowserPhone(softphone.presence)
    yield softphone
    asyncio.run(softphone.store.close())


@pytest.fixture
def ws(phone: Softphone) -> Iterator[Any]:
    with TestClient(phone.app, base_url=PUBLIC_URL) as client:
        response = client.post("/softphone/signin", json={
            "account": "acme", "crm_username": AGENT, "password": PASSWORD})
        headers = {"cookie": f"{SESSION_COOKIE}={response.cookies[SESSION_COOKIE]}",
                   "origin": PUBLIC_URL}
        with client.websocket_connect("/softphone/ws", headers=headers) as socket:
            socket.client = client
            yield socket


def call(ws: Any, **fields: Any) -> Any:
    """Send a call message; the server's answer (an error), or the echo of a state message
    sent after it when the call was placed (placing answers nothing until the agent leg)."""
    ws.send_json({"type": "call", "sdp": OFFER, **fields})
    ws.send_json({"type": "state", "sync": True})
    answer = ws.receive_json()
    if answer["type"] == "error":
        assert ws.receive_json() == {"type": "state", "sync": True}
    return answer


def started(phone: Softphone) -> list[Any]:
    calls = phone.app.state.ctx.calls
    assert isinstance(calls, FakeCalls)
    return calls.started


def test_a_call_message_places_the_agents_call_once(phone: Softphone, ws: Any) -> None:
    assert call(ws, to_number="9876543104", uuid="u-1") == {"type": "state", "sync": True}
    [placed] = started(phone)
    assert (placed.to_number, placed.crm_username, placed.uuid, placed.from_number) == (
        "+919876543104", AGENT, "u-1", CALLER_ID)  # the sole caller ID when none is given
    browser = phone.presence.calls
    assert isinstance(browser, BrowserPhone) and browser.placed[placed.call_id][0] == OFFER
    # Idempotent on (account, uuid): the same call again dials nothing; another is 409's code.
    again = call(ws, to_number="+91 98765 43104", uuid="u-1", from_number=CALLER_ID)
    assert again["type"] == "error" and again["code"] == "ALREADY_PLACED"
    other = call(ws, to_number="9876543100", uuid="u-1")
    assert (other["code"], other["reason"]) == ("DUPLICATE_UUID", "DUPLICATE_UUID")
    assert len(started(phone)) == 1


@pytest.mark.parametrize(("fields", "code"), [
    ({"to_number": "12345", "uuid": "u-2"}, "INVALID_NUMBER"),
    ({"to_number": "9876543104"}, "MISSING_FIELD"),
    ({"to_number": "9876543104", "uuid": "u-2", "from_number": "+918000000000"},
     "CALLER_ID_NOT_ALLOWED"),
    ({"to_number": 9876543104, "uuid": "u-2"}, "INVALID_FIELD"),
    ({"to_number": "9876543104", "uuid": "u-2", "ticket": "v1.forged.ticket"}, "TICKET_INVALID"),
    ({"to_number": "9876543104", "uuid": "u-2", "sdp": ""}, "BAD_MESSAGE"),
])
def test_a_bad_call_message_is_refused_with_the_apis_code(
        phone: Softphone, ws: Any, fields: dict[str, Any], code: str) -> None:
    answer = call(ws, **fields)
    assert answer["type"] == "error" and answer["code"] == code, answer
    assert started(phone) == []


def test_a_ticket_authorises_only_its_own_call(phone: Softphone, ws: Any) -> None:
    token = mint_launch_token(phone.account, AGENT, "9876543104", "u-3",
                              now=phone.now.timestamp())
    launched = ws.client.get(f"/softphone/launch?token={token}", follow_redirects=False)
    assert launched.status_code == 303
    ticket = parse_qs(urlsplit(launched.headers["location"]).query)["ticket"][0]
    other = call(ws, to_number="9876543100", uuid="u-3", ticket=ticket)
    assert other["code"] == "TICKET_INVALID"
    assert call(ws, to_number="9876543104", uuid="u-3", ticket=ticket)["type"] == "state"
    assert [c.uuid for c in started(phone)] == ["u-3"]


def test_a_trunk_that_is_down_places_nothing(phone: Softphone, ws: Any) -> None:
    phone.app.state.ctx.calls.unavailable = "no SIP trunk is configured"
    assert call(ws, to_number="9876543104", uuid="u-4")["code"] == "TRUNK_UNAVAILABLE"
