"""uas_by_number.xml: one SIPp trunk that acts on the dialled number's last digits.

Each rule is played against a SIPp client (sipp_scenarios/selftest/uac_by_number_*.xml);
one trunk then takes several calls at once, as callbridge's agent and customer legs, and
a three-way call's legs; in-dialog INFO is answered in every phase of a call; and a client
written here in Python checks the audio: RTP from the port the SDP names, PCMU, a 440 Hz
tone for a ...4XX number and 1 kHz for a ...1XX one, looped for the whole call, and the
digit "1" a ...07 number presses as RFC 4733 events.
"""

from __future__ import annotations

import asyncio
import re
import select
import shutil
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pytest

from callbridge.media.g711 import ulaw_decode
from sipp import Sipp, SippMessage, by_number_trunk, can_play_pcap, sipp_uac

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) is not installed"),
]


@dataclass(frozen=True)
class Dial:
    """One SIPp client call: its scenario in selftest/, the number, its -set variables."""

    uac: str
    number: str
    variables: Mapping[str, object] = field(default_factory=dict)


async def _dial_all(
    dials: Sequence[Dial], trunk_variables: Mapping[str, object]
) -> tuple[Sipp, list[Sipp]]:
    async with by_number_trunk(
        calls=len(dials), variables=trunk_variables, recv_timeout=4, timeout=15
    ) as trunk:
        uacs = [
            sipp_uac(
                f"selftest/uac_by_number_{dial.uac}.xml",
                trunk.address,
                service=dial.number,
                variables=dial.variables,
                recv_timeout=4,
                timeout=15,
            )
            for dial in dials
        ]
        for uac in uacs:
            await uac.start_async()
        try:
            codes = await asyncio.gather(*(uac.wait() for uac in uacs))
            if not any(codes):  # else the trunk waits for a call that never comes: stop it
                await trunk.wait()
        finally:
            for uac in uacs:
                uac.stop()
    return trunk, uacs


def dial_all(
    dials: Sequence[Dial], trunk_variables: Mapping[str, object] | None = None
) -> tuple[Sipp, list[Sipp]]:
    """Start the trunk for len(dials) calls, place them all at once; all have exited."""
    return asyncio.run(_dial_all(dials, trunk_variables or {}))


def assert_passed(*runs: Sipp) -> None:
    for run in runs:
        assert run.returncode == 0, run.report()


def flow(messages: Sequence[SippMessage]) -> list[str]:
    """The trunk's side of a call as 'received INVITE' / 'sent 180'."""
    return [f"{m.direction} {m.method or m.status}" for m in messages]


def first(messages: Sequence[SippMessage], direction: str, kind: str | int) -> SippMessage:
    return next(m for m in messages if m.direction == direction and m.matches(kind))


def gap(earlier: SippMessage, later: SippMessage) -> timedelta:
    return later.time - earlier.time


ANSWERED = ["received INVITE", "sent 100", "sent 180", "sent 200", "received ACK"]
SDP_CODECS = (
    " RTP/AVP 0 8 101\r\n",
    "a=rtpmap:0 PCMU/8000\r\n",
    "a=rtpmap:8 PCMA/8000\r\n",
    "a=rtpmap:101 telephone-event/8000\r\n",
)

# Every rule, each number in another of the formats callbridge may send: only the last
# digits count. "5" has no rule digits at all and is answered like any other number.
RULES = {
    "9876543401": ("refused", ["received INVITE", "sent 100", "sent 486", "received ACK"]),
    "+919876543402": (
        "ring_cancel",
        [
            "received INVITE",
            "sent 100",
            "sent 180",
            "received CANCEL",
            "sent 200",
            "sent 487",
            "received ACK",
        ],
    ),
    "919876543403": ("refused", ["received INVITE", "sent 100", "sent 503", "received ACK"]),
    "09876543404": ("hangup", [*ANSWERED, "sent BYE", "received 200"]),
    "9876543405": (
        "early",
        [
            "received INVITE",
            "sent 100",
            "sent 183",
            "sent 200",
            "received ACK",
            "received BYE",
            "sent 200",
        ],
    ),
    "9876543406": ("refused", ["received INVITE", "sent 100", "sent 480", "received ACK"]),
    "9876543408": ("answer", [*ANSWERED, "received BYE", "sent 200"]),
    "9876543400": ("answer", [*ANSWERED, "received BYE", "sent 200"]),
    "5": ("answer", [*ANSWERED, "received BYE", "sent 200"]),
}
TIMING = {"ring_ms": 200, "hangup_ms": 300, "early_ms": 300}


@pytest.fixture(scope="module")
def every_rule() -> tuple[Sipp, dict[str, Sipp]]:
    """One trunk, every rule's number dialled at once by its SIPp client; all have exited."""
    dials = [Dial(uac, number) for number, (uac, _) in RULES.items()]
    trunk, clients = dial_all(dials, TIMING)
    return trunk, dict(zip(RULES, clients, strict=True))


@pytest.mark.parametrize("number", RULES)
def test_each_rule_plays_its_flow(every_rule: tuple[Sipp, dict[str, Sipp]], number: str) -> None:
    trunk, clients = every_rule
    assert_passed(trunk, clients[number])
    assert flow(trunk.calls_to(number)) == RULES[number][1]


def test_every_response_to_the_invite_carries_our_to_tag(
    every_rule: tuple[Sipp, dict[str, Sipp]],
) -> None:
    trunk, _ = every_rule
    tags = set()
    for number in RULES:
        call = trunk.calls_to(number)
        responses = [m for m in call if m.status not in (None, 100) and m.direction == "sent"]
        invite_to = first(call, "received", "INVITE").header("To")
        finals = [m for m in responses if (m.header("CSeq") or "").endswith(" INVITE")]
        assert {m.header("To") for m in finals} == {f"{invite_to};tag={_tag(finals[0])}"}
        tags.add(_tag(finals[0]))
    assert len(tags) == len(RULES)  # a dialog of its own for every call


def _tag(response: SippMessage) -> str:
    return (response.header("To") or "").rpartition(";tag=")[2]


@pytest.mark.parametrize("number", ["9876543400", "5", "09876543404", "9876543408"])
def test_answering_numbers_ring_for_ring_ms_then_answer_with_sdp(
    every_rule: tuple[Sipp, dict[str, Sipp]], number: str
) -> None:
    call = every_rule[0].calls_to(number)
    ringing, ok = first(call, "sent", 180), first(call, "sent", 200)
    assert gap(ringing, ok) >= timedelta(milliseconds=TIMING["ring_ms"])
    assert all(part in ok.body for part in SDP_CODECS)


def test_early_media_sends_183_with_sdp_and_the_same_sdp_in_200_after_early_ms(
    every_rule: tuple[Sipp, dict[str, Sipp]],
) -> None:
    call = every_rule[0].calls_to("9876543405")
    progress, ok = first(call, "sent", 183), first(call, "sent", 200)
    assert gap(progress, ok) >= timedelta(milliseconds=TIMING["early_ms"])
    assert all(part in progress.body for part in SDP_CODECS)
    assert ok.body == progress.body


def test_hangup_number_sends_an_in_dialog_bye_after_hangup_ms(
    every_rule: tuple[Sipp, dict[str, Sipp]],
) -> None:
    call = every_rule[0].calls_to("09876543404")
    invite, ack, bye = (
        first(call, "received", "INVITE"),
        first(call, "received", "ACK"),
        first(call, "sent", "BYE"),
    )
    assert gap(ack, bye) >= timedelta(milliseconds=TIMING["hangup_ms"])
    # RFC 3261 12.2.1.1: to the remote target, the parties swapped, our tag in From.
    assert invite.header("Contact") == f"<{bye.request_uri}>"
    assert bye.header("To") == invite.header("From")
    assert bye.header("From") == first(call, "sent", 200).header("To")
    assert bye.header("Call-ID") == invite.header("Call-ID")


def test_one_trunk_takes_the_agent_customer_and_third_leg_at_once() -> None:
    agent, customer, third = "9876543400", "+919876543104", "09876543401"
    trunk, clients = dial_all(
        [
            Dial("answer", agent, {"talk_ms": 2000}),
            Dial("hangup", customer),
            Dial("refused", third),
        ]
    )
    assert_passed(trunk, *clients)
    agent_call, customer_call = trunk.calls_to(agent), trunk.calls_to(customer)
    assert flow(agent_call) == [*ANSWERED, "received BYE", "sent 200"]
    assert flow(customer_call) == [*ANSWERED, "sent BYE", "received 200"]
    assert flow(trunk.calls_to(third))[-2:] == ["sent 486", "received ACK"]
    # The calls overlapped: the customer hung up while the agent was still talking.
    assert agent_call[0].time < customer_call[-1].time < agent_call[-1].time
    # The defaults: ring_ms 100, hangup_ms 1500.
    ringing, ok = first(customer_call, "sent", 180), first(customer_call, "sent", 200)
    assert timedelta(milliseconds=100) <= gap(ringing, ok) < timedelta(milliseconds=1000)
    ack, bye = first(customer_call, "received", "ACK"), first(customer_call, "sent", "BYE")
    assert gap(ack, bye) >= timedelta(milliseconds=1500)


def test_three_way_legs_are_all_answered_at_once_and_the_third_leaves_first() -> None:
    """An added participant is one more call: all three talk, and one BYE ends only one."""
    agent, customer, third = "9876543400", "+919876543100", "09876543600"
    trunk, clients = dial_all(
        [
            Dial("answer", agent, {"talk_ms": 1200}),
            Dial("answer", customer, {"talk_ms": 1200}),
            Dial("answer", third, {"talk_ms": 300}),
        ]
    )
    assert_passed(trunk, *clients)
    calls = [trunk.calls_to(number) for number in (agent, customer, third)]
    assert [flow(call) for call in calls] == [[*ANSWERED, "received BYE", "sent 200"]] * 3
    acks = [first(call, "received", "ACK").time for call in calls]
    byes = [first(call, "received", "BYE").time for call in calls]
    # All three were up at once; the third's BYE came and went while the others talked on.
    assert max(acks) < byes[2]
    assert byes[2] + timedelta(milliseconds=500) < min(byes[:2])


# --- in-dialog INFO ---------------------------------------------------------------------

#: hangup_ms long enough for an INFO to land in it; dtmf_ms so long the digit never comes.
INFO_TIMING = {"hangup_ms": 400, "dtmf_ms": 5000}
#: An INFO in each phase: waiting for the BYE (08, and 05 after its early media), in the
#: hangup_ms wait (04, which then hangs up itself) and in the dtmf_ms wait (07).
INFO_DIALS = {
    "9876543408": (
        {"info_ms": 100, "talk_ms": 200},
        [*ANSWERED, "received INFO", "sent 200", "received BYE", "sent 200"],
    ),
    "09876543404": (
        {"info_ms": 200, "far_end_bye": 1},
        [*ANSWERED, "received INFO", "sent 200", "sent BYE", "received 200"],
    ),
    "9876543405": (
        {"info_ms": 100, "talk_ms": 200},
        [
            "received INVITE",
            "sent 100",
            "sent 183",
            "sent 200",
            "received ACK",
            "received INFO",
            "sent 200",
            "received BYE",
            "sent 200",
        ],
    ),
    "9876543407": (
        {"info_ms": 100, "talk_ms": 200},
        [*ANSWERED, "received INFO", "sent 200", "received BYE", "sent 200"],
    ),
}


@pytest.fixture(scope="module")
def info_calls() -> tuple[Sipp, dict[str, Sipp]]:
    """One trunk; every INFO_DIALS number dialled at once by uac_by_number_info.xml."""
    dials = [Dial("info", number, variables) for number, (variables, _) in INFO_DIALS.items()]
    trunk, clients = dial_all(dials, INFO_TIMING)
    return trunk, dict(zip(INFO_DIALS, clients, strict=True))


@pytest.mark.parametrize("number", INFO_DIALS)
def test_an_info_is_answered_200_in_every_phase_of_the_talk(
    info_calls: tuple[Sipp, dict[str, Sipp]], number: str
) -> None:
    trunk, clients = info_calls
    assert_passed(trunk, clients[number])
    call = trunk.calls_to(number)
    assert flow(call) == INFO_DIALS[number][1]
    info = first(call, "received", "INFO")
    ok = call[call.index(info) + 1]
    assert info.header("Content-Type") == "application/dtmf-relay"
    assert ok.status == 200
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        assert ok.header(name) == info.header(name), name
    assert f"INFO on the call to {number}: Signal=1" in trunk.action_log


def test_the_trunk_records_every_info_and_allows_info(
    info_calls: tuple[Sipp, dict[str, Sipp]],
) -> None:
    trunk, _ = info_calls
    infos = trunk.received("INFO")
    assert len(infos) == len(INFO_DIALS)
    assert all(m.body == "Signal=1\r\nDuration=160\r\n" for m in infos)
    answers = [m for m in trunk.sent(200) if (m.header("CSeq") or "").endswith(" INVITE")]
    assert all("INFO" in (m.header("Allow") or "") for m in answers)


def test_an_info_in_the_hangup_wait_starts_the_wait_over(
    info_calls: tuple[Sipp, dict[str, Sipp]],
) -> None:
    call = info_calls[0].calls_to("09876543404")
    ack, info = first(call, "received", "ACK"), first(call, "received", "INFO")
    ok, bye = call[call.index(info) + 1], first(call, "sent", "BYE")
    assert gap(ack, info) < timedelta(milliseconds=INFO_TIMING["hangup_ms"])
    assert gap(ok, bye) >= timedelta(milliseconds=INFO_TIMING["hangup_ms"])


def test_an_info_before_the_ack_fails_the_call() -> None:
    with (
        by_number_trunk(calls=2, recv_timeout=3, timeout=10) as trunk,
        _SipClient(trunk.address) as client,
    ):
        assert client.invite("9876543408", rtp_port=9).startswith("SIP/2.0 200 OK\r\n")
        client.info("1")
        trunk.wait_sync()
    assert trunk.returncode == 1, trunk.report()
    assert "an in-dialog request on the call to 9876543408 before its ACK" in trunk.error_log
    assert trunk.sent(200)[-1].header("CSeq") == "1 INVITE"  # the INFO went unanswered


def test_the_trunk_fails_a_call_that_is_never_acked_and_stops() -> None:
    """A failed call stops the trunk with exit 1, even when more calls were expected."""
    with (
        by_number_trunk(calls=3, recv_timeout=0.5, timeout=10) as trunk,
        _SipClient(trunk.address) as client,
    ):
        reply = client.invite("9876543401", rtp_port=9)
        trunk.wait_sync()
    assert reply.startswith("SIP/2.0 486 Busy Here\r\n")
    assert trunk.returncode == 1, trunk.report()
    assert "did not complete the call to 9876543401" in trunk.error_log


# --- the audio, from a client written here --------------------------------------------


class _SipClient:
    """A bare UDP SIP client: enough of RFC 3261 to place one call and watch its media."""

    def __init__(self, trunk: tuple[str, int]) -> None:
        self.trunk = trunk
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)
        self.port = self.sock.getsockname()[1]
        self.call_id = f"audio-{self.port}@test"
        self.to_tag = ""
        self.number = ""

    def _request(
        self, method: str, cseq: int, body: str = "", content_type: str = "application/sdp"
    ) -> bytes:
        host, port = self.trunk
        to_tag = f";tag={self.to_tag}" if self.to_tag else ""
        type_header = f"Content-Type: {content_type}\r\n" if body else ""
        return (
            f"{method} sip:{self.number}@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-{method}-{cseq}-{self.port}\r\n"
            f"From: <sip:callbridge@127.0.0.1:{self.port}>;tag=cb{self.port}\r\n"
            f"To: <sip:{self.number}@{host}:{port}>{to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:callbridge@127.0.0.1:{self.port}>\r\n"
            "Max-Forwards: 70\r\n"
            f"{type_header}Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()

    def send_invite(self, number: str, rtp_port: int) -> None:
        """Send the INVITE, its SDP offering media at rtp_port."""
        self.number = number
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        )
        self.sock.sendto(self._request("INVITE", 1, sdp), self.trunk)

    def response(self) -> str:
        """The next response; a final one also sets the To tag the dialog goes on with."""
        reply = self.sock.recv(65535).decode()
        if int(reply.split(" ", 2)[1]) >= 200:
            self.to_tag = _capture(r"^To:.*;tag=([^;\r]+)", reply)
        return reply

    def final(self) -> str:
        while int((reply := self.response()).split(" ", 2)[1]) < 200:
            pass
        return reply

    def nothing_pending(self) -> bool:
        """True when no SIP message waits to be read (a poll that does not wait)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable

    def final_or_183(self) -> str:
        while not (reply := self.response()).startswith(("SIP/2.0 183 ", "SIP/2.0 2")):
            pass
        return reply

    def invite(self, number: str, rtp_port: int) -> str:
        """Send the INVITE; return the final response."""
        self.send_invite(number, rtp_port)
        return self.final()

    def ack(self) -> None:
        self.sock.sendto(self._request("ACK", 1), self.trunk)

    def info(self, digit: str) -> None:
        """Send `digit` in an in-dialog INFO (application/dtmf-relay), CSeq 2."""
        body = f"Signal={digit}\r\nDuration=160\r\n"
        self.sock.sendto(self._request("INFO", 2, body, "application/dtmf-relay"), self.trunk)

    def bye(self) -> str:
        self.sock.sendto(self._request("BYE", 2), self.trunk)
        return self.sock.recv(65535).decode()

    def __enter__(self) -> _SipClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()


def _capture(pattern: str, text: str) -> str:
    """The first group of `pattern`'s first match, line by line, in `text`."""
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, f"no {pattern!r} in:\n{text}"
    return found[1]


@dataclass(frozen=True)
class Heard:
    """What a call's RTP socket received (source, packet), and the trunk's SDP answer."""

    answer: str
    packets: list[tuple[tuple[str, int], bytes]]
    #: Packets that came after the 183 and before the 200 (early media), else 0.
    early: int = 0
    #: When each packet arrived (time.monotonic()), the ACK left, and the BYE was answered.
    times: list[float] = field(default_factory=list)
    acked: float = 0.0
    ended: float = 0.0


def _pcmu_back(index: int) -> bytes:
    """A packet of silence-ish PCMU (payload type 0), as callbridge would talk back."""
    return bytes([0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7]) + b"\x7f" * 160


def _digit_5_back(index: int) -> bytes:
    """RFC 4733 events toward the trunk, as callbridge sends a digit into a leg: "5" over
    and over, payload type 101, 8 packets an event: the marker on the first, the
    duration growing 20 ms a packet, the E bit on the last (RFC 4733 2.3, 2.5.1)."""
    step = index % 8
    marker, end = (0x80 if step == 0 else 0), (0x80 if step == 7 else 0)
    header = struct.pack("!BBHII", 0x80, marker | 101, index & 0xFFFF, 1280 * (index // 8), 7)
    return header + struct.pack("!BBH", 5, end | 10, 160 * (step + 1))


def _talk(
    trunk: tuple[str, int],
    number: str,
    seconds: float,
    talk_back: Callable[[int], bytes] = _pcmu_back,
) -> Heard:
    """Call `number`, take its RTP for `seconds` after the 200, hang up.

    Each packet heard is answered with `talk_back(index)`, as callbridge would talk: the
    trunk must neither echo nor choke on it.
    """
    with _SipClient(trunk) as client, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        rtp.settimeout(1)
        client.send_invite(number, rtp.getsockname()[1])
        packets: list[tuple[tuple[str, int], bytes]] = []
        times: list[float] = []
        early = 0
        if (progress := client.final_or_183()).startswith("SIP/2.0 183 "):
            # 10 packets (200 ms) well within early_ms (800): the 200 must still be to come.
            for _ in range(10):
                data, source = rtp.recvfrom(2048)
                packets.append((source, data))
                times.append(time.monotonic())
            early = len(packets) if client.nothing_pending() else 0
            answer = client.final()
        else:
            answer = progress
        client.ack()
        acked = time.monotonic()
        while (now := time.monotonic()) < acked + seconds:
            data, source = rtp.recvfrom(2048)
            packets.append((source, data))
            times.append(now)
            rtp.sendto(talk_back(len(times)), source)
        assert client.bye().startswith("SIP/2.0 200 OK\r\n")
        return Heard(answer, packets, early, times, acked, time.monotonic())


def _peak_hz(payload: bytes) -> float:
    pcm = ulaw_decode(payload).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / 8000)[int(spectrum.argmax())])


async def _talk_to_all(
    numbers: Sequence[str],
    seconds: float | Sequence[float],
    *,
    variables: Mapping[str, object] | None = None,
    talk_back: Callable[[int], bytes] = _pcmu_back,
) -> tuple[Sipp, list[Heard]]:
    """Call every number at once, each for its `seconds` (or all for the same)."""
    durations = [seconds] * len(numbers) if isinstance(seconds, float | int) else seconds
    async with by_number_trunk(
        calls=len(numbers), variables=variables, recv_timeout=5, timeout=15
    ) as trunk:
        heard = await asyncio.gather(
            *(
                asyncio.to_thread(_talk, trunk.address, number, duration, talk_back)
                for number, duration in zip(numbers, durations, strict=True)
            )
        )
        await trunk.wait()
    return trunk, list(heard)


def test_each_leg_hears_its_tone_as_pcmu_from_the_answered_port_looped() -> None:
    # A 440 Hz agent, a 1 kHz customer, and a 600 Hz third leg with early media.
    numbers, tones = ("9876543400", "+919876543100", "09876543605"), (440, 1000, 600)
    trunk, heard = asyncio.run(_talk_to_all(numbers, seconds=2.6))
    assert_passed(trunk)
    assert [call.early for call in heard] == [0, 0, 10]
    for number, expected_hz, call in zip(numbers, tones, heard, strict=True):
        sdp_port = int(_capture(r"^m=audio (\d+) ", call.answer))
        sources = {source for source, _ in call.packets}
        assert sources == {("127.0.0.1", sdp_port)}, number
        headers = [packet[:12] for _, packet in call.packets]
        assert {h[1] & 0x7F for h in headers} == {0}  # payload type 0: PCMU
        assert {len(p) for _, p in call.packets} == {12 + 160}  # 20 ms a packet
        # 2.6 s at 50 packets/s outlasts the 2 s file, with no gap in sequence.
        sequence = [int.from_bytes(h[2:4], "big") for h in headers]
        assert len(sequence) >= 120, number
        assert sequence == list(range(sequence[0], sequence[0] + len(sequence)))
        # The 2 s file (100 packets) starts over where it ended.
        payloads = [p[12:] for _, p in call.packets]
        assert all(a == b for a, b in zip(payloads, payloads[100:], strict=False))
        payload = b"".join(payloads)
        assert b"\x7f" * 160 not in payload  # our own audio never came back
        assert abs(_peak_hz(payload) - expected_hz) < 5, number
        # And the tone lasts the whole call: its first and last second alike.
        assert abs(_peak_hz(payload[:8000]) - expected_hz) < 5
        assert abs(_peak_hz(payload[-8000:]) - expected_hz) < 5


def _pcmu(call: Heard, after: float = 0.0) -> bytes:
    """The PCMU payloads a call heard after monotonic time `after`, joined."""
    return b"".join(
        packet[12:]
        for when, (_, packet) in zip(call.times, call.packets, strict=True)
        if when > after and packet[1] & 0x7F == 0
    )


def test_a_third_leg_hangs_up_and_the_other_two_talk_on_with_their_tones() -> None:
    # A three-way call: the 440 Hz agent, the 1 kHz customer, and a 600 Hz party added.
    numbers, seconds = ("9876543400", "+919876543100", "09876543600"), (1.6, 1.6, 0.6)
    trunk, (agent, customer, third) = asyncio.run(_talk_to_all(numbers, seconds))
    assert_passed(trunk)
    # All three talked at once, each its own tone.
    assert max(call.acked for call in (agent, customer, third)) < third.ended
    assert abs(_peak_hz(_pcmu(third)) - 600) < 5
    for call, hz in ((agent, 440), (customer, 1000)):
        # A good half second of the tone after the third's BYE, with no gap in sequence.
        after = _pcmu(call, after=third.ended)
        assert len(after) >= 25 * 160
        assert abs(_peak_hz(after) - hz) < 5
        sequence = [int.from_bytes(packet[2:4], "big") for _, packet in call.packets]
        assert sequence == list(range(sequence[0], sequence[0] + len(sequence)))
    bye_times = [first(trunk.calls_to(n), "received", "BYE").time for n in numbers]
    assert bye_times[2] < min(bye_times[:2])


# --- the digit of ...07 -----------------------------------------------------------------


@dataclass(frozen=True)
class Rfc4733Event:
    """An RFC 4733 named-event packet (2.3): RTP header fields and the event payload."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, packet: bytes) -> Rfc4733Event:
        first_byte, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", packet)
        assert first_byte >> 6 == 2 and not first_byte & 0x0F  # RTP version 2, no CSRC
        event, flags, duration = struct.unpack_from("!BBH", packet, 12)
        return cls(
            marker=bool(second & 0x80),
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            event=event,
            end=bool(flags & 0x80),
            volume=flags & 0x3F,
            duration=duration,
        )


@pytest.mark.skipif(not can_play_pcap(), reason="play_pcap_audio needs root (a raw socket)")
def test_07_presses_1_as_rfc4733_events_after_dtmf_ms_and_08_never_presses() -> None:
    # Both legs hear RFC 4733 digits from us the whole call (as callbridge sends digits
    # into a leg): SIPp must go on regardless. dtmf_ms is the default, 800.
    numbers = ("9876543407", "9876543408")
    trunk, (confirms, never) = asyncio.run(_talk_to_all(numbers, 1.5, talk_back=_digit_5_back))
    assert_passed(trunk)
    assert "the call to 9876543407 presses 1" in trunk.action_log
    assert "the call to 9876543408 presses" not in trunk.action_log

    sdp_port = int(_capture(r"^m=audio (\d+) ", confirms.answer))
    assert {source for source, _ in confirms.packets} == {("127.0.0.1", sdp_port)}
    timed = list(zip(confirms.times, (packet for _, packet in confirms.packets), strict=True))
    events = [(when, Rfc4733Event.parse(p)) for when, p in timed if p[1] & 0x7F == 101]
    digit = [event for _, event in events]
    # The digit 1, marked at its start; its duration grows, then three end packets.
    assert len(digit) == 10
    assert {(e.payload_type, e.event, e.timestamp, e.ssrc) for e in digit} == {
        (101, 1, digit[0].timestamp, digit[0].ssrc)
    }
    assert [e.marker for e in digit] == [True] + [False] * 9
    assert [e.end for e in digit] == [False] * 7 + [True] * 3
    durations = [e.duration for e in digit]
    assert durations == sorted(durations) and len(set(durations[-3:])) == 1
    assert [e.sequence for e in digit[:8]] == list(range(digit[0].sequence, digit[0].sequence + 8))
    # It comes dtmf_ms after the ACK, the tone silent while it plays, and then resumes.
    started, ended = events[0][0], events[-1][0]
    assert 0.8 - 0.02 <= started - confirms.acked < 0.8 + 0.5
    assert not [p for when, p in timed if started <= when <= ended and p[1] & 0x7F == 0]
    assert abs(_peak_hz(_pcmu(confirms, after=ended)) - 440) < 5
    assert len(_pcmu(confirms, after=ended)) >= 20 * 160

    assert {packet[1] & 0x7F for _, packet in never.packets} == {0}
    sequence = [int.from_bytes(packet[2:4], "big") for _, packet in never.packets]
    assert sequence == list(range(sequence[0], sequence[0] + len(sequence)))
    assert abs(_peak_hz(_pcmu(never)) - 440) < 5


@pytest.mark.skipif(not can_play_pcap(), reason="play_pcap_audio needs root (a raw socket)")
def test_07_answers_an_info_before_around_and_after_its_digit_and_still_presses() -> None:
    # dtmf_ms 800: an INFO at 300 ms restarts the wait (the digit at ~1100 ms), one at
    # 900 ms lands about the digit, one at 1300 ms after it.
    dials = {
        "9876543407": {"info_ms": 300, "talk_ms": 1200},
        "9876543107": {"info_ms": 900, "talk_ms": 500},
        "9876543207": {"info_ms": 1300, "talk_ms": 200},
    }
    trunk, clients = dial_all([Dial("info", n, v) for n, v in dials.items()])
    assert_passed(trunk, *clients)
    for number in dials:
        assert flow(trunk.calls_to(number)) == [
            *ANSWERED,
            "received INFO",
            "sent 200",
            "received BYE",
            "sent 200",
        ]
        assert trunk.action_log.count(f"the call to {number} presses 1") == 1
    log = trunk.action_log
    assert log.index("the call to 9876543207 presses 1") < log.index(
        "INFO on the call to 9876543207"
    )
