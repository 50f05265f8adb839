"""A real HTTP receiver for status callbacks, for any test that needs one.

uvicorn serves a tiny Starlette app on 127.0.0.1 from a background thread, so the server
works the same under ``asyncio.run`` in the test, under a synchronous test, or for a
callbridge running in a subprocess. Every request is recorded (method, path, headers, body,
arrival time); by default each gets 200, and the next ones can be scripted to fail with a
status, to redirect, or to hang (accepted, never answered, until the server stops).

    with CallbackServer() as server:
        server.fail_next(2)                 # 500, 500, then 200s
        ... point a worker at server.url ...
        first, second, third = await server.wait_for(3)
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HANG = -1  #: a scripted "status" meaning: never answer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  #: names in lower case; a repeated header keeps its last value
    body: bytes
    at: datetime  #: UTC wall-clock time the whole request had arrived


class CallbackServer:
    """Records requests on ``http://127.0.0.1:<port>/...``; see the module docstring."""

    def __init__(self, path: str = "/callbacks") -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._lock = threading.Condition()
        self._received: list[Received] = []
        #: What the next requests get: (status, headers); status HANG never answers.
        self._script: deque[tuple[int, dict[str, str]]] = deque()
        self.default_status = 200
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    # -- scripting ------------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` requests (after any already scripted) with ``status``."""
        with self._lock:
            self._script.extend([(status, {})] * count)

    def hang_next(self, count: int = 1) -> None:
        """Accept the next ``count`` requests and never answer them (until :meth:`stop`)."""
        self.fail_next(count, HANG)

    def redirect_next(self, location: str, status: int = 307) -> None:
        """Answer the next request with a redirect to ``location``."""
        with self._lock:
            self._script.append((status, {"location": location}))

    # -- what arrived ---------------------------------------------------------------------
    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def wait_for_sync(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until ``count`` requests have arrived; TimeoutError if they don't in time."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(f"{len(self._received)} of {count} callbacks in {timeout} s")
            return list(self._received)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """:meth:`wait_for_sync` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for_sync, count, timeout)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        # Listening before the thread starts: connections queue in the kernel, so the
        # server is usable the moment start() returns, with no wait for uvicorn.
        self._sock.listen(64)
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=_METHODS)])
        config = uvicorn.Config(
            app,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="callback-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Release hung requests, shut down, and wait for the thread."""
        if self._server is None or self._thread is None:
            self._sock.close()
            return
        with self._lock:
            loop, release = self._loop, self._release
        if loop is not None and release is not None:
            loop.call_soon_threadsafe(release.set)
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> CallbackServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._server is not None
        asyncio.run(self._serve(self._server))

    async def _serve(self, server: uvicorn.Server) -> None:
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._release = asyncio.Event()
        await server.serve(sockets=[self._sock])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        arrived = Received(
            method=request.method,
            path=request.url.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            at=datetime.now(UTC),
        )
        with self._lock:
            self._received.append(arrived)
            status, headers = self._script.popleft() if self._script else (self.default_status, {})
            release = self._release
            self._lock.notify_all()
        if status == HANG:
            assert release is not None
            await release.wait()
            status = 503
        return Response(status_code=status, headers=headers)


_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
