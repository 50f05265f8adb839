"""The end-to-end rig: a whole callbridge in-process, the REST API over real HTTP, callbacks
to a real HTTP receiver, and an onboarded account; the trunk is SIPp (a :class:`Sipp`) or,
without one, the embedded sandbox carrier (``[trunk] mode = "sandbox"``).

    async with rig(trunk, tmp_path) as r:          # SIPp plays the trunk
        call_id = await r.place(agent_number=..., to_number=...)
        payload = await r.callback()
    async with rig(None, tmp_path, sandbox=SandboxCarrier(...)) as r:   # the sandbox does
        ...
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from api_support import check_response
from callback_server import CallbackServer
from callbridge.api.auth import hash_api_key, key_prefix, new_api_key
from callbridge.config import load_settings
from callbridge.sandbox import SandboxCarrier
from callbridge.server import Server
from callbridge.store import open_store
from callbridge.store.models import Account, Store
from callbridge.webhooks.signing import new_secret, verify
from sipp import Sipp

CALLER_ID = "919800000000"


@dataclass
class Rig:
    server: Server
    http: httpx.AsyncClient
    callbacks: CallbackServer
    account: Account
    key: str
    folder: Path

    async def place(self, **fields: Any) -> str:
        body = {"from_number": CALLER_ID, "uuid": f"crm-{datetime.now(UTC).timestamp()}",
                **fields}
        response = await self.http.post("/calls", json=body, headers=self.auth)
        assert response.status_code == 200, response.text
        check_response(response, "/calls")
        call_id: str = response.json()["call_id"]
        return call_id

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def callback(self, count: int = 1, timeout: float = 20) -> dict[str, Any]:
        received = await self.callbacks.wait_for(count, timeout)
        last = received[-1]
        assert verify(self.account.callback_secret, last.headers, last.body,
                      now=int(datetime.now(UTC).timestamp()))
        payload: dict[str, Any] = json.loads(last.body)
        return payload

    async def view(self, call_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/calls/{call_id}", headers=self.auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = check_response(response, "/calls/{call_id}")
        return body


def trunk_keys(trunk: Sipp | None) -> dict[str, str]:
    """The ``CALLBRIDGE_TRUNK_*`` variables for SIPp at ``trunk.address``, or for the
    embedded sandbox carrier when ``trunk`` is None (no host: the sandbox fills it in)."""
    if trunk is None:
        return {"CALLBRIDGE_TRUNK_MODE": "sandbox"}
    return {
        "CALLBRIDGE_TRUNK_MODE": "sip",
        "CALLBRIDGE_TRUNK_HOST": trunk.address[0],
        "CALLBRIDGE_TRUNK_PORT": str(trunk.address[1]),
    }


@asynccontextmanager
async def rig(trunk: Sipp | None, folder: Path, *, sandbox: SandboxCarrier | None = None,
              **keys: str) -> AsyncIterator[Rig]:
    """``keys`` override settings by name, e.g. ``media_rtp_port_min="42000"``."""
    env = {
        "CALLBRIDGE_HTTP_PORT": "0",
        "CALLBRIDGE_SIP_HOST": "127.0.0.1",
        "CALLBRIDGE_SIP_PORT": "0",  # any free port: the service reports the one it bound
        **trunk_keys(trunk),
        "CALLBRIDGE_TRUNK_OPTIONS_INTERVAL": "0",
        "CALLBRIDGE_TRUNK_NUMBER_FORMAT": "plain",
        "CALLBRIDGE_MEDIA_RTP_PORT_MIN": "42000",
        "CALLBRIDGE_MEDIA_RTP_PORT_MAX": "42199",
        "CALLBRIDGE_STORAGE_DATABASE_URL": f"sqlite:///{folder}/callbridge.db",
        "CALLBRIDGE_STORAGE_RECORDINGS_DIR": str(folder / "recordings"),
        "CALLBRIDGE_CALLBACKS_BACKOFF_BASE": "0.2",
        **{f"CALLBRIDGE_{k.upper()}": v for k, v in keys.items()},
    }
    with CallbackServer() as callbacks:
        server = Server(load_settings(None, env), sandbox=sandbox)
        await server.start()
        try:
            host, port = server.http_address
            assert server.store is not None
            account, key = await onboard(server.store, callbacks.url)
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as http:
                yield Rig(server, http, callbacks, account, key, folder)
        finally:
            await server.stop()


async def onboard(store: Store, callback_url: str) -> tuple[Account, str]:
    """The account every e2e test uses: "acme", one API key, caller ID CALLER_ID."""
    account = await store.create_account("acme", callback_url, new_secret())
    key = new_api_key()
    await store.add_api_key(account.id, hash_api_key(key), key_prefix(key))
    await store.add_caller_id(account.id, "+" + CALLER_ID)
    return account, key


async def seed(db: Path, callback_url: str) -> str:
    """Onboard into the database file a `callbridge serve` subprocess will use; the key."""
    store = await open_store(f"sqlite:///{db}")
    try:
        return (await onboard(store, callback_url))[1]
    finally:
        await store.close()


def run(body: Any, timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout))


def legs_of(view: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    return [(leg["role"], leg["status"], leg["sip_code"]) for leg in view["legs"]]


def dominant_hz(samples: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


async def wait_for_view(r: Rig, call_id: str, ok: Any, timeout: float = 10) -> dict[str, Any]:
    """GET /calls/{id} until ``ok(view)``: waiting on the server's own state, not a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        view = await r.view(call_id)
        if ok(view):
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"call never reached the state: {view}")
        await asyncio.sleep(0.05)


def bridged(view: dict[str, Any]) -> bool:
    return bool(view["call_status"] == "ANSWER" and not view["end_time"])
