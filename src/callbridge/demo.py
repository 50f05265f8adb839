"""`callbridge demo`: the first five minutes, with no trunk and nothing to set up.

It starts the whole server on free loopback ports with SQLite in a temporary (or
``--data-dir``) folder and the built-in sandbox carrier as the trunk, onboards a demo account
(API key, caller ID) with a callback receiver of its own, places one call through the REST API
exactly as a CRM would, follows it as it happens, and prints the callback (signature checked),
the call as ``GET /calls/{id}`` shows it, and where the recording is.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from callbridge.api.auth import hash_api_key, key_prefix, new_api_key
from callbridge.config import load_settings
from callbridge.server import QuietUvicorn, Server
from callbridge.webhooks.signing import new_secret, verify

CALLER_ID = "919800000000"
#: Sandbox numbers (see `callbridge.sandbox`): the agent answers and plays 440 Hz; the customer
#: answers, plays 1 kHz and hangs up after a few seconds.
AGENT = "9876543400"
CUSTOMER = "9876543104"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class CallbackReceiver:
    """The demo CRM's callback endpoint: a real HTTP server on loopback."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.setblocking(False)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/callbacks"
        app = Starlette(routes=[Route("/callbacks", self._receive, methods=["POST"])])
        config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False)
        self._server = QuietUvicorn(config)
        self._task: asyncio.Task[None] | None = None

    async def _receive(self, request: Request) -> Response:
        await self.received.put(Received(dict(request.headers), await request.body()))
        return Response(status_code=204)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve([self._sock]))
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._sock.close()


async def run_demo(data_dir: Path | None, keep_running: bool, out: TextIO = sys.stdout) -> int:
    folder = data_dir or Path(tempfile.mkdtemp(prefix="callbridge-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    say = _printer(out)
    receiver = CallbackReceiver()
    await receiver.start()
    settings = load_settings(None, {
        "CALLBRIDGE_HTTP_PORT": "0",
        "CALLBRIDGE_SIP_PORT": "0",
        "CALLBRIDGE_TRUNK_MODE": "sandbox",
        "CALLBRIDGE_STORAGE_DATABASE_URL": f"sqlite:///{folder / 'callbridge.db'}",
        "CALLBRIDGE_STORAGE_RECORDINGS_DIR": str(folder / "recordings"),
        "CALLBRIDGE_CALLBACKS_BACKOFF_BASE": "1",
    })
    server = Server(settings)
    await server.start()
    try:
        base = server.settings.http.public_url
        say(f"callbridge is up: REST API {base}, data in {folder}")
        secret, key = await _onboard(server, receiver.url)
        say(f"demo account 'demo': API key {key}, caller ID {CALLER_ID}")
        body = {"from_number": CALLER_ID, "to_number": CUSTOMER, "agent_number": AGENT,
                "uuid": f"demo-{uuid.uuid4()}"}
        say("\nPlacing a call exactly as a CRM would:\n")
        say(_curl(base, key, body) + "\n")
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            auth = {"Authorization": f"Bearer {key}"}
            response = await http.post("/calls", json=body, headers=auth)
            say(f"-> {response.status_code} {response.text}\n")
            if response.status_code != 200:
                return 1
            call_id = response.json()["call_id"]
            view = await _follow(http, auth, call_id, say)
            callback = await asyncio.wait_for(receiver.received.get(), 30)
            signed = verify(secret, callback.headers, callback.body, now=int(time.time()))
            say("\nThe status callback the CRM received "
                f"(signature {'verified' if signed else 'INVALID'}):\n")
            say(json.dumps(json.loads(callback.body), indent=2))
            say(f"\nGET /calls/{call_id}:\n")
            say(json.dumps(view, indent=2))
            recording = folder / "recordings" / f"crm_{call_id}.wav"
            if recording.exists():
                say(f"\nRecording (agent left, customer right): {recording}")
                say(f"  also served at {view.get('recording_url')}")
            if keep_running:
                await _keep_running(base, key, say)
            return 0 if signed and view.get("call_status") == "ANSWER" else 1
    finally:
        await server.stop()
        await receiver.stop()


async def _onboard(server: Server, callback_url: str) -> tuple[str, str]:
    assert server.store is not None
    secret = new_secret()
    account = await server.store.create_account("demo", callback_url, secret)
    key = new_api_key()
    await server.store.add_api_key(account.id, hash_api_key(key), key_prefix(key))
    await server.store.add_caller_id(account.id, "+" + CALLER_ID)
    return secret, key


async def _follow(http: httpx.AsyncClient, auth: dict[str, str], call_id: str,
                  say: Callable[[str], None], timeout: float = 60) -> dict[str, Any]:
    """Poll GET /calls/{id} and print each change of the call or its legs as it happens."""
    seen: tuple[Any, ...] = ()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view: dict[str, Any] = (await http.get(f"/calls/{call_id}", headers=auth)).json()
        state = (view["call_status"], *((leg["role"], leg["status"]) for leg in view["legs"]))
        if state != seen:
            say(f"  {_describe(view)}")
            seen = state
        if view.get("end_time"):
            return view
        await asyncio.sleep(0.1)
    raise TimeoutError("the demo call did not end in time")


def _describe(view: dict[str, Any]) -> str:
    legs = {leg["role"]: leg["status"] for leg in view["legs"]}
    agent, customer = legs.get("agent"), legs.get("destination")
    if view.get("end_time"):
        return f"ended: {view['call_status']} after {view['duration']} s of talk"
    if view["call_status"] == "ANSWER":
        return "customer answered: bridged, recording"
    if customer == "DIALING":
        return "agent answered; customer ringing"
    if agent == "DIALING":
        return "agent ringing"
    return f"{view['call_status']}: {legs}"


def _curl(base: str, key: str, body: dict[str, str]) -> str:
    return (f"curl -s {base}/calls -H {shlex.quote('Authorization: Bearer ' + key)} \\\n"
            f"     -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}")


async def _keep_running(base: str, key: str, say: Callable[[str], None]) -> None:
    say("\nThe server keeps running (Ctrl-C stops it). Place your own calls; sandbox numbers "
        "ending 01 are busy, 02 ring out, 03 fail, 04 hang up after a while, 05 send early "
        "media:\n")
    say(_curl(base, key, {"from_number": CALLER_ID, "to_number": "9876543100",
                          "agent_number": AGENT, "uuid": "my-call-1"}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _printer(out: TextIO) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    return say

