"""The sandbox carrier on real sockets: SIP by hand from a UDP client, its RTP audio, its own
port range, and loopback only."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Awaitable, Callable

import pytest

from callbridge.media.dtmf import TelephoneEvent
from callbridge.media.g711 import ulaw_decode
from callbridge.sandbox import Outcome, SandboxCarrier, SandboxTimings
from callbridge.sip.message import Response, parse_message
from e2e_support import dominant_hz

Client = tuple[socket.socket, socket.socket]  # (SIP, RTP)


def invite(number: str, sip_port: int, rtp_port: int, dest: tuple[str, int],
           branch: str = "z9hG4bKinv1", call_id: str = "call-1") -> bytes:
    sdp = ("v=0\r\no=crm 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
           "a=rtpmap:101 telephone-event/8000\r\n")
    return (f"INVITE sip:{number}@{dest[0]}:{dest[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch={branch}\r\n"
            f"From: <sip:919800000000@127.0.0.1>;tag=crm\r\nTo: <sip:{number}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:crm@127.0.0.1:{sip_port}>\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def ack_of(ok: Response, sip_port: int) -> bytes:
    """The ACK for a 2xx (RFC 3261 §13.2.2.4): a new branch, the 200's To tag, CSeq 1 ACK."""
    return (f"ACK {ok.headers.get('Contact', '')[1:-1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bKack1\r\n"
            f"From: {ok.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
            f"Call-ID: {ok.call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode()


def cancel_of(data: bytes) -> bytes:
    lines = data.split(b"\r\n\r\n")[0].split(b"\r\n")
    kept = [line for line in lines[1:] if line.split(b":")[0] in (b"Via", b"From", b"To",
                                                                   b"Call-ID")]
    start = lines[0].replace(b"INVITE", b"CANCEL", 1)
    return b"\r\n".join([start, *kept, b"CSeq: 1 CANCEL", b"Content-Length: 0", b"", b""])


async def receive_from(sock: socket.socket,
                       timeout: float = 5.0) -> tuple[bytes, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    data, source = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), timeout)
    return data, source


async def receive(sock: socket.socket, timeout: float = 5.0) -> bytes:
    return (await receive_from(sock, timeout))[0]


async def status_of(sock: socket.socket) -> int:
    message = parse_message(await receive(sock))
    assert isinstance(message, Response)
    return message.status


def run(scenario: Callable[[SandboxCarrier, Client], Awaitable[None]],
        carrier: SandboxCarrier) -> None:
    async def body() -> None:
        sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (sip, rtp):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        await carrier.start()
        try:
            await scenario(carrier, (sip, rtp))
        finally:
            await carrier.stop()
            sip.close()
            rtp.close()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_early_media_plays_the_numbers_tone_over_rtp_until_cancelled() -> None:
    carrier = SandboxCarrier(SandboxTimings(early_media=30), rtp_port_min=43100,
                             rtp_port_max=43199)

    async def scenario(carrier: SandboxCarrier, client: Client) -> None:
        sip, rtp = client
        request = invite("+919876543105", sip.getsockname()[1], rtp.getsockname()[1],
                         carrier.address)
        sip.sendto(request, carrier.address)
        assert [await status_of(sip), await status_of(sip)] == [100, 183]
        received = [await receive_from(rtp) for _ in range(50)]  # one second
        packets = [data for data, _ in received]
        assert {p[1] & 0x7F for p in packets} == {0}  # PCMU
        (host, port), = {source for _, source in received}
        assert host == "127.0.0.1" and 43100 <= port <= 43199  # the sandbox's own range
        audio = ulaw_decode(b"".join(p[12:] for p in packets)).astype(float)
        assert abs(dominant_hz(audio) - 1000) < 15
        sip.sendto(cancel_of(request), carrier.address)
        assert sorted([await status_of(sip), await status_of(sip)]) == [200, 487]
        assert carrier.calls[0].outcome is Outcome.CANCELLED

    run(scenario, carrier)


def test_the_carrier_uses_its_own_port_range_and_refuses_503_when_it_is_full() -> None:
    carrier = SandboxCarrier(rtp_port_min=43200, rtp_port_max=43201)  # one RTP/RTCP pair

    async def scenario(carrier: SandboxCarrier, client: Client) -> None:
        sip, rtp = client
        sip_port, rtp_port = sip.getsockname()[1], rtp.getsockname()[1]
        sip.sendto(invite("9876543402", sip_port, rtp_port, carrier.address), carrier.address)
        assert [await status_of(sip), await status_of(sip)] == [100, 180]
        sip.sendto(invite("9876543400", sip_port, rtp_port, carrier.address,
                          branch="z9hG4bKinv2", call_id="call-2"), carrier.address)
        assert [await status_of(sip), await status_of(sip)] == [100, 503]
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with taken, pytest.raises(OSError):
            taken.bind(("127.0.0.1", 43200))  # the ringing call holds it
        await carrier.stop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as free:
            free.bind(("127.0.0.1", 43200))  # stop() gave it back

    run(scenario, carrier)


def test_only_loopback_sources_are_heard() -> None:
    carrier = SandboxCarrier()

    async def scenario(carrier: SandboxCarrier, client: Client) -> None:
        sip, _ = client
        options = (f"OPTIONS sip:{carrier.address[0]}:{carrier.address[1]} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{sip.getsockname()[1]};branch=z9hG4bKo1\r\n"
                   "From: <sip:crm@127.0.0.1>;tag=1\r\nTo: <sip:sandbox@127.0.0.1>\r\n"
                   "Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        sip.sendto(options, carrier.address)
        assert await status_of(sip) == 200
        # No interface here can send from elsewhere, so hand the datagram in as if it came
        # from a documentation address (RFC 5737): it must not be answered.
        carrier._on_datagram(options.replace(b"z9hG4bKo1", b"z9hG4bKo2"), ("192.0.2.7", 5060))
        assert carrier.refused_sources == 1
        with pytest.raises(TimeoutError):
            await receive(sip, timeout=0.3)

    run(scenario, carrier)


def test_address_needs_a_started_carrier() -> None:
    carrier = SandboxCarrier()
    with pytest.raises(RuntimeError, match="not started"):
        _ = carrier.address
    assert carrier.calls == []


def test_a_confirming_number_presses_1_as_rfc_4733_events_on_its_tone_stream() -> None:
    carrier = SandboxCarrier(SandboxTimings(ring=0.05, confirm_after=0.2),
                             rtp_port_min=43300, rtp_port_max=43399)

    async def scenario(carrier: SandboxCarrier, client: Client) -> None:
        sip, rtp = client
        sip_port = sip.getsockname()[1]
        sip.sendto(invite("9876543407", sip_port, rtp.getsockname()[1], carrier.address),
                   carrier.address)
        assert [await status_of(sip), await status_of(sip)] == [100, 180]
        ok = parse_message(await receive(sip))
        assert isinstance(ok, Response) and ok.status == 200
        sip.sendto(ack_of(ok, sip_port), carrier.address)
        packets = [await receive(rtp) for _ in range(60)]  # 1.2 s: tone, key, tone
        kinds = "".join("e" if p[1] & 0x7F == 101 else "a" for p in packets)
        assert re.fullmatch("a+e+a+", kinds), kinds  # the tone pauses for one key's events
        events = [p for p in packets if p[1] & 0x7F == 101]
        blocks = [TelephoneEvent.parse(p[12:]) for p in events]
        assert {b.event for b in blocks} == {1}  # the key 1
        assert events[0][1] & 0x80 and not any(p[1] & 0x80 for p in events[1:])  # marker
        assert blocks[-1].end and not blocks[0].end
        assert {p[8:12] for p in packets} == {packets[0][8:12]}  # one SSRC: the same stream
        seqs = [int.from_bytes(p[2:4], "big") for p in packets]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # the numbering goes on
        call = carrier.calls[0]
        assert call.pressed == "1" and call.answered_at is not None
        assert call.pressed_at == pytest.approx(call.answered_at + 0.2, abs=0.1)

    run(scenario, carrier)
