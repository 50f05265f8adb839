"""Headless Firefox for the softphone tests: Debian's ``firefox-esr``, driven over WebDriver BiDi.

The browser is the system one (``/usr/bin/firefox-esr``, installed by scripts/test). Playwright
cannot drive it (its own Firefox builds are not downloadable here, and its BiDi mode fails on
ESR at ``new_page``), but Firefox speaks WebDriver BiDi itself: ``--remote-debugging-port=0``
prints the WebSocket to talk to. :func:`firefox` yields a :class:`FirefoxPage` with the few
Playwright ``Page`` methods the softphone tests use, so one test body drives either browser::

    async with firefox(microphone_hz=440.0) as page:
        response = await page.goto("http://127.0.0.1:8080/softphone")
        await page.click("#answer", timeout=10_000)
        heard = await page.evaluate("window.dominantHz()")

The microphone is Firefox's fake capture device, a sine at ``microphone_hz`` (measured in
the page: 439.96 Hz for 440). There is no sound card here, so Firefox's mock audio backend
runs the Web Audio graph: without it every AudioContext stays "suspended", gesture or not.
Clicks are real pointer input (user gestures), and autoplay keeps Firefox's default policy.
The profile keeps Firefox offline and quiet.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets

FIREFOX = Path("/usr/bin/firefox-esr")
#: Seconds for the browser to start and for one BiDi command.
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 30.0
POLL_SECONDS = 0.1
_LISTENING = re.compile(rb"WebDriver BiDi listening on (ws://127\.0\.0\.1:\d+)")

#: The fake microphone, audio without a sound card, and WebRTC on 127.0.0.1.
MEDIA_PREFS: dict[str, bool | int | str] = {
    "media.navigator.streams.fake": True,  # a sine generator instead of a capture device
    # The microphone allowed, as after the agent's "Allow": Firefox then offers its real host
    # addresses. (media.navigator.permission.disabled would skip the prompt too, but leaves
    # the page unpermitted, so its candidates become mDNS names the server cannot resolve.)
    "permissions.default.microphone": 1,
    "media.cubeb.force_mock_context": True,  # no sound card: the mock backend runs Web Audio
    # Autoplay stays Firefox's default (blocked until a user gesture): the tests click for
    # real, so the page is shown to start its audio the way an agent's browser lets it.
    "media.peerconnection.ice.loopback": True,  # 127.0.0.1 candidates too, as Chromium's flag
}
#: Nothing reaches for the network (there is none): updates, telemetry, remote settings,
#: experiments, safe browsing, captive portal and connectivity checks, prefetching, DoH.
QUIET_PREFS: dict[str, bool | int | str] = {
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "nimbus.rollouts.enabled": False,
    "services.settings.server": "data:,",
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "data:,",
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.search.update": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.newtabpage.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "media.gmp-manager.updateEnabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.http.speculative-parallel-limit": 0,
    "network.trr.mode": 5,  # DNS over HTTPS off
}


def require_firefox() -> Path:
    """The Firefox binary; skip when it is absent and we could not have installed it.

    As root, scripts/test installs it, so its absence there is a failure, not a skip.
    """
    if FIREFOX.exists():
        return FIREFOX
    if os.geteuid() != 0:
        pytest.skip(f"{FIREFOX} missing (not root: run `sudo apt-get install firefox-esr`)")
    pytest.fail(f"{FIREFOX} missing: scripts/test installs Debian's firefox-esr as root")


def write_profile(profile: Path, microphone_hz: float) -> None:
    prefs = {**MEDIA_PREFS, "media.navigator.audio.fake_frequency": round(microphone_hz),
             **QUIET_PREFS}
    lines = [f"user_pref({json.dumps(name)}, {json.dumps(value)});" for name, value in
             prefs.items()]
    (profile / "user.js").write_text("\n".join(lines) + "\n", encoding="utf-8")


class BiDiError(Exception):
    """A BiDi command failed, or the page threw: the browser's own message."""


# -- the protocol: commands by id, events to listeners ----------------------------------------


class BiDi:
    """One WebDriver BiDi session over a WebSocket: :meth:`command` sends and awaits its
    reply; a reader task routes replies by id and hands events to the listeners."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self.socket = socket
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def command(self, method: str, params: dict[str, Any],
                      timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        if self._reader.done():
            raise BiDiError(f"{method}: the browser connection is closed")
        self._next_id += 1
        ident = self._next_id
        reply = self._waiting[ident] = asyncio.get_running_loop().create_future()
        try:
            await self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
            message = await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise TimeoutError(f"{method}: no reply from Firefox in {timeout} s") from None
        finally:
            self._waiting.pop(ident, None)
        if message.get("type") == "error":
            raise BiDiError(f"{method}: {message.get('error')}: {message.get('message')}")
        result: dict[str, Any] = message["result"]
        return result

    async def _read(self) -> None:
        why = "the browser connection closed"
        try:
            async for raw in self.socket:
                message = json.loads(raw)
                if message.get("type") == "event":
                    for listener in self.listeners:
                        listener(message["method"], message["params"])
                elif (reply := self._waiting.get(message.get("id", -1))) and not reply.done():
                    reply.set_result(message)
        except websockets.ConnectionClosed:
            pass
        except Exception as exc:  # a bad message or listener: the waiting commands say so
            why = f"reading from the browser failed: {exc!r}"
        for reply in self._waiting.values():
            if not reply.done():
                reply.set_exception(BiDiError(why))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.socket.close(), 5.0)


# -- values coming back from the page ---------------------------------------------------------


def from_remote(value: dict[str, Any]) -> Any:
    """A BiDi RemoteValue as Python, as Playwright's evaluate returns it (JSON-like)."""
    kind, inner = value["type"], value.get("value")
    if kind in ("undefined", "null"):
        return None
    if kind == "number":
        return float(inner.replace("Infinity", "inf")) if isinstance(inner, str) else inner
    if kind in ("string", "boolean", "date", "regexp"):
        return inner
    if kind == "bigint":
        return int(inner)
    if kind in ("array", "set"):
        return [from_remote(item) for item in inner or []]
    if kind in ("object", "map"):
        return {key if isinstance(key, str) else from_remote(key): from_remote(item)
                for key, item in inner or []}
    raise TypeError(f"the page returned a {kind}, which has no Python value")


def _string(text: str) -> dict[str, str]:
    return {"type": "string", "value": text}


def _returned(result: dict[str, Any], source: str) -> dict[str, Any]:
    """A script result's RemoteValue; what the page threw, raised."""
    if result["type"] == "exception":
        details = result["exceptionDetails"]
        raise BiDiError(f"{details.get('text')} (evaluating {source[:80]!r})")
    remote: dict[str, Any] = result["result"]
    return remote


@dataclass(frozen=True)
class Response:
    """The main document's response to :meth:`FirefoxPage.goto` (after redirects)."""

    url: str
    status: int


#: In-page element checks; each takes a CSS selector.
_ELEMENT_STATE = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return "detached";
  const box = el.getBoundingClientRect();
  const shown = box.width > 0 && box.height > 0 && getComputedStyle(el).visibility !== "hidden";
  if (!shown) return "hidden";
  return el.disabled ? "disabled" : "visible";
}"""
_FILL = """(selector, value) => {
  const el = document.querySelector(selector);
  el.focus();
  el.value = value;
  el.dispatchEvent(new Event("input", { bubbles: true }));
  el.dispatchEvent(new Event("change", { bubbles: true }));
}"""
_ELEMENT = """(selector) => {
  const el = document.querySelector(selector);
  el.scrollIntoView({ block: "center", inline: "center" });
  return el;
}"""


# -- the page ---------------------------------------------------------------------------------


class FirefoxPage:
    """The browser's one tab, with the Playwright ``Page`` methods the softphone tests use.

    Timeouts are in milliseconds, as Playwright's; every wait is bounded.
    """

    def __init__(self, bidi: BiDi, context: str) -> None:
        self.bidi = bidi
        self.context = context
        self.console: collections.deque[str] = collections.deque(maxlen=50)
        self._url = "about:blank"
        self._responses: dict[str, Response] = {}  # navigation id -> its last response
        self._responded = asyncio.Event()
        bidi.listeners.append(self._on_event)

    @property
    def url(self) -> str:
        return self._url

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if params.get("context") != self.context:
            return
        if method in ("browsingContext.load", "browsingContext.fragmentNavigated",
                      "browsingContext.historyUpdated"):
            self._url = params["url"]
        elif method == "network.responseCompleted" and params.get("navigation"):
            response = params["response"]
            self._responses[params["navigation"]] = Response(response["url"], response["status"])
            self._responded.set()
        elif method == "log.entryAdded":
            self.console.append(f"{params.get('level')}: {params.get('text')}")

    async def goto(self, url: str, timeout: float = 30_000) -> Response:
        result = await self.bidi.command("browsingContext.navigate", {
            "context": self.context, "url": url, "wait": "complete"}, timeout / 1000)
        self._url = result["url"]
        navigation = result["navigation"]
        deadline = asyncio.get_running_loop().time() + 5.0
        while navigation not in self._responses:  # the network event may trail the reply
            self._responded.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no response event for the navigation to {url}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._responded.wait(), remaining)
        return self._responses[navigation]

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = await self.bidi.command("script.evaluate", {
            "expression": expression, "target": {"context": self.context},
            "awaitPromise": True, "resultOwnership": "none"})
        return from_remote(_returned(result, expression))

    async def _call(self, function: str, *args: str) -> dict[str, Any]:
        """Call an in-page function with string arguments; its RemoteValue."""
        result = await self.bidi.command("script.callFunction", {
            "functionDeclaration": function, "arguments": [_string(a) for a in args],
            "target": {"context": self.context}, "awaitPromise": True,
            "resultOwnership": "none"})
        return _returned(result, function)

    async def _state(self, selector: str) -> str:
        state: str = from_remote(await self._call(_ELEMENT_STATE, selector))
        return state

    async def _until(self, selector: str, states: tuple[str, ...], timeout: float) -> str:
        """Poll the element's state until it is one of ``states``; bounded by ``timeout`` ms."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout / 1000
        while (state := await self._state(selector)) not in states:
            if loop.time() > deadline:
                raise TimeoutError(f"{selector} is {state}, not {'/'.join(states)}, after "
                                   f"{timeout:.0f} ms; console: {list(self.console)[-5:]}")
            await asyncio.sleep(POLL_SECONDS)
        return state

    async def wait_for_selector(self, selector: str, state: str = "visible",
                                timeout: float = 30_000) -> None:
        wanted = {"visible": ("visible", "disabled"), "hidden": ("hidden", "detached"),
                  "attached": ("visible", "disabled", "hidden"), "detached": ("detached",)}
        await self._until(selector, wanted[state], timeout)

    async def is_visible(self, selector: str) -> bool:
        return await self._state(selector) in ("visible", "disabled")

    async def inner_text(self, selector: str, timeout: float = 30_000) -> str:
        await self._until(selector, ("visible", "disabled", "hidden"), timeout)
        text: str = from_remote(await self._call(
            "(selector) => document.querySelector(selector).innerText", selector))
        return text

    async def fill(self, selector: str, value: str, timeout: float = 30_000) -> None:
        await self._until(selector, ("visible",), timeout)
        await self._call(_FILL, selector, value)

    async def click(self, selector: str, timeout: float = 30_000) -> None:
        """A real mouse click (a user gesture) in the middle of the visible, enabled element."""
        await self._until(selector, ("visible",), timeout)
        element = await self._call(_ELEMENT, selector)
        origin = {"type": "element", "element": {"sharedId": element["sharedId"]}}
        await self.bidi.command("input.performActions", {"context": self.context, "actions": [
            {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
             "actions": [{"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
                         {"type": "pointerDown", "button": 0},
                         {"type": "pointerUp", "button": 0}]}]})

    async def close(self) -> None:
        """Close the tab (its WebSockets with it); a blank tab keeps the browser running."""
        await self.bidi.command("browsingContext.create", {"type": "tab"})
        await self.bidi.command("browsingContext.close", {"context": self.context})


# -- the browser ------------------------------------------------------------------------------


async def _bidi_address(stderr: asyncio.StreamReader, log: collections.deque[bytes]) -> str:
    """Read Firefox's stderr until it names its BiDi WebSocket."""
    while line := await stderr.readline():
        log.append(line)
        if match := _LISTENING.search(line):
            return match.group(1).decode()
    output = b"".join(log).decode(errors="replace")
    raise BiDiError(f"firefox-esr exited before listening: {output}")


async def _drain(stderr: asyncio.StreamReader, log: collections.deque[bytes]) -> None:
    """Keep reading stderr (a full pipe would stall Firefox); the tail stays for diagnosis."""
    while line := await stderr.readline():
        log.append(line)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Kill Firefox and its content processes (its own process group), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 10.0)


@asynccontextmanager
async def firefox(microphone_hz: float) -> AsyncIterator[FirefoxPage]:
    """A headless Firefox whose microphone plays ``microphone_hz``; yields its one tab."""
    binary = require_firefox()
    workdir = Path(tempfile.mkdtemp(prefix="callbridge-firefox-"))
    profile = workdir / "profile"
    profile.mkdir()
    write_profile(profile, microphone_hz)
    log: collections.deque[bytes] = collections.deque(maxlen=200)
    # Release builds ignore services.settings.server without MOZ_REMOTE_SETTINGS_DEVTOOLS.
    env = {**os.environ, "HOME": str(workdir), "MOZ_CRASHREPORTER_DISABLE": "1",
           "MOZ_REMOTE_SETTINGS_DEVTOOLS": "1"}
    process = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-remote", "--profile", str(profile),
        "--remote-debugging-port=0", "about:blank",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
    assert process.stderr is not None
    drain: asyncio.Task[None] | None = None
    bidi: BiDi | None = None
    try:
        try:
            address = await asyncio.wait_for(_bidi_address(process.stderr, log), START_TIMEOUT)
        except TimeoutError:
            output = b"".join(log).decode(errors="replace")
            raise TimeoutError(f"firefox-esr not listening after {START_TIMEOUT} s: {output}") \
                from None
        drain = asyncio.create_task(_drain(process.stderr, log))
        socket = await websockets.connect(f"{address}/session", max_size=None, proxy=None,
                                          open_timeout=START_TIMEOUT)
        bidi = BiDi(socket)
        await bidi.command("session.new", {"capabilities": {}})
        tree = await bidi.command("browsingContext.getTree", {"maxDepth": 0})
        page = FirefoxPage(bidi, tree["contexts"][0]["context"])
        await bidi.command("session.subscribe", {"events": [
            "browsingContext.load", "browsingContext.fragmentNavigated",
            "browsingContext.historyUpdated", "network.responseCompleted", "log.entryAdded"]})
        yield page
    finally:
        try:
            if bidi is not None:
                await bidi.close()
        finally:
            await _stop(process)
            if drain is not None:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain
            shutil.rmtree(workdir, ignore_errors=True)
