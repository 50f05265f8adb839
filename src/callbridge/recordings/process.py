"""Recordings written by a separate process, so the writers never take the GIL from the relay.

Why a process: a `Writer` on a thread of the server costs the relay far more than its own
work. Each of the relay loop's syscalls hands the GIL over, and the writer's numpy and file
work then holds it. Measured with ``bench/relay.py --nice`` on a 2-core machine, 400 recorded
two-party calls: writers on threads, the relay at 98% CPU with a p99 of 162 ms; writers in
this process, 69% and 1.7 ms (medians), the writer taking 23% of the other core.

The parent side, `ProcessWriters`, lives on the event loop. On the first `open` it starts
`main` in a new Python process (`_CHILD`) with one end of an AF_UNIX socket pair. Each
message either way is a 4-byte big-endian length and a pickle (the child is our own code,
started by us):

- parent to child: ``("open", id, path, start, jitter)``, ``("post", id, horizon,
  segments)`` (a `Batch`, its `Packed` segments as plain tuples: builtins pickle fastest),
  ``("finish", id, end)``;
- child to parent: ``("done", id, FinishedRecording | None, error | None)``.

The rules that keep calls and recordings safe:

- **The loop never blocks on the child.** Sends are non-blocking; what the socket does not
  take waits in a queue drained when it is writable. Past ``backlog_limit`` bytes queued (a
  child stalled on its disk), batches are dropped, counted in the recording's ``dropped``
  and logged: the recording gets silence there rather than the server running out of memory.
  Opens and finishes are never dropped.
- **A child that dies costs the recordings, never the calls.** The reader sees EOF; every
  recording it held fails with RecordingError, its file is repaired (the audio written so far
  kept) when its recorder closes, and the next recording starts a new child.
- **A finish is bounded.** A child that does not answer within ``finish_timeout`` (30 s)
  fails that recording, so a call always ends and its callback is always sent.
- **A parent that dies loses at most the last second.** The child sees EOF, finishes every
  recording it holds up to the last flush, and exits. Only that ends it: it runs in a
  process group of its own (a Ctrl-C in the terminal reaches the server alone) and ignores
  SIGINT and SIGTERM (systemd sends SIGTERM to every process of the service at once), so the
  server finishes its calls and recordings before the writer goes.
- **The writer never takes a core from the relay.** It runs at idle priority (SCHED_IDLE,
  see `_lowest_priority`) and stays in the server's session, and so in its scheduling
  autogroup, where that priority counts. Idle priority may starve it on a busy machine: when
  it falls behind (its socket full, a finish slow), it runs at a low ordinary priority until
  it has caught up. Leaving SCHED_IDLE takes CAP_SYS_NICE or RLIMIT_NICE; without them a
  warning says so, and a writer that falls too far behind drops batches (counted).
"""

import asyncio
import contextlib
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from callbridge.recordings.recorder import (
    Batch,
    FinishedRecording,
    Packed,
    RecordingError,
    Writer,
)
from callbridge.recordings.repair import repair_wav

__all__ = ["ProcessWriters", "main"]

log = logging.getLogger(__name__)

_LENGTH: Final = struct.Struct("!I")
_RECV_SIZE: Final = 1 << 18
#: Where SCHED_IDLE is refused, or while the writer catches up: how much lower than the
#: server it runs.
_NICE: Final = 10
#: Seconds a finish may wait before the writer is deemed behind.
_PATIENCE: Final = 1.0
#: The child's program: SIGINT and SIGTERM ignored before the imports (numpy takes a while).
_CHILD: Final = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                 "from callbridge.recordings.process import main; main()")
#: How long `ProcessWriters.aclose` lets the child finish before killing it.
_EXIT_TIMEOUT: Final = 10.0


def _frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def _why(exc: OSError) -> str:
    """What a failed send or receive on the child's socket says about the child."""
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "the recordings writer process exited"
    return f"the recordings writer's socket failed: {exc}"


class _Frames:
    """Splits a byte stream back into the messages `_frame` made."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        self._buffer += data
        buffer, offset, messages = self._buffer, 0, []
        while len(buffer) - offset >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, offset)
            end = offset + _LENGTH.size + size
            if len(buffer) < end:
                break
            messages.append(pickle.loads(memoryview(buffer)[offset + _LENGTH.size:end]))
            offset = end
        del buffer[:offset]
        return messages


class ProcessWriters:
    """`Writers` in a child process (see the module's notes). Use it from one event loop;
    `aclose` it when the server stops, after every recording has closed."""

    def __init__(self, *, backlog_limit: int = 64 << 20, finish_timeout: float = 30.0,
                 send_buffer: int = 4 << 20) -> None:
        self.backlog_limit = backlog_limit
        #: The socket's send buffer (the kernel caps it): 4 MiB holds a third of a second
        #: of 400 calls' batches.
        self.send_buffer = send_buffer
        #: A finish waits this long: an idle-priority writer on a saturated machine is slow,
        #: not lost, and the call's callback waits for its complete recording.
        self.finish_timeout = finish_timeout
        self._child: _Child | None = None
        self._next_id = 0
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running child's process id, if one runs."""
        child = self._child
        return None if child is None or child.dead else child.pid

    @property
    def backlog(self) -> int:
        """Bytes waiting for the child's socket to take them."""
        child = self._child
        return 0 if child is None else child.queued

    def open(self, path: Path, start: float, jitter: int) -> "_ProcessLink":
        """A link to the running child, started (again) if it is not running. Never raises:
        a child that cannot start fails this recording, not the call."""
        self._next_id += 1
        message = ("open", self._next_id, str(path), start, jitter)
        for _ in range(2):  # a child that died unnoticed is replaced once
            child = self._running()
            if child.send(message):
                break
        return _ProcessLink(child, self._next_id, path, self.finish_timeout)

    def _running(self) -> "_Child":
        child = self._child
        if child is not None and not child.dead:
            child.check()  # an exit whose EOF the loop has not read yet
        if self._closed:
            return _Child.failed("the recordings writer was closed (the server is stopping)")
        if child is None or child.dead:
            child = self._child = _Child.start(asyncio.get_running_loop(), self.backlog_limit,
                                               self.send_buffer)
        return child

    async def aclose(self) -> None:
        """Let the child finish what it holds and exit; kill it if it has not within 10 s.
        Recordings opened later fail."""
        self._closed = True
        if self._child is not None:
            await self._child.aclose()

    def close(self) -> None:
        """`aclose`, blocking the caller: once no loop runs (or on its thread, holding it)."""
        self._closed = True
        if self._child is not None:
            self._child.close_blocking()


class _Child:
    """One writer process and the parent's end of its socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None, backlog_limit: int) -> None:
        self._loop = loop
        #: Bytes queued past which batches are dropped.
        self.limit = backlog_limit
        self.process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._frames = _Frames()
        self._out: deque[memoryview] = deque()
        self.queued = 0
        self._drained: asyncio.Future[None] | None = None
        #: Replies by recording id, and the finishes waiting for theirs.
        self._replies: dict[int, tuple[Any, ...]] = {}
        self._waiting: dict[int, asyncio.Future[tuple[Any, ...]]] = {}
        #: Recordings whose finish timed out: a late reply is dropped.
        self._abandoned: set[int] = set()
        #: Why the child is gone; None while it runs.
        self.error: str | None = None
        self._closing = False
        #: At idle priority; raised (`_catch_up`) while behind, where that is allowed.
        self._idle = False
        self._raised = False
        self._raise_refused = False
        self._catch_up_timer: asyncio.TimerHandle | None = None

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop, backlog_limit: int,
              send_buffer: int) -> "_Child":
        """A running child; or, if it cannot be started, one that failed saying why."""
        child = cls(loop, backlog_limit)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = dict(os.environ)
            source = str(Path(__file__).resolve().parents[2])  # the directory holding callbridge
            # After whatever is there (never ahead of the standard library), for a checkout
            # that is not installed.
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), source]))
            child.process = subprocess.Popen(
                # -P: no current directory on its path to shadow a module
                [sys.executable, "-P", "-c", _CHILD, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
                process_group=0)  # a Ctrl-C in the terminal is not for it
        except (OSError, subprocess.SubprocessError) as exc:
            ours.close()
            log.error("cannot start the recordings writer: %s", exc)
            child.error = f"cannot start the recordings writer: {exc}"
            return child
        finally:
            theirs.close()
        child._idle = _lowest_priority(child.process.pid)  # its start-up (imports) included
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        ours.setblocking(False)
        child._sock = ours
        loop.add_reader(ours, child._readable)
        return child

    @classmethod
    def failed(cls, reason: str) -> "_Child":
        child = cls(None, 0)
        child.error = reason
        return child

    @property
    def dead(self) -> bool:
        return self.error is not None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def check(self) -> None:
        """Notice now a child that has exited."""
        if self.process is not None and self.process.poll() is not None:
            self._lost("the recordings writer process exited")

    def send(self, message: tuple[Any, ...], *, droppable: bool = False) -> bool:
        """Queue ``message``; False if it was not sent (child gone, or a droppable message
        past the backlog limit)."""
        if self.dead or (droppable and self.queued > self.limit):
            return False
        assert self._sock is not None
        frame = _frame(message)
        if self._out:
            pending = memoryview(frame)
        else:
            try:
                sent = self._sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._lost(_why(exc))
                return False
            if sent == len(frame):
                return True
            if self._loop is not None and not self._loop.is_closed():
                self._loop.add_writer(self._sock, self._writable)
            pending = memoryview(frame)[sent:]
            self._catch_up()  # the socket's buffer is full: the writer is behind
        self._out.append(pending)
        self.queued += len(pending)
        return True

    async def request(self, rid: int, message: tuple[Any, ...],
                      timeout: float) -> tuple[Any, ...] | None:
        """Send ``message`` and wait for recording ``rid``'s reply; None if none came within
        ``timeout``. Raises RecordingError if the child dies first."""
        assert self._loop is not None
        waiter: asyncio.Future[tuple[Any, ...]] = self._loop.create_future()
        self._waiting[rid] = waiter
        self.send(message)
        self._deliver()
        if not waiter.done() and self._catch_up_timer is None:
            self._catch_up_timer = self._loop.call_later(_PATIENCE, self._catch_up)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            if waiter.done() and waiter.exception() is None:  # came as the time ran out
                return waiter.result()
            self._abandoned.add(rid)
            return None
        finally:
            self._waiting.pop(rid, None)
            self._caught_up()

    def request_blocking(self, rid: int, message: tuple[Any, ...],
                         timeout: float) -> tuple[Any, ...] | None:
        """`request`, blocking the caller: on the loop's thread while the loop is held, or
        once no loop runs. A request for ``rid`` already in flight is waited for, not sent
        again."""
        waiter = self._waiting.get(rid)
        if waiter is None:
            self.send(message)
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:  # any fd number, unlike select()
            while True:
                if waiter is not None and waiter.done():
                    if waiter.exception() is not None:
                        raise RecordingError(self.error or "the recordings writer failed")
                    return waiter.result()
                if waiter is None and rid in self._replies:
                    return self._replies.pop(rid)
                if self.dead:
                    raise RecordingError(self.error)
                remaining = deadline - time.monotonic()
                if timeout - remaining > _PATIENCE:  # waited a while: let it catch up
                    self._catch_up()
                if remaining <= 0:
                    if waiter is None:  # else the reply is the waiting request's
                        self._abandoned.add(rid)
                    return None
                assert self._sock is not None
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
                selector.register(self._sock, events)
                ready = selector.select(remaining)
                selector.unregister(self._sock)
                for _, mask in ready:
                    if mask & selectors.EVENT_WRITE:
                        self._writable()
                    if mask & selectors.EVENT_READ and not self.dead:
                        self._readable()

    def _writable(self) -> None:
        assert self._sock is not None
        while self._out:
            head = self._out[0]
            try:
                sent = self._sock.send(head)
            except BlockingIOError:
                return
            except OSError as exc:
                self._lost(_why(exc))
                return
            self.queued -= sent
            if sent < len(head):
                self._out[0] = head[sent:]
                return
            self._out.popleft()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_writer(self._sock)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._caught_up()

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(_why(exc))
            return
        if not data:
            self._lost("the recordings writer process exited")
            return
        for message in self._frames.feed(data):
            rid = message[1]
            if rid in self._abandoned:
                self._abandoned.discard(rid)
            else:
                self._replies[rid] = message
        self._deliver()

    def _catch_up(self) -> None:
        """The writer is behind (its socket full, or a finish slow to come): at idle priority
        on a busy machine it may never catch up, so it runs at low priority until it has."""
        self._catch_up_timer = None
        if (not self._idle or self._raised or self._raise_refused or self.dead
                or self.process is None):
            return
        try:
            os.sched_setscheduler(self.process.pid, os.SCHED_OTHER, os.sched_param(0))
        except OSError as exc:
            self._raise_refused = True
            log.warning("the recordings writer is behind and may not leave idle priority (%s): "
                        "give callbridge CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE) "
                        "or an RLIMIT_NICE of 20, or it may drop audio on a busy machine", exc)
            return
        _low_priority(self.process.pid)
        self._raised = True
        log.info("the recordings writer is behind: at low priority until it catches up")

    def _caught_up(self) -> None:
        if self._catch_up_timer is not None and not self._waiting:
            self._catch_up_timer.cancel()
            self._catch_up_timer = None
        if (self._raised and not self._out and not self._waiting and not self.dead
                and self.process is not None):
            self._raised = False
            _lowest_priority(self.process.pid)

    def _deliver(self) -> None:
        """Hand replies to their waiters, which stay in ``_waiting`` until their `request`
        returns: a `request_blocking` for the same recording meanwhile takes the same reply."""
        for rid, waiter in self._waiting.items():
            if rid in self._replies and not waiter.done():
                waiter.set_result(self._replies.pop(rid))

    def _lost(self, reason: str) -> None:
        """The child is gone (or its socket broke): fail everything waiting on it."""
        if self.dead:
            return
        if self._closing:  # its orderly exit
            self._detach("the recordings writer was closed")
            return
        assert self.process is not None
        code = self.process.poll()
        if code is not None:  # whatever the socket said, this is why
            reason = f"the recordings writer process exited (exit status {code})"
        log.error("%s: its open recordings fail and keep the audio written so far", reason)
        self._detach(reason)
        if code is None:  # exiting right now: reap it
            if self._loop is not None and not self._loop.is_closed():
                self._loop.run_in_executor(None, self.process.wait)
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(1.0)

    def _detach(self, reason: str) -> None:
        self.error = reason
        if self._catch_up_timer is not None:
            self._catch_up_timer.cancel()
            self._catch_up_timer = None
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock)
                self._loop.remove_writer(self._sock)
            self._sock.close()
        self._out.clear()
        self.queued = 0
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(RecordingError(reason))
        self._waiting.clear()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def aclose(self) -> None:
        self._closing = True
        if self.process is None:
            return
        if not self.dead:
            assert self._loop is not None and self._sock is not None
            if self._out:
                self._drained = self._loop.create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained, _EXIT_TIMEOUT)
            if not self.dead:
                self._loop.remove_writer(self._sock)  # what is still queued stays unsent
                self._out.clear()
                self.queued = 0
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_WR)  # EOF: finish up and exit
        try:
            await asyncio.to_thread(self.process.wait, _EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("the recordings writer did not exit within %.0f s: killed", _EXIT_TIMEOUT)
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        if not self.dead:
            self._detach("the recordings writer was closed")

    def close_blocking(self) -> None:
        self._closing = True
        if self.process is None:
            return
        if not self.dead:
            assert self._sock is not None
            deadline = time.monotonic() + _EXIT_TIMEOUT
            with selectors.DefaultSelector() as selector:
                selector.register(self._sock, selectors.EVENT_WRITE)
                while self._out and not self.dead and time.monotonic() < deadline:
                    selector.select(deadline - time.monotonic())
                    self._writable()
            if not self.dead:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_WR)
        try:
            self.process.wait(_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("the recordings writer did not exit within %.0f s: killed", _EXIT_TIMEOUT)
            self.process.kill()
            self.process.wait()
        if not self.dead:
            self._detach("the recordings writer was closed")


class _ProcessLink:
    """One recording's `WriterLink` to a `_Child`."""

    def __init__(self, child: _Child, rid: int, path: Path, timeout: float) -> None:
        self.id = rid
        self._child = child
        self._path = path
        self._timeout = timeout
        #: Packets in batches dropped past the backlog limit.
        self.dropped = 0
        self._outcome: FinishedRecording | RecordingError | None = None
        #: Whether a dead child left a file (repaired) behind.
        self._kept = False

    def post(self, batch: Batch) -> None:
        child = self._child
        message = ("post", self.id, batch.horizon, [tuple(s) for s in batch.segments])
        if child.send(message, droppable=True) or child.dead:
            return  # sent, or lost with the child: finish reports it
        if not self.dropped:
            log.warning("recording %s: the writer process is behind by over %d MiB; dropping "
                        "audio (silence in the file) until it catches up", self._path.name,
                        child.limit >> 20)
        self.dropped += sum(segment.packet_count for segment in batch.segments)

    async def finish(self, end: int) -> FinishedRecording:
        if self._outcome is None:
            reply: tuple[Any, ...] | None = None
            if not self._child.dead:
                message = ("finish", self.id, end)
                with contextlib.suppress(RecordingError):  # the child died while finishing
                    reply = await self._child.request(self.id, message, self._timeout)
            if reply is None and self._child.dead:
                await asyncio.to_thread(self._salvage)
            self._settle(reply)
        return self._given()

    def finish_blocking(self, end: int) -> FinishedRecording:
        if self._outcome is None:
            reply: tuple[Any, ...] | None = None
            if not self._child.dead:
                message = ("finish", self.id, end)
                with contextlib.suppress(RecordingError):
                    reply = self._child.request_blocking(self.id, message, self._timeout)
            if reply is None and self._child.dead:
                self._salvage()
            self._settle(reply)
        return self._given()

    def _settle(self, reply: tuple[Any, ...] | None) -> None:
        """What every finish of this recording returns or raises, from the child's reply
        (None: no reply, the child died or did not answer in time)."""
        path = self._path
        if reply is None and self._child.dead:
            kept = "; the audio written before is kept" if self._kept else ""
            self._outcome = RecordingError(f"recording {path}: {self._child.error}{kept}")
        elif reply is None:
            self._outcome = RecordingError(
                f"recording {path}: the writer process did not finish it within "
                f"{self._timeout:g} s")
        else:
            _, _, result, error = reply
            if error is not None:
                self._outcome = RecordingError(f"recording {path}: {error}")
                self._outcome.__cause__ = error
            else:
                self._outcome = replace(result, dropped=self.dropped)

    def _given(self) -> FinishedRecording:
        if isinstance(self._outcome, RecordingError):
            raise self._outcome
        assert self._outcome is not None
        return self._outcome

    def _salvage(self) -> None:
        """Mend the header of what the dead child left, keeping its audio."""
        with contextlib.suppress(Exception):
            repair_wav(self._path)
            self._kept = True


# -- the child --------------------------------------------------------------------------------


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError saying the same."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def serve(sock: socket.socket) -> None:
    """Write recordings as the parent's messages on ``sock`` say, until EOF; then finish every
    recording still open up to its last flush."""
    writers: dict[int, Writer] = {}
    horizons: dict[int, int] = {}
    frames = _Frames()
    while True:
        try:
            data = sock.recv(_RECV_SIZE)
        except OSError:
            data = b""
        if not data:
            break
        for message in frames.feed(data):
            kind, rid = message[0], message[1]
            if kind == "open":
                _, _, path, start, jitter = message
                writers[rid] = Writer(Path(path), start, jitter)
                horizons[rid] = 0
            elif kind == "post" and rid in writers:
                batch = Batch([Packed(*segment) for segment in message[3]], message[2])
                writer = writers[rid]
                writer.post(batch)
                writer.drain()
                if batch.horizon is not None:
                    horizons[rid] = max(horizons[rid], batch.horizon)
            elif kind == "finish":
                reply: tuple[Any, ...]
                if rid not in writers:  # finished already: say so rather than nothing
                    unknown = LookupError(f"recording {rid} is not open in the writer")
                    reply = ("done", rid, None, unknown)
                else:
                    writer = writers.pop(rid)
                    horizons.pop(rid)
                    try:
                        reply = ("done", rid, writer.finish(message[2]), None)
                    except RecordingError as exc:
                        reply = ("done", rid, None, _portable(exc.__cause__ or exc))
                with contextlib.suppress(OSError):
                    sock.sendall(_frame(reply))
    for rid, writer in writers.items():
        with contextlib.suppress(RecordingError):
            writer.finish(horizons[rid])


def _lowest_priority(pid: int) -> bool:
    """Writing can wait seconds; relaying cannot wait a millisecond. SCHED_IDLE: the writer
    runs on time no one else wants and is never woken onto a core to preempt the relay. At
    400 recorded calls on 2 cores (bench/relay.py) that took the relay's p99 from 2.4 ms to
    1.6 ms. True if set; else (not Linux, not allowed) the writer runs 10 nice levels down.
    """
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        return True
    except (AttributeError, OSError):
        _low_priority(pid)
        return False


def _low_priority(pid: int) -> None:
    """The ordinary policy, 10 nice levels below the server."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, min(os.getpriority(os.PRIO_PROCESS, 0) + _NICE, 19))


def main() -> None:
    """The writer process (`_CHILD` runs it, signals already ignored; the parent has set
    its priority): serve the socket whose descriptor is the first argument."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    with socket.socket(fileno=int(sys.argv[1])) as sock:
        serve(sock)


if __name__ == "__main__":
    main()
