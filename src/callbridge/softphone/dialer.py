"""The page's Call button: a launched call placed by the agent's click (issue 6).

``GET /softphone/launch?to_number=&uuid=[&from_number=]`` shows the call ready; the click is
the user gesture, so no other site can make the agent's browser dial by linking to it. The
page then sends, over its signed-in WebSocket::

    page -> server   {"type": "call", "to_number", "uuid", "from_number"?, "ticket"?, "sdp"}
    server -> page   {"type": "state", "state": "dialing", "call_id"}    placed: this is it
    server -> page   {"type": "answer", "call_id", "sdp"}                 BrowserMedia's answer
    ... then as a rung call: state bridged, hangup (:mod:`callbridge.softphone.leg`)

or ``{"type": "error", "code", "reason", "message"}``: ``code`` is ``POST /calls``'s
``error_code`` (INVALID_NUMBER, CALLER_ID_NOT_ALLOWED, DUPLICATE_UUID, TRUNK_UNAVAILABLE...)
or one of ours (BAD_MESSAGE, TICKET_INVALID, ALREADY_PLACED, NOT_AVAILABLE, and CALL_FAILED
with the ``call_id`` when the call was placed but could not be started); ``reason`` is the
same, as in every other signalling error.

The call is ``POST /calls`` with ``crm_username`` = the signed-in agent: the same validation,
idempotency on ``(account, uuid)``, status and callback (:func:`callbridge.api.routes.
place_call`). A replay of a placed uuid dials nothing and answers ALREADY_PLACED. Leg 1 is
answered with the page's offer at once: the agent is the caller, nothing rings.

The keypad: ``{"type": "dtmf", "call_id", "digits"}`` sends ``digits`` (0-9 * # A-D) to the
customer of the agent's own call through the call service (RFC 4733), validated as
``POST /calls/{id}/dtmf``; nothing is answered unless it fails (NO_SUCH_CALL,
INVALID_DIGITS, CALL_NOT_ACTIVE, INVALID_LEG).

Who may dial what: with a ``ticket`` (a launch token's pre-authorisation, sealed by
:mod:`callbridge.softphone.page`) the call must be exactly the ticket's (number, uuid, caller
ID) and the ticket the session's agent's, unexpired: else TICKET_INVALID. Without one, the
signed-in agent may call any number ``POST /calls`` accepts: the protection is the session
cookie (SameSite=Strict), the Origin-checked WebSocket and the click. ``from_number`` may be
left out when the account has exactly one caller ID.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from callbridge.api.errors import ApiError
from callbridge.api.routes import place_call
from callbridge.api.validation import parse_call_request, parse_dtmf_request
from callbridge.errors import CallNotActive
from callbridge.softphone.auth import PendingCall, Session, SoftphoneAuth, unseal
from callbridge.softphone.leg import BrowserPhone
from callbridge.softphone.presence import Presence
from callbridge.softphone.signalling import Reply
from callbridge.store.models import Call

if TYPE_CHECKING:
    from callbridge.api.app import ApiContext

__all__ = ["PageDialer", "ticket_allows"]

log = logging.getLogger(__name__)

_CALL_FIELDS = ("to_number", "uuid", "from_number")


def ticket_allows(key: bytes, ticket: str, call: PendingCall, now: float,
                  session: Session | None = None) -> bool:
    """Whether ``ticket`` pre-authorises exactly ``call`` and is unexpired (and, given a
    session, was sealed for that session's agent)."""
    claims = unseal(key, ticket)
    if not claims or claims.get("k") != "call":
        return False
    if session is not None and (claims.get("a"), claims.get("u")) != (
            session.account_id, session.crm_username):
        return False
    return (claims.get("to") == call.to_number and claims.get("uuid") == call.uuid
            and claims.get("from") == call.from_number
            and isinstance(claims.get("exp"), int) and claims["exp"] > now)  # fmt: skip


class PageDialer:
    """Places the calls the pages' Call buttons ask for."""

    def __init__(self, ctx: ApiContext, auth: SoftphoneAuth, presence: Presence) -> None:
        self.ctx = ctx
        self.auth = auth
        self.presence = presence

    async def call(self, session: Session, message: dict[str, Any], reply: Reply) -> None:
        phone = self.presence.calls
        if not isinstance(phone, BrowserPhone):
            await reply(_error("NOT_AVAILABLE", "calls from the softphone are not available"))
            return
        sdp = message.get("sdp")
        if not isinstance(sdp, str) or not sdp:
            await reply(_error("BAD_MESSAGE", "call needs an 'sdp' (the page's offer)"))
            return
        try:
            call, created = await self._place(session, message)
        except ApiError as exc:
            log.info("softphone %s/%s: call refused: %s %s", session.account_id,
                     session.crm_username, exc.error_code, exc.message)  # fmt: skip
            await reply(_error(exc.error_code, exc.message))
            return
        if not created:
            await reply(_error("ALREADY_PLACED", f"the call for uuid {call.uuid!r} was placed"
                                                 " already"))  # fmt: skip
            return
        phone.expect(call.call_id, sdp, reply)
        try:
            await self.ctx.calls.start(call)
        except Exception:
            # Nothing will ring this call: its offer goes now, not after its PLACED_TTL
            # timer, and the page's Dialing ends here, with its socket still open.
            phone.forget(call.call_id)
            log.exception("call %s: placed from the softphone of %s/%s but not started",
                          call.call_id, session.account_id, session.crm_username)
            await reply({**_error("CALL_FAILED", "the call could not be started"),
                         "call_id": call.call_id})

    async def _place(self, session: Session, message: dict[str, Any]) -> tuple[Call, bool]:
        account = await self.ctx.store.get_account(session.account_id)
        if account is None:
            raise ApiError(401, "UNAUTHORIZED", "the account is gone")
        fields = {name: message[name] for name in _CALL_FIELDS if message.get(name) is not None}
        if "from_number" not in fields:
            caller_ids = await self.ctx.store.list_caller_ids(account.id)
            if len(caller_ids) == 1:
                fields["from_number"] = caller_ids[0]
        ticket = message.get("ticket")
        if ticket is not None:
            await self._check_ticket(session, ticket, message)
        body = {**fields, "crm_username": session.crm_username}
        wanted = parse_call_request(json.dumps(body).encode())
        return await place_call(self.ctx, account, wanted)

    async def _check_ticket(self, session: Session, ticket: Any,
                            message: dict[str, Any]) -> None:
        values = [message.get(name) for name in _CALL_FIELDS]
        if not isinstance(ticket, str) or not all(v is None or isinstance(v, str)
                                                  for v in values):  # fmt: skip
            raise ApiError(400, "TICKET_INVALID", "the launch ticket is not valid")
        call = PendingCall(str(values[0]), str(values[1]), values[2])
        if not ticket_allows(await self.auth.key(), ticket, call, self.auth.now(), session):
            raise ApiError(400, "TICKET_INVALID", "the launch ticket is invalid, expired or"
                                                  " for another call")  # fmt: skip


    async def dtmf(self, session: Session, message: dict[str, Any], reply: Reply) -> None:
        """The page's keypad: ``digits`` to the customer of the agent's own bridged call, as
        ``POST /calls/{id}/dtmf`` sends them (RFC 4733 events, or SIP INFO)."""
        try:
            digits = parse_dtmf_request(json.dumps({"digits": message.get("digits")}).encode())
            call = await self._own_call(session, message.get("call_id"))
            await self.ctx.calls.send_dtmf(call, digits.digits, None)
        except ApiError as exc:
            await reply(_error(exc.error_code, exc.message))
        except CallNotActive as exc:
            await reply(_error("CALL_NOT_ACTIVE", str(exc) or "the call is not bridged"))
        except ValueError as exc:  # the customer leg has ended
            await reply(_error("INVALID_LEG", str(exc) or "the customer leg has ended"))

    async def _own_call(self, session: Session, call_id: Any) -> Call:
        """The agent's own call: any other (or none) is NO_SUCH_CALL, as for answer/hangup."""
        call = await self.ctx.store.get_call(call_id) if isinstance(call_id, str) else None
        if call is None or (call.account_id, call.crm_username) != (
                session.account_id, session.crm_username):
            raise ApiError(404, "NO_SUCH_CALL", "no such call for this agent")
        return call


def _error(code: str, text: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "reason": code, "message": text}
