"""The SIP transaction layer (RFC 3261 §17, RFC 6026) driven with a fake clock.

Time is whatever float a test passes in: nothing sleeps. Every scenario ends with
``Harness.finish()``, which runs the remaining timers and checks that no transaction leaked and
that each one reported TransactionTerminated exactly once.
"""

from __future__ import annotations

from collections import Counter

import pytest

from callbridge.sip.message import Headers, Request, Response, parse_message
from callbridge.sip.timers import Timer, TimerQueue
from callbridge.sip.transaction import (
    CLIENT_INVITE,
    CLIENT_NON_INVITE,
    SERVER_INVITE,
    SERVER_NON_INVITE,
    Address,
    ClientTransaction,
    Event,
    Machine,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TimerSettings,
    Transaction,
    TransactionLayer,
    TransactionState,
    TransactionTerminated,
    TransactionTimeout,
)

TRUNK: Address = ("192.0.2.10", 5060)
OUR_VIA = "SIP/2.0/UDP 10.0.0.1:5070;branch={branch};rport"
TRUNK_VIA = "SIP/2.0/UDP 192.0.2.10:5060;branch={branch}"


def make_request(method: str = "INVITE", branch: str = "z9hG4bKinv1", *, via: str = OUR_VIA,
                 cseq: int = 1, to_tag: str | None = None, extra_via: bool = False) -> Request:
    headers = Headers([("Via", via.format(branch=branch))])
    if extra_via:
        headers.add("Via", "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKlower")
    headers.add("Route", "<sip:edge1.example.net;lr>")
    headers.add("Route", "<sip:edge2.example.net;lr>")
    headers.add("Max-Forwards", "70")
    headers.add("From", '"Agent" <sip:agent@callbridge.example>;tag=from1')
    headers.add("To", "<sip:+919812345678@trunk.example>" + (f";tag={to_tag}" if to_tag else ""))
    headers.add("Call-ID", "call-1@callbridge.example")
    headers.add("CSeq", f"{cseq} {method}")
    headers.add("Contact", "<sip:cb@10.0.0.1:5070>")
    body = b"v=0\r\n" if method == "INVITE" else b""
    if body:
        headers.add("Content-Type", "application/sdp")
    return Request(method, "sip:+919812345678@trunk.example", headers, body)


def reply(request: Request, status: int, reason: str = "Reason", *, to_tag: str = "tt1",
          method: str | None = None) -> Response:
    """A response as the far end would build it (copies Via, From, To, Call-ID, CSeq)."""
    headers = Headers()
    for name in ("Via", "From", "Call-ID"):
        for value in request.headers.get_all(name):
            headers.add(name, value)
    to = request.headers.get("To") or ""
    headers.add("To", to if status == 100 or ";tag=" in to else f"{to};tag={to_tag}")
    seq = request.cseq.seq
    headers.add("CSeq", f"{seq} {method or request.cseq.method}")
    return Response(status, reason, headers)


def server_reply(request: Request, status: int, reason: str = "Reason") -> Response:
    return reply(request, status, reason, to_tag="ours")


class Harness:
    """Wraps a TransactionLayer: drains events and datagrams, fires timers in order."""

    def __init__(self, timers: TimerSettings | None = None) -> None:
        self.layer = TransactionLayer(timers) if timers else TransactionLayer()
        self.log: list[Event] = []
        self.seen: dict[int, Transaction] = {}

    def send(self, request: Request, now: float, reliable: bool = False) -> ClientTransaction:
        tx = self.layer.send_request(request, TRUNK, now, reliable=reliable)
        self.seen[id(tx)] = tx
        return tx

    def events(self) -> list[Event]:
        out: list[Event] = []
        while (event := self.layer.next_event()) is not None:
            out.append(event)
            for name in ("transaction", "cancelled"):
                tx = getattr(event, name, None)
                if tx is not None:
                    self.seen[id(tx)] = tx
        self.log.extend(out)
        return out

    def sent(self) -> list[tuple[Request | Response, Address]]:
        return [(parse_message(data), addr) for data, addr in self.layer.datagrams_to_send()]

    def sent_wire(self) -> list[bytes]:
        return [data for data, _ in self.layer.datagrams_to_send()]

    def run_timers(self, until: float) -> list[tuple[float, Request | Response]]:
        """Fire every deadline up to ``until``; what was sent, with the time it was sent."""
        out: list[tuple[float, Request | Response]] = []
        while (deadline := self.layer.get_timer()) is not None and deadline <= until:
            self.layer.handle_timer(deadline)
            out.extend((deadline, message) for message, _ in self.sent())
        return out

    def finish(self) -> None:
        self.run_timers(10_000.0)
        self.events()
        assert len(self.layer) == 0
        assert self.layer.get_timer() is None
        ends = Counter(id(e.transaction) for e in self.log if isinstance(e, TransactionTerminated))
        assert ends == Counter({key: 1 for key in self.seen})
        assert all(tx.state is TransactionState.TERMINATED for tx in self.seen.values())


def wire(*messages: Request | Response) -> list[bytes]:
    return [m.serialize() for m in messages]


def times(sends: list[tuple[float, Request | Response]], what: str) -> list[float]:
    """When ``what`` (a method or a status code as text) was sent."""
    return [t for t, m in sends
            if (m.method if isinstance(m, Request) else str(m.status)) == what]


# -- client INVITE ---------------------------------------------------------------------------------


def test_timer_a_doubles_without_cap_and_timer_b_times_out_at_64_t1() -> None:
    h = Harness()
    tx = h.send(make_request(), 0.0)
    [(invite, addr)] = h.sent()
    assert isinstance(invite, Request) and invite.method == "INVITE" and addr == TRUNK
    assert tx.state is TransactionState.CALLING and tx.is_invite
    sends = h.run_timers(31.99)
    # intervals 0.5, 1, 2, 4, 8, 16: past T2 = 4 (Timer A has no cap), next would be at 63.5
    assert times(sends, "INVITE") == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert h.events() == []
    assert h.layer.get_timer() == 32.0
    h.run_timers(32.0)
    assert h.events() == [TransactionTimeout(tx, "B"), TransactionTerminated(tx)]
    assert h.sent() == []
    h.finish()


def test_provisional_stops_retransmissions_and_final_is_acked() -> None:
    h = Harness()
    invite = make_request()
    tx = h.send(invite, 0.0)
    h.sent()
    ringing = reply(invite, 180, "Ringing")
    h.layer.receive(ringing, TRUNK, 0.3)
    assert h.events() == [ResponseReceived(tx, ringing)]
    assert tx.state is TransactionState.PROCEEDING and tx.last_response is ringing
    assert h.run_timers(20.0) == []  # no Timer A (or B) in Proceeding: the TU cancels
    busy = reply(invite, 486, "Busy Here")
    h.layer.receive(busy, TRUNK, 20.0)
    assert h.events() == [ResponseReceived(tx, busy)]
    [(ack, addr)] = h.sent()
    assert isinstance(ack, Request) and ack.method == "ACK" and addr == TRUNK
    h.finish()


def test_ack_for_non_2xx_is_built_field_by_field() -> None:
    h = Harness()
    invite = make_request(extra_via=True)
    h.send(invite, 0.0)
    h.sent()
    decline = reply(invite, 603, "Decline", to_tag="callee-7")
    h.layer.receive(decline, TRUNK, 0.2)
    [(ack, _)] = h.sent()
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.headers.get_all("Via") == [invite.headers.values("Via")[0]]  # the top one only
    assert ack.call_id == invite.call_id
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.headers.get("To") == decline.headers.get("To")
    assert ack.to.tag == "callee-7"
    assert ack.headers.get("CSeq") == "1 ACK"
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.headers.get("Max-Forwards") == "70"
    assert ack.body == b"" and "Contact" not in ack.headers
    h.finish()


def test_timer_d_absorbs_retransmitted_finals_by_acking_again() -> None:
    h = Harness()
    invite = make_request()
    tx = h.send(invite, 0.0)
    h.sent()
    busy = reply(invite, 486, "Busy Here")
    h.layer.receive(busy, TRUNK, 1.0)
    assert h.events() == [ResponseReceived(tx, busy)]
    [(first_ack, _)] = h.sent()
    assert tx.state is TransactionState.COMPLETED
    for now in (1.5, 2.5, 4.5):  # the far end did not see our ACK
        h.layer.receive(reply(invite, 486, "Busy Here"), TRUNK, now)
        assert h.events() == []
        assert h.sent() == [(first_ack, TRUNK)]
    assert h.run_timers(32.99) == [] and h.events() == []
    h.run_timers(33.0)  # Timer D: 32 s on UDP
    assert h.events() == [TransactionTerminated(tx)]
    h.finish()


def test_a_2xx_after_a_failure_still_reaches_the_tu() -> None:
    """A fork answered after another branch failed: only the TU can ACK and BYE it."""
    h = Harness()
    invite = make_request()
    tx = h.send(invite, 0.0)
    h.layer.receive(reply(invite, 486, "Busy Here", to_tag="fork1"), TRUNK, 0.1)
    h.events()
    h.sent()
    ok = reply(invite, 200, "OK", to_tag="fork2")
    h.layer.receive(ok, TRUNK, 0.2)
    assert h.events() == [ResponseReceived(tx, ok)]
    assert h.sent() == [] and tx.state is TransactionState.COMPLETED
    h.finish()


def test_accepted_state_passes_2xx_retransmissions_up_until_timer_m() -> None:
    h = Harness()
    invite = make_request()
    tx = h.send(invite, 0.0)
    h.sent()
    ok = reply(invite, 200, "OK")
    h.layer.receive(ok, TRUNK, 1.0)
    assert h.events() == [ResponseReceived(tx, ok)]
    assert tx.state is TransactionState.ACCEPTED
    assert h.sent() == []  # the ACK for a 2xx is the TU's (send_stateless), not ours
    again = reply(invite, 200, "OK")
    h.layer.receive(again, TRUNK, 1.5)
    assert h.events() == [ResponseReceived(tx, again)]  # RFC 6026 §8.4: TU re-sends its ACK
    h.layer.receive(reply(invite, 486, "Busy Here"), TRUNK, 1.6)  # nonsense now: ignored
    assert h.events() == [] and h.sent() == []
    assert h.run_timers(32.99) == []
    h.run_timers(33.0)  # Timer M = 64*T1
    assert h.events() == [TransactionTerminated(tx)]
    late = reply(invite, 200, "OK")
    h.layer.receive(late, TRUNK, 34.0)
    assert h.events() == [StrayResponse(late, TRUNK)]
    h.finish()


def test_reliable_client_invite_never_retransmits_and_d_is_zero() -> None:
    h = Harness()
    invite = make_request()
    tx = h.send(invite, 0.0, reliable=True)
    assert len(h.sent()) == 1
    assert h.layer.get_timer() == 32.0  # only Timer B runs
    busy = reply(invite, 486, "Busy Here")
    h.layer.receive(busy, TRUNK, 5.0, reliable=True)
    assert h.events() == [ResponseReceived(tx, busy), TransactionTerminated(tx)]
    assert [m.method for m, _ in h.sent() if isinstance(m, Request)] == ["ACK"]
    assert len(h.layer) == 0
    h.finish()


def test_reliable_client_invite_still_times_out() -> None:
    h = Harness()
    tx = h.send(make_request(), 0.0, reliable=True)
    h.sent()
    assert h.run_timers(100.0) == []
    assert h.events() == [TransactionTimeout(tx, "B"), TransactionTerminated(tx)]
    h.finish()


# -- CANCEL ----------------------------------------------------------------------------------------


def test_cancel_waits_for_a_provisional_then_copies_the_invite() -> None:
    h = Harness()
    invite = make_request(extra_via=True)
    tx = h.send(invite, 0.0)
    h.sent()
    h.layer.cancel(tx, 0.1)
    assert h.sent() == []  # §9.1: not before a provisional response
    assert times(h.run_timers(0.5), "INVITE") == [0.5]  # the INVITE goes on as usual
    trying = reply(invite, 100, "Trying")
    h.layer.receive(trying, TRUNK, 0.7)
    [(cancel, addr)] = h.sent()
    assert isinstance(cancel, Request) and addr == TRUNK
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.headers.get_all("Via") == [invite.headers.values("Via")[0]]
    assert cancel.call_id == invite.call_id
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert cancel.headers.get("To") == invite.headers.get("To")
    assert cancel.headers.get("CSeq") == "1 CANCEL"
    assert cancel.headers.get_all("Route") == invite.headers.get_all("Route")
    assert cancel.body == b""
    assert h.events() == [ResponseReceived(tx, trying)]
    assert len(h.layer) == 2  # the CANCEL runs its own non-INVITE transaction
    # responses are matched by branch *and* CSeq method: the 200 is the CANCEL's
    cancel_ok = reply(invite, 200, "OK", method="CANCEL")
    h.layer.receive(cancel_ok, TRUNK, 0.8)
    [event] = h.events()
    assert isinstance(event, ResponseReceived) and event.response is cancel_ok
    assert event.transaction.request.method == "CANCEL" and event.transaction is not tx
    terminated = reply(invite, 487, "Request Terminated")
    h.layer.receive(terminated, TRUNK, 0.9)
    assert h.events() == [ResponseReceived(tx, terminated)]
    assert [m.method for m, _ in h.sent() if isinstance(m, Request)] == ["ACK"]
    h.finish()


def test_cancel_after_a_provisional_goes_out_at_once_and_only_once() -> None:
    h = Harness()
    invite = make_request()
    tx = h.send(invite, 0.0)
    h.layer.receive(reply(invite, 180, "Ringing"), TRUNK, 0.2)
    h.sent()
    h.layer.cancel(tx, 3.0)
    h.layer.cancel(tx, 3.1)
    assert [m.method for m, _ in h.sent() if isinstance(m, Request)] == ["CANCEL"]
    h.layer.receive(reply(invite, 200, "OK", method="CANCEL"), TRUNK, 3.2)
    h.layer.receive(reply(invite, 487, "Request Terminated"), TRUNK, 3.3)
    h.finish()


def test_cancel_is_dropped_when_a_final_response_comes_first() -> None:
    h = Harness()
    invite = make_request()
    tx = h.send(invite, 0.0)
    h.layer.cancel(tx, 0.1)
    h.sent()
    h.layer.receive(reply(invite, 486, "Busy Here"), TRUNK, 0.2)
    assert [m.method for m, _ in h.sent() if isinstance(m, Request)] == ["ACK"]
    h.layer.receive(reply(invite, 180, "Ringing"), TRUNK, 0.3)  # late, reordered: no CANCEL
    h.layer.cancel(tx, 0.4)
    assert h.sent() == []
    h.finish()


def test_cancel_is_dropped_when_timer_b_fires_first() -> None:
    h = Harness()
    tx = h.send(make_request(), 0.0)
    h.layer.cancel(tx, 0.1)
    sends = h.run_timers(100.0)
    assert times(sends, "CANCEL") == []
    assert TransactionTimeout(tx, "B") in h.events()
    h.finish()


def test_invite_is_given_up_64_t1_after_an_unanswered_cancel() -> None:
    h = Harness()
    invite = make_request()
    tx = h.send(invite, 0.0)
    h.layer.receive(reply(invite, 180, "Ringing"), TRUNK, 1.0)
    h.layer.cancel(tx, 2.0)
    h.events()
    sends = h.run_timers(33.99)
    assert times(sends, "CANCEL")  # the CANCEL's own Timer E retransmits it
    assert not any(isinstance(e, TransactionTimeout) and e.transaction is tx for e in h.events())
    h.run_timers(34.0)  # §9.1: no final response 64*T1 after the CANCEL
    assert [e for e in h.events() if getattr(e, "transaction", None) is tx] == [
        TransactionTimeout(tx, Timer.CANCEL_WAIT), TransactionTerminated(tx)]
    h.finish()


def test_only_an_invite_can_be_cancelled() -> None:
    h = Harness()
    tx = h.send(make_request("OPTIONS", "z9hG4bKopt"), 0.0)
    with pytest.raises(ValueError, match="only an INVITE"):
        h.layer.cancel(tx, 0.1)
    h.layer.receive(reply(tx.request, 200, "OK"), TRUNK, 0.2)
    h.finish()


# -- client non-INVITE -----------------------------------------------------------------------------


def test_timer_e_doubles_up_to_t2_and_timer_f_times_out() -> None:
    h = Harness()
    tx = h.send(make_request("OPTIONS", "z9hG4bKopt"), 0.0)
    h.sent()
    assert tx.state is TransactionState.TRYING and not tx.is_invite
    sends = h.run_timers(31.99)
    assert times(sends, "OPTIONS") == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert h.events() == []
    h.run_timers(32.0)
    assert h.events() == [TransactionTimeout(tx, "F"), TransactionTerminated(tx)]
    h.finish()


def test_timer_e_holds_at_t2_after_a_provisional() -> None:
    h = Harness()
    bye = make_request("BYE", "z9hG4bKbye", cseq=2, to_tag="tt1")
    tx = h.send(bye, 0.0)
    h.sent()
    assert times(h.run_timers(0.6), "BYE") == [0.5]
    trying = reply(bye, 100, "Trying")
    h.layer.receive(trying, TRUNK, 0.6)
    assert h.events() == [ResponseReceived(tx, trying)]
    assert tx.state is TransactionState.PROCEEDING
    # the running E (due 1.5) keeps going, then every T2; Timer F still bounds it all
    assert times(h.run_timers(12.0), "BYE") == [1.5, 5.5, 9.5]
    sends = h.run_timers(40.0)
    assert times(sends, "BYE") == [13.5, 17.5, 21.5, 25.5, 29.5]
    assert h.events() == [TransactionTimeout(tx, "F"), TransactionTerminated(tx)]
    h.finish()


def test_timer_k_absorbs_retransmitted_responses() -> None:
    h = Harness()
    bye = make_request("BYE", "z9hG4bKbye", cseq=2, to_tag="tt1")
    tx = h.send(bye, 0.0)
    h.sent()
    ok = reply(bye, 200, "OK")
    h.layer.receive(ok, TRUNK, 1.0)
    assert h.events() == [ResponseReceived(tx, ok)]
    assert tx.state is TransactionState.COMPLETED
    h.layer.receive(reply(bye, 200, "OK"), TRUNK, 2.0)
    assert h.events() == [] and h.sent() == []
    assert h.run_timers(5.99) == [] and h.events() == []  # no more retransmissions either
    h.run_timers(6.0)  # Timer K = T4
    assert h.events() == [TransactionTerminated(tx)]
    h.finish()


def test_reliable_non_invite_has_no_timer_e_and_k_is_zero() -> None:
    h = Harness()
    bye = make_request("BYE", "z9hG4bKbye", cseq=2, to_tag="tt1")
    tx = h.send(bye, 0.0, reliable=True)
    h.sent()
    assert h.layer.get_timer() == 32.0  # only Timer F
    ok = reply(bye, 200, "OK")
    h.layer.receive(ok, TRUNK, 1.0, reliable=True)
    assert h.events() == [ResponseReceived(tx, ok), TransactionTerminated(tx)]
    h.finish()


def test_custom_t1_t2_t4() -> None:
    settings = TimerSettings(t1=0.1, t2=0.4, t4=1.0)
    h = Harness(settings)
    invite_tx = h.send(make_request(), 0.0)
    options_tx = h.send(make_request("OPTIONS", "z9hG4bKopt"), 0.0)
    h.sent()
    sends = h.run_timers(6.39)
    assert times(sends, "INVITE") == pytest.approx([0.1, 0.3, 0.7, 1.5, 3.1, 6.3])
    assert times(sends, "OPTIONS")[:5] == pytest.approx([0.1, 0.3, 0.7, 1.1, 1.5])  # cap T2
    assert h.events() == []
    h.run_timers(6.4)  # B and F = 64*T1
    assert {(type(e), getattr(e, "transaction", None)) for e in h.events()} == {
        (TransactionTimeout, invite_tx), (TransactionTerminated, invite_tx),
        (TransactionTimeout, options_tx), (TransactionTerminated, options_tx)}
    bye = make_request("BYE", "z9hG4bKbye", cseq=2, to_tag="tt1")
    bye_tx = h.send(bye, 10.0)
    h.layer.receive(reply(bye, 200, "OK"), TRUNK, 10.0)
    h.events()
    h.run_timers(10.99)
    assert h.events() == []
    h.run_timers(11.0)  # Timer K = T4
    assert h.events() == [TransactionTerminated(bye_tx)]
    h.finish()


def test_timer_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        TimerSettings(t1=5.0, t2=4.0)
    with pytest.raises(ValueError):
        TimerSettings(t4=0)


# -- server INVITE ---------------------------------------------------------------------------------


def receive_invite(h: Harness, now: float = 0.0, *, branch: str = "z9hG4bKsrv1",
                   reliable: bool = False) -> tuple[ServerTransaction, Request]:
    invite = make_request(branch=branch, via=TRUNK_VIA)
    h.layer.receive(invite, TRUNK, now, reliable=reliable)
    [event] = h.events()
    assert isinstance(event, RequestReceived) and event.request is invite
    assert event.source == TRUNK and event.cancelled is None
    assert event.transaction is not None
    return event.transaction, invite


def test_server_invite_sends_100_trying_itself_and_absorbs_retransmissions() -> None:
    h = Harness()
    tx, invite = receive_invite(h)
    assert tx.is_invite and tx.state is TransactionState.PROCEEDING and tx.source == TRUNK
    [(trying, addr)] = h.sent()
    assert isinstance(trying, Response) and (trying.status, trying.reason) == (100, "Trying")
    assert addr == TRUNK == tx.response_destination
    assert trying.headers.get_all("Via") == invite.headers.get_all("Via")
    assert trying.to.tag is None and trying.headers.get("CSeq") == "1 INVITE"
    assert trying.call_id == invite.call_id
    h.layer.receive(make_request(branch="z9hG4bKsrv1", via=TRUNK_VIA), TRUNK, 0.5)
    assert h.events() == []  # absorbed ...
    assert h.sent_wire() == wire(trying)  # ... with the last provisional sent again
    ringing = server_reply(invite, 180, "Ringing")
    h.layer.send_response(tx, ringing, 1.0)
    h.layer.receive(make_request(branch="z9hG4bKsrv1", via=TRUNK_VIA), TRUNK, 1.5)
    assert h.sent_wire() == wire(ringing, ringing)
    h.layer.send_response(tx, server_reply(invite, 603, "Decline"), 2.0)
    h.layer.receive(make_request("ACK", "z9hG4bKsrv1", via=TRUNK_VIA, to_tag="ours"), TRUNK, 2.1)
    h.finish()


def test_timer_g_retransmits_the_final_until_timer_h() -> None:
    h = Harness()
    tx, invite = receive_invite(h)
    h.sent()
    busy = server_reply(invite, 486, "Busy Here")
    h.layer.send_response(tx, busy, 0.0)
    assert h.sent_wire() == wire(busy)
    assert tx.state is TransactionState.COMPLETED
    sends = h.run_timers(31.99)
    assert times(sends, "486") == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert h.events() == []
    h.run_timers(32.0)  # Timer H: the ACK never came
    assert h.events() == [TransactionTimeout(tx, "H"), TransactionTerminated(tx)]
    h.finish()


def test_ack_stops_timer_g_and_timer_i_absorbs_ack_copies() -> None:
    h = Harness()
    tx, invite = receive_invite(h)
    h.sent()
    busy = server_reply(invite, 486, "Busy Here")
    h.layer.send_response(tx, busy, 0.0)
    h.sent()
    assert times(h.run_timers(0.6), "486") == [0.5]
    h.layer.receive(make_request(branch="z9hG4bKsrv1", via=TRUNK_VIA), TRUNK, 0.7)
    assert h.sent_wire() == wire(busy)  # a retransmitted INVITE gets the final again
    ack = make_request("ACK", "z9hG4bKsrv1", via=TRUNK_VIA, to_tag="ours")
    h.layer.receive(ack, TRUNK, 1.0)
    assert h.events() == []  # the ACK for a non-2xx is the transaction's, not the TU's
    assert tx.state is TransactionState.CONFIRMED
    h.layer.receive(make_request("ACK", "z9hG4bKsrv1", via=TRUNK_VIA, to_tag="ours"), TRUNK, 2)
    h.layer.receive(make_request(branch="z9hG4bKsrv1", via=TRUNK_VIA), TRUNK, 3.0)
    assert h.events() == [] and h.sent() == []
    assert h.run_timers(5.99) == []
    h.run_timers(6.0)  # Timer I = T4 after the ACK
    assert h.events() == [TransactionTerminated(tx)]
    h.finish()


def test_server_accepted_state_until_timer_l() -> None:
    h = Harness()
    tx, invite = receive_invite(h)
    h.sent()
    ok = server_reply(invite, 200, "OK")
    h.layer.send_response(tx, ok, 1.0)
    assert h.sent_wire() == wire(ok)
    assert tx.state is TransactionState.ACCEPTED
    h.layer.receive(make_request(branch="z9hG4bKsrv1", via=TRUNK_VIA), TRUNK, 1.2)
    assert h.events() == [] and h.sent() == []  # INVITE copies absorbed (RFC 6026 §8.7)
    h.layer.send_response(tx, ok, 1.5)  # the TU retransmits its 2xx through the transaction
    assert h.sent_wire() == wire(ok)
    ack = make_request("ACK", "z9hG4bK2xxack", via=TRUNK_VIA, to_tag="ours")
    h.layer.receive(ack, TRUNK, 1.6)  # the ACK for a 2xx: new branch, the dialog's business
    assert h.events() == [RequestReceived(None, ack, TRUNK)]
    assert h.run_timers(32.99) == []  # no 2xx retransmission by the transaction
    h.run_timers(33.0)  # Timer L = 64*T1
    assert h.events() == [TransactionTerminated(tx)]
    h.layer.send_response(tx, ok, 34.0)  # still the TU's to retransmit (§13.3.1.4)
    assert h.sent_wire() == wire(ok)
    h.layer.send_response(tx, server_reply(invite, 500, "Oops"), 34.0)
    assert h.sent() == []
    h.finish()


def test_reliable_server_invite_no_timer_g_and_i_is_zero() -> None:
    h = Harness()
    tx, invite = receive_invite(h, reliable=True)
    h.sent()
    h.layer.send_response(tx, server_reply(invite, 486, "Busy Here"), 0.0)
    h.sent()
    assert h.layer.get_timer() == 32.0  # only Timer H
    h.layer.receive(make_request("ACK", "z9hG4bKsrv1", via=TRUNK_VIA, to_tag="ours"), TRUNK, 1.0,
                    reliable=True)
    assert h.events() == [TransactionTerminated(tx)]
    h.finish()


def test_reliable_server_invite_times_out_on_timer_h() -> None:
    h = Harness()
    tx, invite = receive_invite(h, reliable=True)
    h.layer.send_response(tx, server_reply(invite, 486, "Busy Here"), 0.0)
    h.sent()
    assert h.run_timers(100.0) == []
    assert h.events() == [TransactionTimeout(tx, "H"), TransactionTerminated(tx)]
    h.finish()


# -- server non-INVITE -----------------------------------------------------------------------------


def test_timer_j_absorbs_retransmitted_requests() -> None:
    h = Harness()
    bye = make_request("BYE", "z9hG4bKsbye", via=TRUNK_VIA, cseq=2, to_tag="ours")
    h.layer.receive(bye, TRUNK, 0.0)
    [event] = h.events()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    tx = event.transaction
    assert tx.state is TransactionState.TRYING and not tx.is_invite
    assert h.sent() == []  # no 100 Trying for a non-INVITE
    copy = make_request("BYE", "z9hG4bKsbye", via=TRUNK_VIA, cseq=2, to_tag="ours")
    h.layer.receive(copy, TRUNK, 0.5)
    assert h.events() == [] and h.sent() == []  # Trying: absorbed, nothing to re-send yet
    ok = server_reply(bye, 200, "OK")
    h.layer.send_response(tx, ok, 1.0)
    assert h.sent_wire() == wire(ok)
    h.layer.send_response(tx, server_reply(bye, 500, "Late"), 1.1)  # a second final: dropped
    assert h.sent() == []
    h.layer.receive(copy, TRUNK, 2.0)
    assert h.events() == [] and h.sent_wire() == wire(ok)
    assert h.run_timers(32.99) == []
    h.run_timers(33.0)  # Timer J = 64*T1
    assert h.events() == [TransactionTerminated(tx)]
    h.layer.receive(copy, TRUNK, 34.0)  # after J, it is a new request again
    [again] = h.events()
    assert isinstance(again, RequestReceived) and again.transaction not in (None, tx)
    assert len(h.layer) == 1  # a server transaction lasts until the TU answers
    assert again.transaction is not None
    h.layer.send_response(again.transaction, server_reply(copy, 200, "OK"), 34.0)
    h.finish()


def test_server_non_invite_resends_its_last_provisional() -> None:
    h = Harness()
    info = make_request("INFO", "z9hG4bKinfo", via=TRUNK_VIA, cseq=3, to_tag="ours")
    h.layer.receive(info, TRUNK, 0.0)
    [event] = h.events()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    trying = server_reply(info, 100, "Trying")
    h.layer.send_response(event.transaction, trying, 0.1)
    h.layer.receive(make_request("INFO", "z9hG4bKinfo", via=TRUNK_VIA, cseq=3, to_tag="ours"),
                    TRUNK, 0.6)
    assert h.sent_wire() == wire(trying, trying)
    assert event.transaction.state is TransactionState.PROCEEDING
    h.layer.send_response(event.transaction, server_reply(info, 200, "OK"), 1.0)
    h.finish()


def test_reliable_server_non_invite_j_is_zero() -> None:
    h = Harness()
    bye = make_request("BYE", "z9hG4bKsbye", via=TRUNK_VIA, cseq=2, to_tag="ours")
    h.layer.receive(bye, TRUNK, 0.0, reliable=True)
    [event] = h.events()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    h.layer.send_response(event.transaction, server_reply(bye, 200, "OK"), 1.0)
    assert h.events() == [TransactionTerminated(event.transaction)]
    h.finish()


# -- matching, routing, API contract ---------------------------------------------------------------


def test_cancel_gets_its_own_transaction_and_names_the_invite() -> None:
    h = Harness()
    invite_tx, invite = receive_invite(h)
    cancel = make_request("CANCEL", "z9hG4bKsrv1", via=TRUNK_VIA)
    h.layer.receive(cancel, TRUNK, 0.5)
    [event] = h.events()
    assert isinstance(event, RequestReceived) and event.request is cancel
    assert event.cancelled is invite_tx
    assert event.transaction is not None and event.transaction is not invite_tx
    assert event.transaction.request.method == "CANCEL"
    h.layer.send_response(event.transaction, server_reply(cancel, 200, "OK"), 0.6)
    h.layer.send_response(invite_tx, server_reply(invite, 487, "Request Terminated"), 0.6)
    h.layer.receive(make_request("ACK", "z9hG4bKsrv1", via=TRUNK_VIA, to_tag="ours"), TRUNK, 0.7)
    stray = make_request("CANCEL", "z9hG4bKnothing", via=TRUNK_VIA)
    h.layer.receive(stray, TRUNK, 1.0)
    [event] = h.events()
    assert isinstance(event, RequestReceived) and event.cancelled is None
    assert event.transaction is not None
    h.layer.send_response(event.transaction, server_reply(stray, 481, "No Transaction"), 1.0)
    h.finish()


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    h = Harness()
    receive_invite(h)
    other = make_request(branch="z9hG4bKsrv1", via="SIP/2.0/UDP 192.0.2.99:5060;branch={branch}")
    h.layer.receive(other, ("192.0.2.99", 5060), 0.1)
    [event] = h.events()
    assert isinstance(event, RequestReceived) and event.request is other
    assert len(h.layer) == 2
    for tx in list(h.seen.values()):
        assert isinstance(tx, ServerTransaction)
        h.layer.send_response(tx, server_reply(tx.request, 200, "OK"), 0.2)
    h.finish()


def test_rfc_2543_peer_is_matched_without_the_magic_cookie() -> None:
    h = Harness()
    old_via = "SIP/2.0/UDP 192.0.2.10:5060;branch={branch}"
    invite = make_request(branch="oldstyle1", via=old_via)
    h.layer.receive(invite, TRUNK, 0.0)
    [event] = h.events()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    tx = event.transaction
    h.layer.receive(make_request(branch="oldstyle1", via=old_via), TRUNK, 0.5)
    assert h.events() == []  # the retransmission matched on URI, tags, Call-ID, CSeq, Via
    h.layer.send_response(tx, server_reply(invite, 486, "Busy Here"), 1.0)
    wrong = make_request("ACK", "oldstyle1", via=old_via, to_tag="someone-else")
    h.layer.receive(wrong, TRUNK, 1.1)
    assert h.events() == [RequestReceived(None, wrong, TRUNK)]  # To tag is not ours
    h.layer.receive(make_request("ACK", "oldstyle1", via=old_via, to_tag="ours"), TRUNK, 1.2)
    assert h.events() == [] and tx.state is TransactionState.CONFIRMED
    h.finish()


def test_response_matching_no_transaction_is_stray() -> None:
    h = Harness()
    invite = make_request()
    tx = h.send(invite, 0.0)
    other = reply(make_request(branch="z9hG4bKother"), 200, "OK")
    h.layer.receive(other, TRUNK, 0.1)
    wrong_method = reply(invite, 200, "OK", method="BYE")
    h.layer.receive(wrong_method, TRUNK, 0.2)
    assert h.events() == [StrayResponse(other, TRUNK), StrayResponse(wrong_method, TRUNK)]
    assert tx.state is TransactionState.CALLING
    h.layer.receive(Response(700, "Nonsense", reply(invite, 200).headers), TRUNK, 0.3)
    assert h.events() == [] and tx.state is TransactionState.CALLING
    h.layer.receive(reply(invite, 404, "Not Found"), TRUNK, 0.4)
    h.finish()


@pytest.mark.parametrize(
    ("via", "source", "reliable", "destination", "stamp"),
    [
        ("SIP/2.0/UDP 10.1.1.1:5080;branch={branch};rport", ("203.0.113.7", 40000), False,
         ("203.0.113.7", 40000), ";received=203.0.113.7;rport=40000"),
        ("SIP/2.0/UDP pbx.example.com;branch={branch}", ("203.0.113.7", 40000), False,
         ("203.0.113.7", 5060), ";received=203.0.113.7"),
        ("SIP/2.0/UDP 203.0.113.7:5090;branch={branch}", ("203.0.113.7", 40000), False,
         ("203.0.113.7", 5090), ""),
        ("SIP/2.0/TCP pbx.example.com:5090;branch={branch}", ("203.0.113.7", 40000), True,
         ("203.0.113.7", 40000), ";received=203.0.113.7"),
    ],
    ids=["rport", "received", "sent-by", "reliable"],
)
def test_response_destination_follows_via_and_rport(
        via: str, source: Address, reliable: bool, destination: Address, stamp: str) -> None:
    h = Harness()
    invite = make_request(branch="z9hG4bKdest", via=via)
    h.layer.receive(invite, source, 0.0, reliable=reliable)
    [event] = h.events()
    assert isinstance(event, RequestReceived) and event.transaction is not None
    assert event.transaction.response_destination == destination
    [(trying, addr)] = h.sent()
    assert addr == destination
    top = trying.headers.values("Via")[0]
    assert top.endswith(stamp) and top.count("received") == (1 if stamp else 0)
    h.layer.send_response(event.transaction, server_reply(invite, 200, "OK"), 0.1)
    h.finish()


def test_ack_and_bad_branches_are_refused_by_send_request() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError, match="send_stateless"):
        layer.send_request(make_request("ACK"), TRUNK, 0.0)
    with pytest.raises(ValueError, match="z9hG4bK"):
        layer.send_request(make_request(branch="oldstyle"), TRUNK, 0.0)
    layer.send_request(make_request(), TRUNK, 0.0)
    with pytest.raises(ValueError, match="already running"):
        layer.send_request(make_request(), TRUNK, 0.0)
    assert len(layer) == 1


def test_send_stateless_and_bad_status() -> None:
    h = Harness()
    ack = make_request("ACK", "z9hG4bK2xxack", to_tag="tt1")
    h.layer.send_stateless(ack, TRUNK)
    assert h.sent_wire() == wire(ack)
    assert len(h.layer) == 0
    tx, invite = receive_invite(h)
    with pytest.raises(ValueError, match="700"):
        h.layer.send_response(tx, Response(700, "No", server_reply(invite, 200).headers), 0.1)
    h.layer.send_response(tx, server_reply(invite, 480, "Temporarily Unavailable"), 0.2)
    h.layer.receive(make_request("ACK", "z9hG4bKsrv1", via=TRUNK_VIA, to_tag="ours"), TRUNK, 0.3)
    h.finish()


def test_many_transactions_all_end() -> None:
    h = Harness()
    for n in range(50):
        invite = make_request(branch=f"z9hG4bKmany{n}", cseq=n + 1)
        tx = h.send(invite, n * 0.01)
        h.layer.receive(reply(invite, [180, 486, 200][n % 3], "Reason"), TRUNK, n * 0.01 + 0.2)
        if n % 3 == 0:
            h.layer.cancel(tx, 1.0)
            h.layer.receive(reply(invite, 487, "Request Terminated"), TRUNK, 1.1)
    assert len(h.layer) == 50 + 17  # the INVITEs and the 17 CANCELs
    h.finish()


# -- the tables themselves -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "machine", [CLIENT_INVITE, CLIENT_NON_INVITE, SERVER_INVITE, SERVER_NON_INVITE],
    ids=lambda m: m.name)
def test_every_timer_started_is_handled_where_it_runs(machine: Machine) -> None:
    """A timer armed into a state that has no row for it would never end the transaction."""
    assert set(machine.start) <= set(machine.table[machine.initial])
    for state, row in machine.table.items():
        for transition in row.values():
            if transition.target is TransactionState.TERMINATED:
                continue
            target_row = machine.table[transition.target]
            assert set(transition.start) <= set(target_row), (state, transition)
            assert set(transition.keep) <= set(target_row), (state, transition)


@pytest.mark.parametrize(
    "machine", [CLIENT_INVITE, CLIENT_NON_INVITE, SERVER_INVITE, SERVER_NON_INVITE],
    ids=lambda m: m.name)
def test_every_state_can_reach_terminated(machine: Machine) -> None:
    reachable = {machine.initial}
    frontier = [machine.initial]
    while frontier:
        for transition in machine.table.get(frontier.pop(), {}).values():
            if transition.target not in reachable:
                reachable.add(transition.target)
                frontier.append(transition.target)
    assert TransactionState.TERMINATED in reachable
    assert set(machine.table) == reachable - {TransactionState.TERMINATED}


def test_timer_queue_orders_and_forgets() -> None:
    queue: TimerQueue[str] = TimerQueue()
    queue.arm("a", Timer.B, 32.0)
    queue.arm("b", Timer.F, 10.0)
    queue.arm("a", Timer.A, 0.5)
    queue.arm("a", Timer.A, 1.5)  # re-armed: the 0.5 entry is stale
    assert queue.next_deadline() == 1.5
    assert queue.pop_due(1.0) is None
    assert queue.pop_due(2.0) == ("a", Timer.A)
    queue.stop("b")
    assert queue.running("b") == {}
    assert queue.pop_due(100.0) == ("a", Timer.B)
    assert queue.pop_due(100.0) is None and queue.next_deadline() is None
