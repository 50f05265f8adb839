"""RTP relay under load: CPU, added latency and memory per call. Prints figures only.

    .venv/bin/python bench/relay.py [--calls 200,400,600] [--seconds 4] [--png relay.png]

Each run bridges N two-party calls (2 relay sockets per call) and drives them from a separate
generator process: 50 packets/s each way per call, the 2N streams spread evenly over each
20 ms period, every payload stamped with its send time (CLOCK_MONOTONIC, shared by the two
processes). The relay runs here, on this process's event loop, and is measured here:

- CPU: user + system time of this process (``resource.getrusage``) over the measured window,
  as a share of one core. The target is 400 calls at <= 75 %.
- latency: generator -> relay -> generator for every packet in the window, p50/p99/p99.9.
  It includes the generator's own send/receive delays, so it overstates what the relay adds.
- memory: resident set growth per call once the calls are set up and running, and the Python
  heap per call (``tracemalloc``) in a separate small run.

Each load runs without and then with the real recorder on every call (stereo WAVs written
to a temporary folder by a worker thread, flushed once a second). ``--loop-reactor`` registers each
socket with the event loop instead of one epoll set (see ``media/reactor.py``), to compare.
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
import struct
import sys
import tempfile
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from callbridge.media import reactor
from callbridge.media.bridge import Bridge
from callbridge.media.endpoint import LegEndpoint, LegMedia
from callbridge.media.ports import PortAllocator
from callbridge.recordings.recorder import Recorder

HOST = "127.0.0.1"
PERIOD = 0.02
#: Generator sockets; relay legs are spread over them (the relay checks each leg's source).
GEN_SOCKETS = 16
_STAMP = struct.Struct("!QI")  # send time in ns, destination leg index
_HEADER = struct.Struct("!BBHII")


# -- the generator process -------------------------------------------------------------------


def generator(conn: Connection, relay_ports: list[int], warmup: float, seconds: float) -> None:
    """Send to every relay port at 50 packets/s, receive what the relay forwards, and report
    the send-to-receive delay of every packet in the measured window."""
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
    for i, packet in enumerate(packets):
        _HEADER.pack_into(packet, 0, 0x80, 0, i, 0, 0x10000 + i)
    targets = [(HOST, port) for port in relay_ports]
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    latencies: list[int] = []
    sent = received = 0
    period = 0
    index = 0
    end = start + warmup + seconds + 0.1
    while True:
        now = time.monotonic()
        if now >= end:
            break
        # Send every packet whose slot has come.
        while now >= start + period * PERIOD + offsets[index]:
            packet = packets[index]
            seq = period & 0xFFFF
            _HEADER.pack_into(packet, 0, 0x80, 0, seq, (period * 160) & 0xFFFFFFFF, 0x10000 + index)
            _STAMP.pack_into(packet, 12, time.monotonic_ns(), index)
            sockets[index % GEN_SOCKETS].sendto(packet, targets[index])
            sent += 1
            index += 1
            if index == legs:
                index, period = 0, period + 1
        wait = start + period * PERIOD + offsets[index] - time.monotonic()
        for key, _ in selector.select(max(wait, 0)):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                arrived = time.monotonic_ns()
                stamp, _ = _STAMP.unpack_from(data, 12)
                received += 1
                if measure_from <= stamp < measure_to:
                    latencies.append(arrived - stamp)
    conn.send((sent, received, np.array(latencies, dtype=np.int64)))


def _gen_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return sock


# -- the relay side --------------------------------------------------------------------------


def recorders(calls: int, folder: Path, executor: ThreadPoolExecutor,
              loop: asyncio.AbstractEventLoop) -> list[Recorder]:
    """The real recorder, one per call, writing stereo WAVs as calls do in production."""
    out = []
    for _ in range(calls):
        call_id = str(uuid.uuid4())
        recorder = Recorder(folder / f"crm_{call_id}.wav", start=loop.time(), executor=executor,
                            now=loop.time, left_legs={f"{call_id}/agent"})
        recorder.flush_every(loop)
        out.append(recorder)
    return out


@dataclass
class Result:
    calls: int
    sink: bool
    cpu: float
    p50: float
    p99: float
    p999: float
    loss: float
    rss_per_call: float
    packets_per_second: float
    us_per_packet: float


async def open_calls(allocator: PortAllocator, calls: int) -> list[tuple[LegEndpoint, LegEndpoint]]:
    return [
        (await allocator.open(f"call-{call}/agent"), await allocator.open(f"call-{call}/customer"))
        for call in range(calls)
    ]


async def run_load(calls: int, sink: bool, args: argparse.Namespace) -> Result:
    loop = asyncio.get_running_loop()
    allocator = PortAllocator(HOST, 30000, 30000 + 4 * calls + 10)
    rss_before = _rss()
    if args.loop_reactor:
        reactor._reactors[loop] = reactor.LoopReactor(loop)
    pairs = await open_calls(allocator, calls)
    legs = [leg for pair in pairs for leg in pair]
    folder = Path(tempfile.mkdtemp(prefix="callbridge-bench-"))
    executor = ThreadPoolExecutor(2)
    sinks = recorders(calls, folder, executor, loop) if sink else [None] * calls
    bridges = [Bridge(a, b, recorder) for (a, b), recorder in zip(pairs, sinks, strict=True)]

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    ports = [leg.local_address[1] for leg in legs]
    process = ctx.Process(target=generator, args=(child, ports, args.warmup, args.seconds))
    process.start()
    gen_ports = await _receive(parent)
    for i, leg in enumerate(legs):
        leg.set_media(LegMedia(HOST, gen_ports[i % GEN_SOCKETS], 0, "PCMU"))
    parent.send("go")
    start: float = await _receive(parent)
    window_start = start + args.warmup
    await asyncio.sleep(max(window_start - loop.time(), 0))
    cpu_before, relayed_before = _cpu(), sum(leg.tx.sent for leg in legs)
    await asyncio.sleep(args.seconds)
    cpu = (_cpu() - cpu_before) / args.seconds
    relayed = (sum(leg.tx.sent for leg in legs) - relayed_before) / args.seconds
    rss_after = _rss()
    sent, received, latencies = await _receive(parent)
    process.join()
    for recorder in sinks:
        if recorder is not None:
            await recorder.close()
    executor.shutdown()
    shutil.rmtree(folder, ignore_errors=True)
    for bridge in bridges:
        bridge.close()
    for leg in legs:
        leg.close()
    ms = np.percentile(latencies, [50, 99, 99.9]) / 1e6 if latencies.size else [np.nan] * 3
    return Result(
        calls=calls,
        sink=sink,
        cpu=cpu,
        p50=float(ms[0]),
        p99=float(ms[1]),
        p999=float(ms[2]),
        loss=1 - received / sent if sent else 0.0,
        rss_per_call=(rss_after - rss_before) / calls,
        packets_per_second=sent / (args.warmup + args.seconds + 0.1),
        us_per_packet=cpu * 1e6 / relayed if relayed else float("nan"),
    )


async def heap_per_call(calls: int = 100) -> float:
    """Python heap allocated per bridged call (two endpoints, their streams, the bridge)."""
    allocator = PortAllocator(HOST, 30000, 30000 + 4 * calls + 10)
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


async def _receive(conn: Connection) -> Any:
    """The next message from the generator, without blocking the relay's loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- report ----------------------------------------------------------------------------------


HEADER = (
    f"{'calls':>5} {'sink':>5} {'packets/s':>10} {'relay CPU':>9} "
    f"{'us/packet':>9} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'loss':>7} {'RSS/call':>9}"
)


def row(r: Result) -> str:
    return (
        f"{r.calls:>5} {'yes' if r.sink else 'no':>5} {r.packets_per_second:>10,.0f} "
        f"{r.cpu:>9.0%} {r.us_per_packet:>9.1f} {r.p50:>7.2f} {r.p99:>7.2f} {r.p999:>8.2f} "
        f"{r.loss:>7.2%} {r.rss_per_call / 1024:>7.1f}KB"
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
    for sink in (False, True):
        rows = [r for r in results if r.sink is sink]
        label = "with recording sink" if sink else "no sink"
        calls = [r.calls for r in rows]
        cpu_ax.plot(calls, [100 * r.cpu for r in rows], marker="o", label=label)
        lat_ax.plot(calls, [r.p99 for r in rows], marker="o", label=f"p99, {label}")
        lat_ax.plot(calls, [r.p50 for r in rows], marker="x", linestyle=":", label=f"p50, {label}")
    cpu_ax.axhline(75, color="grey", linestyle="--", label="75 % budget")
    cpu_ax.set(xlabel="two-party calls", ylabel="relay CPU, % of one core", title="CPU")
    lat_ax.set(xlabel="two-party calls", ylabel="ms", title="generator -> relay -> generator")
    cpu_ax.legend()
    lat_ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


async def main(args: argparse.Namespace) -> None:
    print(f"python heap per bridged call: {await heap_per_call() / 1024:.1f} KB")
    print(HEADER)
    results = []
    for calls in args.calls:
        for sink in (False, True):
            results.append(await run_load(calls, sink, args))
            print(row(results[-1]), flush=True)
    if args.png:
        plot(results, args.png)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", default="200,400,600", type=lambda s: [int(n) for n in s.split(",")]
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--png", help="write a plot here (needs matplotlib)")
    parser.add_argument(
        "--loop-reactor", action="store_true", help="each socket on the loop, not one epoll set"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    asyncio.run(main(parse_args(sys.argv[1:])))
