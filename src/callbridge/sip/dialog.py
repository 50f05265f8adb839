"""SIP dialogs, UAC side (RFC 3261 §12, §13.2.2.4, §14, §15).

A :class:`Dialog` holds the state that in-dialog requests are built from: Call-ID, tags, the
remote target (Contact), the route set (Record-Route, reversed on the UAC side) and the two
CSeq spaces. It builds requests and checks incoming ones; it sends nothing itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from callbridge.sip.errors import SipParseError
from callbridge.sip.headers import NameAddr
from callbridge.sip.message import Headers, Request, Response
from callbridge.sip.uri import SipUri


class DialogState(enum.Enum):
    #: Created by a provisional response with a To tag (§12.1.2); may still end by a failure.
    EARLY = "early"
    #: Confirmed by a 2xx (§12.1.2); ended only by BYE.
    CONFIRMED = "confirmed"
    #: Ended: BYE sent or received, or the INVITE failed.
    TERMINATED = "terminated"


@dataclass(frozen=True)
class DialogId:
    call_id: str
    local_tag: str
    remote_tag: str


@dataclass
class Dialog:
    """One dialog as the UAC sees it."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str  #: the From header value we send (with our tag)
    remote_party: str  #: the To header value we send (with their tag)
    remote_target: str  #: Request-URI for in-dialog requests (the remote Contact URI)
    route_set: tuple[str, ...] = ()
    local_cseq: int = 1
    remote_cseq: int | None = None
    state: DialogState = DialogState.EARLY
    #: The INVITE that created the dialog (ACKs for 2xx copy its Request-URI and credentials).
    invite: Request | None = field(default=None, repr=False)

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_response(cls, invite: Request, response: Response) -> Dialog:
        """A dialog from a 1xx-with-tag or 2xx to our INVITE (§12.1.2)."""
        to = response.to
        remote_tag = to.tag
        local_tag = invite.from_.tag
        if not remote_tag or not local_tag:
            raise SipParseError("a dialog needs both tags")
        route_set = tuple(reversed(response.headers.values("Record-Route")))
        state = DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=_required(invite.headers, "From"),
            remote_party=_required(response.headers, "To"),
            remote_target=_contact_uri(response) or invite.uri,
            route_set=route_set,
            local_cseq=invite.cseq.seq,
            state=state,
            invite=invite,
        )

    def confirm(self, response: Response) -> None:
        """A 2xx on an early dialog: confirmed, and the target/route set refreshed (§12.1.2)."""
        self.state = DialogState.CONFIRMED
        self.route_set = tuple(reversed(response.headers.values("Record-Route")))
        self.refresh_target(response)

    def refresh_target(self, message: Request | Response) -> None:
        """Target refresh (§12.2.1.2, §12.2.2): a Contact replaces the remote target."""
        uri = _contact_uri(message)
        if uri:
            self.remote_target = uri

    def create_request(self, method: str, branch: str, via_host: str, *, transport: str = "UDP",
                       body: bytes = b"", content_type: str | None = None,
                       headers: tuple[tuple[str, str], ...] = ()) -> Request:
        """A new in-dialog request with the next local CSeq (§12.2.1.1)."""
        self.local_cseq += 1
        return self._request(method, self.local_cseq, branch, via_host, transport, body,
                             content_type, headers)

    def create_ack(self, invite: Request, branch: str, via_host: str, *,
                   transport: str = "UDP", body: bytes = b"") -> Request:
        """The ACK for a 2xx (§13.2.2.4): the INVITE's CSeq number, a new branch, and the
        INVITE's credentials (§22.1), sent end to end outside any transaction."""
        extra = tuple(
            (name, value)
            for name, value in invite.headers
            if name in ("Authorization", "Proxy-Authorization")
        )
        content_type = "application/sdp" if body else None
        return self._request("ACK", invite.cseq.seq, branch, via_host, transport, body,
                             content_type, extra)

    def _request(self, method: str, seq: int, branch: str, via_host: str, transport: str,
                 body: bytes, content_type: str | None,
                 headers: tuple[tuple[str, str], ...]) -> Request:
        uri, routes = self._target_and_routes()
        h = Headers()
        h.add("Via", f"SIP/2.0/{transport} {via_host};branch={branch};rport")
        h.add("Max-Forwards", "70")
        for route in routes:
            h.add("Route", route)
        h.add("From", self.local_party)
        h.add("To", self.remote_party)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{seq} {method}")
        for name, value in headers:
            h.add(name, value)
        if content_type:
            h.add("Content-Type", content_type)
        return Request(method, uri, h, body)

    def _target_and_routes(self) -> tuple[str, list[str]]:
        """Loose routing when the first route has ``lr``; else strict routing (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0])
        if isinstance(first.uri, SipUri) and first.uri.param("lr") is not None:
            return self.remote_target, list(self.route_set)
        return str(first.uri), [*self.route_set[1:], f"<{self.remote_target}>"]

    def check_remote_cseq(self, request: Request) -> bool:
        """Accept an in-dialog request's CSeq (§12.2.2): lower than the last one -> False
        (the caller answers 500). ACK and CANCEL reuse their INVITE's number."""
        seq = request.cseq.seq
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_cseq is not None and seq <= self.remote_cseq:
            return False  # retransmissions never get here: their transaction absorbs them
        self.remote_cseq = seq
        return True


def dialog_id_of_request(request: Request) -> DialogId | None:
    """The id of the dialog an incoming request belongs to, from our side (§12.2.2):
    our tag is in To, theirs in From. None for an out-of-dialog request."""
    try:
        local = request.to.tag
        remote = request.from_.tag
        call_id = request.call_id
    except SipParseError:
        return None
    if not local or remote is None:
        return None
    return DialogId(call_id, local, remote)


def _contact_uri(message: Request | Response) -> str | None:
    values = message.headers.values("Contact")
    if not values:
        return None
    return str(NameAddr.parse(values[0]).uri)


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise SipParseError(f"missing {name} header")
    return value

