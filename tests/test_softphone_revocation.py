"""Signing an agent out everywhere (issue 6): a new password or the agent's removal, made by
the real admin command in another process against the same SQLite file, ends every session
the agent had. The next HTTP request with an old cookie is 401 and its WebSocket handshake is
refused; an open page, even an idle one, is told SIGNED_OUT and closed (4401) within the
presence's re-check interval, which ends the call ringing it; a page that sends a message is
checked then. A sign-in link printed before the change stops working, and adding a removed
agent again revives none of its cookies. Another agent's page is left alone.

Signing out one session (POST /softphone/signout) ends it wherever its cookie was copied: the
copy is 401 over HTTP, its handshake refused, its open pages closed (4401) at once by the
process that served the sign-out (without a reason: the page that clicked Sign out is one of
them) and within the re-check interval by any other (with the reason); the agent's other
sessions go on. A cookie from before session ids is refused the same clean way.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect
from websockets import ConnectionClosed
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from api_support import FakeCalls
from callbridge.b2bua.call import AGENT as AGENT_LEG
from callbridge.b2bua.call import LegFailed
from callbridge.softphone.auth import (
    ENDED,
    EXPIRED,
    REVOKED,
    SESSION_COOKIE,
    SoftphoneAuth,
    hash_password,
    seal,
)
from callbridge.softphone.leg import BrowserPhone
from callbridge.softphone.signalling import CLOSE_UNAUTHENTICATED
from callbridge.store.sqlite import SqliteStore
from softphone_support import AGENT, PASSWORD, PUBLIC_URL, Softphone, make_softphone, serve_on

with warnings.catch_warnings():
    # Starlette 1.x would rather its test client ran on httpx2; httpx does the same job here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NEW_PASSWORD = "a brand new passphrase"
OTHER = "agent.018"
#: The presence's re-check interval in these tests (5 s in production).
RECHECK = 0.2
TIMEOUT = 10.0


# -- the admin command, in its own process -------------------------------------------------


async def admin(db: Path, *args: str, stdin: str = "") -> str:
    """``python -m callbridge ARGS`` on the database file ``db``, as an operator runs it
    beside the server; its standard output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    env["CALLBRIDGE_STORAGE_DATABASE_URL"] = f"sqlite:///{db}"
    env["CALLBRIDGE_HTTP_PUBLIC_URL"] = PUBLIC_URL
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbridge", *args, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


def db(phone: Softphone) -> Path:
    """The SQLite file the server has open."""
    return Path(phone.store.path)


async def new_password(phone: Softphone, password: str = NEW_PASSWORD) -> str:
    return await admin(db(phone), "agent", "password", "acme", AGENT, stdin=password + "\n")


# -- over HTTP (Starlette's TestClient) ------------------------------------------------------


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Softphone]:
    softphone = asyncio.run(make_softphone(tmp_path))
    yield softphone
    asyncio.run(softphone.store.close())


@pytest.fixture
def client(phone: Softphone) -> Iterator[TestClient]:
    with TestClient(phone.app, base_url=PUBLIC_URL) as client:
        yield client


def sign_in(client: TestClient, password: str = PASSWORD, user: str = AGENT) -> str:
    client.cookies.clear()
    response = client.post("/softphone/signin",
                           json={"account": "acme", "crm_username": user, "password": password})
    client.cookies.clear()  # each test says which cookie it sends
    return str(response.cookies[SESSION_COOKIE]) if response.status_code == 200 else ""


def session_status(client: TestClient, cookie: str) -> int:
    return client.get("/softphone/session",
                      headers={"cookie": f"{SESSION_COOKIE}={cookie}"}).status_code


def ws_headers(cookie: str) -> dict[str, str]:
    return {"cookie": f"{SESSION_COOKIE}={cookie}", "origin": PUBLIC_URL}


def handshake_refused(client: TestClient, cookie: str) -> int:
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("/softphone/ws", headers=ws_headers(cookie)):
            pass
    return refused.value.code


def test_a_new_password_signs_out_every_session_of_the_agent(
    client: TestClient, phone: Softphone
) -> None:
    laptop, desk = sign_in(client), sign_in(client)
    assert session_status(client, laptop) == session_status(client, desk) == 200

    said = asyncio.run(new_password(phone))
    assert "existing sessions are signed out" in said
    assert session_status(client, laptop) == session_status(client, desk) == 401
    assert handshake_refused(client, laptop) == CLOSE_UNAUTHENTICATED
    assert sign_in(client, PASSWORD) == ""  # the old password is no more
    fresh = sign_in(client, NEW_PASSWORD)
    assert session_status(client, fresh) == 200
    with client.websocket_connect("/softphone/ws", headers=ws_headers(fresh)) as ws:
        ws.send_json({"type": "hello", "version": 1})
        assert ws.receive_json()["crm_username"] == AGENT


def test_a_removed_agent_is_signed_out_and_adding_it_again_revives_no_cookie(
    client: TestClient, phone: Softphone
) -> None:
    cookie = sign_in(client)
    asyncio.run(admin(db(phone), "agent", "remove", "acme", AGENT))
    assert session_status(client, cookie) == 401
    asyncio.run(admin(db(phone), "agent", "add", "acme", AGENT, "--password",
                      stdin=PASSWORD + "\n"))  # the same name and password, a new agent
    assert session_status(client, cookie) == 401
    assert handshake_refused(client, cookie) == CLOSE_UNAUTHENTICATED
    assert session_status(client, sign_in(client)) == 200


def test_a_signin_link_printed_before_a_password_change_stops_working(
    client: TestClient, phone: Softphone
) -> None:
    def link() -> str:
        printed = json.loads(asyncio.run(admin(db(phone), "agent", "signin-link", "acme", AGENT,
                                               "--json")))  # fmt: skip
        return str(printed["url"]).split("token=")[1]

    def use(token: str) -> httpx.Response:
        client.cookies.clear()
        return client.post("/softphone/signin-link", data={"token": token},
                           follow_redirects=False)  # fmt: skip

    used, unused = link(), link()
    signed_in = use(used)
    assert signed_in.status_code == 303
    link_cookie = str(signed_in.cookies[SESSION_COOKIE])
    assert session_status(client, link_cookie) == 200

    asyncio.run(new_password(phone))
    assert session_status(client, link_cookie) == 401  # a link's session ends like any other
    assert use(unused).status_code == 401  # printed before the change: void
    assert use(link()).status_code == 303  # printed after it: works


@pytest.mark.parametrize("ended_by", ["new password", "sign-out elsewhere"])
def test_a_page_whose_session_ended_is_closed_before_its_next_message_is_served(
    client: TestClient, phone: Softphone, ended_by: str
) -> None:
    phone.presence.recheck_every = 3600  # only the message's own check can catch it
    cookie = sign_in(client)
    with client.websocket_connect("/softphone/ws", headers=ws_headers(cookie)) as ws:
        ws.send_json({"type": "hello", "version": 1})
        assert ws.receive_json()["type"] == "hello"
        if ended_by == "new password":
            asyncio.run(new_password(phone))
            why = REVOKED
        else:  # the same session, signed out from a copy of its cookie
            asyncio.run(sign_out_elsewhere(phone, cookie))
            why = ENDED
        ws.send_json({"type": "call", "to_number": "9876543104", "uuid": "u-1", "sdp": "v=0"})
        assert ws.receive_json() == {"type": "error", "reason": "SIGNED_OUT", "message": why}
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert (closed.value.code, closed.value.reason) == (CLOSE_UNAUTHENTICATED, why)
    calls = phone.app.state.ctx.calls
    assert isinstance(calls, FakeCalls) and calls.started == []  # nothing was dialled
    assert not phone.presence.is_online(phone.account.id, AGENT)


def test_a_session_that_expires_while_its_page_is_open_is_closed(
    client: TestClient, phone: Softphone
) -> None:
    phone.presence.recheck_every = 3600
    cookie = sign_in(client)
    with client.websocket_connect("/softphone/ws", headers=ws_headers(cookie)) as ws:
        phone.now += timedelta(hours=12, seconds=1)  # a session lasts 12 hours
        ws.send_json({"type": "state", "state": "idle"})
        assert ws.receive_json()["message"] == EXPIRED
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == CLOSE_UNAUTHENTICATED


# -- signing one session out, over HTTP ------------------------------------------------------


def sign_out(client: TestClient, cookie: str) -> httpx.Response:
    client.cookies.clear()
    return client.post("/softphone/signout", headers={"cookie": f"{SESSION_COOKIE}={cookie}",
                                                      "origin": PUBLIC_URL})  # fmt: skip


async def sign_out_elsewhere(phone: Softphone, cookie: str) -> None:
    """Sign ``cookie`` out as another process of the install would: its own connection to
    the database file, and nothing in this process told."""
    async with await SqliteStore.open(db(phone)) as store:
        assert await SoftphoneAuth(store, lambda: phone.now).sign_out(cookie) is not None


def test_signing_out_ends_that_session_in_every_browser_and_no_other(
    client: TestClient, phone: Softphone
) -> None:
    laptop, desk = sign_in(client), sign_in(client)
    copied = laptop  # the same cookie, in another browser (or a thief's)
    response = sign_out(client, laptop)
    assert response.status_code == 200 and "max-age=0" in response.headers["set-cookie"].lower()

    assert session_status(client, copied) == 401
    assert handshake_refused(client, copied) == CLOSE_UNAUTHENTICATED
    assert sign_out(client, copied).status_code == 200  # again: nothing more to do
    assert session_status(client, desk) == 200  # the agent's other session goes on
    with client.websocket_connect("/softphone/ws", headers=ws_headers(desk)) as ws:
        ws.send_json({"type": "hello", "version": 1})
        assert ws.receive_json()["crm_username"] == AGENT
    assert session_status(client, sign_in(client)) == 200  # and signing in again works


def test_a_cookie_from_before_session_ids_is_refused_as_signed_out(
    client: TestClient, phone: Softphone
) -> None:
    async def old_and_new() -> tuple[str, str]:
        """A cookie as callbridge made it before schema v5 (everything but the session id),
        and the same with one: only the id differs."""
        key = await SoftphoneAuth(phone.store, lambda: phone.now).key()
        agent = (phone.account.id, AGENT)
        epoch = (await phone.store.agent_session_epochs([agent]))[agent]
        claims = {"a": phone.account.id, "u": AGENT, "exp": int(phone.now.timestamp()) + 3600,
                  "g": epoch}  # fmt: skip
        return seal(key, claims), seal(key, {**claims, "s": "an-id"})

    old, new = asyncio.run(old_and_new())
    assert session_status(client, new) == 200
    assert session_status(client, old) == 401  # the page shows the sign-in form
    assert handshake_refused(client, old) == CLOSE_UNAUTHENTICATED
    response = sign_out(client, old)
    assert response.status_code == 200 and "max-age=0" in response.headers["set-cookie"].lower()


# -- open pages on a real server (uvicorn), signed out by the admin command ------------------


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Softphone, str]]:
    """The softphone app on uvicorn at 127.0.0.1 (a free port), in this event loop."""
    phone = await make_softphone(tmp_path)
    phone.presence.recheck_every = RECHECK
    await phone.store.add_agent(phone.account.id, OTHER)
    await phone.store.set_agent_password(phone.account.id, OTHER, hash_password(PASSWORD))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    try:
        server, task = await serve_on(phone.app, listener)
        try:
            yield phone, f"127.0.0.1:{listener.getsockname()[1]}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, TIMEOUT)
    finally:
        await phone.store.close()


async def signed_in(address: str, user: str = AGENT) -> str:
    """A new session's cookie."""
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        response = await http.post("/softphone/signin", json={
            "account": "acme", "crm_username": user, "password": PASSWORD})
        assert response.status_code == 200
        return str(response.cookies[SESSION_COOKIE])


@asynccontextmanager
async def page(address: str, user: str = AGENT,
               cookie: str | None = None) -> AsyncIterator[ClientConnection]:
    """A signed-in page's WebSocket (under ``cookie``, else a new session), past hello."""
    cookie = cookie or await signed_in(address, user)
    async with connect(f"ws://{address}/softphone/ws", origin=Origin(PUBLIC_URL),
                       additional_headers={"cookie": f"{SESSION_COOKIE}={cookie}"},
                       proxy=None) as ws:  # fmt: skip
        await ws.send(json.dumps({"type": "hello", "version": 1}))
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["crm_username"] == user
        yield ws


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return message


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_an_idle_page_is_closed_promptly_when_the_admin_changes_the_password(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with served(tmp_path) as (phone, address):
            async with page(address) as mine, page(address, OTHER) as theirs:
                loop = asyncio.get_running_loop()
                await new_password(phone)  # in another process: nothing tells the server
                changed = loop.time()
                assert await receive(mine) == {"type": "error", "reason": "SIGNED_OUT",
                                               "message": REVOKED}  # fmt: skip
                assert await closed_with(mine) == (CLOSE_UNAUTHENTICATED, REVOKED)
                took = loop.time() - changed
                assert took < RECHECK + 1.0, took
                assert not phone.presence.is_online(phone.account.id, AGENT)
                # Another agent's page is none of it: still open, still served.
                await asyncio.sleep(3 * RECHECK)  # a few rounds of re-checks
                await theirs.send(json.dumps({"type": "state", "state": "idle"}))
                assert await receive(theirs) == {"type": "state", "state": "idle"}
                assert phone.presence.online(phone.account.id) == [OTHER]
                print(f"signed out {took * 1000:.0f} ms after the admin command returned"
                      f" (re-check every {RECHECK * 1000:.0f} ms)")

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_call_ringing_the_page_of_a_removed_agent_stops_ringing(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as (phone, address), page(address) as ws:
            browser = BrowserPhone(phone.presence)
            phone.presence.calls = browser
            events: asyncio.Queue[Any] = asyncio.Queue()
            leg = await browser.ring("call-1", phone.account.id, AGENT, "9876543104",
                                     ("127.0.0.1", 9), events)  # fmt: skip
            assert leg is not None
            assert (await receive(ws))["type"] == "incoming"
            await admin(db(phone), "agent", "remove", "acme", AGENT)
            assert (await receive(ws))["reason"] == "SIGNED_OUT"
            assert await closed_with(ws) == (CLOSE_UNAUTHENTICATED, REVOKED)
            failed = await asyncio.wait_for(events.get(), TIMEOUT)
            assert failed == LegFailed(AGENT_LEG, 480, "AGENT_OFFLINE")
            assert browser.legs == {}

    asyncio.run(asyncio.wait_for(main(), 60))


# -- open pages on a real server, signed out with Sign out ---------------------------------


def test_signing_out_closes_the_sessions_open_pages_at_once_and_no_other(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with served(tmp_path) as (phone, address):
            phone.presence.recheck_every = 3600  # the sign-out itself closes them
            mine, other_browser = await signed_in(address), await signed_in(address)
            async with (page(address, cookie=mine) as tab, page(address, cookie=mine) as copy,
                        page(address, cookie=other_browser) as other):  # fmt: skip
                async with httpx.AsyncClient(base_url=f"http://{address}") as http:
                    response = await http.post("/softphone/signout", headers={
                        "cookie": f"{SESSION_COOKIE}={mine}", "origin": PUBLIC_URL})
                assert response.status_code == 200
                for ws in (tab, copy):  # closed with no message first, and no reason
                    assert await closed_with(ws) == (CLOSE_UNAUTHENTICATED, "")
                await other.send(json.dumps({"type": "state", "state": "idle"}))
                assert await receive(other) == {"type": "state", "state": "idle"}
                assert phone.presence.is_online(phone.account.id, AGENT)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_sign_out_served_by_another_process_closes_the_page_within_the_recheck(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with served(tmp_path) as (phone, address):
            mine, other_browser = await signed_in(address), await signed_in(address)
            async with (page(address, cookie=mine) as ws,
                        page(address, cookie=other_browser) as other):  # fmt: skip
                loop = asyncio.get_running_loop()
                await sign_out_elsewhere(phone, mine)
                signed_out = loop.time()
                assert await receive(ws) == {"type": "error", "reason": "SIGNED_OUT",
                                             "message": ENDED}  # fmt: skip
                assert await closed_with(ws) == (CLOSE_UNAUTHENTICATED, ENDED)
                took = loop.time() - signed_out
                assert took < RECHECK + 1.0, took
                await other.send(json.dumps({"type": "state", "state": "idle"}))
                assert await receive(other) == {"type": "state", "state": "idle"}
                assert phone.presence.is_online(phone.account.id, AGENT)
                print(f"signed out {took * 1000:.0f} ms after another process's sign-out"
                      f" (re-check every {RECHECK * 1000:.0f} ms)")

    asyncio.run(asyncio.wait_for(main(), 60))
