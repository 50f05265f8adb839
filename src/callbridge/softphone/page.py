"""The softphone's HTTP side: the page, sign-in, launch, and the integration guide.

=============================  =================================================================
``GET /softphone``             the page (static HTML and JS, no build step)
``GET /softphone/launch``      the page with a call ready: ``?to_number=&uuid=[&from_number=]``
                               for a signed-in agent, or ``?token=`` (a CRM's launch token,
                               which also signs the agent in); the agent clicks Call
``GET /softphone/session``     who is signed in (the page asks; 401 when nobody)
``POST /softphone/signin``     ``{account, crm_username, password}``, form or JSON -> cookie
``POST /softphone/signout``    ends this session wherever its cookie is, and clears the cookie
``GET|POST /softphone/signin-link``  a one-time link: GET shows a button, POST uses the token
``WS /softphone/ws``           signalling (:mod:`callbridge.softphone.signalling`)
``GET /integration-guide.html``  how a CRM signs agents in and mints launch tokens
=============================  =================================================================

A one-time link is used by a POST, not by opening it: mail scanners and chat previews fetch
links, and must not burn the agent's sign-in.

The session cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's
request carries it), Secure when ``public_url`` is https, and scoped to ``/softphone``.
SameSite=Strict means a CRM's link that opens the page does not carry the cookie on that
first navigation; the page therefore asks ``/softphone/session`` itself (a same-site
request) instead of the server deciding on the navigation.

Signing out ends the session, not just this browser's copy of the cookie: its id is recorded
as revoked (:meth:`~callbridge.softphone.auth.SoftphoneAuth.sign_out`), so a copied cookie
stops working too, and the session's open pages are closed (4401; served by this process: at
once and without a reason, since the page that clicked is one of them; by another process:
at its next re-check, with the reason). The agent's sessions in other browsers go on. When
the database cannot record it the answer is 503 and the cookie is kept: a sign-out that did
not happen is not reported as one.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from callbridge.api.origin import normalize_origin
from callbridge.config import parse_ice_servers
from callbridge.softphone.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    LaunchError,
    PendingCall,
    Session,
    SoftphoneAuth,
    seal,
)
from callbridge.softphone.dialer import PageDialer, ticket_allows
from callbridge.softphone.presence import Presence
from callbridge.softphone.signalling import CallSignals, Signalling, _origin_of

if TYPE_CHECKING:
    from callbridge.api.app import ApiContext

__all__ = ["SIGNIN_LINK_TTL", "softphone_routes"]

log = logging.getLogger(__name__)

SIGNIN_LINK_TTL = timedelta(hours=24)
#: How long the page's pre-authorisation of a launched call lasts: enough to click Call.
TICKET_SECONDS = 15 * 60
_STATIC = Path(__file__).parent / "static"
_PAGE_HEADERS = {
    # The page loads only its own script and talks only to its own origin (the WebSocket).
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline';"
        " connect-src 'self'; img-src 'self' data:; media-src 'self' blob:;"
        " form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # a launch token or ticket in the URL stays here
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def static_text(name: str) -> str:
    return (_STATIC / name).read_text(encoding="utf-8")


def softphone_routes(ctx: ApiContext, presence: Presence,
                     calls: CallSignals | None = None) -> list[BaseRoute]:
    pages = _Pages(ctx, SoftphoneAuth(ctx.store, ctx.clock), presence)
    dialer = PageDialer(ctx, pages.auth, presence)
    signalling = Signalling(pages.auth, ctx.store, presence, ctx.settings.http.public_url, calls,
                            dialer, parse_ice_servers(ctx.settings.softphone.ice_servers))
    return [
        Route("/softphone", pages.page, methods=["GET"]),
        Route("/softphone/launch", pages.launch, methods=["GET"]),
        Route("/softphone/session", pages.session, methods=["GET"]),
        Route("/softphone/signin", pages.signin, methods=["POST"]),
        Route("/softphone/signout", pages.signout, methods=["POST"]),
        Route("/softphone/signin-link", pages.signin_link, methods=["GET", "POST"]),
        Route("/softphone/softphone.js", pages.script, methods=["GET"]),
        Route("/integration-guide.html", pages.guide, methods=["GET"]),
        WebSocketRoute("/softphone/ws", signalling.endpoint),
    ]


class _Pages:
    def __init__(self, ctx: ApiContext, auth: SoftphoneAuth, presence: Presence) -> None:
        self.ctx = ctx
        self.auth = auth
        self.presence = presence
        self.public_url = ctx.settings.http.public_url
        self.secure = self.public_url.lower().startswith("https:")

    # -- the page ----------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return self._render(None)

    async def launch(self, request: Request) -> Response:
        query = request.query_params
        if "token" in query:
            return await self._launch_with_token(query["token"])
        to_number, uuid = query.get("to_number", "").strip(), query.get("uuid", "").strip()
        if not to_number or not uuid:
            return _message_page(400, "This launch link needs to_number and uuid.")
        call = PendingCall(to_number, uuid, query.get("from_number") or None)
        ticket = await self._ticket_claims(query.get("ticket"), call)
        return self._render(call, ticket=query.get("ticket") if ticket else None)

    async def _launch_with_token(self, token: str) -> Response:
        try:
            session, call = await self.auth.use_launch_token(token)
        except LaunchError as exc:
            log.warning("softphone launch refused: %s", exc)
            return _message_page(403, "This launch link is invalid, expired or used already."
                                      " Start the call from your CRM again.")  # fmt: skip
        ticket = seal(await self.auth.key(), {
            "k": "call", "a": session.account_id, "u": session.crm_username,
            "to": call.to_number, "uuid": call.uuid, "from": call.from_number,
            "exp": int(self.auth.now()) + TICKET_SECONDS,
        })  # fmt: skip
        # The token is spent: a URL without it survives a reload; the ticket carries the
        # pre-authorisation on.
        params = {"to_number": call.to_number, "uuid": call.uuid, "ticket": ticket}
        if call.from_number:
            params["from_number"] = call.from_number
        response = RedirectResponse(f"/softphone/launch?{urlencode(params)}", status_code=303)
        await self._set_cookie(response, session)
        return response

    async def _ticket_claims(self, ticket: str | None, call: PendingCall) -> bool:
        """Whether ``ticket`` pre-authorises exactly ``call`` and is unexpired."""
        return bool(ticket) and ticket_allows(await self.auth.key(), str(ticket), call,
                                              self.auth.now())  # fmt: skip

    def _render(self, call: PendingCall | None, ticket: str | None = None) -> Response:
        pending: dict[str, Any] | None = None
        if call is not None:
            pending = {"to_number": call.to_number, "uuid": call.uuid,
                       "from_number": call.from_number, "ticket": ticket}  # fmt: skip
        data = _script_json({"pending": pending})
        html = static_text("softphone.html").replace("<!--CALLBRIDGE_DATA-->", data)
        return HTMLResponse(html, headers=_PAGE_HEADERS)

    async def script(self, request: Request) -> Response:
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response(static_text("softphone.js"), media_type="text/javascript",
                        headers=headers)  # fmt: skip

    async def guide(self, request: Request) -> Response:
        html = static_text("integration-guide.html").replace("{{PUBLIC_URL}}", self.public_url)
        return HTMLResponse(html, headers={"X-Content-Type-Options": "nosniff"})

    # -- signing in and out ------------------------------------------------------------------

    async def session(self, request: Request) -> Response:
        session = await self.auth.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return _error(401, "UNAUTHORIZED", "not signed in")
        return JSONResponse(_who(session), headers={"Cache-Control": "no-store"})

    async def signin(self, request: Request) -> Response:
        if not self._same_origin(request):
            return _error(403, "ORIGIN_NOT_ALLOWED", "sign in from this server's own page")
        form = await _credentials(request)
        if form is None:
            return _error(400, "INVALID_REQUEST", "expected account, crm_username, password")
        session = await self.auth.sign_in(form["account"], form["crm_username"], form["password"])
        if session is None:
            log.info("softphone sign-in refused for %r/%r", form["account"], form["crm_username"])
            return _error(401, "UNAUTHORIZED", "wrong account, user name or password")
        response = JSONResponse(_who(session))
        await self._set_cookie(response, session)
        return response

    async def signout(self, request: Request) -> Response:
        if not self._same_origin(request):
            return _error(403, "ORIGIN_NOT_ALLOWED", "sign out from this server's own page")
        session = await self.auth.sign_out(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            pages = await self.presence.end_session(session)
            log.info("softphone %s/%s: signed out (%d pages closed)", *session.agent, pages)
        response = JSONResponse({"status": "signed out"})
        response.delete_cookie(SESSION_COOKIE, path="/softphone", secure=self.secure,
                               httponly=True, samesite="strict")  # fmt: skip
        return response

    async def signin_link(self, request: Request) -> Response:
        if request.method == "GET":
            token = request.query_params.get("token", "")
            return HTMLResponse(_link_form(token), headers=_PAGE_HEADERS)
        if not self._same_origin(request):
            return _error(403, "ORIGIN_NOT_ALLOWED", "use the link's own page")
        token = (await _form(request)).get("token", "")
        session = await self.auth.use_signin_link(token) if token else None
        if session is None:
            return _message_page(401, "This sign-in link is invalid, expired or used already."
                                      " Ask your administrator for a new one.")  # fmt: skip
        response = RedirectResponse("/softphone", status_code=303)
        await self._set_cookie(response, session)
        return response

    async def _set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE, await self.auth.cookie_value(session), max_age=SESSION_SECONDS,
            path="/softphone", secure=self.secure, httponly=True, samesite="strict",
        )  # fmt: skip

    def _same_origin(self, request: Request) -> bool:
        """A POST that carries ``Origin`` must come from our own origin (browsers send it on
        every POST); one without comes from a script or curl, which a cookie cannot help."""
        origin = request.headers.get("origin")
        return origin is None or normalize_origin(origin) == _origin_of(self.public_url)


async def _credentials(request: Request) -> dict[str, str] | None:
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/json"):
            body: Any = json.loads(await request.body())
        else:
            body = await _form(request)
    except ValueError:
        return None
    names = ("account", "crm_username", "password")
    if not isinstance(body, dict) or not all(isinstance(body.get(n), str) for n in names):
        return None
    if any(not body[n] or len(body[n]) > 1024 for n in names):
        return None
    return {n: body[n] for n in names}


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, the last of repeated names (without
    python-multipart, which Starlette's ``request.form()`` needs and we do not depend on)."""
    body = (await request.body())[:16384].decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def _who(session: Session) -> dict[str, Any]:
    return {"account_id": session.account_id, "crm_username": session.crm_username}


def _error(status: int, code: str, message: str) -> JSONResponse:
    body = {"status": "error", "error_code": code, "message": message}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _script_json(value: Any) -> str:
    """JSON inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` escaped, so
    no value can end the script element (the query string is the attacker's to write)."""
    text = json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")
    text = text.replace("&", "\\u0026")
    return f'<script type="application/json" id="callbridge-data">{text}</script>'


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#x27;"))  # fmt: skip


def _link_form(token: str) -> str:
    return _simple_page("Sign in to the softphone", (
        '<form method="post" action="/softphone/signin-link">'
        f'<input type="hidden" name="token" value="{_escape(token)}">'
        "<p>This link signs you in once.</p>"
        '<button type="submit">Sign in</button></form>'
    ))  # fmt: skip


def _message_page(status: int, message: str) -> HTMLResponse:
    body = f'<p role="alert">{_escape(message)}</p><p><a href="/softphone">Softphone</a></p>'
    return HTMLResponse(_simple_page("Softphone", body), status_code=status,
                        headers=_PAGE_HEADERS)  # fmt: skip


def _simple_page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f'<body style="font-family: system-ui, sans-serif; margin: 2rem"><h1>{title}</h1>'
        f"{body}</body></html>"
    )
