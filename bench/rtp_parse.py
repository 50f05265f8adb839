"""Packets per second through the RTP per-packet paths, on one core. Prints figures only.

    .venv/bin/python bench/rtp_parse.py [packets]

The relay's budget is 400 calls x 2 directions x 50 packets/s = 40,000 packets/s in total,
so each figure here should be well above that, with room left for the event loop and sockets.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from callbridge.media.rtp import RtpPacket, rewrite_header, unpack_header

BUDGET = 400 * 2 * 50


def rate(label: str, count: int, step: Callable[[], object]) -> None:
    start = time.perf_counter()
    for _ in range(count):
        step()
    elapsed = time.perf_counter() - start
    per_second = count / elapsed
    print(f"{label:<28} {per_second:>12,.0f} packets/s  {per_second / BUDGET:6.1f}x budget")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    packet = RtpPacket(0, 1234, 160_000, 0x01020304, payload=b"\xff" * 160)
    data = packet.serialize()
    buf = bytearray(1500)

    def rewrite() -> int:
        return rewrite_header(
            buf, data, payload_type=8, sequence_number=4321, timestamp=999, ssrc=0xCAFE
        )

    print(f"{count:,} packets of {len(data)} bytes (PCMU, 20 ms)")
    rate("RtpPacket.parse", count, lambda: RtpPacket.parse(data))
    rate("unpack_header", count, lambda: unpack_header(data))
    rate("rewrite_header", count, rewrite)
    rate("unpack + rewrite (relay)", count, lambda: (unpack_header(data), rewrite()))
    rate("RtpPacket.serialize", count, packet.serialize)


if __name__ == "__main__":
    main()
