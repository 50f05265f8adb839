"""UAC dialogs (RFC 3261 §12): state from the response, requests built from the state."""

from __future__ import annotations

import pytest

from callbridge.sip.dialog import Dialog, DialogId, DialogState, dialog_id_of_request
from callbridge.sip.message import Request, Response, make_response, parse_message

INVITE = (
    b"INVITE sip:9812345678@trunk.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKinv1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Agent" <sip:100@trunk.example>;tag=ours\r\n'
    b"To: <sip:9812345678@trunk.example>\r\n"
    b"Call-ID: dlg-1\r\nCSeq: 7 INVITE\r\n"
    b"Contact: <sip:callbridge@127.0.0.1:5060>\r\nContent-Length: 0\r\n\r\n"
)


def invite() -> Request:
    request = parse_message(INVITE)
    assert isinstance(request, Request)
    return request


def response(status: int, *, record_route: tuple[str, ...] = (),
             contact: str = "<sip:gw@192.0.2.10:5070>") -> Response:
    headers = [("Contact", contact)] + [("Record-Route", rr) for rr in record_route]
    return make_response(invite(), status, to_tag="theirs", headers=tuple(headers))


def test_dialog_from_2xx_takes_target_routes_and_tags() -> None:
    dialog = Dialog.from_response(invite(), response(200, record_route=(
        "<sip:p1.example;lr>", "<sip:p2.example;lr>")))
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId("dlg-1", "ours", "theirs")
    assert dialog.remote_target == "sip:gw@192.0.2.10:5070"
    assert dialog.route_set == ("<sip:p2.example;lr>", "<sip:p1.example;lr>")  # reversed
    assert dialog.local_cseq == 7


def test_in_dialog_request_increments_cseq_and_uses_loose_routes() -> None:
    dialog = Dialog.from_response(invite(), response(200, record_route=("<sip:p1.example;lr>",)))
    bye = dialog.create_request("BYE", "z9hG4bKbye", "127.0.0.1:5060")
    assert bye.uri == "sip:gw@192.0.2.10:5070"
    assert bye.headers.get_all("Route") == ["<sip:p1.example;lr>"]
    assert bye.cseq.seq == 8 and bye.cseq.method == "BYE"
    assert bye.from_.tag == "ours" and bye.to.tag == "theirs"
    assert dialog.create_request("INFO", "z9hG4bKinfo", "127.0.0.1:5060").cseq.seq == 9


def test_strict_route_puts_the_target_last() -> None:
    dialog = Dialog.from_response(invite(), response(200, record_route=("<sip:strict.example>",)))
    bye = dialog.create_request("BYE", "z9hG4bKbye", "127.0.0.1:5060")
    assert bye.uri == "sip:strict.example"
    assert bye.headers.get_all("Route") == ["<sip:gw@192.0.2.10:5070>"]


def test_ack_for_2xx_reuses_invite_cseq_and_credentials() -> None:
    inv = invite()
    inv.headers.add("Proxy-Authorization", 'Digest username="a", response="x"')
    dialog = Dialog.from_response(inv, response(200))
    ack = dialog.create_ack(inv, "z9hG4bKack", "127.0.0.1:5060")
    assert ack.method == "ACK" and ack.cseq.seq == 7 and ack.cseq.method == "ACK"
    assert ack.headers.get("Proxy-Authorization") == 'Digest username="a", response="x"'
    assert ack.top_via.branch == "z9hG4bKack"


def test_early_dialog_confirmed_by_2xx_refreshes_target() -> None:
    dialog = Dialog.from_response(invite(), response(183, contact="<sip:early@192.0.2.1>"))
    assert dialog.state is DialogState.EARLY
    dialog.confirm(response(200, contact="<sip:final@192.0.2.2>"))
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.remote_target == "sip:final@192.0.2.2"


def test_remote_cseq_must_increase() -> None:
    dialog = Dialog.from_response(invite(), response(200))
    far = _far_request("INFO", 3)
    assert dialog.check_remote_cseq(far)
    assert not dialog.check_remote_cseq(_far_request("INFO", 2))
    assert dialog.check_remote_cseq(_far_request("ACK", 2))  # ACK reuses its INVITE's number
    assert dialog.check_remote_cseq(_far_request("BYE", 4))


def test_dialog_id_of_incoming_request() -> None:
    assert dialog_id_of_request(_far_request("BYE", 1)) == DialogId("dlg-1", "ours", "theirs")
    assert dialog_id_of_request(invite()) is None  # no To tag: out of dialog


def test_a_response_without_to_tag_makes_no_dialog() -> None:
    no_tag = make_response(invite(), 180)
    with pytest.raises(ValueError, match="tags"):
        Dialog.from_response(invite(), no_tag)


def _far_request(method: str, seq: int) -> Request:
    text = (
        f"{method} sip:callbridge@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKfar{seq}\r\n"
        "From: <sip:9812345678@trunk.example>;tag=theirs\r\n"
        'To: "Agent" <sip:100@trunk.example>;tag=ours\r\n'
        f"Call-ID: dlg-1\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request
