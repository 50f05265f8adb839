"""Shared pieces of the softphone tests: a store with one account (with a launch secret) and
one agent with a password, and the app around it."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from api_support import FakeCalls
from callbridge.api.app import ApiContext, create_app
from callbridge.config import HttpSettings, Settings, StorageSettings
from callbridge.softphone.auth import hash_password
from callbridge.softphone.presence import Presence
from callbridge.store.models import Account
from callbridge.store.sqlite import SqliteStore

NOW = datetime(2026, 7, 3, 10, 0, 0, tzinfo=UTC)
PUBLIC_URL = "http://127.0.0.1:8080"
AGENT = "agent.017"
PASSWORD = "correct horse battery"
LAUNCH_SECRET = "lsec_test-secret"


@dataclass
class Softphone:
    store: SqliteStore
    account: Account
    presence: Presence
    app: Starlette
    #: What ``clock`` answers: tests move it.
    now: datetime = NOW


async def make_softphone(tmp_path: Path, public_url: str = PUBLIC_URL,
                         allow_origins: tuple[str, ...] = ()) -> Softphone:
    store = await SqliteStore.open(tmp_path / "cb.db")
    account = await store.create_account("acme", "https://crm.example.com/cb", "whsec_x",
                                         allow_origins=allow_origins)
    await store.set_launch_secret(account.id, LAUNCH_SECRET)
    account = await store.get_account(account.id)
    assert account is not None
    await store.add_agent(account.id, AGENT)
    await store.set_agent_password(account.id, AGENT, hash_password(PASSWORD))
    await store.add_agent(account.id, "no.password")

    async def health() -> dict[str, bool]:
        return {"database": True}

    settings = Settings(http=HttpSettings(public_url=public_url),
                        storage=StorageSettings(recordings_dir=str(tmp_path / "rec")))
    presence = Presence()
    phone = Softphone(store, account, presence, app=None)  # type: ignore[arg-type]
    ctx = ApiContext(settings, store, FakeCalls(), health, clock=lambda: phone.now)
    phone.app = create_app(ctx, presence)
    return phone


async def serve_on(app: Starlette, listener: socket.socket,
                   ) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Serve ``app`` with uvicorn on a bound ``listener``, in this event loop, once it has
    started (bounded: 5 s; the reason it could not start is raised). Stop it by setting the
    server's ``should_exit`` and awaiting the task."""
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off",
                                           access_log=False))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    assert server.started
    return server, task
