"""Write the RTP/RTCP datagram fixtures in this directory.

Run from the repository root: ``python tests/vectors/rtp/make_vectors.py``. Built by hand with
``struct`` from RFC 3550 §5.1 / §6.4 and RFC 5761 §4, not with callbridge's own serializer, so
the fixtures check the parser against the RFC rather than against itself.
"""

from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent


def header(
    *,
    version: int = 2,
    padding: bool = False,
    extension: bool = False,
    cc: int = 0,
    marker: bool = False,
    pt: int = 0,
    seq: int = 0x1234,
    ts: int = 0xDEADBEEF,
    ssrc: int = 0x01020304,
) -> bytes:
    b0 = version << 6 | padding << 5 | extension << 4 | cc
    return struct.pack("!BBHII", b0, marker << 7 | pt, seq, ts, ssrc)


def rtcp(packet_type: int, count: int, body: bytes) -> bytes:
    """RFC 3550 §6.4: V=2, P=0, count, PT, length in 32-bit words minus one."""
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


PCMU_20MS = b"\xff" * 160

VECTORS: dict[str, bytes] = {
    # Well-formed RTP.
    "pcmu.bin": header() + PCMU_20MS,
    "marker_pt101.bin": header(marker=True, pt=101, seq=0xFFFF, ts=0) + b"\x05\x0a\x00\xa0",
    "csrc2.bin": header(cc=2, pt=8) + struct.pack("!II", 0xAAAAAAAA, 0xBBBBBBBB) + b"\xd5" * 160,
    "ext_bede.bin": header(extension=True)
    + struct.pack("!HH", 0xBEDE, 1)
    + b"\x10\x7f\x00\x00"
    + PCMU_20MS,
    "ext_empty.bin": header(extension=True) + struct.pack("!HH", 0x1000, 0) + b"\x01\x02",
    "padding4.bin": header(padding=True) + PCMU_20MS + b"\x00\x00\x00\x04",
    "padding_only.bin": header(padding=True) + b"\x00\x00\x03",
    "all_features.bin": header(padding=True, extension=True, cc=1, marker=True, pt=0)
    + struct.pack("!I", 0xCAFEBABE)
    + struct.pack("!HH", 0xBEDE, 2)
    + b"\x22\x01\x02\x03\x00\x00\x00\x00"
    + b"\x7f" * 80
    + b"\x00\x02",
    # Malformed RTP.
    "empty.bin": b"",
    "short11.bin": header()[:11],
    "version0.bin": header(version=0) + PCMU_20MS,
    "version1.bin": header(version=1) + PCMU_20MS,
    "version3.bin": header(version=3) + PCMU_20MS,
    "csrc_truncated.bin": header(cc=3) + struct.pack("!II", 1, 2),
    "csrc15_empty.bin": header(cc=15),
    "ext_header_truncated.bin": header(extension=True) + b"\xbe\xde",
    "ext_data_truncated.bin": header(extension=True)
    + struct.pack("!HH", 0xBEDE, 2)
    + b"\x10\x7f\x00\x00",
    "ext_after_csrc_truncated.bin": header(extension=True, cc=1) + struct.pack("!I", 7),
    "padding_zero.bin": header(padding=True) + PCMU_20MS + b"\x00",
    "padding_overflow.bin": header(padding=True) + b"\x00\x00\x04",
    "padding_into_header.bin": header(padding=True),
    "padding_into_ext.bin": header(padding=True, extension=True)
    + struct.pack("!HH", 0xBEDE, 1)
    + b"\x10\x7f\x00\x02",
    # RTCP on the RTP port (RFC 5761 §4): never audio.
    "rtcp_sr.bin": rtcp(200, 0, struct.pack("!IQIII", 0x01020304, 0xE123456789ABCDEF, 160, 5, 800)),
    "rtcp_rr.bin": rtcp(201, 0, struct.pack("!I", 0x01020304)),
    "rtcp_sdes.bin": rtcp(202, 1, struct.pack("!I", 0x01020304) + b"\x01\x03abc\x00\x00\x00"),
    "rtcp_bye.bin": rtcp(203, 1, struct.pack("!I", 0x01020304)),
    "rtcp_app.bin": rtcp(204, 0, struct.pack("!I", 0x01020304) + b"CBRG" + b"\x00" * 4),
}


def main() -> None:
    for name, data in VECTORS.items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
