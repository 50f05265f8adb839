"""``[softphone] ice_servers`` and ``public_host`` reach both ends of the WebRTC audio: the
server's aiortc peer connection (BrowserMedia), the page (in the signalling's hello), and the
answer's candidates (the public address beside the local ones)."""

from __future__ import annotations

import asyncio
from typing import Any

from callbridge.config import IceServer, SoftphoneSettings
from callbridge.softphone.auth import Session
from callbridge.softphone.leg import BrowserPhone
from callbridge.softphone.presence import Presence
from callbridge.softphone.signalling import Signalling
from callbridge.softphone.webrtc import BrowserMedia, with_public_candidates

SERVERS = "stun:stun.example.com:3478, turn:alice:s3cret@turn.example.com:3478?transport=udp"
STUN = IceServer("stun:stun.example.com:3478")
TURN = IceServer("turn:turn.example.com:3478?transport=udp", "alice", "s3cret")


def test_browser_media_uses_the_configured_ice_servers() -> None:
    async def body() -> None:
        media = BrowserMedia(asyncio.get_running_loop(), ice_servers=(STUN, TURN))
        try:
            configured = media._pc._RTCPeerConnection__configuration.iceServers  # type: ignore[attr-defined]
            assert [(s.urls, s.username, s.credential) for s in configured] == [
                ("stun:stun.example.com:3478", None, None),
                ("turn:turn.example.com:3478?transport=udp", "alice", "s3cret")]
        finally:
            await media.close()
        bare = BrowserMedia(asyncio.get_running_loop())
        try:  # none configured: none asked (aiortc would otherwise pick a public STUN)
            assert bare._pc._RTCPeerConnection__configuration.iceServers == []  # type: ignore[attr-defined]
        finally:
            await bare.close()

    asyncio.run(body())


def test_browser_phone_takes_the_softphone_settings() -> None:
    phone = BrowserPhone(Presence(), SoftphoneSettings(ice_servers=SERVERS,
                                                       public_host="203.0.113.10"))
    assert (phone.ice_servers, phone.public_host) == ((STUN, TURN), "203.0.113.10")
    assert BrowserPhone(Presence()).ice_servers == ()


def test_the_page_is_given_the_ice_servers_in_hello() -> None:
    async def hello(servers: tuple[IceServer, ...]) -> dict[str, Any]:
        signalling = Signalling(None, None, Presence(), "https://calls.example.com",  # type: ignore[arg-type]
                                ice_servers=servers)
        replies: list[dict[str, Any]] = []

        async def reply(message: dict[str, Any]) -> None:
            replies.append(message)

        await signalling._dispatch(Session("a1", "agent.017", 0), {"type": "hello"}, reply)
        [answer] = replies
        return answer

    assert asyncio.run(hello((STUN, TURN)))["ice_servers"] == [
        {"urls": "stun:stun.example.com:3478"},
        {"urls": "turn:turn.example.com:3478?transport=udp", "username": "alice",
         "credential": "s3cret"}]
    assert "ice_servers" not in asyncio.run(hello(()))


ANSWER = "\r\n".join([
    "v=0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 0",
    "a=candidate:1a2b 1 udp 2130706431 10.0.0.5 40000 typ host",
    "a=candidate:3c4d 1 udp 1694498815 198.51.100.7 40000 typ srflx raddr 10.0.0.5 rport 40000",
    "a=end-of-candidates",
    "",
])


def test_public_host_is_offered_beside_each_host_candidate() -> None:
    lines = with_public_candidates(ANSWER, "203.0.113.10").split("\r\n")
    assert lines[2:5] == [
        "a=candidate:1a2b 1 udp 2130706431 10.0.0.5 40000 typ host",
        "a=candidate:p1a2b 1 udp 2130706431 203.0.113.10 40000 typ host",
        "a=candidate:3c4d 1 udp 1694498815 198.51.100.7 40000 typ srflx raddr 10.0.0.5"
        " rport 40000",
    ]
    assert with_public_candidates(ANSWER, "") == ANSWER
    assert with_public_candidates(ANSWER, "10.0.0.5") == ANSWER  # already there
