"""The SIP service: the pure :class:`UserAgent` run on real sockets and the event loop.

This is the aioquic ``transmit()`` shape: feed what arrives into the user agent, send what
it produced, re-arm one ``loop.call_at`` for its next deadline, and hand its events to the
leg they belong to. Callers place calls with :meth:`SipService.call`, which returns an
:class:`OutboundLeg` whose events arrive on an asyncio queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

from callbridge.b2bua.transport import Address, TcpTransport, UdpTransport
from callbridge.config import Settings, split_host_port
from callbridge.errors import TransportError
from callbridge.logs import call_logger
from callbridge.sip.auth import DigestAuth
from callbridge.sip.message import Message
from callbridge.sip.transaction import TimerSettings
from callbridge.sip.useragent import (
    Answered,
    Cancelled,
    Event,
    Failed,
    HungUp,
    PingResult,
    RemoteHangup,
    UserAgent,
    UserAgentConfig,
)

log = logging.getLogger(__name__)

#: Events after which a leg is over.
FINAL_EVENTS = (Failed, Cancelled, RemoteHangup, HungUp)


def new_token() -> str:
    """Tags, Call-IDs and branches: 96 random bits, URL-safe (RFC 3261 §19.3 asks >= 32)."""
    return secrets.token_urlsafe(12)


@dataclass
class TrunkStatus:
    up: bool | None = None  #: None until the first OPTIONS ping has an outcome
    last_status: int = 0


class OutboundLeg:
    """One outbound INVITE and its dialog, seen from asyncio."""

    def __init__(self, service: SipService, leg_id: str,
                 events: asyncio.Queue[Event] | None = None) -> None:
        self._service = service
        self.leg_id = leg_id
        #: This leg's events; several legs may share one queue (a call's), told apart by
        #: each event's ``leg_id``.
        self.events: asyncio.Queue[Event] = events if events is not None else asyncio.Queue()
        self.answered = False
        self.ended = False
        self.log = call_logger(log, leg_id)

    async def next_event(self, timeout: float | None = None) -> Event:
        return await asyncio.wait_for(self.events.get(), timeout)

    def cancel(self) -> None:
        self._service._command(lambda now: self._service.ua.cancel(self.leg_id, now))

    def hangup(self) -> None:
        self._service._command(lambda now: self._service.ua.hangup(self.leg_id, now))

    def reinvite(self, sdp: bytes) -> None:
        self._service._command(lambda now: self._service.ua.reinvite(self.leg_id, sdp, now))

    def info(self, content_type: str, body: bytes) -> None:
        self._service._command(
            lambda now: self._service.ua.info(self.leg_id, content_type, body, now))

    def set_local_sdp(self, sdp: bytes) -> None:
        self._service.ua.set_local_sdp(self.leg_id, sdp)


class SipService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ua: UserAgent
        self.trunk = TrunkStatus()
        self.trunk_address: Address | None = None
        self._udp: UdpTransport | None = None
        self._tcp: TcpTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._legs: dict[str, OutboundLeg] = {}
        self._ping_task: asyncio.Task[None] | None = None
        self._ping_waiters: dict[str, asyncio.Future[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.internal_errors = 0

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sip = self.settings.sip
        transport = sip.transport.upper()
        try:
            if transport == "TCP":
                self._tcp = TcpTransport(self._on_message)
                await self._tcp.listen(sip.host, sip.port)
                bound = self._tcp.local_address
            else:
                _, proto = await self._loop.create_datagram_endpoint(
                    lambda: UdpTransport(self._on_datagram), local_addr=(sip.host, sip.port)
                )
                self._udp = proto
                bound = proto.local_address
        except OSError as exc:
            where = f"{transport} {sip.host}:{sip.port}"
            raise TransportError(f"cannot bind SIP {where}: {exc}") from exc
        self.local_address = bound
        trusted = await self._resolve_trunk()
        self.ua = UserAgent(
            UserAgentConfig(
                host=sip.public_host or bound[0],
                port=bound[1],
                transport=transport,
                user_agent=sip.user_agent,
                timers=TimerSettings(sip.t1, sip.t2, sip.t4),
                trusted_sources=frozenset(trusted),
            ),
            token=new_token,
        )
        log.info("SIP listening on %s %s:%d", transport, bound[0], bound[1])
        if self.trunk_address and self.settings.trunk.options_interval > 0:
            self._ping_task = self._loop.create_task(self._ping_loop())

    async def stop(self) -> None:
        """Hang up what is up, then close the sockets."""
        for leg in list(self._legs.values()):
            leg.hangup()
        if self._ping_task is not None:
            self._ping_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ping_task
        if self._timer is not None:
            self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()

    async def _resolve_trunk(self) -> list[str]:
        trunk = self.settings.trunk
        if not trunk.host:  # sandbox mode fills host and port in once its carrier is up
            return []
        hop_host, hop_port = trunk.host, trunk.port
        if trunk.outbound_proxy:
            proxy_host, proxy_port = split_host_port(trunk.outbound_proxy)
            hop_host, hop_port = proxy_host, proxy_port or 5060
        addresses = {await self._resolve(trunk.host)}
        hop_ip = await self._resolve(hop_host)
        addresses.add(hop_ip)
        self.trunk_address = (hop_ip, hop_port)
        return sorted(addresses)

    async def _resolve(self, host: str) -> str:
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(host.strip("[]")))
        assert self._loop is not None
        try:
            infos = await self._loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise TransportError(f"cannot resolve trunk host {host!r}: {exc}") from exc
        return str(infos[0][4][0])

    # -- calls ---------------------------------------------------------------------------

    def call(self, number: str, *, caller: str, sdp: bytes, leg_id: str | None = None,
             headers: tuple[tuple[str, str], ...] = (),
             events: asyncio.Queue[Event] | None = None) -> OutboundLeg:
        """INVITE ``number`` through the trunk with ``caller`` as the From user."""
        if self.trunk_address is None:
            raise TransportError("no SIP trunk configured")
        trunk = self.settings.trunk
        domain = trunk.host if trunk.port == 5060 else f"{trunk.host}:{trunk.port}"
        leg = OutboundLeg(self, leg_id or new_token(), events)
        self._legs[leg.leg_id] = leg
        route = (f"<sip:{trunk.outbound_proxy};lr>",) if trunk.outbound_proxy else ()
        auth = None
        if trunk.username:
            auth = DigestAuth(trunk.username, trunk.password, cnonce_factory=new_token,
                              realm=trunk.realm or None)
        uri = f"sip:{number}@{domain}"
        self._command(lambda now: self.ua.invite(
            leg.leg_id, request_uri=uri, from_=f"<sip:{caller}@{domain}>", to=f"<{uri}>",
            sdp=sdp, destination=self.trunk_address or ("", 0), now=now, auth=auth,
            headers=headers, route=route,
        ))
        leg.log.info("INVITE %s from %s", number, caller)
        return leg

    async def ping(self, timeout: float = 40.0) -> int:
        """Send one OPTIONS to the trunk; its status, or 0 when it never answered."""
        assert self._loop is not None and self.trunk_address is not None
        ping_id = new_token()
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._ping_waiters[ping_id] = waiter
        uri = f"sip:{self.settings.trunk.host}:{self.settings.trunk.port}"
        self._command(lambda now: self.ua.ping(ping_id, request_uri=uri,
                                               destination=self.trunk_address or ("", 0),
                                               now=now))
        try:
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._ping_waiters.pop(ping_id, None)

    async def _ping_loop(self) -> None:
        while True:
            status = await self.ping()
            # Any answer but a server error shows a live trunk (a 404 or 405 to OPTIONS is
            # common); 5xx and silence mark it down.
            up = 0 < status < 500 or status >= 600
            if up != self.trunk.up:
                log.info("trunk %s (OPTIONS -> %s)", "up" if up else "DOWN", status or "no answer")
            self.trunk.up, self.trunk.last_status = up, status
            await asyncio.sleep(self.settings.trunk.options_interval)

    # -- the transmit loop -------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _command(self, action: Callable[[float], None]) -> None:
        action(self._now())
        self._transmit()

    def _on_datagram(self, data: bytes, source: Address) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("[call=%s] recv %d bytes from %s:%d\n%s", _call_id_of(data), len(data),
                      *source, data.decode("utf-8", "replace"))
        try:
            self.ua.receive_datagram(data, source, self._now())
        except Exception:  # a bug must not silence the service: count it, keep serving
            self.internal_errors += 1
            log.exception("internal error on a datagram from %s:%d", *source)
        self._transmit()

    def _on_message(self, message: Message, source: Address) -> None:
        if log.isEnabledFor(logging.DEBUG):
            data = message.serialize()
            log.debug("[call=%s] recv from %s:%d (tcp)\n%s", _call_id_of(data), *source,
                      data.decode("utf-8", "replace"))
        try:
            self.ua.receive_message(message, source, self._now(), reliable=True)
        except Exception:
            self.internal_errors += 1
            log.exception("internal error on a message from %s:%d", *source)
        self._transmit()

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.ua.handle_timer(self._now())
        except Exception:
            self.internal_errors += 1
            log.exception("internal error in a SIP timer")
        self._transmit()

    def _transmit(self) -> None:
        for data, address in self.ua.datagrams_to_send():
            if log.isEnabledFor(logging.DEBUG):
                log.debug("[call=%s] send %d bytes to %s:%d\n%s", _call_id_of(data), len(data),
                          *address, data.decode("utf-8", "replace"))
            if self._tcp is not None:
                self._tcp.send(data, address)
            elif self._udp is not None:
                self._udp.send(data, address)
        self._dispatch_events()
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.ua.get_timer()
        if self._timer is not None and (deadline is None or self._timer.when() != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _dispatch_events(self) -> None:
        while (event := self.ua.next_event()) is not None:
            if isinstance(event, PingResult):
                waiter = self._ping_waiters.get(event.ping_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event.status)
                continue
            leg = self._legs.get(event.leg_id)
            if leg is None:
                continue
            leg.log.info("%s", type(event).__name__)
            if isinstance(event, Answered):
                leg.answered = True
            if isinstance(event, FINAL_EVENTS):
                leg.ended = True
                del self._legs[event.leg_id]
            leg.events.put_nowait(event)

    # -- diagnostics ---------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "transactions": self.ua.transaction_count,
            "legs": self.ua.leg_count,
            "tcp_connections": len(self._tcp.connections) if self._tcp else 0,
            "internal_errors": self.internal_errors,
            **self.ua.stats,
        }


_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def _call_id_of(data: bytes) -> str:
    """The SIP Call-ID of a datagram, for DEBUG lines (the leg's id is its own Call-ID)."""
    match = _CALL_ID.search(data)
    return match.group(1).decode("utf-8", "replace") if match else "-"
