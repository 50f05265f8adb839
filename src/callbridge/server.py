"""The composition root: `callbridge serve` puts the parts together and runs them.

Start-up order matters and is the same every time: repair recordings a crash left open, open
the store (migrations), bind SIP and the RTP port range, end calls a crash left unfinished
(each with its callback), start the callback worker (which resumes pending deliveries), then
serve HTTP. Shutdown runs the other way: stop taking calls, hang up live ones and store their
outcome, stop the worker, close sockets and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import uvicorn

from callbridge.api.app import ApiContext, create_app
from callbridge.b2bua.calls import CallService
from callbridge.b2bua.service import SipService
from callbridge.config import Settings
from callbridge.errors import ConfigError, StorageError, TransportError
from callbridge.media.ports import PortAllocator
from callbridge.recordings.process import ProcessWriters
from callbridge.recordings.repair import repair_recordings
from callbridge.sandbox import SandboxCarrier
from callbridge.softphone.leg import BrowserPhone
from callbridge.softphone.presence import Presence
from callbridge.store import open_store
from callbridge.store.models import Store
from callbridge.webhooks.delivery import CallbackWorker

log = logging.getLogger(__name__)


class QuietUvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: the server owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Server:
    settings: Settings
    store: Store | None = None
    sip: SipService | None = None
    ports: PortAllocator | None = None
    calls: CallService | None = None
    worker: CallbackWorker | None = None
    #: The embedded carrier when ``[trunk] mode = "sandbox"``; pass one in to tune it.
    sandbox: SandboxCarrier | None = None
    http_address: tuple[str, int] = ("", 0)
    #: Connected softphone pages, shared by the HTTP side and the call service.
    presence: Presence = field(default_factory=Presence)
    _http: QuietUvicorn | None = None
    _http_task: asyncio.Task[None] | None = None
    _http_socket: socket.socket | None = None
    #: Where recordings are written: a child process, started with the first one.
    writers: ProcessWriters = field(default_factory=ProcessWriters)

    async def start(self) -> None:
        settings = self.settings
        if settings.trunk.mode == "sandbox" and settings.sip.transport.lower() != "udp":
            raise ConfigError("sip.transport", 'the sandbox carrier speaks UDP only: use "udp", '
                              'or a real trunk (trunk.mode = "sip")')
        recordings = Path(settings.storage.recordings_dir)
        recordings.mkdir(parents=True, exist_ok=True)
        repaired = repair_recordings(recordings)
        if repaired:
            log.warning("repaired %d recording(s) left unfinished: %s", len(repaired),
                        ", ".join(p.name for p in repaired))
        self._http_socket = _bind_tcp(settings.http.host, settings.http.port)
        self.http_address = self._http_socket.getsockname()[:2]
        if settings.http.port == 0:  # a free port was picked: hand out URLs that reach it
            scheme = "https" if settings.http.tls_cert else "http"
            url = f"{scheme}://{self.http_address[0]}:{self.http_address[1]}"
            self.settings = settings = replace(settings, http=replace(settings.http,
                                                                      public_url=url))
        self.store = await open_store(settings.storage.database_url)
        if settings.trunk.mode == "sandbox":  # the embedded carrier becomes the trunk
            self.sandbox = self.sandbox or SandboxCarrier()
            await self.sandbox.start("::1" if settings.sip.host == "::1" else "127.0.0.1")
            host, port = self.sandbox.address
            self.settings = settings = replace(settings, trunk=replace(
                settings.trunk, host=host, port=port))
        self.sip = SipService(settings)
        await self.sip.start()
        media = settings.media
        self.ports = PortAllocator(self.sip.local_address[0], media.rtp_port_min,
                                   media.rtp_port_max,
                                   public_host=media.public_host or settings.sip.public_host)
        # Descriptors for every leg the RTP range holds (two sockets each with SO_REUSEPORT),
        # plus room for SIP, HTTP, the database and files.
        legs = self.ports.capacity
        per_leg = 2 if self.ports.reuse_port else 1
        limit = raise_open_file_limit(legs * per_leg + _SPARE_DESCRIPTORS)
        if limit < legs * per_leg + _SPARE_DESCRIPTORS:
            log.warning("the open-file limit (%d, the hard limit) caps concurrent call legs at "
                        "about %d of the RTP range's %d: raise it (systemd: LimitNOFILE=)",
                        limit, max(limit - _SPARE_DESCRIPTORS, 0) // per_leg, legs)
        self.worker = CallbackWorker(self.store, retries=settings.callbacks.retries,
                                     backoff_base=settings.callbacks.backoff_base)
        phone = BrowserPhone(self.presence, settings.softphone)
        self.presence.calls = phone  # the pages' answers and hang-ups reach the ringing legs
        self.calls = CallService(settings, self.store, self.sip, self.ports, self.writers,
                                 on_finished=self.worker.wake, presence=self.presence,
                                 phone=phone)
        recovered = await self.calls.recover()
        if recovered:
            log.warning("ended %d call(s) a previous run left unfinished", recovered)
        await self.worker.start()
        await self._serve_http()

    async def _serve_http(self) -> None:
        assert self.store is not None and self.calls is not None
        assert self._http_socket is not None
        http = self.settings.http
        ctx = ApiContext(settings=self.settings, store=self.store, calls=self.calls,
                         health=self.health, trusted_proxies=http.trusted_proxy_networks)
        sock = self._http_socket
        config = uvicorn.Config(create_app(ctx, self.presence), log_config=None, lifespan="off",
                                access_log=False, server_header=False,
                                ssl_certfile=http.tls_cert or None,
                                ssl_keyfile=http.tls_key or None)
        self._http = QuietUvicorn(config)
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve([sock]))
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises what stopped it
                raise TransportError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        log.info("HTTP listening on %s:%d", *self.http_address)

    async def health(self) -> dict[str, bool]:
        checks = {"database": False, "sip": self.sip is not None, "rtp": False, "trunk": False}
        if self.store is not None:
            with contextlib.suppress(StorageError):
                await self.store.ping()
                checks["database"] = True
        if self.ports is not None:
            checks["rtp"] = self.ports.capacity - self.ports.leased > 0
        if self.sip is not None:
            checks["trunk"] = self.sip.trunk.up is not False and (
                self.sip.trunk_address is not None)
        return checks

    async def stop(self) -> None:
        try:
            await self._stop_services()
        finally:  # the recordings writer is a process: never leave it behind
            await self.writers.aclose()

    async def _stop_services(self) -> None:
        if self.calls is not None:
            # Each call ends with its recording, which may take finish_timeout.
            await self.calls.drain(timeout=self.writers.finish_timeout + 10)
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, 10)
        if self.worker is not None:
            await self.worker.stop()
        if self.sip is not None:
            await self.sip.stop()
        if self.sandbox is not None:
            await self.sandbox.stop()
        if self.store is not None:
            await self.store.close()
        if self._http_socket is not None:
            self._http_socket.close()


def _bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot bind HTTP {host}:{port}: {exc}") from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


#: Descriptors kept for everything but RTP: SIP/HTTP sockets and connections, the database,
#: recordings being written, callback connections.
_SPARE_DESCRIPTORS = 1024


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's soft open-file limit towards ``wanted`` (never above the hard
    limit, never lowering it); the soft limit now in force.

    Distributions start services at a soft limit of 1,024 descriptors, about 500 two-party
    calls' worth of RTP sockets; the hard limit is usually far higher and a process may raise
    its own soft limit up to it (as the Go runtime and nginx's worker_rlimit_nofile do).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    log.info("open-file limit raised from %d to %d", soft, target)
    return target


async def serve_forever(settings: Settings,
                        ready: Callable[[Server], None] | None = None) -> None:
    """`callbridge serve`: run until SIGINT/SIGTERM, then shut down cleanly.
    SIGUSR1 logs one ``stats`` line (transactions, legs, tasks, errors)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server = Server(settings)
    try:
        await server.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, lambda: _log_stats(server))
        sip_host, sip_port = server.sip.local_address if server.sip else ("", 0)
        print(f"callbridge: SIP on {sip_host}:{sip_port}, HTTP on "
              f"{server.http_address[0]}:{server.http_address[1]}", flush=True)
        if ready is not None:
            ready(server)
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)


def _log_stats(server: Server) -> None:
    figures: dict[str, int] = {"tasks": len(asyncio.all_tasks())}
    if server.sip is not None:
        figures.update(server.sip.stats())
    if server.calls is not None:
        figures["calls"] = len(server.calls.runners)
    log.info("stats %s", " ".join(f"{k}={v}" for k, v in figures.items()))
