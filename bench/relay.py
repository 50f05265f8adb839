"""RTP relay under load: CPU, added latency, loss and memory per call, next to a plain C
forwarder measured in the same run. Prints figures only.

    .venv/bin/python bench/relay.py [--calls 200,400,600] [--seconds 4] [--nice] [--png relay.png]

Each run bridges N two-party calls (2 relay sockets per call) and drives them from a separate
generator process, ``rtpgen.c`` (compiled here with ``cc -O2`` into a temporary folder; without
a C compiler, or with ``--python-generator``, a Python generator that needs a whole core near
600 calls, where it measures itself more than the relay). 50 packets/s each way per call, the
2N streams spread evenly over each 20 ms, 172-byte RTP packets stamped with their send time
(CLOCK_MONOTONIC, shared by the processes).
Every call count is measured three times under the same load:

- ``C``: ``rtpfwd.c``, a plain epoll + recvmmsg forwarder in C doing the relay's work class
  (source check, SSRC/sequence/timestamp rewrite, sendto), no recording. The yardstick.
- ``relay``: callbridge's real LegEndpoint + Bridge on this process's event loop.
- ``relay+rec``: the same with the real Recorder on every call (stereo WAVs written to a
  temporary folder by worker threads, flushed once a second).

Columns:

- CPU: user + system time over the measured window as a share of one core (the relay: this
  process, threads included; C: from /proc/PID/stat). ``xC`` is relay CPU / C CPU at that
  call count. The issue's aim: 400 recorded calls at <= 75 %.
- us/pkt: that CPU per packet forwarded. wake/s and tick/s: the relay's reactor passes
  (``media/reactor.py``): woken by the loop per arrival at light load, polling once per 1 ms
  tick under load (C: its epoll wake-ups, all woken).
- p50/p99/p99.9: generator -> forwarder -> generator for every packet sent in the window. It
  includes the generator's own send and receive path (see the C row for that floor); the
  relay's ticking adds up to 1 ms by design.
- loss: packets sent in the window that never came back (each had >= 100 ms to do so).
- RSS/call: resident growth of this process per call once calls run (low when an earlier run
  left memory to reuse); the Python heap per call (``tracemalloc``) is printed first, from a
  separate small run. The aim: <= 64 KB per call.
- gen: the generator's own CPU; near 100 % it is the bottleneck, not the forwarder.

Figures from a machine busy with other work are unreliable: the bench warns when the load
average is above 1.0. ``--nice`` (as root) runs it and its children at nice -19, in a session
of their own whose autogroup is also at -19 (where the kernel groups tasks by session, a nice
value alone only ranks tasks within their own session).
``--loop-reactor`` registers each relay socket with the event loop instead of one epoll set.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from callbridge.media import reactor
from callbridge.media.bridge import Bridge
from callbridge.media.endpoint import LegEndpoint, LegMedia
from callbridge.media.ports import PortAllocator
from callbridge.recordings.process import ProcessWriters
from callbridge.recordings.recorder import Recorder, ThreadWriters, Writers

HOST = "127.0.0.1"
PERIOD = 0.02
#: Generator sockets; relay legs are spread over them (the relay checks each leg's source).
GEN_SOCKETS = 16
#: The relay's ports: below Linux's ephemeral range (the C programs' sockets), wide enough that
#: ports other programs hold (the allocator skips them) leave plenty.
RTP_PORTS = (20000, 32766)
#: Seconds a helper process may take to answer a line before the run is abandoned.
ANSWER_TIMEOUT = 10.0
#: With --pin: the forwarder under test on one CPU, its load generator (and writer) on another.
FORWARDER_CPU, OTHER_CPU = 0, 1
_STAMP = struct.Struct("!QI")  # send time in ns, destination leg index
_HEADER = struct.Struct("!BBHII")
_BENCH = Path(__file__).resolve().parent


@dataclass
class Generated:
    """What the generator saw of one run's measured window; delays in ms."""

    window_sent: int
    window_received: int
    misrouted: int
    cpu: float  # the generator's own, share of a core over the window
    p50: float
    p99: float
    p999: float


@dataclass
class Sample:
    """A forwarder's counters at one instant: CPU seconds, reactor passes (None: not known)."""

    when: float
    cpu: float
    woken: int | None
    ticks: int | None
    #: CPU seconds of the recordings writer process, if one runs.
    writer_cpu: float | None = None


# -- load generators -------------------------------------------------------------------------


class Generator(Protocol):
    async def start(self, relay_ports: list[int]) -> list[int]:
        """Bind the generator's sockets; their ports (leg i's remote is port i % len)."""
        ...

    async def go(self) -> float:
        """Start sending; when the first period starts (time.monotonic seconds)."""
        ...

    async def result(self) -> Generated: ...

    @property
    def pid(self) -> int:
        """The generator's process."""
        ...


class CGenerator:
    """``rtpgen.c`` in a child process, talking one line at a time over its stdin/stdout."""

    def __init__(self, binary: Path, warmup: float, seconds: float) -> None:
        self._binary, self._warmup, self._seconds = binary, warmup, seconds
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, relay_ports: list[int]) -> list[int]:
        args = [str(self._warmup), str(self._seconds), str(GEN_SOCKETS), *map(str, relay_ports)]
        self._proc = await _spawn(self._binary, args)
        return [int(p) for p in (await _read_line(self._proc, "ports"))[1:]]

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def go(self) -> float:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(b"go\n")
        return int((await _read_line(self._proc, "start"))[1]) / 1e9

    async def result(self) -> Generated:
        assert self._proc is not None
        fields = await _read_line(self._proc, "result", self._warmup + self._seconds)
        values = dict(field.split("=") for field in fields[1:])
        await self._proc.wait()
        return Generated(
            window_sent=int(values["window_sent"]),
            window_received=int(values["window_received"]),
            misrouted=int(values["misrouted"]),
            cpu=int(values["cpu"]) / 1e9,
            # -1: no packet of the window came back
            **{q: int(values[q]) / 1e6 if values[q] != "-1" else np.nan
               for q in ("p50", "p99", "p999")},
        )


class PyGenerator:
    """The fallback: :func:`python_generator` in a spawned process, over a pipe."""

    def __init__(self, warmup: float, seconds: float) -> None:
        self._warmup, self._seconds = warmup, seconds
        self._conn: Connection | None = None
        self._process: Any = None

    async def start(self, relay_ports: list[int]) -> list[int]:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(
            target=python_generator, args=(child, relay_ports, self._warmup, self._seconds)
        )
        self._process.start()
        ports: list[int] = await _receive(self._conn)
        return ports

    @property
    def pid(self) -> int:
        pid: int = self._process.pid
        return pid

    async def go(self) -> float:
        assert self._conn is not None
        self._conn.send("go")
        start: float = await _receive(self._conn)
        return start

    async def result(self) -> Generated:
        assert self._conn is not None
        window_sent, misrouted, cpu, delays = await _receive(self._conn)
        self._process.join()
        ms = np.percentile(delays, [50, 99, 99.9]) / 1e6 if delays.size else [np.nan] * 3
        return Generated(window_sent, delays.size, misrouted, cpu, *map(float, ms))


def python_generator(conn: Connection, relay_ports: list[int], warmup: float,
                     seconds: float) -> None:
    """rtpgen.c's traffic from Python, at ~2x its CPU (65 % of a core at 400 calls)."""
    sockets = [_gen_socket() for _ in range(GEN_SOCKETS)]
    conn.send([s.getsockname()[1] for s in sockets])
    conn.recv()  # go
    start = time.monotonic() + 0.05
    conn.send(start)
    measure_from = int((start + warmup) * 1e9)
    measure_to = int((start + warmup + seconds) * 1e9)
    legs = len(relay_ports)
    offsets = [i * PERIOD / legs for i in range(legs)]
    packets = [bytearray(12 + 160) for _ in range(legs)]
    targets = [(HOST, port) for port in relay_ports]
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(sockets):
        selector.register(sock, selectors.EVENT_READ, index)
    delays: list[int] = []
    window_sent = misrouted = 0
    period = index = 0
    cpu = [0.0, 0.0]  # process time at the window's start and end
    end = start + warmup + seconds + 0.1
    while (now := time.monotonic()) < end:
        if not cpu[0] and now >= start + warmup:
            cpu[0] = time.process_time()
        if not cpu[1] and now >= start + warmup + seconds:
            cpu[1] = time.process_time()
        # Send every packet whose slot has come.
        while now >= start + period * PERIOD + offsets[index]:
            packet = packets[index]
            _HEADER.pack_into(packet, 0, 0x80, 0, period & 0xFFFF, (period * 160) & 0xFFFFFFFF,
                              0x10000 + index)
            stamp = time.monotonic_ns()
            _STAMP.pack_into(packet, 12, stamp, index)
            sockets[index % GEN_SOCKETS].sendto(packet, targets[index])
            window_sent += measure_from <= stamp < measure_to
            index += 1
            if index == legs:
                index, period = 0, period + 1
        wait = start + period * PERIOD + offsets[index] - time.monotonic()
        for key, _ in selector.select(max(wait, 0)):
            ready: socket.socket = key.fileobj  # type: ignore[assignment]
            for _ in range(64):
                try:
                    data = ready.recv(2048)
                except BlockingIOError:
                    break
                arrived = time.monotonic_ns()
                stamp, leg = _STAMP.unpack_from(data, 12)
                misrouted += (leg ^ 1) % GEN_SOCKETS != key.data
                if measure_from <= stamp < measure_to:
                    delays.append(arrived - stamp)
    cpu_share = (cpu[1] - cpu[0]) / seconds
    conn.send((window_sent, misrouted, cpu_share, np.array(delays, dtype=np.int64)))


def _gen_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return sock


# -- forwarders under test -------------------------------------------------------------------


class Forwarder(Protocol):
    ports: list[int]

    async def set_remotes(self, gen_ports: list[int]) -> None: ...

    async def sample(self) -> Sample: ...

    async def close(self) -> None: ...


class CForwarder:
    """``rtpfwd.c`` in a child process; its CPU read from /proc, its wake-ups by asking."""

    def __init__(self, proc: asyncio.subprocess.Process, ports: list[int]) -> None:
        self._proc, self.ports = proc, ports

    @classmethod
    async def open(cls, binary: Path, calls: int, limit: float) -> CForwarder:
        proc = await _spawn(binary, [str(2 * calls), str(limit)])
        return cls(proc, [int(p) for p in (await _read_line(proc, "ports"))[1:]])

    async def set_remotes(self, gen_ports: list[int]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"remotes {' '.join(map(str, gen_ports))}\n".encode())

    async def sample(self) -> Sample:
        assert self._proc.stdin is not None
        self._proc.stdin.write(b"stats\n")
        fields = dict(f.split("=") for f in (await _read_line(self._proc, "stats"))[1:])
        return Sample(time.monotonic(), _process_cpu(self._proc.pid), int(fields["wakeups"]), 0)

    async def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        await asyncio.wait_for(self._proc.wait(), ANSWER_TIMEOUT)


class PythonRelay:
    """callbridge's relay on this process's loop: N bridges, optionally recorded."""

    def __init__(self, calls: int, sink: bool, loop_reactor: bool, thread_writers: bool) -> None:
        self._loop = asyncio.get_running_loop()
        if loop_reactor:
            reactor._reactors[self._loop] = reactor.LoopReactor(self._loop)
        self._calls, self._sink = calls, sink
        self._allocator = PortAllocator(HOST, *RTP_PORTS)
        self._folder = Path(tempfile.mkdtemp(prefix="callbridge-bench-"))
        self._executor = ThreadPoolExecutor(2)
        self._writers: ThreadWriters | ProcessWriters = (
            ThreadWriters(self._executor) if thread_writers else ProcessWriters())
        self.legs: list[LegEndpoint] = []
        self.ports: list[int] = []
        self._bridges: list[Bridge] = []
        self._recorders: list[Recorder] = []

    async def open(self) -> None:
        pairs = await open_calls(self._allocator, self._calls)
        self.legs = [leg for pair in pairs for leg in pair]
        self.ports = [leg.local_address[1] for leg in self.legs]
        if self._sink:
            self._recorders = recorders(self._calls, self._folder, self._writers, self._loop)
        sinks = self._recorders or [None] * self._calls
        self._bridges = [Bridge(a, b, rec) for (a, b), rec in zip(pairs, sinks, strict=True)]

    async def set_remotes(self, gen_ports: list[int]) -> None:
        for i, leg in enumerate(self.legs):
            leg.set_media(LegMedia(HOST, gen_ports[i % len(gen_ports)], 0, "PCMU"))

    @property
    def writer_pid(self) -> int | None:
        """The recordings writer process, if one runs."""
        return self._writers.pid if isinstance(self._writers, ProcessWriters) else None

    async def sample(self) -> Sample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        pid = self.writer_pid
        writer_cpu = None if pid is None else _process_cpu(pid)
        passes = reactor.reactor_for(self._loop)
        if isinstance(passes, reactor.EpollReactor):
            return Sample(time.monotonic(), cpu, passes.woken, passes.ticks, writer_cpu)
        return Sample(time.monotonic(), cpu, None, None, writer_cpu)

    async def close(self) -> None:
        for recorder in self._recorders:
            await recorder.close()
        if isinstance(self._writers, ProcessWriters):
            await self._writers.aclose()
        self._executor.shutdown()
        shutil.rmtree(self._folder, ignore_errors=True)
        for bridge in self._bridges:
            bridge.close()
        for leg in self.legs:
            leg.close()


def recorders(calls: int, folder: Path, writers: Writers,
              loop: asyncio.AbstractEventLoop) -> list[Recorder]:
    """The real recorder, one per call, writing stereo WAVs as calls do in production.

    Calls start at random moments in production, so their once-a-second flushes are spread
    over the second; here they are staggered evenly, not all fired in one loop turn.
    """
    out = []
    for index in range(calls):
        call_id = str(uuid.uuid4())
        # The agent's leg (open_calls names it) on the left, the customer's on the right.
        recorder = Recorder(folder / f"crm_{call_id}.wav", start=loop.time(), writers=writers,
                            now=loop.time, left_legs={f"call-{index}/agent"})
        loop.call_later(index / calls, recorder.flush_every, loop)
        out.append(recorder)
    return out


async def open_calls(allocator: PortAllocator, calls: int) -> list[tuple[LegEndpoint, LegEndpoint]]:
    return [
        (await allocator.open(f"call-{call}/agent"), await allocator.open(f"call-{call}/customer"))
        for call in range(calls)
    ]


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Result:
    calls: int
    kind: str  # "C", "relay", "relay+rec"
    cpu: float
    gen_cpu: float
    #: The recordings writer process's share of a core (process writers only).
    writer_cpu: float | None
    woken: float | None
    ticks: float | None
    p50: float
    p99: float
    p999: float
    loss: float
    misrouted: int
    rss_per_call: float | None
    packets_per_second: float


async def run_load(calls: int, kind: str, args: argparse.Namespace,
                   binaries: dict[str, Path]) -> Result:
    rss_before = _rss()
    forwarder: Forwarder
    if kind == "C":
        limit = args.warmup + args.seconds + 2 * ANSWER_TIMEOUT
        forwarder = await CForwarder.open(binaries["rtpfwd"], calls, limit)
    else:
        relay = PythonRelay(calls, kind == "relay+rec", args.loop_reactor, args.thread_writers)
        await relay.open()
        forwarder = relay
    generator: Generator
    if "rtpgen" in binaries:
        generator = CGenerator(binaries["rtpgen"], args.warmup, args.seconds)
    else:
        generator = PyGenerator(args.warmup, args.seconds)
    try:
        await forwarder.set_remotes(await generator.start(forwarder.ports))
        if args.pin:  # the forwarder has core 0 (inherited); the rest share core 1
            helpers = [generator.pid]
            if isinstance(forwarder, PythonRelay) and forwarder.writer_pid is not None:
                helpers.append(forwarder.writer_pid)
            for pid in helpers:
                os.sched_setaffinity(pid, {OTHER_CPU})
        start = await generator.go()
        await asyncio.sleep(max(start + args.warmup - time.monotonic(), 0))
        before = await forwarder.sample()
        await asyncio.sleep(args.seconds)
        after = await forwarder.sample()
        rss_after = _rss()
        got = await generator.result()
    finally:
        await forwarder.close()

    elapsed = after.when - before.when  # longer than asked if this loop was held up

    def rate(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else (b - a) / elapsed

    return Result(
        calls=calls,
        kind=kind,
        cpu=(after.cpu - before.cpu) / elapsed,
        gen_cpu=got.cpu,
        writer_cpu=rate(before.writer_cpu, after.writer_cpu),
        woken=rate(before.woken, after.woken),
        ticks=rate(before.ticks, after.ticks),
        p50=got.p50,
        p99=got.p99,
        p999=got.p999,
        loss=1 - got.window_received / got.window_sent if got.window_sent else float("nan"),
        misrouted=got.misrouted,
        rss_per_call=None if kind == "C" else (rss_after - rss_before) / calls,
        packets_per_second=got.window_received / args.seconds,
    )


async def heap_per_call(calls: int = 100) -> float:
    """Python heap allocated per bridged call (two endpoints, their streams, the bridge)."""
    allocator = PortAllocator(HOST, *RTP_PORTS)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    pairs = await open_calls(allocator, calls)
    bridges = [Bridge(a, b) for a, b in pairs]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    for bridge in bridges:
        bridge.close()
    for a, b in pairs:
        a.close()
        b.close()
    return size / calls


# -- helpers ---------------------------------------------------------------------------------


def build(folder: Path) -> dict[str, Path]:
    """rtpgen and rtpfwd compiled into ``folder``; empty (with a warning) if that fails."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("WARNING: no C compiler: Python generator (a whole core near 600 calls), no C rows")
        return {}
    binaries = {}
    for name in ("rtpgen", "rtpfwd"):
        out = folder / name
        done = subprocess.run([cc, "-O2", "-o", str(out), str(_BENCH / f"{name}.c")],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            print(f"WARNING: {name}.c did not build ({cc}), going without it")
            print(done.stderr.strip() or "(no message)")
            continue
        binaries[name] = out
    if "rtpgen" not in binaries:
        print("WARNING: Python generator: near 600 calls its own limits show in the figures")
    return binaries


async def _spawn(binary: Path, args: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(binary), *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )


async def _read_line(proc: asyncio.subprocess.Process, word: str,
                     extra_wait: float = 0.0) -> list[str]:
    """The child's next line, which must start with ``word``, split into fields."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), ANSWER_TIMEOUT + extra_wait)
    fields = line.decode().split()
    if not fields or fields[0] != word:
        raise RuntimeError(f"expected {word!r} from pid {proc.pid}, got {line!r}")
    return fields


async def _receive(conn: Connection) -> Any:
    """The next message from the Python generator, without blocking the relay's loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, ANSWER_TIMEOUT + 60)
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


def _process_cpu(pid: int) -> float:
    """User + system seconds of process ``pid`` (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def renice() -> None:
    """This process at nice -19; the threads and children it starts later inherit it. With
    autogroup scheduling a nice value only ranks tasks within their session's group, so the
    group (this bench alone, see :func:`run`) is set to -19 as well."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -19)
        if _autogroup():
            Path("/proc/self/autogroup").write_text("-19")
        print("running at nice -19" + (" (and its autogroup)" if _autogroup() else ""))
    except PermissionError:
        print("WARNING: --nice needs root (or CAP_SYS_NICE): running at the usual priority")


def _autogroup() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def in_own_session(argv: list[str]) -> int:
    """Run this bench again as the leader of a new session, so that its autogroup holds
    nothing but the bench and its children; the exit status of that run."""
    child = subprocess.Popen([sys.executable, __file__, *argv], start_new_session=True)
    try:
        return child.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches only this process group, not the new session
        child.terminate()
        return child.wait()


# -- report ----------------------------------------------------------------------------------


HEADER = (
    f"{'calls':>5} {'forwarder':>9} {'pkt/s':>7} {'CPU':>5} {'xC':>5} {'us/pkt':>6} "
    f"{'wake/s':>7} {'tick/s':>6} {'p50 ms':>6} {'p99 ms':>6} {'p99.9ms':>7} {'loss':>6} "
    f"{'RSS/call':>8} {'gen':>5} {'writer':>6}"
)


def row(r: Result, c_cpu: float | None) -> str:
    def opt(value: float | None, spec: str, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"

    ratio = r.cpu / c_cpu if c_cpu and r.kind != "C" else None
    us = r.cpu * 1e6 / r.packets_per_second if r.packets_per_second else None
    rss = None if r.rss_per_call is None else r.rss_per_call / 1024
    return (
        f"{r.calls:>5} {r.kind:>9} {r.packets_per_second:>7,.0f} {r.cpu:>5.0%} "
        f"{opt(ratio, '.2f', 5)} {opt(us, '.1f', 6)} {opt(r.woken, ',.0f', 7)} "
        f"{opt(r.ticks, ',.0f', 6)} {r.p50:>6.2f} {r.p99:>6.2f} {r.p999:>7.2f} {r.loss:>6.2%} "
        f"{'-' if rss is None else f'{rss:.1f}KB':>8} {r.gen_cpu:>5.0%} "
        f"{opt(r.writer_cpu, '.0%', 6)}"
        + (f"  ({r.misrouted} misrouted!)" if r.misrouted else "")
    )


def plot(results: list[Result], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, (cpu_ax, lat_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, label in (("C", "C forwarder"), ("relay", "relay"),
                        ("relay+rec", "relay + recording")):
        rows = [r for r in results if r.kind == kind]
        if not rows:
            continue
        calls = [r.calls for r in rows]
        cpu_ax.plot(calls, [100 * r.cpu for r in rows], marker="o", label=label)
        lat_ax.plot(calls, [r.p99 for r in rows], marker="o", label=f"p99, {label}")
    cpu_ax.axhline(75, color="grey", linestyle="--", label="75 % budget")
    cpu_ax.set(xlabel="two-party calls", ylabel="CPU, % of one core", title="CPU")
    lat_ax.set(xlabel="two-party calls", ylabel="ms", title="generator -> forwarder -> generator")
    cpu_ax.legend()
    lat_ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


async def main(args: argparse.Namespace, binaries: dict[str, Path]) -> None:
    print(f"python heap per bridged call: {await heap_per_call() / 1024:.1f} KB")
    kinds = [k for k in args.forwarders if k != "C" or "rtpfwd" in binaries]
    print(HEADER)
    results = []
    for calls in args.calls:
        c_cpu = None
        for kind in kinds:
            runs = []
            for _ in range(args.repeat):
                runs.append(await run_load(calls, kind, args, binaries))
                print(row(runs[-1], c_cpu if kind != "C" else None), flush=True)
            if args.repeat > 1:
                runs.sort(key=lambda r: r.p99)
                print(f"{'':>5} median of {args.repeat}: p99 {runs[len(runs) // 2].p99:.2f} ms, "
                      f"CPU {statistics.median(r.cpu for r in runs):.0%}", flush=True)
            results.append(runs[len(runs) // 2])  # the run with the median p99
            c_cpu = results[-1].cpu if kind == "C" else c_cpu
    if args.png:
        plot(results, args.png)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", default="200,400,600", type=lambda s: [int(n) for n in s.split(",")]
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per run")
    parser.add_argument(
        "--warmup", type=float, default=2.5,
        help="seconds before the measured window: recorders open their files on their second "
             "flush, which must fall before it")
    parser.add_argument("--png", help="write a plot here (needs matplotlib)")
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="runs per row; with more than one, also their medians (a 2-core VM's figures "
             "swing from run to run)")
    parser.add_argument(
        "--forwarders", default="C,relay,relay+rec", type=lambda s: s.split(","),
        help="which to measure at each call count",
    )
    parser.add_argument("--nice", action="store_true", help="run at nice -19 (needs root)")
    parser.add_argument(
        "--python-generator", action="store_true", help="the Python load generator, not rtpgen.c"
    )
    parser.add_argument(
        "--pin", action="store_true",
        help="forwarder on CPU 0, load generator and recordings writer on CPU 1, as on a "
             "server whose load comes from elsewhere",
    )
    parser.add_argument(
        "--thread-writers", action="store_true",
        help="recordings written on threads of the relay's process, not in a writer process",
    )
    parser.add_argument(
        "--loop-reactor", action="store_true", help="each socket on the loop, not one epoll set"
    )
    return parser.parse_args(argv)


def run(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.nice and _autogroup() and os.getsid(0) != os.getpid():
        sys.exit(in_own_session(argv))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} cores")
    if load[0] > 1.0:
        print("WARNING: load average above 1.0: other work shares the cores, figures unreliable")
    if args.nice:
        renice()
    if args.pin:
        os.sched_setaffinity(0, {FORWARDER_CPU})  # what this process starts inherits it
        print(f"pinned: forwarder on CPU {FORWARDER_CPU}, the rest on CPU {OTHER_CPU}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-c-") as folder:
        binaries = build(Path(folder))
        if args.python_generator:
            binaries.pop("rtpgen", None)
        asyncio.run(main(args, binaries))


if __name__ == "__main__":
    run(sys.argv[1:])
