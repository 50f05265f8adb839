"""Every error the API answers has the spec's shape::

    {"status": "error", "error_code": "INVALID_NUMBER", "message": "..."}

Routes raise :class:`ApiError`; the handlers installed by :func:`install_error_handlers` turn
it, Starlette's own 404/405, and anything unexpected into that shape. An unexpected exception
is logged with its traceback and answered 500 ``INTERNAL_ERROR`` with a message that reveals
nothing about it; a database failure is 503 ``STORAGE_UNAVAILABLE`` (worth a retry).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callbridge.errors import StorageError

log = logging.getLogger(__name__)

#: Error codes for Starlette's own HTTP errors (no route, wrong method).
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


class ApiError(Exception):
    """An error answer: HTTP status, the spec's ``error_code`` and a message for the client."""

    def __init__(self, status: int, error_code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = dict(headers or {})


def error_response(status: int, error_code: str, message: str,
                   headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    """The error shape; ``extra`` keys follow the three spec keys (``checks`` for /health)."""
    body = {"status": "error", "error_code": error_code, "message": message, **extra}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error_code, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


def install_error_handlers(app: Any) -> None:
    """Register the handlers on a Starlette ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)


class CatchAllMiddleware:
    """Answers any exception a route lets escape, instead of letting it reach the server.

    Starlette's own ``ServerErrorMiddleware`` re-raises after answering; this one logs once
    and stops there. If the response had already started, nothing can be answered: the
    exception is logged and the connection is left to end.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            response = _unexpected(scope, exc)
            if not started:
                await response(scope, receive, send)


def _unexpected(scope: Scope, exc: Exception) -> Response:
    where = f"{scope.get('method')} {scope.get('path')}"
    if isinstance(exc, StorageError):
        log.error("%s: database failure: %s", where, exc, exc_info=exc)
        return error_response(503, "STORAGE_UNAVAILABLE", "the database is unavailable; retry")
    log.error("%s: unexpected error", where, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error")
