"""TxStream, the one SSRC/sequence/timestamp line a leg hears, without sockets or a loop.

A fake transport records what would be sent; ``now`` is passed in, so pauses are exact.
"""

from __future__ import annotations

import itertools
import random

from callbridge.media.dtmf import DtmfSender
from callbridge.media.g711 import ULAW_TO_ALAW
from callbridge.media.rtp import RtpPacket
from callbridge.media.stream import TxStream


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[RtpPacket] = []

    def sendto(self, data: memoryview, address: tuple[str, int]) -> int:
        self.sent.append(RtpPacket.parse(bytes(data)))
        return len(data)


def stream() -> tuple[TxStream, FakeSocket]:
    tx = TxStream(random.Random(7))
    transport = FakeSocket()
    tx.sendto = transport.sendto
    tx.address = ("127.0.0.1", 4000)
    return tx, transport


def forward(
    tx: TxStream,
    seq: int,
    ts: int,
    ssrc: int,
    now: float,
    *,
    payload: bytes = bytes(160),
    csrc: tuple[int, ...] = (),
    padding: int = 0,
    table: bytes | None = None,
) -> None:
    """A received PCMA packet forwarded as PCMU (payload type 0)."""
    packet = RtpPacket(8, seq, ts, ssrc, payload=payload, csrc=csrc, padding=padding)
    tx.forward(packet.serialize(), 0, packet.marker, seq, ts, ssrc, now, table)


def lines(transport: FakeSocket) -> list[tuple[int, int]]:
    """(sequence delta, timestamp delta) from each sent packet to the next."""
    sent = transport.sent
    return [
        ((b.sequence_number - a.sequence_number) & 0xFFFF, (b.timestamp - a.timestamp) & 0xFFFFFFFF)
        for a, b in itertools.pairwise(sent)
    ]


def test_the_first_packet_maps_onto_the_streams_random_start() -> None:
    tx, transport = stream()
    start_seq, start_ts = tx.seq, tx.ts
    forward(tx, 65535, 4294967200, ssrc=1, now=0.0)
    forward(tx, 0, 64, ssrc=1, now=0.02)  # the source wraps both
    first, second = transport.sent
    assert (first.sequence_number, first.timestamp, first.ssrc) == (start_seq, start_ts, tx.ssrc)
    assert first.marker  # a new source starts a talkspurt
    assert lines(transport) == [(1, 160)]
    assert not second.marker
    assert {p.payload_type for p in transport.sent} == {0}


def test_a_new_source_continues_the_line_by_the_time_that_passed() -> None:
    tx, transport = stream()
    for i in range(3):
        forward(tx, 100 + i, 8000 + 160 * i, ssrc=1, now=0.02 * i)
    # 0.5 s later another source (the answer after early media) starts with its own numbers.
    forward(tx, 7, 123456, ssrc=2, now=0.04 + 0.5)
    forward(tx, 8, 123456 + 160, ssrc=2, now=0.04 + 0.52)
    assert lines(transport) == [(1, 160), (1, 160), (1, 25 * 160), (1, 160)]
    assert [p.marker for p in transport.sent] == [True, False, False, True, False]
    assert {p.ssrc for p in transport.sent} == {tx.ssrc}


def test_a_source_that_restarts_its_numbering_is_reanchored() -> None:
    tx, transport = stream()
    forward(tx, 100, 0, ssrc=1, now=0.0)
    forward(tx, 101, 160, ssrc=1, now=0.02)
    forward(tx, 9000, 50_000, ssrc=1, now=0.04)  # same SSRC, sequence jumped: a restart
    assert lines(transport) == [(1, 160), (1, 160)]


def test_losses_and_pauses_of_one_source_pass_through() -> None:
    tx, transport = stream()
    forward(tx, 100, 0, ssrc=1, now=0.0)
    forward(tx, 103, 480, ssrc=1, now=0.06)  # two packets lost: the receiver must see the gap
    forward(tx, 104, 8480, ssrc=1, now=1.06)  # silence suppressed for a second
    assert lines(transport) == [(3, 480), (1, 8000)]


def test_a_late_packet_keeps_its_place_and_does_not_move_the_line() -> None:
    tx, transport = stream()
    forward(tx, 100, 0, ssrc=1, now=0.0)
    forward(tx, 102, 320, ssrc=1, now=0.04)
    forward(tx, 101, 160, ssrc=1, now=0.045)  # reordered
    tx.reset_source()
    forward(tx, 1, 0, ssrc=2, now=0.06)
    seqs = [p.sequence_number - transport.sent[0].sequence_number for p in transport.sent]
    assert seqs == [0, 2, 1, 3]


def test_generated_frames_late_by_timer_jitter_still_follow_on() -> None:
    tx, transport = stream()
    for now in (0.0, 0.032, 0.040, 0.075, 0.080):  # a loop running late, then catching up
        tx.send_generated(b"\xff" * 160, 0, 160, now=now)
    tx.send_generated(b"\xff" * 160, 0, 160, now=0.580)  # a real pause: 0.5 s
    assert lines(transport) == [(1, 160)] * 4 + [(1, 25 * 160)]


def test_generated_frames_continue_the_line_and_forwarding_resumes_after_them() -> None:
    tx, transport = stream()
    forward(tx, 500, 0, ssrc=1, now=0.0)
    tx.send_generated(b"\xff" * 160, 0, 160, now=0.02)
    tx.send_generated(b"\xff" * 160, 0, 160, now=0.04)
    forward(tx, 503, 480, ssrc=1, now=0.06)  # same source as before the playout
    assert lines(transport) == [(1, 160), (1, 160), (1, 160)]
    assert [p.marker for p in transport.sent] == [True, False, False, True]
    assert transport.sent[1].payload == b"\xff" * 160


def test_translation_touches_only_the_payload_past_csrcs_and_before_padding() -> None:
    tx, transport = stream()
    payload = bytes(range(160))
    forward(tx, 1, 0, ssrc=1, now=0.0, payload=payload, csrc=(0xABCD,), padding=4,
            table=ULAW_TO_ALAW)  # fmt: skip
    (sent,) = transport.sent
    assert sent.csrc == (0xABCD,)
    assert sent.padding == 4
    assert sent.payload == payload.translate(ULAW_TO_ALAW)


def test_nothing_is_sent_before_the_leg_has_an_address() -> None:
    tx, transport = stream()
    tx.address = None
    forward(tx, 1, 0, ssrc=1, now=0.0)
    assert transport.sent == []
    assert tx.sent == 0


def test_own_telephone_events_hold_the_line_then_forwarding_re_anchors_after_them() -> None:
    tx, transport = stream()
    forward(tx, 500, 0, ssrc=1, now=0.0)
    forward(tx, 501, 160, ssrc=1, now=0.02)
    tx.hold()
    start = tx.clock(0.03)
    assert start == (transport.sent[-1].timestamp + 160) & 0xFFFFFFFF  # the next frame's
    for packet in DtmfSender().packets("5", 100, start):
        tx.send_event(packet, 101, now=0.03 + packet.send_at / 8000)
        forward(tx, 502, 320, ssrc=1, now=0.03 + packet.send_at / 8000)  # held back
        tx.send_generated(b"\xff" * 160, 0, 160, now=0.03 + packet.send_at / 8000)  # too
    tx.release()
    forward(tx, 510, 1600, ssrc=1, now=0.03 + 0.14 + 0.02)
    sent = transport.sent
    assert [p.payload_type for p in sent] == [0, 0] + [101] * 7 + [0]
    assert lines(transport)[1:] == [(1, 160)] + [(1, 0)] * 6 + [(1, 800 + 320 + 160)]
    assert [p.marker for p in sent] == [True, False, True] + [False] * 6 + [True]
    assert {p.ssrc for p in sent} == {tx.ssrc}
    assert tx.held == 14 and not tx.holding


def test_an_event_on_a_fresh_stream_starts_at_its_random_timestamp() -> None:
    tx, transport = stream()
    start = tx.clock(5.0)
    assert start == tx.ts
    tx.hold()
    (first, *_) = DtmfSender().packets("1", 20, start)
    tx.send_event(first, 101, now=5.02)
    tx.release()
    tx.send_generated(b"\xff" * 160, 0, 160, now=5.04)
    assert [p.timestamp - start for p in transport.sent] == [0, 160 + 160]
