"""The softphone page's own behaviour in headless Chromium (and Firefox for ICE), against the
softphone app on uvicorn (the call service is api_support's FakeCalls; calls ring the page
through a real BrowserPhone): what the agent is told when signed out by a password change or
when the microphone is refused, and how long Answer takes when the configured STUN server
never answers.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from playwright.async_api import Page, async_playwright

from api_support import FakeCalls
from browser import BASE_FLAGS, BROWSERS, browser_page, chromium, require_chromium, write_tone_wav
from callbridge.api.app import ApiContext, create_app
from callbridge.b2bua.call import AGENT as AGENT_LEG
from callbridge.b2bua.call import LegAnswered, LegFailed
from callbridge.config import HttpSettings, Settings, SoftphoneSettings, StorageSettings
from callbridge.media.g711 import ulaw_decode
from callbridge.softphone.auth import REVOKED
from callbridge.softphone.leg import BrowserPhone
from firefox import FirefoxPage
from rtp_peer import RtpPeer, dominant_frequency
from softphone_support import AGENT, PASSWORD, Softphone, make_softphone, serve_on
from test_softphone_calls import page_until
from test_softphone_revocation import NEW_PASSWORD, new_password

MICROPHONE_HZ = 440.0
TOLERANCE_HZ = 15.0
#: The presence's re-check interval here (5 s in production): how soon a revoked page hears.
RECHECK = 0.2
#: Answer to two-way audio with a STUN server that never answers, at most: the page's 3 s
#: gathering bound, the server's own (aioice gives up on STUN after 5 s), ICE and DTLS.
#: Unbounded, the page waited for the browser's STUN retransmissions before it offered:
#: 40 s in Chromium, over 30 s in Firefox.
ANSWER_BOUND = 15.0
TIMEOUT = 10.0

NOTICE = "document.getElementById('notice')"
SIGNIN_SHOWN = "!document.getElementById('signin').hidden"
SIGNED_IN = "document.getElementById('who').textContent.startsWith('Signed in as')"


@dataclass
class Served:
    phone: Softphone
    browser: BrowserPhone
    url: str
    port: int
    #: The uvicorn server and its task while the app is served.
    running: tuple[uvicorn.Server, asyncio.Task[None]] | None = None

    @property
    def calls(self) -> FakeCalls:
        calls = self.phone.app.state.ctx.calls
        assert isinstance(calls, FakeCalls)
        return calls

    async def start(self) -> None:
        """Serve the app on :attr:`port` (again, after :meth:`stop`)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.running = await serve_on(self.phone.app, listener)

    async def stop(self) -> None:
        """Stop serving, as a server restart does: open WebSockets are closed."""
        if self.running is not None:
            server, task = self.running
            self.running = None
            server.should_exit = True
            await asyncio.wait_for(task, TIMEOUT)


@asynccontextmanager
async def served(tmp_path: Path, ice_servers: str = "") -> AsyncIterator[Served]:
    """The softphone app on uvicorn at 127.0.0.1 (its public URL: the page's origin passes the
    WebSocket's Origin check), on the real clock (the browser drops a cookie that expired by
    its own), with ``[softphone] ice_servers``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    phone = await make_softphone(tmp_path, public_url=url)
    phone.presence.recheck_every = RECHECK
    softphone = SoftphoneSettings(ice_servers=ice_servers)
    settings = Settings(http=HttpSettings(public_url=url), softphone=softphone,
                        storage=StorageSettings(recordings_dir=str(tmp_path / "rec")))

    async def health() -> dict[str, bool]:
        return {"database": True}

    ctx = ApiContext(settings, phone.store, FakeCalls(), health, clock=lambda: datetime.now(UTC))
    phone.app = create_app(ctx, phone.presence)
    browser = BrowserPhone(phone.presence, softphone)
    phone.presence.calls = browser
    served = Served(phone, browser, url, port)
    try:
        await served.start()
        yield served
    finally:
        for leg in list(browser.legs.values()):
            await leg.hangup()
        await served.stop()
        await phone.store.close()


async def sign_in(page: Page | FirefoxPage, url: str, password: str = PASSWORD) -> None:
    """Through the page's own form; its WebSocket is open when this returns."""
    await page.goto(f"{url}/softphone")
    await page_until(page, SIGNIN_SHOWN)
    await page.fill("#account", "acme")
    await page.fill("#crm_username", AGENT)
    await page.fill("#password", password)
    await page.click("#signin-form button[type=submit]")
    await page_until(page, SIGNED_IN)


async def notice(page: Page | FirefoxPage) -> str | None:
    """The notice the agent sees, or None when it is hidden."""
    shown: str | None = await page.evaluate(f"{NOTICE}.hidden ? null : {NOTICE}.textContent")
    return shown


async def ring(served: Served, page: Page | FirefoxPage, call_id: str,
               endpoint: tuple[str, int]) -> asyncio.Queue[Any]:
    """Ring the agent's page with ``call_id`` (its audio to and from ``endpoint``); the leg's
    event queue, once the page shows Answer."""
    events: asyncio.Queue[Any] = asyncio.Queue()
    leg = await served.browser.ring(call_id, served.phone.account.id, AGENT, "9876543104",
                                    endpoint, events)  # fmt: skip
    assert leg is not None
    await page.wait_for_selector("#answer", state="visible", timeout=TIMEOUT * 1000)
    return events


# -- signed out by a password change ---------------------------------------------------------


def test_a_page_signed_out_by_a_password_change_says_why_on_the_signin_form(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as s, chromium(MICROPHONE_HZ) as context:
            page = await context.new_page()
            await sign_in(page, s.url)
            assert await notice(page) is None
            await new_password(s.phone)  # the admin command, in another process
            await page_until(page, SIGNIN_SHOWN)
            assert await notice(page) == REVOKED[0].upper() + REVOKED[1:] + "."
            assert await page.is_hidden("#phone")
            # Signing in again (the new password) clears it; signing out by hand says nothing.
            await sign_in(page, s.url, NEW_PASSWORD)
            assert await notice(page) is None
            await page.click("#signout")
            await page_until(page, SIGNIN_SHOWN)
            assert await notice(page) is None

    asyncio.run(asyncio.wait_for(main(), 90))


def test_a_sign_out_the_server_could_not_record_says_so_and_stays_signed_in(
        tmp_path: Path) -> None:
    """The server answers 503 when it cannot record the sign-out (its database down; shown
    over HTTP in test_softphone_revocation.py): the page must not look signed out."""

    async def main() -> None:
        async with served(tmp_path) as s, chromium(MICROPHONE_HZ) as context:
            page = await context.new_page()
            await sign_in(page, s.url)
            await page.route("**/softphone/signout",
                             lambda route: route.fulfill(status=503, body="storage unavailable"))
            await page.click("#signout")
            await page.wait_for_selector("#notice:not([hidden])", timeout=TIMEOUT * 1000)
            assert (await notice(page) or "").startswith("Sign out failed")
            assert await page.is_visible("#phone")
            assert await page.is_hidden("#signin")

    asyncio.run(asyncio.wait_for(main(), 90))


# -- a STUN server that never answers ---------------------------------------------------------


@pytest.mark.parametrize("browser", BROWSERS)
def test_answer_connects_promptly_when_the_stun_server_never_answers(
        tmp_path: Path, browser: str) -> None:
    """``[softphone] ice_servers`` names a STUN server on a port that is held open and never
    answers: both the page and the server ask it and hear nothing. Answer still brings two-way
    audio within ANSWER_BOUND: the page offers with its host candidates after 3 s."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # held, never read: no ICMP "unreachable" either

    async def main() -> None:
        stun = f"stun:127.0.0.1:{silent.getsockname()[1]}"
        customer = await RtpPeer.open()
        try:
            async with served(tmp_path, stun) as s, browser_page(browser, MICROPHONE_HZ) as page:
                await sign_in(page, s.url)
                events = await ring(s, page, "call-1", customer.address)
                loop = asyncio.get_running_loop()
                clicked = loop.time()
                await page.click("#answer")
                assert await asyncio.wait_for(events.get(), ANSWER_BOUND) == LegAnswered(
                    AGENT_LEG)
                answered = loop.time() - clicked
                # The agent's microphone reaches the customer: ICE and DTLS are through.
                await customer.wait_until(lambda: len(loud(customer)) >= 25,
                                          ANSWER_BOUND - answered)
                talking = loop.time() - clicked
                heard = ulaw_decode(b"".join(loud(customer)[-25:])).astype(np.float64)
                assert abs(dominant_frequency(heard) - MICROPHONE_HZ) < TOLERANCE_HZ
                assert await notice(page) is None
                print(f"{browser}, unanswered STUN: the server answered {answered:.1f} s after"
                      f" Answer, the customer heard the agent {talking:.1f} s after it")
        finally:
            customer.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 90))
        assert silent.recv(2048, socket.MSG_DONTWAIT)  # the STUN server was asked
    finally:
        silent.close()


def loud(peer: RtpPeer) -> list[bytes]:
    """The PCMU payloads ``peer`` received that carry sound (the page's microphone)."""
    payloads = [r.packet.payload for r in peer.received if r.packet.payload_type == 0]
    return [p for p in payloads if np.sqrt(np.mean(ulaw_decode(p).astype(np.float64) ** 2)) > 500]


# -- a refused microphone ---------------------------------------------------------------------


@asynccontextmanager
async def chromium_without_microphone() -> AsyncIterator[Page]:
    """A tab of a headless Chromium with a (fake) microphone that the site may not use: no
    fake permission UI, so getUserMedia's prompt is refused (NotAllowedError), as when the
    agent clicked Block."""
    binary = require_chromium()
    workdir = Path(tempfile.mkdtemp(prefix="callbridge-chromium-"))
    try:
        wav = write_tone_wav(workdir / "mic.wav", MICROPHONE_HZ)
        flags = [*BASE_FLAGS, "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={wav}", "--deny-permission-prompts"]
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(workdir / "profile"), executable_path=str(binary), headless=True,
                args=flags)  # fmt: skip
            try:
                yield await context.new_page()
            finally:
                await context.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_refused_microphone_says_what_to_do_next_for_call_and_for_answer(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as s, chromium_without_microphone() as page:
            await sign_in(page, s.url)
            # Placing: the launched call is ready; Call cannot get the microphone.
            await page.goto(f"{s.url}/softphone/launch?to_number=9876543104&uuid=u-1")
            await page_until(page, SIGNED_IN)
            await page.click("#call")
            await page_until(page, f"!{NOTICE}.hidden && {NOTICE}.textContent"
                                   ".startsWith('Microphone blocked')")  # fmt: skip
            placing = await notice(page)
            assert placing is not None and placing.endswith(", then press Call again."), placing
            assert s.calls.started == []  # nothing was dialled
            assert not await page.is_disabled("#call")  # ready to try again
            # Answering: the call rings, Answer cannot get the microphone, the call is declined.
            events = await ring(s, page, "call-2", ("127.0.0.1", 9))
            await page.click("#answer")
            assert await asyncio.wait_for(events.get(), TIMEOUT) == LegFailed(AGENT_LEG, 603,
                                                                              "DECLINED")
            answering = await notice(page)
            assert answering is not None
            assert answering.startswith("The call could not be answered. Microphone blocked.")
            assert answering.endswith(" before the next call.") and "Call again" not in answering

    asyncio.run(asyncio.wait_for(main(), 90))


# -- the server restarting -------------------------------------------------------------------


def test_a_page_keeps_reconnecting_while_the_server_is_down_and_then_is_served(
        tmp_path: Path) -> None:
    """The server stops (its WebSocket closes) and, while it is down, its port refuses
    every request: the page's session check fails, which is no sign-out. It must keep trying
    (its backoff) and be online again once the server is back."""

    async def main() -> None:
        async with served(tmp_path) as s, chromium(MICROPHONE_HZ) as context:
            page = await context.new_page()
            await sign_in(page, s.url)
            await s.stop()
            tries: list[int] = []

            async def refuse(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                tries.append(1)  # a session check or a WebSocket: dropped unanswered
                writer.close()

            down = await asyncio.start_server(refuse, "127.0.0.1", s.port, reuse_address=True)
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + TIMEOUT
                while len(tries) < 2:  # bounded: the page's first retry comes after 1 s
                    assert loop.time() < deadline, f"the page gave up after {len(tries)} tries"
                    await asyncio.sleep(0.05)
            finally:
                down.close()
                await down.wait_closed()
            assert await page.is_visible("#phone")  # still the phone: nobody signed out
            await s.start()
            deadline = loop.time() + 3 * TIMEOUT  # the backoff may have reached 8 s
            while not s.phone.presence.is_online(s.phone.account.id, AGENT):
                assert loop.time() < deadline, "the page did not reconnect"
                await asyncio.sleep(0.05)
            await page_until(page, "document.getElementById('state').textContent === 'Ready'")
            assert await notice(page) is None

    asyncio.run(asyncio.wait_for(main(), 90))
