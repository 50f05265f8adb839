"""The Starlette application, and what it needs from the rest of callbridge.

:func:`create_app` takes one :class:`ApiContext`: the settings, the store, the call control
(the b2bua's service, behind the :class:`CallControl` Protocol), the health checks and a
clock. Nothing is read from globals, so tests build an app around a real store and a fake
call control.

The routes are in :mod:`callbridge.api.routes`, the error shape in
:mod:`callbridge.api.errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware

from callbridge.api.errors import CatchAllMiddleware, install_error_handlers
from callbridge.api.origin import Network, parse_networks
from callbridge.api.routes import build_routes
from callbridge.api.validation import DEFAULT_BODY_LIMIT
from callbridge.config import Settings
from callbridge.errors import ConfigError
from callbridge.softphone.page import softphone_routes
from callbridge.softphone.presence import Presence
from callbridge.store.models import Call, Store

__all__ = ["ApiContext", "CallControl", "create_app"]


class CallControl(Protocol):
    """What the API asks of the call machinery."""

    def check_available(self) -> None:
        """Raise ``callbridge.errors.TrunkUnavailable(reason)`` if no call can be placed now:
        the trunk is down by OPTIONS, no media ports are free, or the server is draining."""
        ...

    async def start(self, call: Call) -> None:
        """Begin dialing ``call`` (already stored) in the background and return at once.
        Failures later end the call FAILED; they are not raised here."""
        ...

    async def add_leg(self, call: Call, number: str, max_ring_time: int) -> int:
        """Dial ``number`` (E.164) into ``call``, ringing up to ``max_ring_time`` seconds,
        with the call's caller ID; return the new leg_id, already stored as a DIALING
        destination leg. Raises ``callbridge.errors.CallNotActive`` unless the call is
        bridged."""
        ...

    async def hangup(self, call: Call) -> None:
        """End ``call`` whatever its state (CANCEL while ringing, BYE when up), hangup_source
        ``api``. Idempotent: a call already ended is left as it is."""
        ...

    async def send_dtmf(self, call: Call, digits: str, leg: int | None) -> None:
        """Send ``digits`` on leg ``leg`` (None: the customer leg, 2), as RFC 4733 events or
        SIP INFO. Raises ``CallNotActive`` unless the call is bridged, ``ValueError`` when
        the call has no such leg or it has ended."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    store: Store
    calls: CallControl
    #: Named checks, True when passing (``{"database": True, "trunk": False}``).
    health: Callable[[], Awaitable[dict[str, bool]]]
    #: Timezone-aware UTC now.
    clock: Callable[[], datetime] = utc_now
    #: CIDRs of reverse proxies whose ``X-Forwarded-For`` is believed (``[http]
    #: trusted_proxies``, to come). Empty: the socket's peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    #: Largest request body accepted; larger is 413.
    max_body_bytes: int = DEFAULT_BODY_LIMIT
    #: ``trusted_proxies`` parsed; filled in by ``__post_init__``.
    proxy_networks: tuple[Network, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        try:
            networks = parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError("http.trusted_proxies", f"must be CIDRs: {exc}") from None
        object.__setattr__(self, "proxy_networks", networks)


def create_app(ctx: ApiContext, presence: Presence | None = None) -> Starlette:
    """The REST API, and the browser softphone beside it, as an ASGI application.

    ``presence`` is the registry of connected softphone pages, shared with the call service
    (which asks whether a ``crm_username`` agent is online); a new one when not given. It is
    also ``app.state.presence``."""
    presence = Presence() if presence is None else presence
    # The softphone's paths (/softphone/..., /integration-guide.html) are its own: no REST
    # route changes by their presence.
    routes = [*build_routes(ctx), *softphone_routes(ctx, presence)]
    app = Starlette(routes=routes, middleware=[Middleware(CatchAllMiddleware)])
    # "/calls/" is not "/calls": an unknown path is a 404 in our shape, never a redirect.
    app.router.redirect_slashes = False
    install_error_handlers(app)
    app.state.ctx = ctx
    app.state.presence = presence
    return app
