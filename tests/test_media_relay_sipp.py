"""SIPp's own RTP as the far end of a bridge.

SIPp answers a call (``sipp_scenarios/rtp_pcap_uas.xml``) and plays a capture of a 1 kHz
A-law tone from its media port towards the relay's customer leg. The agent's phone, on
PCMU, must receive every packet: transcoded byte for byte, on the relay's own unbroken
stream, and still a 1 kHz tone. The SIP side is a few hand-written requests: media tests
do not depend on the SIP stack.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import socket
import struct
from pathlib import Path
from typing import cast

import pytest

from callbridge.media.bridge import Bridge
from callbridge.media.endpoint import LegMedia
from callbridge.media.g711 import ALAW_TO_ULAW, alaw_encode
from callbridge.media.rtp import RtpPacket, seq_diff, ts_diff
from callbridge.media.tones import sine
from rtp_peer import Lab, dominant_frequency, run_lab

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed"),
    # SIPp sends a pcap's packets through a raw socket ("Can't create raw IPv4 socket").
    pytest.mark.skipif(os.geteuid() != 0, reason="SIPp's play_pcap_audio needs root"),
]

SCENARIO = Path(__file__).resolve().parents[1] / "sipp_scenarios" / "rtp_pcap_uas.xml"
HOST = "127.0.0.1"
PACKETS = 50


def tone_capture(path: Path) -> list[RtpPacket]:
    """Write 1 s of 1 kHz A-law, 20 ms per packet, as an Ethernet/IPv4/UDP pcap."""
    samples = sine(1000, 160 * PACKETS)
    packets = [
        RtpPacket(
            payload_type=8,
            sequence_number=(65530 + i) & 0xFFFF,  # wraps during the capture
            timestamp=(4_000_000_000 + 160 * i) & 0xFFFFFFFF,
            ssrc=0x5EED,
            marker=i == 0,
            payload=alaw_encode(samples[160 * i : 160 * (i + 1)]),
        )
        for i in range(PACKETS)
    ]
    records = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # LINKTYPE_ETHERNET
    for i, packet in enumerate(packets):
        rtp = packet.serialize()
        udp = struct.pack("!HHHH", 4000, 5000, 8 + len(rtp), 0)
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 28 + len(rtp), 0, 0, 64, 17, 0,
            socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"),
        )  # fmt: skip
        frame = bytes(12) + b"\x08\x00" + ip + udp + rtp
        usec = i * 20_000
        records.append(struct.pack("<IIII", 1_000_000 + usec // 1_000_000, usec % 1_000_000,
                                   len(frame), len(frame)) + frame)  # fmt: skip
    path.write_bytes(b"".join(records))
    return packets


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return cast(int, sock.getsockname()[1])


class Uac(asyncio.DatagramProtocol):
    """Just enough of a SIP UAC for one call: INVITE (retransmitted), ACK, BYE."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.responses: asyncio.Queue[str] = asyncio.Queue()
        self.to_tag = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.responses.put_nowait(data.decode())

    def send(self, method: str, cseq: int, body: str = "") -> None:
        assert self.transport is not None
        port = self.transport.get_extra_info("sockname")[1]
        lines = [
            f"{method} sip:far-end@{self.target[0]}:{self.target[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-{method}-{cseq}",
            "Max-Forwards: 70",
            f"From: <sip:relay-test@{HOST}>;tag=relay",
            f"To: <sip:far-end@{HOST}>{self.to_tag}",
            "Call-ID: relay-sipp-1",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:relay-test@{HOST}:{port}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines += [f"Content-Length: {len(body)}", "", body]
        self.transport.sendto("\r\n".join(lines).encode(), self.target)

    async def invite(self, sdp: str) -> str:
        """Send the INVITE every 200 ms (SIPp may still be starting) until the 200 OK."""
        for _ in range(50):
            self.send("INVITE", 1, sdp)
            try:
                response = await asyncio.wait_for(self.responses.get(), 0.2)
            except TimeoutError:
                continue
            assert response.startswith("SIP/2.0 200"), response
            self.to_tag = re.search(r"^To:.*?(;tag=[^\s;]+)", response, re.M)[1]  # type: ignore[index]
            return response
        raise AssertionError("SIPp never answered")


def offer(host: str, port: int) -> str:
    return "\r\n".join([
        "v=0", f"o=- 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {port} RTP/AVP 8 101", "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000", "a=ptime:20", "",
    ])  # fmt: skip


def test_sipp_plays_the_far_end_and_the_agent_hears_it_transcoded(tmp_path: Path) -> None:
    sent = tone_capture(tmp_path / "rtp_tone.pcap")
    sip_port, media_port = free_udp_port(), free_udp_port()

    async def scenario(lab: Lab) -> None:
        loop = asyncio.get_running_loop()
        _, uac = await loop.create_datagram_endpoint(
            lambda: Uac((HOST, sip_port)), local_addr=(HOST, 0)
        )
        sipp = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(SCENARIO), "-i", HOST, "-p", str(sip_port),
            "-mi", HOST, "-mp", str(media_port), "-m", "1", "-nostdin", "-timeout", "30",
            cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            agent = await lab.peer()
            a = await lab.leg("agent", agent)  # PCMU
            c = await lab.leg("customer")
            answer = await uac.invite(offer(*c.advertised_address))
            host = re.search(r"^c=IN IP4 (\S+)", answer, re.M)[1]  # type: ignore[index]
            port = int(re.search(r"^m=audio (\d+) RTP/AVP 8 ", answer, re.M)[1])  # type: ignore[index]
            c.set_media(LegMedia(host, port, 8, "PCMA", telephone_event_pt=101))
            Bridge(a, c)
            uac.send("ACK", 1)  # SIPp starts playing

            await agent.wait_for_packets(PACKETS, timeout=10)
            uac.send("BYE", 2)
            bye = await asyncio.wait_for(uac.responses.get(), 5)
            assert bye.startswith("SIP/2.0 200"), bye
            assert await asyncio.wait_for(sipp.wait(), 10) == 0
        finally:
            if sipp.returncode is None:
                sipp.kill()
                await sipp.wait()
            assert uac.transport is not None
            uac.transport.close()

        heard = agent.packets()
        assert c.remote_address == (HOST, media_port)  # SIPp sends from its media port
        assert c.strangers == 0
        assert [p.payload for p in heard] == [p.payload.translate(ALAW_TO_ULAW) for p in sent]
        assert {p.payload_type for p in heard} == {0}
        assert {p.ssrc for p in heard} == {a.tx.ssrc}
        for before, after in itertools.pairwise(heard):
            assert seq_diff(after.sequence_number, before.sequence_number) == 1
            assert ts_diff(after.timestamp, before.timestamp) == 160
        assert dominant_frequency(agent.audio("PCMU")) == pytest.approx(1000, abs=10)

    run_lab(scenario, timeout=30)
