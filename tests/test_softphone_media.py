"""The browser leg's media, in real headless Chromium: WebRTC into the relay and back.

A page with a fake microphone (a sine WAV) calls a tiny signalling server whose answer
comes from :class:`BrowserMedia`; the browser's leg endpoint is bridged in a :class:`Room`
with an :class:`RtpPeer` "customer" playing 1 kHz. The page must hear 1 kHz (AnalyserNode)
and the customer must hear the microphone's tone (FFT), with PCMU end to end or, when the
browser leaves PCMU out, through Opus. A 600 Hz microphone is the negative control: the
440 Hz check that passes above must fail on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import uvicorn
from playwright.async_api import BrowserContext
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from browser import chromium
from callbridge.media.g711 import ulaw_decode
from callbridge.media.relay import Room
from callbridge.softphone.webrtc import MAX_QUEUED_FRAMES, BrowserMedia, RelayTrack
from rtp_peer import Lab, RtpPeer, dominant_frequency, level_at, run_lab

PAGE = Path(__file__).parent / "softphone_fixtures" / "page.html"
CUSTOMER_HZ = 1000.0
#: FFT bins are 8000/N Hz wide at 8 kHz (N = 50 packets -> 1 Hz); the page's are ~6 Hz.
TOLERANCE_HZ = 15.0
#: Packets the customer must hear of the browser's tone before it is analysed (1 s).
LOUD_PACKETS = 50


@dataclass(frozen=True)
class Heard:
    """What each end heard in one browser call."""

    page_hz: float | None
    customer_audio: np.ndarray
    codec: str | None
    page_codec: str | None


def hears_tone(audio: np.ndarray, hz: float) -> bool:
    """The tone check: ``hz`` dominates ``audio`` (8 kHz samples)."""
    return abs(dominant_frequency(audio) - hz) <= TOLERANCE_HZ


def loud(payload: bytes) -> bool:
    return float(np.sqrt(np.mean(ulaw_decode(payload).astype(np.float64) ** 2))) > 500


def loud_audio(peer: RtpPeer) -> list[bytes]:
    return [p.payload for p in peer.packets(0) if loud(p.payload)]


@asynccontextmanager
async def signalling(media: BrowserMedia) -> Any:
    """The test page and ``POST /offer`` (SDP in, BrowserMedia's answer out) on 127.0.0.1."""

    async def page(_: Request) -> Response:
        return HTMLResponse(PAGE.read_text())

    async def offer(request: Request) -> Response:
        answer = await media.answer((await request.body()).decode())
        return PlainTextResponse(answer, media_type="application/sdp")

    app = Starlette(routes=[Route("/", page), Route("/offer", offer, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, lifespan="off", http="h11", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def browser_call(lab: Lab, context: BrowserContext, codec: str) -> Heard:
    """One page's call through a Room with the 1 kHz customer; what each end heard."""
    media = BrowserMedia(asyncio.get_running_loop())
    try:
        customer = await lab.peer()
        customer_leg = await lab.leg("customer", customer, event_pt=None)
        agent_leg = await lab.leg("agent")
        agent_leg.set_media(media.leg_media)
        media.connect(agent_leg.local_address)
        room = Room()
        room.add(agent_leg)
        room.add(customer_leg)
        customer.send_tone(customer_leg.local_address, CUSTOMER_HZ)

        async with signalling(media) as url:
            page = await context.new_page()
            await page.goto(f"{url}/?codec={codec}")
            await page.wait_for_function("window.state.status !== 'starting'", timeout=10_000)
            state = await page.evaluate("window.state")
            assert state["status"] == "negotiated", state
            # The page hears the customer: poll its analyser, bounded.
            with contextlib.suppress(PlaywrightTimeoutError):  # asserted below, with what it heard
                await page.wait_for_function(
                    f"Math.abs((window.dominantHz() || 0) - {CUSTOMER_HZ}) < {TOLERANCE_HZ}",
                    polling=100,
                    timeout=10_000,
                )
            page_hz = await page.evaluate("window.dominantHz()")
            # The customer hears the microphone: a second of loud audio after it starts.
            await customer.wait_until(lambda: len(loud_audio(customer)) >= LOUD_PACKETS, 10.0)
            audio = ulaw_decode(b"".join(loud_audio(customer)[-LOUD_PACKETS:]))
            await page.close()
        room.close()
        return Heard(page_hz, audio, media.codec, state["codec"])
    finally:
        await media.close()


def run_browser_call(microphone_hz: float, codec: str = "pcmu") -> Heard:
    heard: list[Heard] = []

    async def scenario(lab: Lab) -> None:
        async with chromium(microphone_hz) as context:
            heard.append(await browser_call(lab, context, codec))

    run_lab(scenario, timeout=30.0)
    return heard[0]


def test_pcmu_end_to_end_page_hears_the_customer_and_the_customer_hears_the_microphone() -> None:
    heard = run_browser_call(440.0)
    assert heard.codec == "PCMU" and heard.page_codec == "PCMU"
    assert heard.page_hz == pytest.approx(CUSTOMER_HZ, abs=TOLERANCE_HZ)
    assert hears_tone(heard.customer_audio, 440.0), dominant_frequency(heard.customer_audio)


def test_opus_when_the_browser_leaves_pcmu_out_is_transcoded_both_ways() -> None:
    heard = run_browser_call(440.0, codec="opus")
    assert heard.codec == "opus" and heard.page_codec == "opus"
    assert heard.page_hz == pytest.approx(CUSTOMER_HZ, abs=TOLERANCE_HZ)
    assert hears_tone(heard.customer_audio, 440.0), dominant_frequency(heard.customer_audio)


def test_negative_control_a_600_hz_microphone_fails_the_440_hz_check() -> None:
    heard = run_browser_call(600.0)
    assert not hears_tone(heard.customer_audio, 440.0)
    assert hears_tone(heard.customer_audio, 600.0), dominant_frequency(heard.customer_audio)
    assert level_at(heard.customer_audio, 440.0) < 0.05


# -- the shim without a browser -------------------------------------------------------------


def test_relay_track_passes_pcmu_through_and_decodes_for_opus_with_a_bounded_queue() -> None:
    async def main() -> None:
        track = RelayTrack()
        track.passthrough = True
        payloads = [bytes([n]) * 160 for n in range(MAX_QUEUED_FRAMES + 2)]
        for payload in payloads:
            track.push(payload)
        assert track.dropped == 2  # the oldest go: the browser never lags the call
        first = await track.recv()
        assert isinstance(first, av.Packet) and bytes(first) == payloads[2]
        track.passthrough = False
        second = await track.recv()
        assert isinstance(second, av.AudioFrame)
        assert (second.sample_rate, second.samples, second.pts) == (8000, 160, 160)
        assert np.array_equal(second.to_ndarray().reshape(-1), ulaw_decode(payloads[3]))
        for _ in range(MAX_QUEUED_FRAMES - 2):
            await track.recv()
        silence = await track.recv()  # nothing queued: silence, on time
        assert isinstance(silence, av.AudioFrame) and not silence.to_ndarray().any()
        track.stop()

    asyncio.run(main())


async def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll ``predicate`` on the loop until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_only_the_connected_leg_endpoint_feeds_the_browser() -> None:
    async def scenario(lab: Lab) -> None:
        media = BrowserMedia(asyncio.get_running_loop())
        media.track.passthrough = True
        try:
            leg = await lab.leg("agent")
            leg.set_media(media.leg_media)
            media.connect(leg.local_address)
            stranger = await lab.peer()  # RTP Bleed: anyone may aim at the shim's port
            stranger.send_tone(media.rtp_address, 440.0, frames=3)
            now = asyncio.get_running_loop().time()
            for n in range(2):
                leg.tx.send_generated(bytes([n]) * 160, 0, 160, now + n * 0.02)
            await eventually(lambda: media.rtp_in == 2 and media.strangers == 3)
            heard = [bytes(await media.track.recv()) for _ in range(2)]
            assert heard == [bytes([0]) * 160, bytes([1]) * 160]
        finally:
            await media.close()

    run_lab(scenario)
