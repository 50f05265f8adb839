"""The softphone's WebSocket: refused without a session cookie or from a wrong Origin,
accepted with both; hello answered with the agent's identity, state echoed, bad messages
answered; presence online while connected and offline after close; presence.send."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

from callbridge.softphone.auth import SESSION_COOKIE, seal
from callbridge.softphone.presence import Presence
from callbridge.softphone.signalling import CLOSE_BAD_ORIGIN, CLOSE_UNAUTHENTICATED
from softphone_support import AGENT, PASSWORD, PUBLIC_URL, Softphone, make_softphone

with warnings.catch_warnings():
    # Starlette 1.x would rather its test client ran on httpx2; httpx does the same job here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

CRM_ORIGIN = "https://crm.example.com"


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[Softphone]:
    softphone = asyncio.run(make_softphone(tmp_path, allow_origins=(CRM_ORIGIN,)))
    yield softphone
    asyncio.run(softphone.store.close())


@pytest.fixture
def client(phone: Softphone) -> Iterator[TestClient]:
    with TestClient(phone.app, base_url=PUBLIC_URL) as client:
        yield client


def sign_in(client: TestClient) -> str:
    response = client.post("/softphone/signin",
                           json={"account": "acme", "crm_username": AGENT, "password": PASSWORD})
    assert response.status_code == 200
    return str(response.cookies[SESSION_COOKIE])


def ws_headers(cookie: str | None, origin: str | None = PUBLIC_URL) -> dict[str, str]:
    headers = {}
    if cookie is not None:
        headers["cookie"] = f"{SESSION_COOKIE}={cookie}"
    if origin is not None:
        headers["origin"] = origin
    return headers


def refused_with(client: TestClient, headers: dict[str, str]) -> int:
    client.cookies.clear()  # only what the test sends
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("/softphone/ws", headers=headers):
            pass
    return refused.value.code


def test_refused_without_a_session_cookie(client: TestClient, phone: Softphone) -> None:
    assert refused_with(client, ws_headers(None)) == CLOSE_UNAUTHENTICATED
    assert refused_with(client, ws_headers("v1.forged.cookie")) == CLOSE_UNAUTHENTICATED
    other_key = seal(b"other", {"a": phone.account.id, "u": AGENT, "exp": 2**40})
    assert refused_with(client, ws_headers(other_key)) == CLOSE_UNAUTHENTICATED
    assert not phone.presence.is_online(phone.account.id, AGENT)


@pytest.mark.parametrize("origin", ["https://evil.example", "http://127.0.0.1:8081", "null", None])
def test_refused_from_a_wrong_origin(
    client: TestClient, phone: Softphone, origin: str | None
) -> None:
    cookie = sign_in(client)
    assert refused_with(client, ws_headers(cookie, origin)) == CLOSE_BAD_ORIGIN
    assert not phone.presence.is_online(phone.account.id, AGENT)


def test_an_agent_removed_after_signing_in_is_refused(client: TestClient, phone: Softphone) -> None:
    cookie = sign_in(client)
    asyncio.run(phone.store.remove_agent(phone.account.id, AGENT))
    assert refused_with(client, ws_headers(cookie)) == CLOSE_UNAUTHENTICATED


@pytest.mark.parametrize("origin", [PUBLIC_URL, "http://127.0.0.1:8080/", CRM_ORIGIN])
def test_accepted_with_cookie_and_origin_and_online_until_closed(
    client: TestClient, phone: Softphone, origin: str
) -> None:
    cookie = sign_in(client)
    client.cookies.clear()
    presence = phone.presence
    assert not presence.is_online(phone.account.id, AGENT)
    with client.websocket_connect("/softphone/ws", headers=ws_headers(cookie, origin)) as ws:
        ws.send_json({"type": "hello", "version": 1})
        assert ws.receive_json() == {"type": "hello", "version": 1,
                                     "account_id": phone.account.id, "crm_username": AGENT}
        assert presence.is_online(phone.account.id, AGENT)
        assert presence.online(phone.account.id) == [AGENT]
        assert not presence.is_online(phone.account.id, "no.password")
    assert not presence.is_online(phone.account.id, AGENT)


def exchange(ws: Any, message: Any) -> Any:
    if isinstance(message, str):
        ws.send_text(message)
    else:
        ws.send_json(message)
    return ws.receive_json()


def test_messages_state_is_echoed_and_bad_ones_answered(
    client: TestClient, phone: Softphone
) -> None:
    cookie = sign_in(client)
    client.cookies.clear()
    with client.websocket_connect("/softphone/ws", headers=ws_headers(cookie)) as ws:
        state = {"type": "state", "state": "idle", "muted": False}
        assert exchange(ws, state) == state
        for bad in ("not json", "[1, 2]", '{"no": "type"}'):
            assert exchange(ws, bad)["reason"] == "BAD_MESSAGE"
        assert exchange(ws, {"type": "teleport"})["reason"] == "BAD_MESSAGE"
        # Call messages go to the call layer, which is not there yet.
        answer = exchange(ws, {"type": "call", "to_number": "9876543210", "uuid": "u1"})
        assert (answer["type"], answer["reason"]) == ("error", "NOT_AVAILABLE")
        ws.send_text("x" * (64 * 1024 + 1))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1009


def test_presence_send_reaches_the_newest_page_and_two_tabs_keep_the_agent_online(
    client: TestClient, phone: Softphone
) -> None:
    cookie = sign_in(client)
    client.cookies.clear()
    presence, account = phone.presence, phone.account.id
    headers = ws_headers(cookie)
    with client.websocket_connect("/softphone/ws", headers=headers) as first:
        exchange(first, {"type": "hello"})
        with client.websocket_connect("/softphone/ws", headers=headers) as second:
            exchange(second, {"type": "hello"})
            offer = {"type": "offer", "sdp": "v=0", "call_id": "c1"}
            assert client.portal.call(presence.send, account, AGENT, offer) is True
            assert second.receive_json() == offer
        assert presence.is_online(account, AGENT)  # the first tab is still open
        assert client.portal.call(presence.send, account, AGENT, {"type": "state"}) is True
        assert first.receive_json() == {"type": "state"}
    assert client.portal.call(presence.send, account, AGENT, {"type": "state"}) is False


def test_presence_without_pages() -> None:
    presence = Presence()
    assert not presence.is_online("a", "u") and presence.online("a") == []
    assert asyncio.run(presence.send("a", "u", {"type": "state"})) is False
