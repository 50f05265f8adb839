"""What a far end really received: RTP captured off the loopback interface.

SIPp plays the trunk's parties but cannot tell us what it heard, so a test captures the
datagrams callbridge sends to SIPp's media port with a packet socket on ``lo`` (root only,
as CI runs) and decodes them::

    with LoopbackRtpSniffer(dst_port=sipp_media_port) as sniffer:
        ...  # the call
    streams = sniffer.streams()   # {callbridge's source port: [audio payloads in order]}
    events = sniffer.events()     # RFC 4733 telephone-event payloads (dynamic PTs), in order
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from types import TracebackType

ETH_P_ALL = 0x0003
_ETHERNET = 14  # lo carries a zeroed Ethernet header on packet sockets


def can_sniff() -> bool:
    return hasattr(socket, "AF_PACKET") and os.geteuid() == 0


class LoopbackRtpSniffer:
    """Collects the RTP payloads of UDP datagrams sent to ``dst_port`` on 127.0.0.0/8."""

    def __init__(self, dst_port: int) -> None:
        self.dst_port = dst_port
        self._packets: list[tuple[int, int, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoopbackRtpSniffer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever the test does
        while not self._stop.is_set() and time.monotonic() < deadline:
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if not ready:
                continue
            frame, (_, _, pkttype, _, _) = self._sock.recvfrom(65535)
            if pkttype == socket.PACKET_OUTGOING:
                continue  # lo shows each datagram twice: keep the incoming copy
            self._take(frame)

    def _take(self, frame: bytes) -> None:
        ip = frame[_ETHERNET:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
            return
        header = (ip[0] & 0x0F) * 4
        src_port, dst_port = struct.unpack_from("!HH", ip, header)
        if dst_port != self.dst_port:
            return
        rtp = ip[header + 8:]
        if len(rtp) < 12 or rtp[0] >> 6 != 2 or 72 <= (rtp[1] & 0x7F) <= 79:
            return
        csrcs = rtp[0] & 0x0F
        with self._lock:
            self._packets.append((src_port, rtp[1] & 0x7F, bytes(rtp[12 + 4 * csrcs:])))

    def streams(self) -> dict[int, list[bytes]]:
        """Audio payloads (static payload types, G.711) by the sender's port, in order."""
        out: dict[int, list[bytes]] = {}
        with self._lock:
            for port, pt, payload in self._packets:
                if pt < 96:
                    out.setdefault(port, []).append(payload)
        return out

    def events(self) -> list[bytes]:
        """Payloads of dynamic payload types (telephone-events), in arrival order."""
        with self._lock:
            return [payload for _, pt, payload in self._packets if pt >= 96]
