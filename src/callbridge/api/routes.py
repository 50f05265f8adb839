"""The endpoints: each parses the request, asks the store or the call control, shapes the
answer. The error codes are listed in ``openapi.yaml`` (served at ``/openapi.yaml``).

``POST /calls``, in order: API key (401), origin policy (403), body (413, 400s from
:mod:`callbridge.api.validation`), caller ID and agent (400), trunk availability (502, nothing
stored), then the insert, where ``(account, uuid)`` decides idempotency: a first request is
stored and dialed; a repeat with the same normalized body gets the first answer again with
``Idempotent-Replayed: true`` and dials nothing; a repeat with another body is 409.

Live call control (``POST /calls/{call_id}/add-leg``, ``/hangup``, ``/dtmf``), in order: API
key (401), origin policy (403), the call, which must be the account's (404), the body (413,
400s), then the call control, which alone knows whether the call is bridged right now
(``CallNotActive`` -> 400 ``CALL_NOT_ACTIVE``). A hangup is answered 200 whatever the call's
state: ending an ended call is done already.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from callbridge.api.auth import authenticate
from callbridge.api.errors import ApiError, error_response
from callbridge.api.origin import check_origin, client_address
from callbridge.api.recordings import serve_recording
from callbridge.api.validation import (
    CallRequest,
    parse_add_leg_request,
    parse_call_request,
    parse_dtmf_request,
    parse_hangup_request,
    read_body,
    request_hash,
    resolve,
)
from callbridge.errors import CallNotActive, TrunkUnavailable
from callbridge.logs import call_logger
from callbridge.numbers import parse_indian_number
from callbridge.store.models import Account, Call, Leg, LegRole, LegStatus
from callbridge.webhooks.payload import iso_utc, leg_body

if TYPE_CHECKING:
    from callbridge.api.app import ApiContext

__all__ = ["build_routes", "call_status_body", "iso_utc", "place_call"]

log = logging.getLogger(__name__)

REPLAYED_HEADER = "Idempotent-Replayed"
#: A call id as we hand them out (str(uuid4())), in either case.
_CALL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
#: The line of openapi.yaml that names the server; replaced by ``[http] public_url``.
_SERVER_LINE = "  - url: http://127.0.0.1:8080\n"


def build_routes(ctx: ApiContext) -> list[Route]:
    api = _Endpoints(ctx)
    return [
        Route("/calls", api.post_call, methods=["POST"]),
        Route("/calls/{call_id}", api.get_call, methods=["GET"]),
        Route("/calls/{call_id}/add-leg", api.add_leg, methods=["POST"]),
        Route("/calls/{call_id}/hangup", api.hangup, methods=["POST"]),
        Route("/calls/{call_id}/dtmf", api.dtmf, methods=["POST"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/recordings/{filename}", api.recording, methods=["GET", "HEAD"]),
        Route("/openapi.yaml", api.openapi, methods=["GET"]),
    ]


@dataclass(frozen=True)
class _Endpoints:
    ctx: ApiContext

    async def post_call(self, request: Request) -> Response:
        account = await self._account(request)
        wanted = parse_call_request(await self._body(request))
        call, created = await place_call(self.ctx, account, wanted)
        answer = {"status": "success", "call_id": call.call_id, "message": "Call initiated"}
        if not created:
            return JSONResponse(answer, headers={REPLAYED_HEADER: "true"})
        await self.ctx.calls.start(call)
        return JSONResponse(answer)

    async def get_call(self, request: Request) -> Response:
        call = await self._own_call(request)
        return JSONResponse(call_status_body(call))

    # -- live call control -----------------------------------------------------------------

    async def add_leg(self, request: Request) -> Response:
        call = await self._own_call(request)
        wanted = parse_add_leg_request(await self._body(request))
        try:
            leg_id = await self.ctx.calls.add_leg(call, wanted.number, wanted.max_ring_time)
        except CallNotActive as exc:
            raise _not_active(call, exc) from None
        call_logger(log, call.call_id).info("leg %d added by the API, ringing %d s", leg_id,
                                            wanted.max_ring_time)
        return JSONResponse({"status": "success", "message": "Leg queued", "leg_id": leg_id})

    async def hangup(self, request: Request) -> Response:
        call = await self._own_call(request)
        parse_hangup_request(await self._body(request))
        call_logger(log, call.call_id).info("hangup requested by the API")
        await self.ctx.calls.hangup(call)
        return JSONResponse({"status": "success", "message": "Hangup requested"})

    async def dtmf(self, request: Request) -> Response:
        call = await self._own_call(request)
        wanted = parse_dtmf_request(await self._body(request))
        try:
            await self.ctx.calls.send_dtmf(call, wanted.digits, wanted.leg)
        except CallNotActive as exc:
            raise _not_active(call, exc) from None
        except ValueError as exc:
            raise ApiError(400, "INVALID_LEG", str(exc) or f"no leg {wanted.leg}") from None
        return JSONResponse({"status": "success", "message": "DTMF queued"})

    async def health(self, request: Request) -> Response:
        try:
            checks = {name: bool(ok) for name, ok in (await self.ctx.health()).items()}
        except Exception:
            log.exception("health checks failed to run")
            return error_response(503, "UNHEALTHY", "health checks failed to run", checks={})
        failing = [name for name, ok in checks.items() if not ok]
        if failing:
            message = f"unhealthy; failing: {', '.join(failing)}"
            return error_response(503, "UNHEALTHY", message, checks=checks)
        return JSONResponse({"status": "success", "checks": checks})

    async def recording(self, request: Request) -> Response:
        return await serve_recording(request, self.ctx.settings.storage.recordings_dir)

    async def openapi(self, request: Request) -> Response:
        text = openapi_text().replace(_SERVER_LINE, _server_line(self.ctx), 1)
        return Response(text, media_type="text/yaml")

    # -- the steps: the account, the call, the body; then POST /calls's own ---------------

    async def _own_call(self, request: Request) -> Call:
        """The call the path names, if it is the key's account's: any other is 404, so
        nobody learns which ids exist."""
        account = await self._account(request)
        call_id = request.path_params["call_id"]
        call = None
        if _CALL_ID.fullmatch(call_id):
            call = await self.ctx.store.get_call(call_id.lower())
        if call is None or call.account_id != account.id:
            raise ApiError(404, "CALL_NOT_FOUND", f"no call {call_id!r}")
        return call

    async def _body(self, request: Request) -> bytes:
        return await read_body(request.headers, request.stream(), self.ctx.max_body_bytes)

    async def _account(self, request: Request) -> Account:
        account = await authenticate(self.ctx.store, request.headers.get("authorization"))
        peer = request.client.host if request.client else None
        client = client_address(peer, request.headers.getlist("x-forwarded-for"),
                                self.ctx.proxy_networks)
        check_origin(account, client, request.headers.get("origin"))
        return account


async def place_call(ctx: ApiContext, account: Account,
                     wanted: CallRequest) -> tuple[Call, bool]:
    """``POST /calls``'s steps after the body: caller ID and agent (400), trunk (502, nothing
    stored), then the insert; ``(call, created)``, raising ApiError as the API answers. The
    softphone's Call button places its calls through here too."""
    caller_id = await _caller_id(ctx, account, wanted.from_number)
    if wanted.crm_username is not None and \
            await ctx.store.get_agent(account.id, wanted.crm_username) is None:
        raise ApiError(400, "UNKNOWN_AGENT",
                       f"crm_username {wanted.crm_username!r} is not a registered agent")
    fresh = _new_call(ctx, account, wanted, caller_id)
    # A retry of a call already placed is replayed (or refused as a conflict) whatever
    # the trunk's state: only a new call needs the trunk.
    call = await ctx.store.find_call(account.id, wanted.uuid)
    if call is None:
        try:
            ctx.calls.check_available()
        except TrunkUnavailable as exc:
            raise ApiError(502, "TRUNK_UNAVAILABLE",
                           f"cannot place calls now: {exc}") from None
        call, created = await ctx.store.create_call(fresh)
    else:
        created = False
    if not created and call.request_hash != fresh.request_hash:
        raise ApiError(409, "DUPLICATE_UUID",
                       f"uuid {wanted.uuid!r} was already used with a different request")
    if created:
        call_logger(log, call.call_id).info("initiated for account %s, uuid %r",
                                            account.id, call.uuid)
    return call, created


async def _caller_id(ctx: ApiContext, account: Account, from_number: str) -> str:
    try:
        e164 = parse_indian_number(from_number, mobile_only=False)
    except ValueError:
        e164 = None
    if e164 is None or not await ctx.store.has_caller_id(account.id, e164):
        raise ApiError(400, "CALLER_ID_NOT_ALLOWED",
                       f"from_number {from_number!r} is not a caller ID of this account")
    return e164


def _new_call(ctx: ApiContext, account: Account, wanted: CallRequest, caller_id: str) -> Call:
    call_id = str(uuid.uuid4())
    agent = wanted.agent_number or wanted.crm_username
    assert agent is not None  # validation guarantees exactly one
    return Call(
        call_id=call_id,
        account_id=account.id,
        uuid=wanted.uuid,
        from_number=caller_id,
        to_number=wanted.to_number,
        agent_number=wanted.agent_number,
        crm_username=wanted.crm_username,
        recording=wanted.recording,
        max_ring_time=wanted.max_ring_time,
        request_hash=request_hash(wanted, caller_id),
        created_at=ctx.clock(),
        legs=(Leg(call_id, 1, LegRole.AGENT, agent, LegStatus.DIALING),),
        agent_confirm=resolve(wanted.agent_confirm, account.agent_confirm),
        time_limit=resolve(wanted.time_limit, account.time_limit),
    )


# -- response shapes -----------------------------------------------------------------------


def call_status_body(call: Call) -> dict[str, Any]:
    """``CallStatusResponse``, with our additions (hangup_source, agent_confirm, time_limit,
    and per leg leg_id, sip_code, reason, answered_at, ended_at)."""
    return {
        "status": "success",
        "call_id": call.call_id,
        "uuid": call.uuid,
        "call_status": call.call_status.value,
        "duration": int(call.duration),
        "recording_url": call.recording_url,
        "start_time": iso_utc(call.start_time),
        "end_time": iso_utc(call.end_time),
        "hangup_source": call.hangup_source.value if call.hangup_source else None,
        "agent_confirm": call.agent_confirm,
        "time_limit": call.time_limit,
        "legs": [leg_body(leg) for leg in sorted(call.legs, key=lambda leg: leg.leg_id)],
    }


def _not_active(call: Call, exc: CallNotActive) -> ApiError:
    detail = str(exc) or f"call {call.call_id} is not bridged"
    return ApiError(400, "CALL_NOT_ACTIVE", detail)


def openapi_text() -> str:
    """The packaged spec, with our additions."""
    return resources.files("callbridge.api").joinpath("openapi.yaml").read_text("utf-8")


def _server_line(ctx: ApiContext) -> str:
    # A JSON string is a valid YAML double-quoted scalar.
    return f"  - url: {json.dumps(ctx.settings.http.public_url)}\n"
