"""The sandbox's SIP side without sockets: callbridge's own pure UserAgent as the caller, the
pure SandboxUas as the carrier, datagrams handed across by hand and a fake clock, so every
rule's timing is exact and nothing sleeps."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from callbridge.sandbox.rules import (
    AGENT_VOICE,
    BEEPS_1000,
    PRESSES,
    REFUSALS,
    TONE_600,
    Rule,
    SandboxTimings,
    dialled_digits,
    rule_for,
    voice_for,
)
from callbridge.sandbox.uas import (
    AudioStarted,
    AudioStopped,
    CallChanged,
    CallState,
    DigitsWanted,
    MediaWanted,
    Outcome,
    SandboxCall,
    SandboxUas,
)
from callbridge.sip.message import Request, parse_message
from callbridge.sip.sdp import Codec, MediaCapabilities, Origin, SessionDescription, build_offer
from callbridge.sip.uri import parse_uri
from callbridge.sip.useragent import (
    Answered,
    Cancelled,
    EarlyMedia,
    Event,
    Failed,
    MediaUpdate,
    PingResult,
    RemoteHangup,
    Trying,
    UserAgent,
    UserAgentConfig,
)

UAC = ("127.0.0.1", 5060)
UAS = ("127.0.0.1", 5070)
TIMINGS = SandboxTimings(ring=1.0, early_media=2.0, hangup_after=3.0, confirm_after=1.5)


def offer(port: int = 20000, codecs: tuple[Codec, ...] | None = None) -> bytes:
    caps = MediaCapabilities("127.0.0.1", port)
    if codecs is not None:
        caps = MediaCapabilities("127.0.0.1", port, codecs=codecs, telephone_event=False)
    return build_offer(caps, Origin("callbridge", "1", 1, "127.0.0.1")).serialize()


class Wire:
    """callbridge's UserAgent and a SandboxUas joined by a lossless, instant wire."""

    def __init__(self, timings: SandboxTimings = TIMINGS, *, media: bool = True) -> None:
        counter = itertools.count()

        def token() -> str:
            return f"t{next(counter)}"

        config = UserAgentConfig(host=UAC[0], port=UAC[1], trusted_sources=frozenset({UAS[0]}))
        self.ua = UserAgent(config, token=token)
        self.uas = SandboxUas(UAS[0], UAS[1], token=token, timings=timings)
        self.now = 0.0
        #: Open RTP ports at once when the sandbox asks (else the test answers by hand).
        self.media = media
        self.events: list[tuple[float, Event]] = []
        #: The sandbox's media events, and apart the call states its CallChanged named.
        self.sandbox_events: list[tuple[float, object]] = []
        self.changes: list[tuple[float, CallState]] = []
        self.to_sandbox: list[bytes] = []
        self.to_caller: list[tuple[float, bytes]] = []
        #: Datagrams for which this returns True are lost on the way.
        self.drop: Callable[[bytes], bool] = lambda data: False

    def dial(self, number: str, *, sdp: bytes | None = None,
             headers: tuple[tuple[str, str], ...] = ()) -> None:
        uri = f"sip:{number}@{UAS[0]}:{UAS[1]}"
        self.ua.invite(number, request_uri=uri, from_="<sip:919800000000@127.0.0.1>",
                       to=f"<{uri}>", sdp=offer() if sdp is None else sdp, destination=UAS,
                       now=self.now, headers=headers)
        self.pump()

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for data, address in self.ua.datagrams_to_send():
                assert address == UAS
                moved = True
                self.to_sandbox.append(data)
                if not self.drop(data):
                    self.uas.receive_datagram(data, UAC, self.now)
            for data, address in self.uas.datagrams_to_send():
                assert address == UAC
                moved = True
                self.to_caller.append((self.now, data))
                if not self.drop(data):
                    self.ua.receive_datagram(data, UAS, self.now)
            while (event := self.ua.next_event()) is not None:
                self.events.append((self.now, event))
            while (sandbox_event := self.uas.next_event()) is not None:
                moved = True
                if isinstance(sandbox_event, CallChanged):
                    self.changes.append((self.now, sandbox_event.state))
                    continue
                self.sandbox_events.append((self.now, sandbox_event))
                if isinstance(sandbox_event, MediaWanted) and self.media:
                    self.uas.media_ready(sandbox_event.call_id, "127.0.0.1", 30000, self.now)

    def run_until(self, until: float) -> None:
        """Fire both sides' timers in order up to ``until``."""
        while True:
            due = [t for t in (self.ua.get_timer(), self.uas.get_timer())
                   if t is not None and t <= until]
            if not due:
                break
            self.now = max(self.now, min(due))
            self.ua.handle_timer(self.now)
            self.uas.handle_timer(self.now)
            self.pump()
        self.now = until

    def leg_events(self) -> list[tuple[float, str]]:
        return [(t, type(e).__name__) for t, e in self.events if not isinstance(e, Trying)]

    def sent_by_sandbox(self, first_line: str) -> list[bytes]:
        return [d for _, d in self.to_caller if d.startswith(first_line.encode())]

    def times_of(self, first_line: str, method: str) -> list[float]:
        """When the sandbox sent messages starting ``first_line`` with CSeq ``method``."""
        return [t for t, d in self.to_caller
                if d.startswith(first_line.encode()) and parse_message(d).cseq.method == method]

    @property
    def call(self) -> SandboxCall:
        return self.uas.calls[-1]


# -- the rule table --------------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "digits"), [
    ("sip:+919876543401@carrier", "919876543401"),
    ("sip:09876543402@10.0.0.1:5060;user=phone", "09876543402"),
    ("tel:+91-98765-43403", "919876543403"),
    ("sip:carrier.example", ""),
])
def test_digits_come_from_the_request_uri_in_any_format(uri: str, digits: str) -> None:
    assert dialled_digits(parse_uri(uri)) == digits


@pytest.mark.parametrize(("digits", "rule"), [
    ("9876543401", Rule.BUSY), ("9876543402", Rule.RINGS_OUT), ("9876543403", Rule.FAILURE),
    ("9876543404", Rule.HANGS_UP), ("9876543405", Rule.EARLY_MEDIA),
    ("9876543406", Rule.UNAVAILABLE), ("9876543407", Rule.CONFIRMS),
    ("919876543408", Rule.NEVER_CONFIRMS), ("9876543409", Rule.ANSWERS),
    ("9876543410", Rule.ANSWERS), ("9876543470", Rule.ANSWERS), ("1", Rule.ANSWERS),
    ("", Rule.ANSWERS),
])
def test_the_last_two_digits_pick_the_rule(digits: str, rule: Rule) -> None:
    assert rule_for(digits) is rule


def test_only_the_confirming_rule_presses_and_no_pressing_rule_refuses() -> None:
    assert PRESSES == {Rule.CONFIRMS: "1"}
    assert Rule.NEVER_CONFIRMS not in PRESSES and not PRESSES.keys() & REFUSALS.keys()


def test_the_digit_before_them_picks_the_voice_else_the_party_does() -> None:
    assert voice_for("9876543400", customer=True) is AGENT_VOICE
    assert voice_for("9876543104", customer=False) is BEEPS_1000
    assert voice_for("9876543604", customer=False) is TONE_600
    assert voice_for("9876543200", customer=False).frequencies == (440.0,)
    assert voice_for("9876543200", customer=True).frequencies == (1000.0,)


def test_timings_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        SandboxTimings(ring=-1)
    with pytest.raises(ValueError, match="negative"):
        SandboxTimings(confirm_after=-0.1)
    assert SandboxTimings().confirm_after == 1.0


# -- each rule, as the caller sees it --------------------------------------------------------


@pytest.mark.parametrize(("number", "status"), [
    ("9876543401", 486), ("9876543403", 503), ("9876543406", 480),
])
def test_refusing_numbers_answer_at_once(number: str, status: int) -> None:
    wire = Wire()
    wire.dial(number)
    assert wire.leg_events() == [(0.0, "Failed")]
    failed = wire.events[-1][1]
    assert isinstance(failed, Failed) and failed.status == status
    assert (wire.call.sent, wire.call.outcome) == ([100, status], Outcome.REFUSED)
    assert wire.sandbox_events == []  # no RTP port was ever wanted
    assert wire.changes == [(0.0, CallState.OFFERED), (0.0, CallState.ENDED)]
    assert len(wire.to_sandbox) == 2  # the INVITE and the ACK for the refusal, nothing more


def test_an_answering_number_rings_then_answers_and_talks_until_bye() -> None:
    wire = Wire()
    wire.dial("9876543400")
    wire.run_until(10.0)
    assert wire.leg_events() == [(0.0, "Ringing"), (1.0, "Answered")]
    answered = wire.events[-1][1]
    assert isinstance(answered, Answered)
    answer = SessionDescription.parse(answered.sdp)
    assert (answer.media[0].port, answer.media[0].formats[0]) == (30000, "0")  # PCMU
    call = wire.call
    assert (call.state, call.answered_at, call.tone_hz) == (CallState.TALKING, 1.0, 440.0)
    assert [type(e).__name__ for _, e in wire.sandbox_events] == ["MediaWanted", "AudioStarted"]
    started = wire.sandbox_events[-1][1]
    assert isinstance(started, AudioStarted)
    assert (started.media.remote_address, started.media.remote_port) == ("127.0.0.1", 20000)
    wire.ua.hangup("9876543400", wire.now)
    wire.pump()
    assert wire.leg_events()[-1] == (10.0, "HungUp")
    assert (call.state, call.outcome, call.ended_at) == (CallState.ENDED,
                                                         Outcome.CALLER_HUNG_UP, 10.0)
    assert wire.sandbox_events[-1] == (10.0, AudioStopped(call.call_id))


def test_a_hanging_up_number_sends_its_own_bye_after_the_talk_time() -> None:
    wire = Wire()
    wire.dial("9876543404")
    wire.run_until(10.0)
    assert wire.leg_events() == [(0.0, "Ringing"), (1.0, "Answered"), (4.0, "RemoteHangup")]
    assert wire.changes == [(0.0, CallState.OFFERED), (1.0, CallState.ANSWERED),
                            (4.0, CallState.HANGING_UP), (4.0, CallState.ENDED)]
    bye = parse_message(wire.sent_by_sandbox("BYE")[0])
    invite = parse_message(wire.to_sandbox[0])
    assert isinstance(bye, Request) and isinstance(invite, Request)
    # §12.2.1.1 from the UAS side: to their Contact, parties swapped, our tag, our CSeq.
    assert bye.uri == "sip:callbridge@127.0.0.1:5060"
    assert (bye.from_.uri, bye.from_.tag) == (invite.to.uri, wire.call.local_tag)
    assert bye.headers.get("To") == invite.headers.get("From")
    assert (bye.call_id, str(bye.cseq)) == (invite.call_id, "1 BYE")
    assert (wire.call.state, wire.call.outcome) == (CallState.ENDED, Outcome.CARRIER_HUNG_UP)
    assert wire.sandbox_events[-1] == (4.0, AudioStopped(wire.call.call_id))


def test_early_media_then_the_same_sdp_in_the_answer() -> None:
    wire = Wire()
    wire.dial("9876543105")
    wire.run_until(5.0)
    assert wire.leg_events() == [(0.0, "EarlyMedia"), (2.0, "Answered")]
    early, answered = wire.events[-2][1], wire.events[-1][1]
    assert isinstance(early, EarlyMedia) and isinstance(answered, Answered)
    assert early.sdp == answered.sdp  # same o= version too (RFC 3264 §8)
    assert wire.call.sent == [100, 183, 200]
    assert wire.call.tone_hz == 1000.0
    assert [(t, type(e).__name__) for t, e in wire.sandbox_events] == [
        (0.0, "MediaWanted"), (0.0, "AudioStarted")]  # audio from the 183 on, once


def test_a_ring_out_number_rings_until_cancelled() -> None:
    wire = Wire()
    wire.dial("9876543402")
    wire.run_until(120.0)
    assert wire.leg_events() == [(0.0, "Ringing")]
    wire.ua.cancel("9876543402", wire.now)
    wire.pump()
    assert wire.leg_events()[-1] == (120.0, "Cancelled")
    assert isinstance(wire.events[-1][1], Cancelled)
    cancel_ok = parse_message(wire.sent_by_sandbox("SIP/2.0 200")[-1])
    assert cancel_ok.cseq.method == "CANCEL" and cancel_ok.to.tag == wire.call.local_tag
    assert (wire.call.sent, wire.call.outcome) == ([100, 180, 487], Outcome.CANCELLED)
    assert wire.sandbox_events[-1] == (120.0, AudioStopped(wire.call.call_id))


def test_a_cancel_before_the_ring_ends_beats_the_answer() -> None:
    wire = Wire()
    wire.dial("9876543400")
    wire.run_until(0.5)
    wire.ua.cancel("9876543400", wire.now)
    wire.pump()
    wire.run_until(5.0)
    assert wire.leg_events() == [(0.0, "Ringing"), (0.5, "Cancelled")]
    assert wire.call.sent == [100, 180, 487]
    assert wire.times_of("SIP/2.0 200", "INVITE") == []
    assert wire.sandbox_events[-1] == (0.5, AudioStopped(wire.call.call_id))


def test_a_cancel_while_the_port_opens_ends_the_call_and_the_port_is_not_wanted() -> None:
    wire = Wire(media=False)
    wire.dial("9876543400")
    wanted = wire.sandbox_events[0][1]
    assert isinstance(wanted, MediaWanted) and wire.call.state is CallState.OFFERED
    wire.ua.cancel("9876543400", wire.now)  # the 100 Trying lets the CANCEL go (§9.1)
    wire.pump()
    assert wire.leg_events() == [(0.0, "Cancelled")]
    assert (wire.call.sent, wire.call.outcome) == ([100, 487], Outcome.CANCELLED)
    assert not wire.uas.media_ready(wanted.call_id, "127.0.0.1", 30000, wire.now)
    wire.pump()
    assert [e for _, e in wire.sandbox_events] == [wanted]  # never played, nothing to stop


def test_no_free_rtp_port_refuses_503() -> None:
    wire = Wire(media=False)
    wire.dial("9876543400")
    wire.uas.media_failed(wire.call.call_id, wire.now)
    wire.pump()
    assert isinstance(wire.events[-1][1], Failed) and wire.events[-1][1].status == 503
    assert wire.call.outcome is Outcome.REFUSED and wire.sandbox_events[-1][1] == MediaWanted(
        wire.call.call_id)  # no port was opened, so none is to be closed


def test_an_offer_without_g711_is_refused_488_and_the_port_let_go() -> None:
    wire = Wire()
    wire.dial("9876543400", sdp=offer(codecs=(Codec("G729", 18, 8000),)))
    failed = wire.events[-1][1]
    assert isinstance(failed, Failed) and failed.status == 488
    refusal = parse_message(wire.sent_by_sandbox("SIP/2.0 488")[0])
    assert (refusal.headers.get("Warning") or "").startswith("305 127.0.0.1:5070 ")
    assert [type(e).__name__ for _, e in wire.sandbox_events] == ["MediaWanted"]


def test_an_invite_without_sdp_is_refused_488() -> None:
    wire = Wire()
    wire.dial("9876543400", sdp=b"")
    failed = wire.events[-1][1]
    assert isinstance(failed, Failed) and failed.status == 488
    assert wire.sandbox_events == []


def test_the_2xx_is_retransmitted_until_acked_then_a_bye_after_64_t1() -> None:
    wire = Wire()
    wire.drop = lambda data: data.startswith(b"ACK")
    wire.dial("9876543400")
    wire.run_until(1.0 + 64 * 0.5 + 1)
    # The answer at 1.0, then T1 doubling to T2 (0.5, 1, 2, 4, 4, ...) for 64*T1 = 32 s.
    assert wire.times_of("SIP/2.0 200", "INVITE") == [
        1.0, 1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert wire.times_of("BYE", "BYE")[0] == 33.0  # §13.3.1.4: no ACK ends the dialog
    assert wire.call.outcome is Outcome.CARRIER_HUNG_UP
    assert isinstance(wire.events[-1][1], RemoteHangup)


def test_the_2xx_stops_once_the_ack_arrives() -> None:
    wire = Wire()
    wire.dial("9876543400")
    wire.run_until(60.0)
    assert wire.times_of("SIP/2.0 200", "INVITE") == [1.0]
    assert wire.call.state is CallState.TALKING


def test_a_reinvite_is_answered_and_moves_the_audio() -> None:
    wire = Wire()
    wire.dial("9876543400")
    wire.run_until(2.0)
    wire.ua.reinvite("9876543400", offer(port=20002), wire.now)
    wire.pump()
    wire.run_until(10.0)
    started = wire.sandbox_events[-1][1]
    assert isinstance(started, AudioStarted) and started.media.remote_port == 20002
    update = wire.events[-1][1]
    assert isinstance(update, MediaUpdate)  # the answer to callbridge's new offer
    reanswer = SessionDescription.parse(update.sdp)
    # Our port and codec are unchanged, so is the SDP, and so its version (RFC 3264 §8).
    assert reanswer.origin.session_version == 1 and reanswer.media[0].port == 30000
    assert wire.times_of("SIP/2.0 200", "INVITE") == [1.0, 2.0]  # the ACK came: no resend
    assert wire.call.state is CallState.TALKING


def test_options_is_answered_200_with_allow() -> None:
    wire = Wire()
    wire.ua.ping("p", request_uri=f"sip:{UAS[0]}:{UAS[1]}", destination=UAS, now=0.0)
    wire.pump()
    assert wire.events[-1][1] == PingResult("p", 200)
    answer = parse_message(wire.to_caller[-1][1])
    assert "BYE" in (answer.headers.get("Allow") or "")
    assert list(wire.uas.calls) == []


@pytest.mark.parametrize(("method", "to_tag", "status"), [
    ("BYE", "", 481), ("BYE", ";tag=nope", 481), ("MESSAGE", "", 405), ("INFO", ";tag=x", 481),
])
def test_requests_outside_any_call(method: str, to_tag: str, status: int) -> None:
    uas = SandboxUas(*UAS, token=lambda: "tag")
    uas.receive_datagram(
        f"{method} sip:9876543400@127.0.0.1:5070 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx1\r\n"
        "From: <sip:a@127.0.0.1>;tag=a\r\n"
        f"To: <sip:9876543400@127.0.0.1>{to_tag}\r\n"
        "Call-ID: c1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n".replace(
            "{method}", method).encode(), UAC, 0.0)
    (data, address), = uas.datagrams_to_send()
    assert address == UAC and data.startswith(f"SIP/2.0 {status} ".encode())


def test_garbage_is_dropped_and_counted() -> None:
    uas = SandboxUas(*UAS, token=lambda: "tag")
    uas.receive_datagram(b"hello\r\n\r\n", UAC, 0.0)
    uas.receive_datagram(b"OPTIONS sip:x@y SIP/2.0\r\nContent-Length: 0\r\n\r\n", UAC, 0.0)
    assert uas.datagrams_to_send() == []
    assert uas.stats == {"parse_errors": 1, "incomplete": 1}


def test_a_second_invite_with_a_call_id_in_use_is_refused_482() -> None:
    wire = Wire()
    wire.dial("9876543402")
    invite = parse_message(wire.to_sandbox[0])
    assert isinstance(invite, Request)
    invite.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother")
    wire.uas.receive_datagram(invite.serialize(), UAC, wire.now)
    assert parse_message(wire.uas.datagrams_to_send()[-1][0]).status == 482  # type: ignore[union-attr]
    assert len(wire.uas.calls) == 1


def test_the_customer_leg_gets_the_customer_voice() -> None:
    wire = Wire()
    wire.dial("9876543200")
    wire.dial("9876543299", headers=(("P-Asserted-Identity", "<sip:919800000000@x>"),))
    agent, customer = wire.uas.calls
    assert (agent.tone_hz, customer.tone_hz) == (440.0, 1000.0)


# -- agent confirmation: 07 presses 1, 08 never does ------------------------------------------


def digits_wanted(wire: Wire) -> list[tuple[float, DigitsWanted]]:
    return [(t, e) for t, e in wire.sandbox_events if isinstance(e, DigitsWanted)]


def test_a_confirming_number_answers_then_presses_1_once_and_talks_until_bye() -> None:
    wire = Wire()
    wire.dial("9876543407")
    wire.run_until(60.0)  # past every SIP timer too: a second press would show
    assert wire.leg_events() == [(0.0, "Ringing"), (1.0, "Answered")]
    answered = wire.events[-1][1]
    assert isinstance(answered, Answered)
    # The answer keeps callbridge's telephone-event/8000 on 101, so the key can go as RTP.
    (media,) = SessionDescription.parse(answered.sdp).media
    assert "101" in media.formats
    assert "a=rtpmap:101 telephone-event/8000" in answered.sdp.decode()
    call = wire.call
    assert call.media is not None and call.media.telephone_event_pt == 101
    # Pressed once, confirm_after (1.5 s) after the ACK (which came with the 200, at 1.0).
    assert digits_wanted(wire) == [(2.5, DigitsWanted(call.call_id, "1"))]
    assert (call.pressed, call.pressed_at, call.state) == ("1", 2.5, CallState.TALKING)
    wire.ua.hangup("9876543407", wire.now)
    wire.pump()
    assert (call.state, call.outcome) == (CallState.ENDED, Outcome.CALLER_HUNG_UP)
    assert wire.sandbox_events[-1] == (60.0, AudioStopped(call.call_id))


def test_a_bye_before_the_keypress_means_no_keypress() -> None:
    wire = Wire()
    wire.dial("9876543407")
    wire.run_until(2.0)
    wire.ua.hangup("9876543407", wire.now)
    wire.pump()
    wire.run_until(10.0)
    assert digits_wanted(wire) == [] and wire.call.pressed == ""
    assert wire.call.outcome is Outcome.CALLER_HUNG_UP


def test_a_confirming_number_presses_nothing_without_telephone_event() -> None:
    wire = Wire()
    wire.dial("9876543407", sdp=offer(codecs=(Codec("PCMU", 0, 8000),)))
    wire.run_until(10.0)
    assert wire.leg_events() == [(0.0, "Ringing"), (1.0, "Answered")]
    assert digits_wanted(wire) == [] and wire.call.pressed == ""
    assert wire.call.state is CallState.TALKING


def test_a_never_confirming_number_answers_and_talks_without_a_key() -> None:
    wire = Wire()
    wire.dial("9876543408")
    wire.run_until(60.0)
    assert wire.leg_events() == [(0.0, "Ringing"), (1.0, "Answered")]
    assert [type(e).__name__ for _, e in wire.sandbox_events] == ["MediaWanted", "AudioStarted"]
    assert (wire.call.rule, wire.call.pressed) == (Rule.NEVER_CONFIRMS, "")
    assert (wire.call.state, wire.call.tone_hz) == (CallState.TALKING, 440.0)
