"""The sandbox carrier's SIP side, pure: a UAS that plays every INVITE by its number's rule.

:class:`SandboxUas` has the sans-IO surface of the user agent (the aioquic shape): feed it
``receive_datagram(data, source, now)`` and ``handle_timer(now)``; send what
``datagrams_to_send()`` returns, re-arm one timer at ``get_timer()``, and act on
``next_event()``. It owns a :class:`TransactionLayer`, so 100 Trying, retransmissions of
non-2xx finals and the absorbing of their ACKs are RFC 3261 §17's business, not this file's.

Media is the edge's. An INVITE whose rule answers (or plays early media) raises
:class:`MediaWanted`; the edge opens an RTP port and calls :meth:`SandboxUas.media_ready`
with its address, and only then is the offer answered (RFC 3264 §6) and the rule played:
180 and later 200 (or 183 and later 200), our 2xx retransmitted until its ACK (§13.3.1.4).
:class:`AudioStarted` says when to play into which address, :class:`AudioStopped` when to
stop and give the port back, :class:`DigitsWanted` when to press keys (``...07``) as RFC 4733
telephone-events on the call's RTP stream.

The far end may CANCEL (§9.2: 200, then 487 for the INVITE), BYE (§15.1.2: 200), re-INVITE
(answered like the first offer) and send INFO or OPTIONS (200). On ``...04`` numbers the
sandbox sends its own BYE (§15.1.1), built from the INVITE as a UAS's dialog says (§12.1.1:
their Contact is the target, the Record-Route set in order is the route set, From and To
swapped, our own CSeq).
"""

from __future__ import annotations

import enum
import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from callbridge.media.tones import TonePlan
from callbridge.sandbox.rules import (
    DEFAULT_TIMINGS,
    PRESSES,
    REFUSALS,
    Rule,
    SandboxTimings,
    rule_for,
    voice_for,
)
from callbridge.sandbox.rules import dialled_digits as _digits
from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import NameAddr
from callbridge.sip.message import Headers, Request, Response, make_response, parse_message
from callbridge.sip.sdp import (
    LocalSdp,
    MediaCapabilities,
    NegotiatedMedia,
    NotAcceptable,
    Origin,
    SessionDescription,
)
from callbridge.sip.transaction import (
    DEFAULT_TIMERS,
    Address,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerSettings,
    TransactionLayer,
    TransactionTimeout,
)
from callbridge.sip.uri import SipUri, format_host

__all__ = [
    "AudioStarted",
    "AudioStopped",
    "CallChanged",
    "CallState",
    "DigitsWanted",
    "MediaWanted",
    "Outcome",
    "SandboxCall",
    "SandboxUas",
]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
SERVER = "callbridge-sandbox"


class CallState(enum.Enum):
    #: INVITE taken (100 sent); the edge is opening an RTP port.
    OFFERED = "offered"
    #: 180 sent: answering after the ring time, or never (``...02``).
    RINGING = "ringing"
    #: 183 with SDP sent, audio playing: answering after the early-media time (``...05``).
    EARLY = "early"
    #: 200 sent and retransmitted until the ACK comes (§13.3.1.4).
    ANSWERED = "answered"
    #: ACK in: talking until either side sends BYE.
    TALKING = "talking"
    #: Our BYE sent (``...04``, or no ACK came), waiting for its answer.
    HANGING_UP = "hanging up"
    #: Over.
    ENDED = "ended"


class Outcome(enum.Enum):
    #: A final refusal went out: the rule's 486/503/480, 488 for an unusable offer, 503 when
    #: no RTP port was free, 482 for a second INVITE with a Call-ID in use.
    REFUSED = "refused"
    #: The caller gave up before the answer (CANCEL, or BYE in the early dialog): 487.
    CANCELLED = "cancelled"
    #: The caller hung up with BYE.
    CALLER_HUNG_UP = "caller hung up"
    #: The sandbox hung up: the ``...04`` rule, or a 2xx that was never ACKed.
    CARRIER_HUNG_UP = "carrier hung up"


@dataclass(frozen=True)
class MediaWanted:
    """Open an RTP port for the call, then call :meth:`SandboxUas.media_ready`."""

    call_id: str


@dataclass(frozen=True)
class AudioStarted:
    """Play the call's voice to ``media`` (sent again when a re-INVITE moves it)."""

    call_id: str
    media: NegotiatedMedia


@dataclass(frozen=True)
class AudioStopped:
    """The call's media is over: stop playing and close its RTP port."""

    call_id: str


@dataclass(frozen=True)
class DigitsWanted:
    """Press ``digits`` as RFC 4733 telephone-events on the call's RTP stream (raised only
    when the answer kept telephone-event: callbridge reads a confirmation from RTP)."""

    call_id: str
    digits: str


@dataclass
class _Retransmit:
    """Our 2xx to an INVITE, re-sent T1, 2T1, ... (capped at T2) until its ACK, for 64*T1."""

    transaction: ServerTransaction
    response: Response
    interval: float
    next_at: float
    give_up_at: float


@dataclass
class SandboxCall:
    """One INVITE the sandbox took, and how it went (read it in tests)."""

    call_id: str
    #: The digits dialled (the Request-URI user).
    number: str
    rule: Rule
    #: What the party plays once it talks.
    voice: TonePlan
    invite: Request
    source: Address
    started_at: float
    state: CallState = CallState.OFFERED
    #: Every status sent for the INVITE, in order: ``[100, 180, 200]``, ``[100, 486]``...
    sent: list[int] = field(default_factory=lambda: [100])
    final_status: int | None = None
    outcome: Outcome | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    #: The media the answer settled (the far end's address and codec), once answered.
    media: NegotiatedMedia | None = None
    #: The keys the party pressed (``...07``), and when: handed to the edge to send.
    pressed: str = ""
    pressed_at: float | None = None
    transaction: ServerTransaction | None = field(default=None, repr=False)
    local_tag: str = ""
    _offer: SessionDescription | None = field(default=None, repr=False)
    _caps: MediaCapabilities | None = field(default=None, repr=False)
    _sdp: LocalSdp | None = field(default=None, repr=False)
    _answer: bytes = field(default=b"", repr=False)
    #: An RTP port is open for the call (from media_ready until AudioStopped).
    _has_media: bool = False
    #: When the rule's next step is due: the answer, the keypress, or our BYE.
    _due: float | None = None
    _resend: _Retransmit | None = field(default=None, repr=False)
    _local_cseq: int = 0

    @property
    def tone_hz(self) -> float:
        return self.voice.frequencies[0]


@dataclass(frozen=True)
class CallChanged:
    """The call was taken, answered, or is hanging up or over: for the edge's log."""

    call: SandboxCall
    #: The state it changed to (``call.state`` may have moved on by the time this is read).
    state: CallState


Event = MediaWanted | AudioStarted | AudioStopped | DigitsWanted | CallChanged


class SandboxUas:
    """Every call the sandbox carrier takes, on one SIP address (see the module docstring).

    ``host``/``port`` are what Via and Contact name; ``token`` makes tags and branches.
    ``history`` bounds :attr:`calls`, which keeps ended calls for inspection.
    """

    def __init__(self, host: str, port: int, *, token: Callable[[], str],
                 timings: SandboxTimings = DEFAULT_TIMINGS,
                 timers: TimerSettings = DEFAULT_TIMERS, history: int = 1000) -> None:
        self.timings = timings
        self.timers = timers
        self._token = token
        self._via_host = format_host(f"[{host}]" if ":" in host else host, port)
        self._contact = f"<sip:sandbox@{self._via_host}>"
        self._tx = TransactionLayer(timers)
        self._active: dict[str, SandboxCall] = {}
        self._byes: dict[int, SandboxCall] = {}  #: id(our BYE's transaction) -> call
        self._events: deque[Event] = deque()
        self._sessions = 0
        #: The calls taken, oldest first (at most ``history``).
        self.calls: deque[SandboxCall] = deque(maxlen=history)
        self.stats = {"parse_errors": 0, "incomplete": 0}

    # -- the sans-IO surface -------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            self.stats["parse_errors"] += 1  # a test tool: no 400 for garbage
            return
        if message.missing_headers():
            self.stats["incomplete"] += 1
            return
        self._tx.receive(message, source, now)
        self._drain(now)

    def handle_timer(self, now: float) -> None:
        self._tx.handle_timer(now)
        self._drain(now)
        for call in list(self._active.values()):
            if call._due is not None and now >= call._due:
                call._due = None
                self._step(call, now)
            if call._resend is not None and now >= call._resend.next_at:
                self._resend_2xx(call, now)

    def get_timer(self) -> float | None:
        deadlines = [self._tx.get_timer()]
        for call in self._active.values():
            deadlines.append(call._due)
            deadlines.append(call._resend.next_at if call._resend else None)
        return min((d for d in deadlines if d is not None), default=None)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        return self._tx.datagrams_to_send()

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def call(self, call_id: str) -> SandboxCall | None:
        """A call still in progress, by its Call-ID."""
        return self._active.get(call_id)

    # -- the edge's answers to MediaWanted -----------------------------------------------------

    def media_ready(self, call_id: str, host: str, port: int, now: float) -> bool:
        """The call's RTP port is open on ``host:port``: answer the offer and play the rule.
        False when the port is not wanted after all (the call ended meanwhile, or the offer
        has nothing we can take): the edge closes it."""
        call = self._active.get(call_id)
        if call is None or call.state is not CallState.OFFERED or call._offer is None:
            return False
        self._sessions += 1
        call._caps = MediaCapabilities(host, port)
        call._sdp = LocalSdp(Origin("sandbox", str(self._sessions), 1, host))
        try:
            negotiation = call._sdp.answer(call._offer, call._caps)
        except NotAcceptable as exc:
            self._final(call, 488, now, headers=(("Warning", _warning(exc, self._via_host)),))
            return False
        call._answer, call.media = negotiation.answer.serialize(), negotiation.media
        call._has_media = True
        if call.rule is Rule.EARLY_MEDIA:
            self._start_audio(call)
            self._provisional(call, 183, now, body=call._answer)
            call.state, call._due = CallState.EARLY, now + self.timings.early_media
        else:
            self._provisional(call, 180, now)
            call.state = CallState.RINGING
            if call.rule is not Rule.RINGS_OUT:
                call._due = now + self.timings.ring
        return True

    def media_failed(self, call_id: str, now: float) -> None:
        """No RTP port could be opened: refuse the call (503)."""
        call = self._active.get(call_id)
        if call is not None and call.state is CallState.OFFERED:
            self._final(call, 503, now)

    # -- requests ------------------------------------------------------------------------------

    def _drain(self, now: float) -> None:
        while (event := self._tx.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self._on_request(event, now)
            elif isinstance(event, TransactionTimeout) or (
                    isinstance(event, ResponseReceived) and event.response.status >= 200):
                self._bye_over(event.transaction, now)  # our BYE is over, either way

    def _on_request(self, event: RequestReceived, now: float) -> None:
        tx, request = event.transaction, event.request
        if request.method == "ACK":
            self._on_ack(request, now)
            return
        assert tx is not None  # only an ACK comes without a transaction
        if request.method == "CANCEL":
            self._on_cancel(tx, request, event.cancelled, now)
        elif request.to.tag is None:
            self._out_of_dialog(tx, request, event.source, now)
        else:
            call = self._active.get(request.call_id)
            if call is None or request.to.tag != call.local_tag:
                self._reply(tx, request, 481, now)  # §12.2.2: no such dialog
            else:
                self._in_dialog(call, tx, request, now)

    def _out_of_dialog(self, tx: ServerTransaction, request: Request, source: Address,
                       now: float) -> None:
        if request.method == "INVITE":
            self._on_invite(tx, request, source, now)
        elif request.method == "OPTIONS":  # the keepalive pings of callbridge's trunk check
            self._reply(tx, request, 200, now, headers=(("Allow", ALLOW),
                                                        ("Accept", "application/sdp")))
        elif request.method in ("BYE", "INFO"):
            self._reply(tx, request, 481, now)
        else:
            self._reply(tx, request, 405, now, headers=(("Allow", ALLOW),))

    def _on_invite(self, tx: ServerTransaction, request: Request, source: Address,
                   now: float) -> None:
        if request.call_id in self._active:  # §8.2.2.2: a merged request
            self._reply(tx, request, 482, now)
            return
        try:
            digits = _digits(request.request_uri)
        except SipParseError:
            digits = ""
        customer = "P-Asserted-Identity" in request.headers
        call = SandboxCall(request.call_id, digits, rule_for(digits),
                           voice_for(digits, customer=customer), request, source, now,
                           transaction=tx, local_tag=self._token())
        self._active[call.call_id] = call
        self.calls.append(call)
        self._events.append(CallChanged(call, call.state))
        refusal = REFUSALS.get(call.rule)
        if refusal is not None:
            self._final(call, refusal, now)
            return
        call._offer = _offer_of(request)
        if call._offer is None:  # no SDP: the sandbox does not offer in its 2xx
            self._final(call, 488, now, headers=(("Warning", f'304 {self._via_host} '
                                                  '"an SDP offer is required"'),))
            return
        self._events.append(MediaWanted(call.call_id))

    def _on_cancel(self, tx: ServerTransaction, request: Request,
                   invite: ServerTransaction | None, now: float) -> None:
        call = self._active.get(request.call_id)
        if invite is None:
            self._reply(tx, request, 481, now)
            return
        # §9.2: the 200 carries the To tag of our responses to the INVITE.
        self._reply(tx, request, 200, now, to_tag=call.local_tag if call else None)
        if call is not None and call.transaction is invite and call.final_status is None:
            self._final(call, 487, now, outcome=Outcome.CANCELLED)

    def _on_ack(self, request: Request, now: float) -> None:
        """The ACK for our 2xx (the transaction layer absorbs those for non-2xx)."""
        call = self._active.get(request.call_id)
        if call is None or request.to.tag != call.local_tag or call._resend is None:
            return
        call._resend = None
        if call.state is CallState.ANSWERED:
            call.state = CallState.TALKING
            if call.rule is Rule.HANGS_UP:
                call._due = now + self.timings.hangup_after
            elif call.rule in PRESSES:
                call._due = now + self.timings.confirm_after

    def _in_dialog(self, call: SandboxCall, tx: ServerTransaction, request: Request,
                   now: float) -> None:
        method = request.method
        if method == "BYE":
            self._reply(tx, request, 200, now)
            if call.final_status is None:  # a BYE in the early dialog ends the INVITE too
                self._final(call, 487, now, outcome=Outcome.CANCELLED)
            else:
                self._end(call, Outcome.CALLER_HUNG_UP, now)
        elif method == "INVITE":
            self._on_reinvite(call, tx, request, now)
        elif method in ("INFO", "OPTIONS"):
            self._reply(tx, request, 200, now)
        else:
            self._reply(tx, request, 405, now, headers=(("Allow", ALLOW),))

    def _on_reinvite(self, call: SandboxCall, tx: ServerTransaction, request: Request,
                     now: float) -> None:
        if call._resend is not None or call.state is not CallState.TALKING:
            self._reply(tx, request, 491, now)  # §14.2: an offer is still in flight
            return
        offer = _offer_of(request)
        if offer is None or call._sdp is None or call._caps is None:
            self._reply(tx, request, 488, now)
            return
        try:
            negotiation = call._sdp.answer(offer, call._caps)
        except NotAcceptable as exc:
            self._reply(tx, request, 488, now,
                        headers=(("Warning", _warning(exc, self._via_host)),))
            return
        call._answer, call.media = negotiation.answer.serialize(), negotiation.media
        self._start_audio(call)
        response = self._response(request, 200, call.local_tag, body=call._answer)
        self._tx.send_response(tx, response, now)
        self._retransmit(call, tx, response, now)

    # -- the rule's steps ---------------------------------------------------------------------

    def _step(self, call: SandboxCall, now: float) -> None:
        if call.state in (CallState.RINGING, CallState.EARLY):
            self._answer_call(call, now)
        elif call.state is CallState.TALKING and call.rule is Rule.HANGS_UP:
            self._hang_up(call, now)
        elif call.state is CallState.TALKING and call.rule in PRESSES:
            self._press(call, now)

    def _answer_call(self, call: SandboxCall, now: float) -> None:
        if call.state is CallState.RINGING:  # (early media has played since the 183)
            self._start_audio(call)  # just before the 200, as the SIPp trunk does
        assert call.transaction is not None
        response = self._response(call.invite, 200, call.local_tag, body=call._answer)
        self._tx.send_response(call.transaction, response, now)
        call.sent.append(200)
        call.final_status, call.answered_at = 200, now
        call.state = CallState.ANSWERED
        self._events.append(CallChanged(call, call.state))
        self._retransmit(call, call.transaction, response, now)

    def _press(self, call: SandboxCall, now: float) -> None:
        """Press the rule's keys once, then talk on until a BYE. RFC 4733 events need the
        telephone-event payload type the answer agreed; without one nothing is pressed."""
        if call.media is None or call.media.telephone_event_pt is None:
            return
        call.pressed, call.pressed_at = PRESSES[call.rule], now
        self._events.append(DigitsWanted(call.call_id, call.pressed))

    def _retransmit(self, call: SandboxCall, tx: ServerTransaction, response: Response,
                    now: float) -> None:
        t1 = self.timers.t1
        call._resend = _Retransmit(tx, response, t1, now + t1, now + 64 * t1)

    def _resend_2xx(self, call: SandboxCall, now: float) -> None:
        resend = call._resend
        assert resend is not None
        if now >= resend.give_up_at:  # §13.3.1.4: no ACK, so end the dialog with a BYE
            call._resend = None
            self._hang_up(call, now)
            return
        # The transaction re-sends a 2xx even once Timer L has ended it (the TU owns them).
        self._tx.send_response(resend.transaction, resend.response, now)
        resend.interval = min(2 * resend.interval, self.timers.t2)
        resend.next_at = min(now + resend.interval, resend.give_up_at)

    def _hang_up(self, call: SandboxCall, now: float) -> None:
        """Our BYE (§15.1.1): media stops now, the call ends when the BYE is answered."""
        bye, destination = self._build_bye(call)
        tx = self._tx.send_request(bye, destination, now)
        self._byes[id(tx)] = call
        call.state, call.outcome = CallState.HANGING_UP, Outcome.CARRIER_HUNG_UP
        call._due = None
        self._release_media(call)
        self._events.append(CallChanged(call, call.state))

    def _bye_over(self, tx: ClientTransaction | ServerTransaction, now: float) -> None:
        call = self._byes.pop(id(tx), None)
        if call is not None:
            self._end(call, Outcome.CARRIER_HUNG_UP, now)

    def _build_bye(self, call: SandboxCall) -> tuple[Request, Address]:
        """§12.1.1 and §12.2.1.1 from the UAS side: the remote target is the INVITE's
        Contact, the route set its Record-Route values in order; From is our To."""
        invite = call.invite
        routes = invite.headers.values("Record-Route")
        contact = invite.headers.get("Contact")
        target = str(NameAddr.parse(contact).uri if contact else invite.from_.uri)
        call._local_cseq += 1
        headers = Headers([
            ("Via", f"SIP/2.0/UDP {self._via_host};branch=z9hG4bK{self._token()};rport"),
            *(("Route", route) for route in routes),
            ("Max-Forwards", "70"),
            ("From", str(invite.to.with_tag(call.local_tag))),
            ("To", invite.headers.get("From") or ""),
            ("Call-ID", call.call_id),
            ("CSeq", f"{call._local_cseq} BYE"),
            ("User-Agent", SERVER),
        ])
        hop = routes[0] if routes else f"<{target}>"
        return Request("BYE", target, headers), _hop_address(hop, call.source)

    # -- responses and endings --------------------------------------------------------------------

    def _provisional(self, call: SandboxCall, status: int, now: float, *,
                     body: bytes = b"") -> None:
        assert call.transaction is not None
        response = self._response(call.invite, status, call.local_tag, body=body)
        self._tx.send_response(call.transaction, response, now)
        call.sent.append(status)

    def _final(self, call: SandboxCall, status: int, now: float, *,
               outcome: Outcome = Outcome.REFUSED,
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        assert call.transaction is not None
        response = self._response(call.invite, status, call.local_tag, headers=headers)
        self._tx.send_response(call.transaction, response, now)
        call.sent.append(status)
        call.final_status = status
        self._end(call, outcome, now)

    def _end(self, call: SandboxCall, outcome: Outcome, now: float) -> None:
        if call.state is CallState.ENDED:
            return  # crossing BYEs: the first one to finish ended it
        if call.outcome is None:
            call.outcome = outcome
        call.state, call.ended_at = CallState.ENDED, now
        call._due = call._resend = None
        self._active.pop(call.call_id, None)
        self._release_media(call)
        self._events.append(CallChanged(call, call.state))

    def _start_audio(self, call: SandboxCall) -> None:
        assert call.media is not None and call._has_media
        self._events.append(AudioStarted(call.call_id, call.media))

    def _release_media(self, call: SandboxCall) -> None:
        if call._has_media:
            call._has_media = False
            self._events.append(AudioStopped(call.call_id))

    def _reply(self, tx: ServerTransaction, request: Request, status: int, now: float, *,
               to_tag: str | None = None, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._tx.send_response(tx, self._response(request, status, to_tag, headers=headers), now)

    def _response(self, request: Request, status: int, to_tag: str | None, *,
                  body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> Response:
        extra = list(headers)
        if status < 300 and request.method == "INVITE":
            # §12.1.1: a dialog-making response echoes Record-Route and names our Contact.
            extra += [("Record-Route", rr) for rr in request.headers.get_all("Record-Route")]
            extra.append(("Contact", self._contact))
        extra.append(("Server", SERVER))
        if body:
            extra.append(("Content-Type", "application/sdp"))
        # A request inside a dialog has our tag already; any other gets one (§8.2.6.2).
        tag = None if request.to.tag else (to_tag or self._token())
        response = make_response(request, status, to_tag=tag, headers=extra)
        response.body = body
        return response


def _offer_of(request: Request) -> SessionDescription | None:
    content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if not request.body or content_type != "application/sdp":
        return None
    try:
        return SessionDescription.parse(request.body)
    except SipParseError:
        return None


def _warning(exc: NotAcceptable, agent: str) -> str:
    """A Warning header value (RFC 3261 §20.43) for a refused offer."""
    text = str(exc).replace('"', "'")
    return f'{exc.warn_code} {agent} "{text}"'


def _hop_address(hop: str, fallback: Address) -> Address:
    """Where a request to ``hop`` (a name-addr) goes: its host and port when the host is an
    IP literal, else where the INVITE came from (the sandbox resolves no names)."""
    try:
        uri = NameAddr.parse(hop).uri
    except SipParseError:
        return fallback
    if not isinstance(uri, SipUri):
        return fallback
    host = uri.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return fallback
    return host, uri.port or 5060
