"""Headless browsers for the softphone tests: Debian's ``chromium``, driven by Playwright, and
(in firefox.py) Debian's ``firefox-esr``; :func:`browser_page` opens a tab in either.

Chromium is the system one (``/usr/bin/chromium``, installed by scripts/test), never a
Playwright download. Its microphone is a WAV file (Chromium's fake capture device, looped),
so a test knows exactly what the agent "says". The network here is closed: the flags keep
Chromium from reaching for update, sync and QUIC hosts it cannot get to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile
from playwright.async_api import BrowserContext, Page, async_playwright

from firefox import FirefoxPage, firefox

CHROMIUM = Path("/usr/bin/chromium")
#: The browsers the softphone must work in (issue 6): Debian's chromium and firefox-esr.
BROWSERS = ("chromium", "firefox")
WAV_RATE = 48000

#: Quiet, headless, offline: no first-run UI, no background fetches, no GPU.
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
)


def require_chromium() -> Path:
    """The Chromium binary; skip when it is absent and we could not have installed it.

    As root, scripts/test installs it, so its absence there is a failure, not a skip.
    """
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} missing (not root: run `sudo apt-get install chromium`)")
    pytest.fail(f"{CHROMIUM} missing: scripts/test installs Debian's chromium as root")


def write_tone_wav(path: Path, hz: float, seconds: float = 2.0, amplitude: float = 0.5) -> Path:
    """A 16-bit mono 48 kHz sine; a whole number of cycles, so the capture loop is seamless."""
    samples = int(WAV_RATE * seconds)
    cycles = round(hz * seconds)
    t = np.arange(samples) / samples
    pcm = (amplitude * 32767 * np.sin(2 * np.pi * cycles * t)).astype(np.int16)
    soundfile.write(path, pcm, WAV_RATE, subtype="PCM_16")
    return path


def fake_microphone_flags(wav: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--allow-loopback-in-peer-connection",
    ]


@asynccontextmanager
async def chromium(microphone_hz: float) -> AsyncIterator[BrowserContext]:
    """A headless Chromium whose microphone plays ``microphone_hz``; yields its context."""
    binary = require_chromium()
    workdir = Path(tempfile.mkdtemp(prefix="callbridge-chromium-"))
    try:
        wav = write_tone_wav(workdir / "mic.wav", microphone_hz)
        profile = workdir / "profile"
        profile.mkdir()
        async with async_playwright() as playwright:
            # A persistent context on a fresh, empty directory: Playwright refuses a
            # --user-data-dir flag, and a profile of our own is the one we can clean up.
            context = await playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(binary),
                headless=True,
                args=[*BASE_FLAGS, *fake_microphone_flags(wav)],
            )
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@asynccontextmanager
async def browser_page(browser: str, microphone_hz: float) -> AsyncIterator[Page | FirefoxPage]:
    """A tab of a fresh headless ``browser`` (one of :data:`BROWSERS`) whose microphone plays
    ``microphone_hz``; both kinds of tab offer the Page methods the softphone tests use."""
    if browser == "firefox":
        async with firefox(microphone_hz) as page:
            yield page
        return
    assert browser == "chromium", browser
    async with chromium(microphone_hz) as context:
        yield await context.new_page()
