"""The pure user agent core against a scripted trunk, with a fake clock (no sockets, no sleep)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from callbridge.sip.auth import DigestAuth
from callbridge.sip.message import Request, Response, make_response, parse_message
from callbridge.sip.transaction import TimerSettings
from callbridge.sip.useragent import (
    Answered,
    Cancelled,
    EarlyMedia,
    Failed,
    HungUp,
    InfoReceived,
    MediaUpdate,
    PingResult,
    RemoteHangup,
    Ringing,
    Trying,
    UserAgent,
    UserAgentConfig,
    is_sendable,
)

TRUNK = ("127.0.0.2", 5060)
STRANGER = ("127.0.0.9", 5060)
SDP_US = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
          b"m=audio 20000 RTP/AVP 0\r\n")
SDP_THEM = SDP_US.replace(b"20000", b"30000")


class Harness:
    """A user agent, a fake clock, and the scripted trunk's view of what the UA sent."""

    def __init__(self, t1: float = 0.5) -> None:
        counter = itertools.count(1)
        self.now = 100.0
        self.ua = UserAgent(
            UserAgentConfig(host="127.0.0.1", port=5060, timers=TimerSettings(t1=t1),
                            trusted_sources=frozenset({TRUNK[0]})),
            token=lambda: f"tok{next(counter)}",
        )

    def sent(self) -> list[tuple[Request | Response, tuple[str, int]]]:
        return [(parse_message(d), a) for d, a in self.ua.datagrams_to_send()]

    def sent_one(self) -> Request | Response:
        out = self.sent()
        assert len(out) == 1, out
        return out[0][0]

    def events(self) -> list[object]:
        out = []
        while (e := self.ua.next_event()) is not None:
            out.append(e)
        return out

    def feed(self, message: Request | Response, source: tuple[str, int] = TRUNK) -> None:
        self.ua.receive_datagram(message.serialize(), source, self.now)

    def advance_to(self, when: float) -> None:
        """Fire every timer due up to ``when``, in order, as an event loop would."""
        while (deadline := self.ua.get_timer()) is not None and deadline <= when:
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
        self.now = when

    def invite(self, auth: DigestAuth | None = None) -> Request:
        self.ua.invite("leg1", request_uri="sip:9812345678@127.0.0.2", from_="<sip:100@127.0.0.2>",
                       to="<sip:9812345678@127.0.0.2>", sdp=SDP_US, destination=TRUNK,
                       now=self.now, auth=auth)
        invite = self.sent_one()
        assert isinstance(invite, Request)
        return invite


def respond(request: Request, status: int, *, tag: str | None = "far1", body: bytes = b"",
            headers: tuple[tuple[str, str], ...] = ()) -> Response:
    response = make_response(request, status, to_tag=tag, headers=headers)
    if body:
        response.headers.add("Content-Type", "application/sdp")
        response.body = body
    return response


def answer(h: Harness, invite: Request, tag: str = "far1") -> Response:
    ok = respond(invite, 200, tag=tag, body=SDP_THEM, headers=(
        ("Contact", "<sip:gw@127.0.0.3:5070>"),
        ("Record-Route", "<sip:p1@127.0.0.2;lr>, <sip:p2@127.0.0.4;lr>"),
    ))
    h.feed(ok)
    return ok


def far_request(h: Harness, method: str, ack_or_bye_of: Request, seq: int,
                body: bytes = b"") -> Request:
    """An in-dialog request from the far end of the dialog ``ack_or_bye_of`` belongs to."""
    ours = ack_or_bye_of
    text = (
        f"{method} sip:callbridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKfar{method}{seq}\r\n"
        f"From: {ours.headers.get('To')}\r\nTo: {ours.headers.get('From')}\r\n"
        f"Call-ID: {ours.call_id}\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:gw@127.0.0.3:5070>\r\n"
    )
    if body:
        text += "Content-Type: application/sdp\r\n"
    text += f"Content-Length: {len(body)}\r\n\r\n"
    request = parse_message(text.encode() + body)
    assert isinstance(request, Request)
    return request


@pytest.fixture
def h() -> Iterator[Harness]:
    yield Harness()


def test_answered_call_acks_and_hangs_up(h: Harness) -> None:
    invite = h.invite()
    assert invite.method == "INVITE" and invite.body == SDP_US
    assert invite.top_via.branch and invite.top_via.branch.startswith("z9hG4bK")
    h.feed(respond(invite, 100, tag=None))
    h.feed(respond(invite, 180))
    answer(h, invite)
    assert h.events() == [Trying("leg1"), Ringing("leg1", 180), Answered("leg1", SDP_THEM)]
    (ack, hop), = h.sent()
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == "sip:gw@127.0.0.3:5070"  # remote target from Contact
    assert ack.headers.get_all("Route") == ["<sip:p2@127.0.0.4;lr>", "<sip:p1@127.0.0.2;lr>"]
    assert hop == ("127.0.0.4", 5060)  # first route of the reversed Record-Route
    assert ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    assert ack.to.tag == "far1"

    answer(h, invite)  # the 2xx again: our ACK was lost, send the same one
    (again, _), = h.sent()
    assert again.serialize() == ack.serialize()

    h.ua.hangup("leg1", h.now)
    bye = h.sent_one()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.cseq.seq == 2 and bye.uri == "sip:gw@127.0.0.3:5070"
    h.feed(respond(bye, 200, tag="far1"))
    assert h.events() == [HungUp("leg1", 200)]
    assert h.ua.leg_count == 0


def test_far_end_bye_from_the_trunk_ends_the_leg(h: Harness) -> None:
    invite = h.invite()
    answer(h, invite)
    (ack, _), = h.sent()
    assert isinstance(ack, Request)
    h.events()
    h.feed(far_request(h, "BYE", ack, 1))
    reply = h.sent_one()
    assert isinstance(reply, Response) and reply.status == 200
    assert h.events() == [RemoteHangup("leg1")]
    assert h.ua.leg_count == 0


def test_in_dialog_request_from_a_stranger_is_refused(h: Harness) -> None:
    invite = h.invite()
    answer(h, invite)
    (ack, _), = h.sent()
    assert isinstance(ack, Request)
    h.events()
    h.feed(far_request(h, "BYE", ack, 1), source=STRANGER)
    reply = h.sent_one()
    assert isinstance(reply, Response) and reply.status == 403
    assert h.events() == [] and h.ua.leg_count == 1


def test_busy_is_acked_by_the_transaction_and_reported(h: Harness) -> None:
    invite = h.invite()
    h.feed(respond(invite, 486))
    (ack, _), = h.sent()
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.top_via.branch == invite.top_via.branch  # §17.1.1.3: same transaction
    assert h.events() == [Failed("leg1", 486, "Busy Here")]


def test_cancel_waits_for_a_provisional_then_ends_cancelled(h: Harness) -> None:
    invite = h.invite()
    h.ua.cancel("leg1", h.now)
    assert h.sent() == []  # §9.1: no CANCEL before a provisional response
    h.feed(respond(invite, 180))
    cancel = h.sent_one()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.top_via.branch == invite.top_via.branch and cancel.cseq.seq == 1
    h.feed(respond(cancel, 200))
    h.feed(respond(invite, 487))
    assert [type(e) for e in h.events()] == [Ringing, Cancelled]
    assert h.ua.leg_count == 0


def test_a_2xx_crossing_our_cancel_is_acked_and_hung_up(h: Harness) -> None:
    invite = h.invite()
    h.feed(respond(invite, 180))
    h.ua.cancel("leg1", h.now)
    assert [m.method for m, _ in h.sent() if isinstance(m, Request)] == ["CANCEL"]
    answer(h, invite)  # the far end answered before our CANCEL reached it (§9.1)
    assert [m.method for m, _ in h.sent() if isinstance(m, Request)] == ["ACK", "BYE"]
    assert [type(e) for e in h.events()] == [Ringing, Cancelled]
    assert h.ua.leg_count == 0


def test_timer_b_fails_an_unanswered_invite_without_sleeping() -> None:
    h = Harness(t1=0.5)
    h.invite()
    start = h.now
    h.advance_to(start + 64 * 0.5 - 0.001)
    retransmits = [m for m, _ in h.sent() if isinstance(m, Request) and m.method == "INVITE"]
    assert len(retransmits) == 6  # Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5
    assert h.events() == []
    h.advance_to(start + 64 * 0.5)
    assert h.events() == [Failed("leg1", 408, "Request Timeout", timed_out=True)]


def test_407_challenge_is_answered_with_credentials(h: Harness) -> None:
    auth = DigestAuth("alice", "secret", cnonce_factory=lambda: "c0ffee")
    invite = h.invite(auth=auth)
    h.feed(respond(invite, 407, headers=(
        ("Proxy-Authenticate", 'Digest realm="trunk", nonce="n1", qop="auth", algorithm=MD5'),
    )))
    out = h.sent()
    methods = [m.method for m, _ in out if isinstance(m, Request)]
    assert methods == ["ACK", "INVITE"]
    retry = out[1][0]
    assert isinstance(retry, Request)
    assert retry.cseq.seq == 2 and retry.call_id == invite.call_id
    assert retry.top_via.branch != invite.top_via.branch
    credentials = retry.headers.get("Proxy-Authorization") or ""
    assert 'username="alice"' in credentials and "nc=00000001" in credentials
    answer(h, retry)
    assert [type(e) for e in h.events()] == [Answered]


def test_forked_second_2xx_is_acked_then_hung_up(h: Harness) -> None:
    invite = h.invite()
    answer(h, invite, tag="fork-a")
    h.sent()
    answer(h, invite, tag="fork-b")
    out = [m for m, _ in h.sent()]
    assert [m.method for m in out if isinstance(m, Request)] == ["ACK", "BYE"]
    assert all(m.to.tag == "fork-b" for m in out)
    assert [type(e) for e in h.events()] == [Answered]


def test_early_media_then_answer(h: Harness) -> None:
    invite = h.invite()
    h.feed(respond(invite, 183, body=SDP_THEM))
    answer(h, invite)
    assert h.events() == [EarlyMedia("leg1", SDP_THEM), Answered("leg1", SDP_THEM)]


def test_reinvite_from_far_end_is_answered_with_our_sdp_until_acked(h: Harness) -> None:
    invite = h.invite()
    answer(h, invite)
    (ack, _), = h.sent()
    assert isinstance(ack, Request)
    h.events()
    reinvite = far_request(h, "INVITE", ack, 2, body=SDP_THEM)
    h.feed(reinvite)
    replies = [m for m, _ in h.sent() if isinstance(m, Response)]
    assert [r.status for r in replies] == [100, 200]
    assert replies[1].body == SDP_US
    assert h.events() == [MediaUpdate("leg1", SDP_THEM)]
    h.advance_to(h.now + 0.6)  # no ACK yet: the 2xx goes again (§13.3.1.4)
    assert [m.status for m, _ in h.sent() if isinstance(m, Response)] == [200]
    h.feed(far_request(h, "ACK", ack, 2))
    h.advance_to(h.now + 10)
    assert [m for m, _ in h.sent() if isinstance(m, Response)] == []


def test_info_and_options_in_dialog_are_answered(h: Harness) -> None:
    invite = h.invite()
    answer(h, invite)
    (ack, _), = h.sent()
    assert isinstance(ack, Request)
    h.events()
    h.feed(far_request(h, "OPTIONS", ack, 2))
    h.feed(far_request(h, "INFO", ack, 3, body=b"Signal=5\r\n"))
    assert [m.status for m, _ in h.sent() if isinstance(m, Response)] == [200, 200]
    assert [type(e) for e in h.events()] == [InfoReceived]


@pytest.mark.parametrize(("method", "status"), [
    ("INVITE", 403), ("OPTIONS", 200), ("REGISTER", 405), ("BYE", 481), ("FOO", 501),
])
def test_out_of_dialog_requests(h: Harness, method: str, status: int) -> None:
    text = (f"{method} sip:callbridge@127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.9:5099;branch=z9hG4bKx1;rport\r\n"
            "From: <sip:eve@127.0.0.9>;tag=e1\r\nTo: <sip:callbridge@127.0.0.1>\r\n"
            f"Call-ID: x1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    h.ua.receive_datagram(text.encode(), ("127.0.0.9", 6000), h.now)
    replies = [(m, a) for m, a in h.sent() if isinstance(m, Response) and m.status != 100]
    assert [m.status for m, _ in replies] == [status]
    assert replies[0][1] == ("127.0.0.9", 6000)  # rport: back to the source port


def test_garbage_gets_400_where_routable_and_never_reaches_a_broadcast(h: Harness) -> None:
    bad = (b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5099;branch=z9hG4bKb\r\n"
           b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: b1\r\nCSeq: 1 INVITE\r\n"
           b"Content-Length: -5\r\n\r\n")
    h.ua.receive_datagram(bad, ("127.0.0.9", 5099), h.now)
    (reply, dest), = h.sent()
    assert isinstance(reply, Response) and reply.status == 400 and dest == ("127.0.0.9", 5099)
    assert not is_sendable(("255.255.255.255", 5060))
    assert not is_sendable(("224.0.0.1", 5060))
    assert not is_sendable(("127.0.0.1", 0))
    assert is_sendable(("127.0.0.1", 5060))


def test_options_ping_reports_status_and_silence() -> None:
    h = Harness(t1=0.5)
    h.ua.ping("p1", request_uri="sip:127.0.0.2", destination=TRUNK, now=h.now)
    options = h.sent_one()
    assert isinstance(options, Request)
    h.feed(respond(options, 200))
    assert h.events() == [PingResult("p1", 200)]
    h.ua.ping("p2", request_uri="sip:127.0.0.2", destination=TRUNK, now=h.now)
    h.advance_to(h.now + 64 * 0.5)
    assert h.events() == [PingResult("p2", 0)]
    h.advance_to(h.now + 60)
    assert h.ua.transaction_count == 0


def test_info_is_sent_in_the_dialog(h: Harness) -> None:
    invite = h.invite()
    answer(h, invite)
    h.sent()
    h.ua.info("leg1", "application/dtmf-relay", b"Signal=1\r\nDuration=100\r\n", h.now)
    info = h.sent_one()
    assert isinstance(info, Request) and info.method == "INFO"
    assert info.uri == "sip:gw@127.0.0.3:5070" and info.cseq.seq == 2
    assert info.headers.get("Content-Type") == "application/dtmf-relay"
    assert info.body == b"Signal=1\r\nDuration=100\r\n"
    with pytest.raises(ValueError, match="not answered"):
        h.ua.info("nope", "application/dtmf-relay", b"", h.now)
