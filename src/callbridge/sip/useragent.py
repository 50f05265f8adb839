"""The user agent core (the "TU" of RFC 3261 §8, §12-§15), pure: outbound calls and
what a trunk may send back.

:class:`UserAgent` places outbound INVITEs as legs, follows their responses into dialogs,
ACKs 2xx (again on each retransmission), CANCELs, BYEs, answers in-dialog requests, and
refuses what callbridge never accepts (an out-of-dialog INVITE: callbridge relays no call it
did not start). It owns a :class:`TransactionLayer` and has the same sans-IO surface:

    receive_datagram(data, source, now)   handle_timer(now)   get_timer()
    datagrams_to_send()                    next_event()

Leg progress leaves as the events of :mod:`callbridge.sip.events` (re-exported here);
the checks every request meets first live in :mod:`callbridge.sip.policy`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from callbridge.sip.auth import DigestAuth
from callbridge.sip.dialog import Dialog, DialogId, DialogState, dialog_id_of_request
from callbridge.sip.errors import SipParseError
from callbridge.sip.events import (
    Answered,
    Cancelled,
    EarlyMedia,
    Event,
    Failed,
    HungUp,
    InfoReceived,
    MediaUpdate,
    PingResult,
    RemoteHangup,
    Ringing,
    Trying,
)
from callbridge.sip.headers import NameAddr
from callbridge.sip.message import (
    Headers,
    Message,
    Request,
    Response,
    make_response,
    parse_message,
    salvage_request,
)
from callbridge.sip.policy import (
    is_sdp,
    is_sendable,
    missing_mandatory,
    precheck,
    short_reason,
)
from callbridge.sip.transaction import (
    Address,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TimerSettings,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    response_destination,
)
from callbridge.sip.uri import SipUri

ALLOWED_METHODS = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
#: Methods we know but never accept here (§8.2.1: 405 with Allow); anything else gets 501.
KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "PUBLISH", "PRACK"}
)

__all__ = [
    "Answered", "Cancelled", "EarlyMedia", "Event", "Failed", "HungUp", "InfoReceived",
    "LegState", "MediaUpdate", "PingResult", "RemoteHangup", "Ringing", "Trying", "UserAgent",
    "UserAgentConfig", "is_sendable",
]


# --- configuration and leg state --------------------------------------------------------


@dataclass(frozen=True)
class UserAgentConfig:
    host: str  #: the address put in Via and Contact
    port: int
    transport: str = "UDP"
    user_agent: str = "callbridge"
    timers: TimerSettings = field(default_factory=TimerSettings)
    #: Source IPs whose in-dialog requests are accepted (the trunk's addresses).
    trusted_sources: frozenset[str] = frozenset()

    @property
    def via_host(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def contact(self) -> str:
        param = ";transport=tcp" if self.transport == "TCP" else ""
        return f"<sip:callbridge@{self.via_host}{param}>"


class LegState(enum.Enum):
    #: INVITE sent, nothing heard yet (or only 100 Trying).
    CALLING = "calling"
    #: A provisional response with a To tag created an early dialog.
    EARLY = "early"
    #: 2xx received and ACKed.
    CONFIRMED = "confirmed"
    #: CANCEL asked for or BYE sent; waiting for the end.
    ENDING = "ending"
    #: Over; kept only until its last transaction ends.
    ENDED = "ended"


@dataclass
class _Leg:
    leg_id: str
    invite: Request
    destination: Address
    transaction: ClientTransaction
    local_sdp: bytes
    auth_flow: Generator[Request, Response, None] | None = None
    auth: DigestAuth | None = None
    state: LegState = LegState.CALLING
    dialog: Dialog | None = None
    early: dict[str, Dialog] = field(default_factory=dict)
    cancel_requested: bool = False
    acks: dict[str, bytes] = field(default_factory=dict)  #: remote tag -> ACK sent for its 2xx
    reinvite: ClientTransaction | None = None


@dataclass
class _Pending2xx:
    """A 2xx we sent to a re-INVITE, retransmitted until its ACK arrives (§13.3.1.4)."""

    data: bytes
    destination: Address
    interval: float
    next_at: float
    give_up_at: float
    leg_id: str


# --- the user agent -----------------------------------------------------------------------


class UserAgent:
    def __init__(self, config: UserAgentConfig, *, token: Callable[[], str]) -> None:
        self.config = config
        self._token = token
        self._reliable = config.transport == "TCP"
        self._transactions = TransactionLayer(config.timers)
        self._legs: dict[str, _Leg] = {}
        self._by_invite: dict[int, _Leg] = {}  #: id(client INVITE transaction) -> leg
        self._by_dialog: dict[DialogId, _Leg] = {}
        self._pings: dict[int, str] = {}  #: id(OPTIONS transaction) -> ping id
        self._byes: dict[int, _Leg] = {}
        self._reinvites: dict[int, _Leg] = {}  #: id(our re-INVITE transaction) -> leg
        self._reinvite_acks: dict[int, bytes] = {}
        self._pending_2xx: dict[tuple[str, int], _Pending2xx] = {}
        self._events: deque[Event] = deque()
        self._outbox: list[tuple[bytes, Address]] = []
        self.stats: dict[str, int] = {"parse_errors": 0, "dropped": 0, "blocked_sends": 0}

    # -- the sans-IO surface -------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.stats["parse_errors"] += 1
            self._answer_unparseable(data, exc, source)
            return
        self.receive_message(message, source, now)

    def receive_message(self, message: Message, source: Address, now: float, *,
                        reliable: bool = False) -> None:
        """A framed message (from TCP, or a parsed datagram)."""
        problem = missing_mandatory(message)
        if problem is not None:
            self.stats["dropped"] += 1
            if isinstance(message, Request) and message.method != "ACK":
                self._reply_stateless(message, 400, source, problem, reliable)
            return
        try:
            self._transactions.receive(message, source, now, reliable=reliable)
        except SipParseError as exc:
            self.stats["parse_errors"] += 1
            if isinstance(message, Request) and message.method != "ACK":
                self._reply_stateless(message, exc.status, source, str(exc), reliable)
            return
        self._drain_transaction_events(now)

    def handle_timer(self, now: float) -> None:
        self._transactions.handle_timer(now)
        self._retransmit_2xx(now)
        self._drain_transaction_events(now)

    def get_timer(self) -> float | None:
        deadlines = [p.next_at for p in self._pending_2xx.values()]
        tx_timer = self._transactions.get_timer()
        if tx_timer is not None:
            deadlines.append(tx_timer)
        return min(deadlines, default=None)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out = self._outbox + self._transactions.datagrams_to_send()
        self._outbox = []
        sendable = [(data, addr) for data, addr in out if is_sendable(addr)]
        self.stats["blocked_sends"] += len(out) - len(sendable)
        return sendable

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    @property
    def transaction_count(self) -> int:
        return len(self._transactions)

    @property
    def leg_count(self) -> int:
        return len(self._legs)

    # -- commands ------------------------------------------------------------------------

    def invite(self, leg_id: str, *, request_uri: str, from_: str, to: str, sdp: bytes,
               destination: Address, now: float, auth: DigestAuth | None = None,
               headers: tuple[tuple[str, str], ...] = (),
               route: tuple[str, ...] = ()) -> None:
        """Place an outbound call: INVITE ``request_uri`` via ``destination``."""
        if leg_id in self._legs:
            raise ValueError(f"leg {leg_id!r} exists")
        h = Headers()
        h.add("Via", self._via())
        h.add("Max-Forwards", "70")
        for r in route:
            h.add("Route", r)
        h.add("From", str(NameAddr.parse(from_).with_tag(self._token())))
        h.add("To", to)
        h.add("Call-ID", self._token())
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self.config.contact)
        h.add("Allow", ALLOWED_METHODS)
        h.add("User-Agent", self.config.user_agent)
        for name, value in headers:
            h.add(name, value)
        h.add("Content-Type", "application/sdp")
        request = Request("INVITE", request_uri, h, sdp)
        flow = auth.auth_flow(request) if auth else None
        if flow is not None:
            request = next(flow)
        tx = self._send(request, destination, now)
        leg = _Leg(leg_id, request, destination, tx, sdp, flow, auth)
        self._legs[leg_id] = leg
        self._by_invite[id(tx)] = leg

    def cancel(self, leg_id: str, now: float) -> None:
        """Give up on an unanswered leg (§9.1); a no-op once the leg is answered or over."""
        leg = self._legs.get(leg_id)
        if leg is None or leg.state in (LegState.CONFIRMED, LegState.ENDED):
            return
        leg.cancel_requested = True
        leg.state = LegState.ENDING
        self._transactions.cancel(leg.transaction, now)

    def hangup(self, leg_id: str, now: float) -> None:
        """End a leg whatever its state: CANCEL while unanswered, BYE once answered."""
        leg = self._legs.get(leg_id)
        if leg is None:
            return
        if leg.state is LegState.CONFIRMED:
            self._send_bye(leg, now)
        else:
            self.cancel(leg_id, now)

    def set_local_sdp(self, leg_id: str, sdp: bytes) -> None:
        """The SDP we answer the far end's re-INVITEs with from now on."""
        leg = self._legs.get(leg_id)
        if leg is not None:
            leg.local_sdp = sdp

    def reinvite(self, leg_id: str, sdp: bytes, now: float) -> None:
        """Send a re-INVITE with a new offer on a confirmed leg (answer -> MediaUpdate)."""
        leg = self._legs.get(leg_id)
        if leg is None or leg.dialog is None or leg.state is not LegState.CONFIRMED:
            raise ValueError(f"leg {leg_id!r} is not answered")
        leg.local_sdp = sdp
        request = leg.dialog.create_request(
            "INVITE", self._branch(), self.config.via_host, transport=self.config.transport,
            body=sdp, content_type="application/sdp",
            headers=(("Contact", self.config.contact),),
        )
        request = self._preauthorize(leg, request)
        leg.reinvite = self._send(request, self._next_hop(leg), now)
        self._reinvites[id(leg.reinvite)] = leg

    def info(self, leg_id: str, content_type: str, body: bytes, now: float) -> None:
        """An in-dialog INFO (RFC 6086), e.g. ``application/dtmf-relay`` for a leg that
        negotiated no telephone-event; its answer is not reported."""
        leg = self._legs.get(leg_id)
        if leg is None or leg.dialog is None or leg.state is not LegState.CONFIRMED:
            raise ValueError(f"leg {leg_id!r} is not answered")
        request = leg.dialog.create_request(
            "INFO", self._branch(), self.config.via_host, transport=self.config.transport,
            body=body, content_type=content_type)
        self._send(self._preauthorize(leg, request), self._next_hop(leg), now)

    def ping(self, ping_id: str, *, request_uri: str, destination: Address, now: float) -> None:
        """An OPTIONS ping (RFC 3261 §11) whose outcome arrives as :class:`PingResult`."""
        h = Headers()
        h.add("Via", self._via())
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:callbridge@{self.config.via_host}>;tag={self._token()}")
        h.add("To", f"<{request_uri}>")
        h.add("Call-ID", self._token())
        h.add("CSeq", "1 OPTIONS")
        h.add("Accept", "application/sdp")
        h.add("User-Agent", self.config.user_agent)
        tx = self._send(Request("OPTIONS", request_uri, h), destination, now)
        self._pings[id(tx)] = ping_id

    # -- transaction events -----------------------------------------------------------------

    def _drain_transaction_events(self, now: float) -> None:
        while (event := self._transactions.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                self._on_response(event.transaction, event.response, now)
            elif isinstance(event, RequestReceived):
                self._on_request(event, now)
            elif isinstance(event, StrayResponse):
                self._on_stray_response(event.response, now)
            elif isinstance(event, TransactionTimeout):
                self._on_timeout(event.transaction, now)
            elif isinstance(event, TransactionTerminated):
                self._forget(event.transaction)

    def _on_response(self, tx: ClientTransaction, response: Response, now: float) -> None:
        key = id(tx)
        if key in self._pings:
            if response.status >= 200:
                self._events.append(PingResult(self._pings.pop(key), response.status))
            return
        if key in self._byes:
            if response.status >= 200:
                self._on_bye_response(self._byes.pop(key), tx, response, now)
            return
        if key in self._reinvites:
            self._on_reinvite_response(self._reinvites[key], tx, response, now)
            return
        leg = self._by_invite.get(key)
        if leg is None:
            return
        if response.status < 200:
            self._on_provisional(leg, response)
        elif response.status < 300:
            self._on_2xx(leg, response, now)
        else:
            self._on_invite_failure(leg, tx, response, now)

    def _on_provisional(self, leg: _Leg, response: Response) -> None:
        if response.status == 100:
            self._events.append(Trying(leg.leg_id))
            return
        tag = response.to.tag
        if tag and tag not in leg.early:
            leg.early[tag] = Dialog.from_response(leg.invite, response)
            if leg.state is LegState.CALLING:
                leg.state = LegState.EARLY
        if response.body:
            self._events.append(EarlyMedia(leg.leg_id, response.body))
        else:
            self._events.append(Ringing(leg.leg_id, response.status))

    def _on_2xx(self, leg: _Leg, response: Response, now: float) -> None:
        tag = response.to.tag or ""
        if tag in leg.acks:  # a retransmitted 2xx: our ACK was lost (§13.2.2.4)
            self._outbox.append((leg.acks[tag], self._next_hop(leg)))
            return
        dialog = leg.early.pop(tag, None) or Dialog.from_response(leg.invite, response)
        dialog.confirm(response)
        ack = dialog.create_ack(leg.invite, self._branch(), self.config.via_host,
                                transport=self.config.transport)
        data = ack.serialize()
        leg.acks[tag] = data
        self._outbox.append((data, self._dialog_hop(leg, dialog)))
        if leg.dialog is None and not leg.cancel_requested:
            leg.dialog = dialog
            leg.state = LegState.CONFIRMED
            self._by_dialog[dialog.id] = leg
            self._events.append(Answered(leg.leg_id, response.body))
            return
        # A forked second 2xx, or a 2xx that crossed our CANCEL: ACK, then BYE it
        # (§9.1, §13.2.2.4); nobody waits for that BYE's answer.
        self._send_bye_on(leg, dialog, now)
        if leg.dialog is None:
            self._events.append(Cancelled(leg.leg_id))
            self._end_leg(leg)

    def _on_invite_failure(self, leg: _Leg, tx: ClientTransaction, response: Response,
                           now: float) -> None:
        if response.status in (401, 407) and leg.auth_flow is not None and not leg.cancel_requested:
            retry = self._auth_retry(leg, response)
            if retry is not None:
                del self._by_invite[id(tx)]
                leg.invite = retry
                leg.transaction = self._send(retry, leg.destination, now)
                self._by_invite[id(leg.transaction)] = leg
                return
        if leg.cancel_requested and response.status == 487:
            self._events.append(Cancelled(leg.leg_id))
        else:
            self._events.append(Failed(leg.leg_id, response.status, response.reason))
        self._end_leg(leg)

    def _auth_retry(self, leg: _Leg, response: Response) -> Request | None:
        assert leg.auth_flow is not None
        try:
            retry = leg.auth_flow.send(response)
        except StopIteration:
            leg.auth_flow = None
            return None
        except SipParseError:
            leg.auth_flow = None
            return None
        retry.headers.set("Via", self._via())
        return retry

    def _on_reinvite_response(self, leg: _Leg, tx: ClientTransaction, response: Response,
                              now: float) -> None:
        if response.status < 200 or leg.dialog is None:
            return
        key = id(tx)
        if key in self._reinvite_acks:  # a retransmitted 2xx (RFC 6026 Accepted state)
            self._outbox.append((self._reinvite_acks[key], self._next_hop(leg)))
            return
        leg.reinvite = None
        if response.status < 300:
            ack = leg.dialog.create_ack(tx.request, self._branch(), self.config.via_host,
                                        transport=self.config.transport)
            self._reinvite_acks[key] = ack.serialize()
            self._outbox.append((self._reinvite_acks[key], self._next_hop(leg)))
            leg.dialog.refresh_target(response)
            if response.body:
                self._events.append(MediaUpdate(leg.leg_id, response.body))
        elif response.status in (408, 481):
            self._send_bye(leg, now)  # §14.1: the dialog is gone

    def _on_stray_response(self, response: Response, now: float) -> None:
        """A 2xx retransmission or fork after the INVITE transaction ended (RFC 6026 §8.4)."""
        try:
            if not (200 <= response.status < 300) or response.cseq.method != "INVITE":
                return
            call_id, local_tag = response.call_id, response.from_.tag
        except SipParseError:
            return
        for leg in self._legs.values():
            if leg.invite.call_id == call_id and leg.invite.from_.tag == local_tag:
                self._on_2xx(leg, response, now)
                return

    def _forget(self, tx: ClientTransaction | ServerTransaction) -> None:
        key = id(tx)
        for table in (self._pings, self._byes, self._by_invite, self._reinvites,
                      self._reinvite_acks):
            table.pop(key, None)

    def _on_timeout(self, tx: ClientTransaction | ServerTransaction, now: float) -> None:
        key = id(tx)
        if key in self._reinvites:
            leg = self._reinvites[key]
            leg.reinvite = None
            self._send_bye(leg, now)
        elif key in self._pings:
            self._events.append(PingResult(self._pings.pop(key), 0))
        elif key in self._byes:
            leg = self._byes.pop(key)
            self._events.append(HungUp(leg.leg_id, 408))
            self._end_leg(leg)
        elif key in self._by_invite:
            leg = self._by_invite[key]
            if leg.state is not LegState.CONFIRMED:
                if leg.cancel_requested:
                    self._events.append(Cancelled(leg.leg_id))
                else:
                    self._events.append(Failed(leg.leg_id, 408, "Request Timeout", timed_out=True))
                self._end_leg(leg)

    # -- BYE -----------------------------------------------------------------------------------

    def _send_bye(self, leg: _Leg, now: float) -> None:
        if leg.dialog is None or leg.state in (LegState.ENDING, LegState.ENDED):
            return
        leg.state = LegState.ENDING
        tx = self._send_bye_on(leg, leg.dialog, now)
        self._byes[id(tx)] = leg

    def _send_bye_on(self, leg: _Leg, dialog: Dialog, now: float) -> ClientTransaction:
        request = dialog.create_request("BYE", self._branch(), self.config.via_host,
                                        transport=self.config.transport)
        request = self._preauthorize(leg, request)
        dialog.state = DialogState.TERMINATED
        return self._send(request, self._dialog_hop(leg, dialog), now)

    def _on_bye_response(self, leg: _Leg, tx: ClientTransaction, response: Response,
                         now: float) -> None:
        if response.status in (401, 407) and leg.auth is not None and leg.dialog is not None:
            retry = self._authorized_retry(leg, tx.request, response)
            if retry is not None:
                new_tx = self._send(retry, self._next_hop(leg), now)
                self._byes[id(new_tx)] = leg
                return
        self._events.append(HungUp(leg.leg_id, response.status))
        self._end_leg(leg)

    def _authorized_retry(self, leg: _Leg, request: Request, response: Response) -> Request | None:
        assert leg.auth is not None
        flow = leg.auth.auth_flow(request)
        next(flow)
        try:
            retry = flow.send(response)
        except (StopIteration, SipParseError):
            return None
        retry.headers.set("Via", self._via())
        if leg.dialog is not None:
            leg.dialog.local_cseq = retry.cseq.seq
        return retry

    def _preauthorize(self, leg: _Leg, request: Request) -> Request:
        if leg.auth is None:
            return request
        authorized = leg.auth.authorize(request)
        return authorized if authorized is not None else request

    # -- requests from the far end ----------------------------------------------------------------

    def _on_request(self, event: RequestReceived, now: float) -> None:
        tx, request, source = event.transaction, event.request, event.source
        dialog_id = dialog_id_of_request(request)
        leg = self._by_dialog.get(dialog_id) if dialog_id else None
        if request.method == "ACK":
            if leg is not None and source[0] in self.config.trusted_sources:
                self._on_ack(request)
            return
        if tx is None:
            return
        if request.method == "CANCEL":
            # §9.2: we answer every INVITE at once, so a CANCEL never changes anything.
            self._respond(tx, request, 200 if event.cancelled is not None else 481, now)
            return
        if leg is not None and source[0] not in self.config.trusted_sources:
            self._respond(tx, request, 403, now, reason="Forbidden (untrusted source)")
            return
        refusal = precheck(request)
        if refusal is not None:
            self._respond(tx, request, refusal[0], now, headers=refusal[1])
            return
        if leg is None or leg.dialog is None:
            self._out_of_dialog(tx, request, now)
            return
        if not leg.dialog.check_remote_cseq(request):
            self._respond(tx, request, 500, now, reason="CSeq Out of Order")
            return
        self._in_dialog(leg, tx, request, now)

    def _out_of_dialog(self, tx: ServerTransaction, request: Request, now: float) -> None:
        method = request.method
        if method == "OPTIONS":
            self._respond(tx, request, 200, now, headers=self._capabilities())
        elif request.to.tag or method in ("BYE", "CANCEL", "INFO", "UPDATE", "PRACK"):
            self._respond(tx, request, 481, now)
        elif method == "INVITE":
            # Toll-fraud guard: callbridge never relays a call it did not start.
            self._respond(tx, request, 403, now, reason="Forbidden")
        elif method in KNOWN_METHODS:
            self._respond(tx, request, 405, now, headers=(("Allow", ALLOWED_METHODS),))
        else:
            self._respond(tx, request, 501, now, headers=(("Allow", ALLOWED_METHODS),))

    def _in_dialog(self, leg: _Leg, tx: ServerTransaction, request: Request, now: float) -> None:
        assert leg.dialog is not None
        method = request.method
        if method == "BYE":
            self._respond(tx, request, 200, now)
            self._events.append(RemoteHangup(leg.leg_id))
            self._end_leg(leg)
        elif method == "INVITE":
            self._on_reinvite(leg, tx, request, now)
        elif method == "UPDATE":
            self._on_update(leg, tx, request, now)
        elif method == "INFO":
            self._respond(tx, request, 200, now)
            content_type = request.headers.get("Content-Type") or ""
            self._events.append(InfoReceived(leg.leg_id, content_type, request.body))
        elif method == "OPTIONS":
            self._respond(tx, request, 200, now, headers=self._capabilities())
        elif method in KNOWN_METHODS:
            self._respond(tx, request, 405, now, headers=(("Allow", ALLOWED_METHODS),))
        else:
            self._respond(tx, request, 501, now, headers=(("Allow", ALLOWED_METHODS),))

    def _on_reinvite(self, leg: _Leg, tx: ServerTransaction, request: Request,
                     now: float) -> None:
        assert leg.dialog is not None
        if leg.reinvite is not None:
            self._respond(tx, request, 491, now)  # §14.2: glare
            return
        if request.body and not is_sdp(request):
            self._respond(tx, request, 415, now, headers=(("Accept", "application/sdp"),))
            return
        leg.dialog.refresh_target(request)
        response = self._response(request, 200, body=leg.local_sdp,
                                  headers=(("Contact", self.config.contact),))
        self._transactions.send_response(tx, response, now)
        t1 = self.config.timers.t1
        self._pending_2xx[(request.call_id, request.cseq.seq)] = _Pending2xx(
            response.serialize(), tx.response_destination, t1, now + t1, now + 64 * t1,
            leg.leg_id,
        )
        if request.body:
            self._events.append(MediaUpdate(leg.leg_id, request.body))

    def _on_update(self, leg: _Leg, tx: ServerTransaction, request: Request, now: float) -> None:
        if request.body and not is_sdp(request):
            self._respond(tx, request, 415, now, headers=(("Accept", "application/sdp"),))
            return
        body = leg.local_sdp if request.body else b""
        response = self._response(request, 200, body=body,
                                  headers=(("Contact", self.config.contact),))
        self._transactions.send_response(tx, response, now)
        if request.body:
            self._events.append(MediaUpdate(leg.leg_id, request.body))

    def _on_ack(self, request: Request) -> None:
        try:
            key = (request.call_id, request.cseq.seq)
        except SipParseError:
            return
        self._pending_2xx.pop(key, None)

    def _retransmit_2xx(self, now: float) -> None:
        """§13.3.1.4: T1 doubling to T2 until the ACK; no ACK in 64*T1 ends the dialog."""
        t2 = self.config.timers.t2
        for key, pending in list(self._pending_2xx.items()):
            if now >= pending.give_up_at:
                del self._pending_2xx[key]
                leg = self._legs.get(pending.leg_id)
                if leg is not None:
                    self._send_bye(leg, now)
            elif now >= pending.next_at:
                self._outbox.append((pending.data, pending.destination))
                pending.interval = min(pending.interval * 2, t2)
                pending.next_at = now + pending.interval

    # -- helpers ---------------------------------------------------------------------------------

    def _end_leg(self, leg: _Leg) -> None:
        leg.state = LegState.ENDED
        self._legs.pop(leg.leg_id, None)
        for key in [k for k, v in self._by_invite.items() if v is leg]:
            del self._by_invite[key]
        if leg.dialog is not None:
            self._by_dialog.pop(leg.dialog.id, None)
        for pending_key in [k for k, p in self._pending_2xx.items() if p.leg_id == leg.leg_id]:
            del self._pending_2xx[pending_key]
        if leg.auth_flow is not None:
            leg.auth_flow.close()

    def _respond(self, tx: ServerTransaction, request: Request, status: int, now: float, *,
                 reason: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        response = self._response(request, status, reason=reason, headers=headers)
        self._transactions.send_response(tx, response, now)

    def _response(self, request: Request, status: int, *, reason: str | None = None,
                  body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> Response:
        to_tag = None if request.to.tag else self._token()
        all_headers = (*headers, ("Server", self.config.user_agent))
        if body:
            all_headers = (*all_headers, ("Content-Type", "application/sdp"))
        response = make_response(request, status, reason, to_tag=to_tag, headers=all_headers)
        response.body = body
        return response

    def _reply_stateless(self, request: Request, status: int, source: Address,
                         reason: str | None = None, reliable: bool = False) -> None:
        try:
            response = make_response(request, status, short_reason(status, reason),
                                     to_tag=self._token())
            destination = response_destination(request, source, reliable)
        except SipParseError:
            self.stats["dropped"] += 1
            return
        self._outbox.append((response.serialize(), destination))

    def _answer_unparseable(self, data: bytes, exc: SipParseError, source: Address) -> None:
        request = salvage_request(data)
        if request is None or request.method == "ACK":
            self.stats["dropped"] += 1
            return
        self._reply_stateless(request, exc.status, source, str(exc))

    def _send(self, request: Request, destination: Address, now: float) -> ClientTransaction:
        return self._transactions.send_request(request, destination, now,
                                               reliable=self._reliable)

    def _capabilities(self) -> tuple[tuple[str, str], ...]:
        return (("Allow", ALLOWED_METHODS), ("Accept", "application/sdp"))

    def _via(self) -> str:
        config = self.config
        return f"SIP/2.0/{config.transport} {config.via_host};branch={self._branch()};rport"

    def _branch(self) -> str:
        return "z9hG4bK" + self._token()

    def _next_hop(self, leg: _Leg) -> Address:
        return self._dialog_hop(leg, leg.dialog) if leg.dialog else leg.destination

    def _dialog_hop(self, leg: _Leg, dialog: Dialog) -> Address:
        """Where in-dialog requests go: the first route, else the remote target (§12.2.1.1),
        when that is an IP literal; names fall back to the address the INVITE went to."""
        target = dialog.route_set[0] if dialog.route_set else f"<{dialog.remote_target}>"
        try:
            uri = NameAddr.parse(target).uri
        except SipParseError:
            return leg.destination
        if not isinstance(uri, SipUri):
            return leg.destination
        host = uri.host.strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return leg.destination
        return (host, uri.port or 5060)
