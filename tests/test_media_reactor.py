"""The relay's reactor: one epoll set on the loop, woken per packet at light load and polled
once a tick under load (media/reactor.py). Real UDP sockets on 127.0.0.1, a real event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest

from callbridge.media.reactor import EpollReactor
from rtp_peer import until

pytestmark = pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="Linux only")


@contextmanager
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A receiving socket (non-blocking) and a sender, both on loopback."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx.connect(rx.getsockname())
    try:
        yield rx, tx
    finally:
        rx.close()
        tx.close()


def reader(sock: socket.socket, got: list[bytes]) -> Callable[[], None]:
    def on_readable() -> None:
        got.append(sock.recv(2048))

    return on_readable


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 20))


def test_light_traffic_is_read_as_it_arrives_without_ticking() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        reactor = EpollReactor(loop, tick=0.001, poll_rate=1000)
        got: list[bytes] = []
        with udp_pair() as (rx, tx):
            reactor.add(rx.fileno(), reader(rx, got))
            for n in range(5):
                tx.send(bytes([n]))
                await until(lambda n=n: len(got) == n + 1)  # type: ignore[misc]
                await asyncio.sleep(0.03)  # ~30 packets/s: far below the poll rate
            assert got == [bytes([n]) for n in range(5)]
            assert not reactor.ticking and reactor.ticks == 0 and reactor.woken >= 5
            reactor.remove(rx.fileno())

    run(body)


def test_heavy_traffic_switches_to_ticks_and_back_when_quiet() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        reactor = EpollReactor(loop, tick=0.001, poll_rate=1000)
        got: list[bytes] = []
        with udp_pair() as (rx, tx):
            reactor.add(rx.fileno(), reader(rx, got))
            sent = 0
            # Bursts of 10 packets every 2 ms (~5,000/s) for up to a second: ticking begins
            # once a 20 ms window has measured the rate.
            for _ in range(500):
                for _ in range(10):
                    tx.send(sent.to_bytes(4, "big"))
                    sent += 1
                await asyncio.sleep(0.002)
                if reactor.ticks >= 20:
                    break
            assert reactor.ticking and reactor.ticks >= 20
            await until(lambda: len(got) == sent)
            # Every datagram read once, in order: a tick reads a socket again while it holds
            # more than one (up to the pass limit), the next tick takes the rest.
            assert got == [n.to_bytes(4, "big") for n in range(sent)]
            # Quiet: a few empty ticks hand the set back to the loop's selector.
            await until(lambda: not reactor.ticking)
            woken = reactor.woken
            tx.send(b"late")
            await until(lambda: got[-1] == b"late")
            assert reactor.woken == woken + 1  # read on being woken, not on a tick
            reactor.remove(rx.fileno())

    run(body)


def test_removing_the_last_socket_while_ticking_stops_the_timer() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        # Ticks far apart against packets every millisecond: every tick finds something.
        reactor = EpollReactor(loop, tick=0.005, poll_rate=100)
        got: list[bytes] = []
        with udp_pair() as (rx, tx):
            reactor.add(rx.fileno(), reader(rx, got))
            for _ in range(500):
                tx.send(b"x")
                await asyncio.sleep(0.001)
                if reactor.ticking:
                    break
            assert reactor.ticking
            reactor.remove(rx.fileno())
            assert not reactor.ticking
            ticks = reactor.ticks
            await asyncio.sleep(0.01)
            assert reactor.ticks == ticks  # no timer left behind

    run(body)


def test_a_socket_removed_by_an_earlier_callback_of_the_same_pass_is_not_called() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        reactor = EpollReactor(loop)
        calls: list[str] = []
        with udp_pair() as (rx1, tx1), udp_pair() as (rx2, tx2):

            def first() -> None:
                calls.append("first")
                rx1.recv(10)
                reactor.remove(rx2.fileno())

            def second() -> None:
                calls.append("second")
                rx2.recv(10)
                reactor.remove(rx1.fileno())

            reactor.add(rx1.fileno(), first)
            reactor.add(rx2.fileno(), second)
            tx1.send(b"1")
            tx2.send(b"2")
            await until(lambda: bool(calls))
            await asyncio.sleep(0.01)
            assert calls in (["first"], ["second"])  # whichever came first removed the other
            reactor.remove(rx1.fileno())
            reactor.remove(rx2.fileno())

    run(body)


def test_a_failing_callback_is_logged_and_the_others_keep_being_read_while_ticking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        reactor = EpollReactor(loop, tick=0.005, poll_rate=100)
        got: list[bytes] = []
        with udp_pair() as (bad_rx, bad_tx), udp_pair() as (rx, tx):

            def broken() -> None:
                bad_rx.recv(10)
                raise RuntimeError("a bug in one leg")

            reactor.add(bad_rx.fileno(), broken)
            reactor.add(rx.fileno(), reader(rx, got))
            sent = 0
            for _ in range(500):  # both sockets busy until the reactor ticks, and then some
                bad_tx.send(b"x")
                tx.send(sent.to_bytes(4, "big"))
                sent += 1
                await asyncio.sleep(0.001)
                if reactor.ticks >= 10:
                    break
            assert reactor.ticks >= 10 and reactor.errors >= 10
            await until(lambda: len(got) == sent)  # the healthy socket was never starved
            reactor.remove(bad_rx.fileno())
            reactor.remove(rx.fileno())

    run(body)
    failures = [r for r in caplog.records if "reading fd" in r.getMessage()]
    assert failures and len(failures) < 10  # logged, but not once per packet
