"""SIP transactions: RFC 3261 §17, with RFC 6026's Accepted state for 2xx to INVITE.

Everything that moves a transaction lives in this file (the h11 ``_state.py`` rule). There are
four machines (client INVITE, client non-INVITE, server INVITE, server non-INVITE), each a table
``{state: {input: Transition}}``. An input is a message kind (:class:`Input`) or a timer
firing (:class:`~callbridge.sip.timers.Timer`, named as in RFC 3261 Table 4). A transition
names the next state, the actions to run and the timers to start; on a change of state every
running timer stops except those the transition keeps. An input missing from the current
state's row is ignored: a 1xx after the final response, an ACK before one.

:class:`TransactionLayer` owns the transactions and is sans-IO (the aioquic shape): messages go
in through ``receive``/``send_request``/``send_response``/``cancel`` with the current time;
``handle_timer(now)`` fires what is due; what comes out is read with ``next_event()``,
``datagrams_to_send()`` and ``get_timer()``. It never reads a clock and never sends anything.

Events (frozen dataclasses, in order): ResponseReceived; RequestReceived (a new request with
its server transaction, or an ACK matching none: the ACK for a 2xx is the dialog's); a
StrayResponse matching no client transaction (a 2xx retransmitted or forked after the INVITE
transaction ended, RFC 6026 §8.4); TransactionTimeout (Timer B, F or H, or the §9.1 wait after
a CANCEL); TransactionTerminated, exactly once per transaction, as it leaves the layer.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import Via, split_header_values
from callbridge.sip.message import Headers, Request, Response
from callbridge.sip.timers import Timer, TimerQueue, TimerSettings, backoff, initial_duration

Address = tuple[str, int]
ClientKey = tuple[str, str]
ServerKey = tuple[str | int | None, ...]

#: RFC 3261 §8.1.1.7: a branch starting with this was built by an RFC 3261 element.
MAGIC_COOKIE = "z9hG4bK"
DEFAULT_TIMERS = TimerSettings()


class TransactionState(enum.Enum):
    #: Client INVITE: request sent, no response yet (Timers A and B run).
    CALLING = "Calling"
    #: Non-INVITE: request sent (client) or received (server), no response yet.
    TRYING = "Trying"
    #: A provisional response was received (client) or sent (server).
    PROCEEDING = "Proceeding"
    #: A final (non-2xx for INVITE) was received or sent; retransmissions are absorbed.
    COMPLETED = "Completed"
    #: Server INVITE: the ACK for its non-2xx final arrived; ACK copies are absorbed (Timer I).
    CONFIRMED = "Confirmed"
    #: INVITE with a 2xx (RFC 6026): 2xx retransmissions go to the TU, which owns them (L, M).
    ACCEPTED = "Accepted"
    #: Over: the transaction has left the layer.
    TERMINATED = "Terminated"


class Input(enum.Enum):
    """A message-driven input; a firing timer is an input too, as its :class:`Timer`."""

    #: A 1xx: received by a client machine, or passed down by the TU to a server machine.
    PROVISIONAL = enum.auto()
    #: A 2xx, likewise.
    SUCCESS = enum.auto()
    #: A 300-699 final, likewise.
    FAILURE = enum.auto()
    #: Server: a retransmission of the request that created the transaction.
    REQUEST = enum.auto()
    #: Server INVITE: an ACK matching the transaction (§17.2.3).
    ACK = enum.auto()


class Action(enum.Enum):
    #: Client: the response goes to the TU. Server (Accepted): the ACK goes to the TU.
    PASS_UP = enum.auto()
    #: Client INVITE: send the ACK for a non-2xx final (§17.1.1.3), built once, re-sent as is.
    SEND_ACK = enum.auto()
    #: Client INVITE: send the CANCEL the TU asked for before any provisional came (§9.1).
    SEND_PENDING_CANCEL = enum.auto()
    #: Client: send the request again. Server: send the last response again.
    RETRANSMIT = enum.auto()
    #: Restart the firing retransmit timer at twice its interval (capped at T2 for E and G).
    BACK_OFF = enum.auto()
    #: Client non-INVITE in Proceeding: restart Timer E at T2 (§17.1.2.2).
    HOLD_AT_T2 = enum.auto()
    #: Server: send the TU's response; it becomes the one retransmissions re-send.
    SEND_RESPONSE = enum.auto()
    #: The firing timer ended the transaction unanswered: tell the TU.
    TIMEOUT = enum.auto()


@dataclass(frozen=True)
class Transition:
    """One cell of a table: where an input leads and what happens on the way."""

    target: TransactionState
    actions: tuple[Action, ...] = ()
    #: Timers started by this transition, each at its initial duration.
    start: tuple[Timer, ...] = ()
    #: Timers that keep running across this change of state; all others stop.
    keep: tuple[Timer, ...] = ()


Table = dict[TransactionState, dict[Input | Timer, Transition]]


@dataclass(frozen=True)
class Machine:
    """One of the four §17 machines: its first state, the timers it starts with, its table."""

    name: str
    initial: TransactionState
    start: tuple[Timer, ...]
    table: Table


S, In, Do = TransactionState, Input, Action  # short names for the tables only
_TIMEOUT = Transition(S.TERMINATED, (Do.TIMEOUT,))
_END = Transition(S.TERMINATED)

# §17.1.1, Figure 5 as amended by RFC 6026 §7.2: a 2xx leads to Accepted, not Terminated.
_INVITE_2XX = Transition(S.ACCEPTED, (Do.PASS_UP,), start=(Timer.M,))
_INVITE_FAILURE = Transition(S.COMPLETED, (Do.SEND_ACK, Do.PASS_UP), start=(Timer.D,))
CLIENT_INVITE = Machine("client INVITE", S.CALLING, (Timer.A, Timer.B), {
    S.CALLING: {
        In.PROVISIONAL: Transition(S.PROCEEDING, (Do.PASS_UP, Do.SEND_PENDING_CANCEL)),
        In.SUCCESS: _INVITE_2XX,
        In.FAILURE: _INVITE_FAILURE,
        Timer.A: Transition(S.CALLING, (Do.RETRANSMIT, Do.BACK_OFF)),
        Timer.B: _TIMEOUT,
    },
    S.PROCEEDING: {
        In.PROVISIONAL: Transition(S.PROCEEDING, (Do.PASS_UP,)),
        In.SUCCESS: _INVITE_2XX,
        In.FAILURE: _INVITE_FAILURE,
        Timer.CANCEL_WAIT: _TIMEOUT,
    },
    S.COMPLETED: {
        # A retransmitted final means our ACK was lost: ACK again, tell nobody.
        In.FAILURE: Transition(S.COMPLETED, (Do.SEND_ACK,)),
        # A 2xx after a failure (a fork): the TU must ACK and BYE it (§13.2.2.4).
        In.SUCCESS: Transition(S.COMPLETED, (Do.PASS_UP,)),
        Timer.D: _END,
    },
    S.ACCEPTED: {
        # RFC 6026 §8.4: each 2xx goes up so the TU re-sends its ACK for it.
        In.SUCCESS: Transition(S.ACCEPTED, (Do.PASS_UP,)),
        Timer.M: _END,
    },
})

# §17.1.2, Figure 6. A provisional keeps both timers: E slows down to T2, F still bounds it all.
_NON_INVITE_FINAL = Transition(S.COMPLETED, (Do.PASS_UP,), start=(Timer.K,))
CLIENT_NON_INVITE = Machine("client non-INVITE", S.TRYING, (Timer.E, Timer.F), {
    S.TRYING: {
        In.PROVISIONAL: Transition(S.PROCEEDING, (Do.PASS_UP,), keep=(Timer.E, Timer.F)),
        In.SUCCESS: _NON_INVITE_FINAL,
        In.FAILURE: _NON_INVITE_FINAL,
        Timer.E: Transition(S.TRYING, (Do.RETRANSMIT, Do.BACK_OFF)),
        Timer.F: _TIMEOUT,
    },
    S.PROCEEDING: {
        In.PROVISIONAL: Transition(S.PROCEEDING, (Do.PASS_UP,)),
        In.SUCCESS: _NON_INVITE_FINAL,
        In.FAILURE: _NON_INVITE_FINAL,
        Timer.E: Transition(S.PROCEEDING, (Do.RETRANSMIT, Do.HOLD_AT_T2)),
        Timer.F: _TIMEOUT,
    },
    S.COMPLETED: {
        # Response retransmissions are absorbed until Timer K.
        In.PROVISIONAL: Transition(S.COMPLETED),
        In.SUCCESS: Transition(S.COMPLETED),
        In.FAILURE: Transition(S.COMPLETED),
        Timer.K: _END,
    },
})

# §17.2.1, Figure 7 as amended by RFC 6026 §7.1. The 100 Trying is sent on creation.
SERVER_INVITE = Machine("server INVITE", S.PROCEEDING, (), {
    S.PROCEEDING: {
        In.REQUEST: Transition(S.PROCEEDING, (Do.RETRANSMIT,)),
        In.PROVISIONAL: Transition(S.PROCEEDING, (Do.SEND_RESPONSE,)),
        In.SUCCESS: Transition(S.ACCEPTED, (Do.SEND_RESPONSE,), start=(Timer.L,)),
        In.FAILURE: Transition(S.COMPLETED, (Do.SEND_RESPONSE,), start=(Timer.G, Timer.H)),
    },
    S.COMPLETED: {
        In.REQUEST: Transition(S.COMPLETED, (Do.RETRANSMIT,)),
        In.ACK: Transition(S.CONFIRMED, start=(Timer.I,)),
        Timer.G: Transition(S.COMPLETED, (Do.RETRANSMIT, Do.BACK_OFF)),
        Timer.H: _TIMEOUT,
    },
    S.CONFIRMED: {
        In.REQUEST: Transition(S.CONFIRMED),
        In.ACK: Transition(S.CONFIRMED),
        Timer.I: _END,
    },
    S.ACCEPTED: {
        In.REQUEST: Transition(S.ACCEPTED),
        In.ACK: Transition(S.ACCEPTED, (Do.PASS_UP,)),
        In.SUCCESS: Transition(S.ACCEPTED, (Do.SEND_RESPONSE,)),
        Timer.L: _END,
    },
})

# §17.2.2, Figure 8.
_SERVER_FINAL = Transition(S.COMPLETED, (Do.SEND_RESPONSE,), start=(Timer.J,))
SERVER_NON_INVITE = Machine("server non-INVITE", S.TRYING, (), {
    S.TRYING: {
        In.REQUEST: Transition(S.TRYING),
        In.PROVISIONAL: Transition(S.PROCEEDING, (Do.SEND_RESPONSE,)),
        In.SUCCESS: _SERVER_FINAL,
        In.FAILURE: _SERVER_FINAL,
    },
    S.PROCEEDING: {
        In.REQUEST: Transition(S.PROCEEDING, (Do.RETRANSMIT,)),
        In.PROVISIONAL: Transition(S.PROCEEDING, (Do.SEND_RESPONSE,)),
        In.SUCCESS: _SERVER_FINAL,
        In.FAILURE: _SERVER_FINAL,
    },
    S.COMPLETED: {
        In.REQUEST: Transition(S.COMPLETED, (Do.RETRANSMIT,)),
        Timer.J: _END,
    },
})
del S, In, Do


class _Transaction:
    """What the four machines share; the layer drives it, the TU only reads it."""

    def __init__(self, request: Request, reliable: bool, machine: Machine) -> None:
        self.request = request
        self.reliable = reliable
        self.is_invite = request.method == "INVITE"
        self.machine = machine
        self.state = machine.initial
        self._intervals: dict[Timer, float] = {}  #: retransmit timer -> current interval

    def __repr__(self) -> str:
        branch = self.request.headers.get("Via", "")
        return f"<{type(self).__name__} {self.request.method} {self.state.value} {branch}>"


class ClientTransaction(_Transaction):
    def __init__(self, request: Request, destination: Address, reliable: bool,
                 key: ClientKey) -> None:
        invite = request.method == "INVITE"
        super().__init__(request, reliable, CLIENT_INVITE if invite else CLIENT_NON_INVITE)
        self.destination = destination
        self.key = key
        #: The last response passed up to the TU.
        self.last_response: Response | None = None
        #: What a retransmission sends, and where.
        self._resend = (request.serialize(), destination)
        self._ack_bytes: bytes | None = None
        self._cancel_requested = False


class ServerTransaction(_Transaction):
    def __init__(self, request: Request, source: Address, reliable: bool, key: ServerKey) -> None:
        invite = request.method == "INVITE"
        super().__init__(request, reliable, SERVER_INVITE if invite else SERVER_NON_INVITE)
        self.source = source
        self.key = key
        self.response_destination = response_destination(request, source, reliable)
        #: The last response sent (the 100 Trying, until the TU sends one).
        self.last_response: Response | None = None
        self._resend = (b"", self.response_destination)


Transaction = ClientTransaction | ServerTransaction


@dataclass(frozen=True)
class ResponseReceived:
    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True)
class RequestReceived:
    #: None only for an ACK matching no server transaction (the ACK for a 2xx).
    transaction: ServerTransaction | None
    request: Request
    source: Address
    #: For a CANCEL: the server INVITE transaction it cancels (§9.2), None if there is none.
    cancelled: ServerTransaction | None = None


@dataclass(frozen=True)
class StrayResponse:
    response: Response
    source: Address


@dataclass(frozen=True)
class TransactionTimeout:
    transaction: Transaction
    #: The :class:`Timer` that fired ("B", "F", "H", or "cancel-wait" for §9.1).
    timer: str


@dataclass(frozen=True)
class TransactionTerminated:
    transaction: Transaction


Event = (
    ResponseReceived | RequestReceived | StrayResponse | TransactionTimeout
    | TransactionTerminated
)


@dataclass(frozen=True)
class _Stimulus:
    input: Input | Timer
    now: float
    message: Request | Response | None = None
    source: Address | None = None


class TransactionLayer:
    """All client and server transactions of one SIP endpoint (see the module docstring)."""

    def __init__(self, timers: TimerSettings = DEFAULT_TIMERS) -> None:
        self.timers = timers
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._events: deque[Event] = deque()
        self._outbox: list[tuple[bytes, Address]] = []
        self._timer_queue: TimerQueue[Transaction] = TimerQueue()

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- the TU's side ---------------------------------------------------------------------------

    def send_request(self, request: Request, destination: Address, now: float, *,
                     reliable: bool = False) -> ClientTransaction:
        """Start a client transaction; its top Via must carry a ``z9hG4bK`` branch."""
        if request.method == "ACK":
            raise ValueError("ACK is not a transaction: send the ACK for a 2xx with "
                             "send_stateless() (RFC 3261 §17.1.1.3)")
        branch = request.top_via.branch or ""
        if not branch.startswith(MAGIC_COOKIE):
            raise ValueError(f"top Via branch {branch!r} lacks the {MAGIC_COOKIE} cookie")
        key = (branch, request.cseq.method)
        if key in self._clients:
            raise ValueError(f"a client transaction for {key} is already running")
        tx = ClientTransaction(request, destination, reliable, key)
        self._clients[key] = tx
        self._outbox.append(tx._resend)
        self._start_timers(tx, tx.machine.start, now)
        return tx

    def cancel(self, invite: ClientTransaction, now: float) -> None:
        """Cancel a client INVITE (§9.1): at once if a provisional has come, else as soon as
        one does; never once a final response has arrived."""
        if not invite.is_invite:
            raise ValueError("only an INVITE can be cancelled")
        if invite._cancel_requested:
            return
        invite._cancel_requested = True
        if invite.state is TransactionState.PROCEEDING:
            self._send_cancel(invite, now)

    def send_response(self, transaction: ServerTransaction, response: Response,
                      now: float) -> None:
        """Send the TU's response through its server transaction. Responses the state does
        not take (a second final) are dropped, as §17.2.2 says."""
        kind = _response_input(response.status)
        if kind is None:
            raise ValueError(f"status {response.status} is not a SIP response code")
        if transaction.state is TransactionState.TERMINATED:
            if transaction.is_invite and kind is Input.SUCCESS:
                # The TU owns 2xx reliability (§13.3.1.4), even past Timer L.
                self._outbox.append((response.serialize(), transaction.response_destination))
            return
        self._dispatch(transaction, _Stimulus(kind, now, response))

    def send_stateless(self, message: Request | Response, destination: Address) -> None:
        """Send outside any transaction: the ACK for a 2xx, a 2xx retransmission."""
        self._outbox.append((message.serialize(), destination))

    # -- the network's side ----------------------------------------------------------------------

    def receive(self, message: Request | Response, source: Address, now: float, *,
                reliable: bool = False) -> None:
        """Feed one parsed message that arrived from ``source``."""
        try:
            if isinstance(message, Response):
                self._receive_response(message, source, now)
            else:
                self._receive_request(message, source, now, reliable)
        except SipParseError:
            return  # no usable Via/CSeq: nothing can be matched or answered

    def _receive_response(self, response: Response, source: Address, now: float) -> None:
        kind = _response_input(response.status)
        if kind is None:
            return
        tx = self._clients.get((response.top_via.branch or "", response.cseq.method))
        if tx is None:
            self._events.append(StrayResponse(response, source))
            return
        self._dispatch(tx, _Stimulus(kind, now, response, source))

    def _receive_request(self, request: Request, source: Address, now: float,
                         reliable: bool) -> None:
        _stamp_via(request, source)
        if request.method == "ACK":
            invite = self._match_ack(request)
            if invite is None:
                self._events.append(RequestReceived(None, request, source))
            else:
                self._dispatch(invite, _Stimulus(Input.ACK, now, request, source))
            return
        key = _server_key(request, request.method, request.to.tag)
        tx = self._servers.get(key)
        if tx is not None:
            self._dispatch(tx, _Stimulus(Input.REQUEST, now, request, source))
            return
        tx = ServerTransaction(request, source, reliable, key)
        self._servers[key] = tx
        cancelled = None
        if request.method == "CANCEL":  # §9.2: match as if it were the INVITE
            cancelled = self._servers.get(_server_key(request, "INVITE", request.to.tag))
        self._events.append(RequestReceived(tx, request, source, cancelled))
        if tx.is_invite:  # §17.2.1: answer at once so the client stops retransmitting
            self._set_response(tx, _trying(request))

    def _match_ack(self, ack: Request) -> ServerTransaction | None:
        """§17.2.3: an ACK matches the INVITE transaction whose final it acknowledges."""
        tag = ack.to.tag
        tx = self._servers.get(_server_key(ack, "INVITE", tag))
        if tx is None and not _has_cookie(ack.top_via) and tag is not None:
            # RFC 2543 fallback: the INVITE had no To tag; the ACK carries the one we sent.
            tx = self._servers.get(_server_key(ack, "INVITE", None))
            sent = tx.last_response if tx is not None else None
            if sent is None or sent.to.tag != tag:
                return None
        return tx

    # -- timers ----------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline of any running timer, or None."""
        return self._timer_queue.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while (due := self._timer_queue.pop_due(now)) is not None:
            self._dispatch(due[0], _Stimulus(due[1], now))

    # -- output ----------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    # -- the machines ----------------------------------------------------------------------------

    def _dispatch(self, tx: Transaction, stimulus: _Stimulus) -> None:
        transition = tx.machine.table.get(tx.state, {}).get(stimulus.input)
        if transition is None:
            return  # not expected in this state (a 1xx after the final): ignored
        if transition.target is not tx.state:
            self._timer_queue.stop(tx, keep=transition.keep)
            tx.state = transition.target
        for action in transition.actions:
            self._run(action, tx, stimulus)
        if tx.state is TransactionState.TERMINATED:
            self._terminate(tx)
        else:
            self._start_timers(tx, transition.start, stimulus.now)

    def _start_timers(self, tx: Transaction, timers: tuple[Timer, ...], now: float) -> None:
        due_now = []
        for timer in timers:
            duration = initial_duration(timer, self.timers, tx.reliable)
            if duration is None:
                continue  # a retransmit timer on a reliable transport: unused (Table 4)
            if duration == 0:
                due_now.append(timer)
                continue
            tx._intervals[timer] = duration
            self._timer_queue.arm(tx, timer, now + duration)
        for timer in due_now:  # zero on a reliable transport: the state lasts no time
            self._dispatch(tx, _Stimulus(timer, now))

    def _terminate(self, tx: Transaction) -> None:
        self._timer_queue.stop(tx)
        if isinstance(tx, ClientTransaction):
            del self._clients[tx.key]
        else:
            del self._servers[tx.key]
        self._events.append(TransactionTerminated(tx))

    def _run(self, action: Action, tx: Transaction, stimulus: _Stimulus) -> None:
        match action:
            case Action.PASS_UP:
                self._pass_up(tx, stimulus)
            case Action.SEND_ACK:
                assert isinstance(tx, ClientTransaction)
                self._send_ack(tx, stimulus)
            case Action.SEND_PENDING_CANCEL:
                assert isinstance(tx, ClientTransaction)
                if tx._cancel_requested:
                    self._send_cancel(tx, stimulus.now)
            case Action.RETRANSMIT:
                self._outbox.append(tx._resend)
            case Action.BACK_OFF | Action.HOLD_AT_T2:
                assert isinstance(stimulus.input, Timer)
                self._restart(tx, stimulus.input, action, stimulus.now)
            case Action.SEND_RESPONSE:
                assert isinstance(tx, ServerTransaction)
                assert isinstance(stimulus.message, Response)
                self._set_response(tx, stimulus.message)
            case Action.TIMEOUT:
                assert isinstance(stimulus.input, Timer)
                self._events.append(TransactionTimeout(tx, stimulus.input))

    def _pass_up(self, tx: Transaction, stimulus: _Stimulus) -> None:
        message = stimulus.message
        if isinstance(tx, ClientTransaction):
            assert isinstance(message, Response)
            tx.last_response = message
            self._events.append(ResponseReceived(tx, message))
        else:
            assert isinstance(message, Request) and stimulus.source is not None
            self._events.append(RequestReceived(tx, message, stimulus.source))

    def _restart(self, tx: Transaction, timer: Timer, action: Action, now: float) -> None:
        held = action is Action.HOLD_AT_T2
        interval = self.timers.t2 if held else backoff(timer, tx._intervals[timer], self.timers)
        tx._intervals[timer] = interval
        self._timer_queue.arm(tx, timer, now + interval)

    def _set_response(self, tx: ServerTransaction, response: Response) -> None:
        tx.last_response = response
        tx._resend = (response.serialize(), tx.response_destination)
        self._outbox.append(tx._resend)

    def _send_ack(self, tx: ClientTransaction, stimulus: _Stimulus) -> None:
        if tx._ack_bytes is None:
            assert isinstance(stimulus.message, Response)
            tx._ack_bytes = build_ack(tx.request, stimulus.message).serialize()
        self._outbox.append((tx._ack_bytes, tx.destination))

    def _send_cancel(self, invite: ClientTransaction, now: float) -> None:
        self.send_request(build_cancel(invite.request), invite.destination, now,
                          reliable=invite.reliable)
        # §9.1: with no final response 64*T1 after the CANCEL, give the INVITE up.
        self._start_timers(invite, (Timer.CANCEL_WAIT,), now)


# -- messages the layer builds itself -------------------------------------------------------------


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final (§17.1.1.3): the INVITE's Request-URI, Call-ID, From, CSeq
    number, top Via (alone) and Route headers, the To of the response (with its tag)."""
    return _hop_request(invite, "ACK", response.headers.get("To") or "")


def build_cancel(invite: Request) -> Request:
    """A CANCEL for ``invite`` (§9.1): the INVITE's Request-URI, Call-ID, To, From, CSeq number,
    top Via (alone, same branch, so it reaches the same server) and Route headers."""
    return _hop_request(invite, "CANCEL", invite.headers.get("To") or "")


def _hop_request(invite: Request, method: str, to: str) -> Request:
    headers = Headers([("Via", invite.headers.values("Via")[0])])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", to)
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.seq} {method}")
    return Request(method, invite.uri, headers)


def _trying(invite: Request) -> Response:
    """100 Trying (§8.2.6.1): Via, From, To, Call-ID, CSeq and Timestamp copied, no To tag."""
    headers = Headers()
    for name in ("Via", "From", "To", "Call-ID", "CSeq", "Timestamp"):
        for value in invite.headers.get_all(name):
            headers.add(name, value)
    return Response(100, "Trying", headers)


# -- matching and routing -------------------------------------------------------------------------


def _response_input(status: int) -> Input | None:
    if 100 <= status <= 199:
        return Input.PROVISIONAL
    if 200 <= status <= 299:
        return Input.SUCCESS
    if 300 <= status <= 699:
        return Input.FAILURE
    return None  # the parser refuses these; be defensive anyway


def _has_cookie(via: Via) -> bool:
    return (via.branch or "").startswith(MAGIC_COOKIE)


def _server_key(request: Request, method: str, to_tag: str | None) -> ServerKey:
    """§17.2.3. RFC 3261 peers: branch, sent-by and method. RFC 2543 peers (no magic cookie):
    Request-URI, To tag, From tag, Call-ID, CSeq number and method, and the whole top Via."""
    via = request.top_via
    if _has_cookie(via):
        return (via.branch, via.host.lower(), via.port, method)
    return (request.uri, to_tag, request.from_.tag, request.call_id, request.cseq.seq, method,
            str(via))


def _stamp_via(request: Request, source: Address) -> None:
    """§18.2.1 and RFC 3581 §4: record where the request really came from in its top Via
    (``received``, and ``rport`` filled in when the client asked for it)."""
    via = request.top_via
    wants_rport = via.rport is not None
    if not wants_rport and via.host.strip("[]") == source[0]:
        return
    params = [p for p in via.params if p[0].lower() not in ("received", "rport")]
    params.append(("received", source[0]))
    if wants_rport:
        params.append(("rport", str(source[1])))
    lines = request.headers.get_all("Via")
    first = split_header_values(lines[0])
    first[0] = str(Via(via.transport, via.host, via.port, tuple(params)))
    lines[0] = ", ".join(first)
    request.headers.remove("Via")
    for line in reversed(lines):  # only the order among Via lines matters (§7.3.1)
        request.headers.prepend("Via", line)


def response_destination(request: Request, source: Address, reliable: bool) -> Address:
    """§18.2.2 with RFC 3581. Reliable: back over the connection it came on. Otherwise the
    address is the packet's source either way (``received`` names it, and when it is absent
    the sent-by host *is* the source, §18.2.1); the port is the source port when the client
    asked for rport, else the sent-by port. ``maddr`` is not supported."""
    if reliable:
        return source
    via = request.top_via
    if via.rport is not None:
        return source
    default = 5061 if via.transport == "TLS" else 5060
    # An explicit port 0 stays 0: the sender is refused by is_sendable (never "no port").
    return (source[0], default if via.port is None else via.port)


__all__ = [
    "Address",
    "ClientTransaction",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "Timer",
    "TimerSettings",
    "Transaction",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimeout",
    "build_ack",
    "build_cancel",
    "response_destination",
]
