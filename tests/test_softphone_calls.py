"""The browser softphone as the agent leg of real calls: the whole server, SIPp as the trunk,
headless Chromium (fake 440 Hz microphone) signed in on the softphone page; the key flows
(answer, hang up) also in headless Firefox.

POST /calls with ``crm_username`` rings the open page instead of dialling SIP; Answer brings
the page's WebRTC audio into the call's room through BrowserMedia's loopback RTP, so the page
hears the customer (1 kHz), the recording has the microphone on the left and the customer on
the right, and the callback reports the outcome. Decline is BUSY; the page hanging up is the
agent hanging up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import soundfile
from playwright.async_api import Page

from browser import BROWSERS, browser_page
from callbridge.softphone.auth import hash_password
from e2e_support import Rig, dominant_hz, legs_of, rig, run
from firefox import FirefoxPage
from sipp import by_number_trunk

pytestmark = pytest.mark.sipp

AGENT = "agent.017"
PASSWORD = "correct horse battery"
CUSTOMER_1K = "9876543100"  # answers, plays 1 kHz, keeps the call until BYE
CUSTOMER_HANGS_UP = "9876543104"  # answers, plays 1 kHz, hangs up after hangup_ms
MICROPHONE_HZ = 440.0
TOLERANCE_HZ = 15.0


@asynccontextmanager
async def signed_in_page(r: Rig, browser: str = "chromium") -> AsyncIterator[Page | FirefoxPage]:
    """The agent's softphone page in ``browser``, signed in through its own form, its
    WebSocket open."""
    assert r.server.store is not None
    await r.server.store.add_agent(r.account.id, AGENT)
    await r.server.store.set_agent_password(r.account.id, AGENT, hash_password(PASSWORD))
    async with browser_page(browser, MICROPHONE_HZ) as page:
        await page.goto(f"{r.server.settings.http.public_url}/softphone")
        await page.fill("#account", "acme")
        await page.fill("#crm_username", AGENT)
        await page.fill("#password", PASSWORD)
        await page.click("#signin-form button[type=submit]")
        await page_until(page, "document.getElementById('who').textContent"
                               ".startsWith('Signed in as')")
        assert r.server.presence.is_online(r.account.id, AGENT)
        yield page


async def page_until(page: Page | FirefoxPage, expression: str, timeout: float = 10.0) -> None:
    """Poll ``expression`` in the page until it is true; fail after ``timeout`` seconds.

    Polled from here: the page's CSP (no 'unsafe-eval') refuses Playwright's in-page polling.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await page.evaluate(expression):
        assert loop.time() < deadline, f"timed out waiting for {expression}"
        await asyncio.sleep(0.1)


async def page_hears(page: Page | FirefoxPage, hz: float, timeout: float = 10.0) -> float | None:
    """Poll the page's analyser until it hears ``hz`` (bounded); what it heard last."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        heard: float | None = await page.evaluate("window.dominantHz()")
        if (heard is not None and abs(heard - hz) < TOLERANCE_HZ) or loop.time() > deadline:
            return heard
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("browser", BROWSERS)
def test_answered_on_the_page_is_bridged_heard_recorded_and_reported(
        tmp_path: Path, browser: str) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1, variables={"hangup_ms": 4000}, recv_timeout=20)
        async with trunk, rig(trunk, tmp_path) as r, signed_in_page(r, browser) as page:
            call_id = await r.place(crm_username=AGENT, to_number=CUSTOMER_HANGS_UP)
            await page.wait_for_selector("#answer", state="visible", timeout=10_000)
            assert CUSTOMER_HANGS_UP in await page.inner_text("#incoming-text")
            await page.click("#answer")
            heard = await page_hears(page, 1000.0)
            assert heard == pytest.approx(1000.0, abs=TOLERANCE_HZ)
            await page_until(page, "document.getElementById('state').textContent"
                                   " === 'Connected'", 2.0)  # told of the bridge
            payload = await r.callback()
            assert payload["call_id"] == call_id and payload["status"] == "ANSWER"
            assert payload["crm_username"] == AGENT
            assert payload["hangup_source"] == "destination"
            view = await r.view(call_id)
            assert legs_of(view) == [("agent", "LEFT", None), ("destination", "LEFT", None)]
            await page_until(page, "document.getElementById('state').textContent"
                                   ".startsWith('Call ended')", 5.0)  # the server told the page
            assert await trunk.wait() == 0, trunk.report()
        assert [m.request_uri.split("@")[0] for m in trunk.received("INVITE")] == [  # type: ignore[union-attr]
            f"sip:{CUSTOMER_HANGS_UP}"]  # only the customer: the agent was the page
        audio, rate = soundfile.read(tmp_path / "recordings" / f"crm_{call_id}.wav",
                                     dtype="int16")
        talk = len(audio) / rate
        assert rate == 8000 and audio.shape[1] == 2 and abs(talk - 4.0) < 0.6
        middle = audio[int(0.5 * rate): int((talk - 0.3) * rate)]
        assert abs(dominant_hz(middle[:, 0]) - MICROPHONE_HZ) < TOLERANCE_HZ  # the agent
        assert abs(dominant_hz(middle[:, 1]) - 1000) < TOLERANCE_HZ  # the customer

    run(body, timeout=90)


def test_declined_on_the_page_is_busy_and_dials_nobody(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1)
        async with trunk, rig(trunk, tmp_path) as r, signed_in_page(r) as page:
            call_id = await r.place(crm_username=AGENT, to_number=CUSTOMER_1K)
            await page.click("#decline", timeout=10_000)
            payload = await r.callback()
            assert payload["status"] == "BUSY"
            view = await r.view(call_id)
            assert [(leg["status"], leg["sip_code"], leg["reason"]) for leg in view["legs"]] == [
                ("FAILED", 603, "DECLINED")]
            assert not await page.is_visible("#answer")
            trunk.stop()
        assert trunk.received("INVITE") == []

    run(body, timeout=60)


@pytest.mark.parametrize("browser", BROWSERS)
def test_hanging_up_on_the_page_ends_the_call_as_the_agent(tmp_path: Path, browser: str) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1, recv_timeout=20)
        async with trunk, rig(trunk, tmp_path) as r, signed_in_page(r, browser) as page:
            # Clicking Answer is the confirmation: no keypress is waited for.
            call_id = await r.place(crm_username=AGENT, to_number=CUSTOMER_1K,
                                    agent_confirm="dtmf")
            await page.click("#answer", timeout=10_000)
            assert await page_hears(page, 1000.0) == pytest.approx(1000.0, abs=TOLERANCE_HZ)
            await page.click("#hangup")
            assert await page.evaluate("window.dominantHz()") is None  # it stopped listening
            payload = await r.callback()
            assert payload["status"] == "ANSWER" and payload["hangup_source"] == "agent"
            view = await r.view(call_id)
            assert legs_of(view) == [("agent", "LEFT", None), ("destination", "LEFT", None)]
            assert await trunk.wait() == 0, trunk.report()  # the customer got a BYE

    run(body, timeout=60)


def test_closing_the_page_mid_call_is_the_agent_hanging_up(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1, recv_timeout=20)
        async with trunk, rig(trunk, tmp_path) as r, signed_in_page(r) as page:
            call_id = await r.place(crm_username=AGENT, to_number=CUSTOMER_1K)
            await page.click("#answer", timeout=10_000)
            assert await page_hears(page, 1000.0) == pytest.approx(1000.0, abs=TOLERANCE_HZ)
            await page.close()  # the WebSocket goes with it
            payload = await r.callback()
            assert payload["status"] == "ANSWER" and payload["hangup_source"] == "agent"
            assert legs_of(await r.view(call_id)) == [("agent", "LEFT", None),
                                                      ("destination", "LEFT", None)]
            assert await trunk.wait() == 0, trunk.report()

    run(body, timeout=60)


def test_an_unanswered_page_rings_out_and_is_told_so(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1)
        async with trunk, rig(trunk, tmp_path) as r, signed_in_page(r) as page:
            await r.place(crm_username=AGENT, to_number=CUSTOMER_1K, max_ring_time=5)
            await page.wait_for_selector("#answer", state="visible", timeout=10_000)
            payload = await r.callback()
            assert payload["status"] == "NO_ANSWER"
            await page_until(page, "document.getElementById('incoming').hidden", 5.0)
            assert r.server.calls is not None and r.server.calls.phone is not None
            assert r.server.calls.phone.legs == {}  # type: ignore[attr-defined]
            trunk.stop()
        assert trunk.received("INVITE") == []

    run(body, timeout=60)
