"""The RTP port allocator: even ports in range, exhaustion, release on every exit path."""

from __future__ import annotations

import socket

import pytest

from callbridge.config import MediaSettings
from callbridge.errors import CallbridgeError, TransportError
from callbridge.media import endpoint as endpoint_module
from callbridge.media.ports import MediaPortsExhausted, PortAllocator
from rtp_peer import Lab, run_lab, until

HOST = "127.0.0.1"


def test_ports_are_even_with_their_rtcp_neighbour_in_range() -> None:
    allocator = PortAllocator(HOST, 43001, 43010)
    leases = [allocator.lease() for _ in range(allocator.capacity)]
    try:
        assert [lease.port for lease in leases] == [43002, 43004, 43006, 43008]
        assert all(lease.sock.getsockname() == (HOST, lease.port) for lease in leases)
    finally:
        for lease in leases:
            lease.release()
    assert allocator.leased == 0


def test_a_range_without_a_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no even/odd pair"):
        PortAllocator(HOST, 43010, 43010)
    with pytest.raises(ValueError, match="must be an IP address"):
        PortAllocator("localhost", 43010, 43020)


def test_exhaustion_is_an_error_the_api_can_map() -> None:
    allocator = PortAllocator(HOST, 43020, 43023)
    leases = [allocator.lease(), allocator.lease()]
    try:
        with pytest.raises(MediaPortsExhausted) as caught:
            allocator.lease()
        assert isinstance(caught.value, CallbridgeError)
        assert str(caught.value) == "no free RTP port in 43020-43023 (2 leased by callbridge)"
    finally:
        for lease in leases:
            lease.release()


def test_release_is_idempotent_and_ports_are_reused_least_recent_first() -> None:
    allocator = PortAllocator(HOST, 43030, 43035)
    first, second = allocator.lease(), allocator.lease()
    first.release()
    first.release()  # a second release must not free a port someone else holds
    assert first.released and first.sock.fileno() == -1
    third = allocator.lease()
    assert third.port == 43034  # never used yet, ahead of the one just freed
    fourth = allocator.lease()
    assert fourth.port == first.port
    assert allocator.leased == 3
    for lease in (second, third, fourth):
        lease.release()


def test_a_port_held_by_another_program_is_skipped() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((HOST, 43040))
        allocator = PortAllocator(HOST, 43040, 43043)
        lease = allocator.lease()
        assert lease.port == 43042
        with pytest.raises(MediaPortsExhausted):
            allocator.lease()
        lease.release()
        assert allocator.leased == 0


def test_an_address_this_host_lacks_is_a_transport_error_not_exhaustion() -> None:
    allocator = PortAllocator("192.0.2.1", 43050, 43059)  # TEST-NET-1: never local
    with pytest.raises(TransportError, match=r"bind udp 192\.0\.2\.1:43050"):
        allocator.lease()
    assert allocator.leased == 0
    assert allocator.capacity == 5


def test_settings_give_the_range_and_the_advertised_address() -> None:
    media = MediaSettings(rtp_port_min=43060, rtp_port_max=43069, public_host="203.0.113.7")

    async def scenario(lab: Lab) -> None:
        endpoint = await lab.leg("agent")
        assert endpoint.local_address == (HOST, 43060)
        assert endpoint.advertised_address == ("203.0.113.7", 43060)

    allocator = PortAllocator.from_settings(media, HOST)
    assert (allocator.host, allocator.public_host, allocator.capacity) == (
        HOST,
        "203.0.113.7",
        5,
    )
    run_lab(scenario, allocator)


def test_closing_an_endpoint_returns_its_port() -> None:
    async def scenario(lab: Lab) -> None:
        allocator = lab.allocator
        first = await allocator.open("agent")
        second = await allocator.open("customer")
        with pytest.raises(MediaPortsExhausted):
            await allocator.open("third")
        port = first.local_address[1]
        first.close()
        assert allocator.leased == 1
        again = await allocator.open("third")
        assert again.local_address[1] == port
        again.close()
        second.close()

    allocator = run_lab(scenario, port_min=43070, port_max=43073)
    assert allocator.capacity == 2


def test_a_failed_start_returns_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(loop: object) -> object:
        raise OSError("epoll: too many open files")

    monkeypatch.setattr(endpoint_module, "reactor_for", refuse)

    async def scenario(lab: Lab) -> None:
        with pytest.raises(OSError, match="too many open files"):
            await lab.allocator.open("agent")
        assert lab.allocator.leased == 0

    run_lab(scenario, port_min=43080, port_max=43081)


def test_closing_twice_releases_once() -> None:
    async def scenario(lab: Lab) -> None:
        first = await lab.allocator.open("agent")
        first.close()
        second = await lab.allocator.open("customer")  # the same port, now someone else's
        first.close()
        assert lab.allocator.leased == 1
        assert second.local_address == first.local_address
        second.close()

    run_lab(scenario, port_min=43090, port_max=43091)


# -- the connected socket and its stray twin (SO_REUSEPORT) -----------------------------------

reuse_port = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")


@reuse_port
def test_a_leased_port_cannot_be_joined_or_taken_by_another_allocator() -> None:
    mine = PortAllocator(HOST, 43100, 43103)
    lease = mine.lease()
    try:
        assert lease.stray is not None
        assert lease.stray.getsockname() == lease.sock.getsockname() == (HOST, 43100)
        # Another callbridge on an overlapping range probes without SO_REUSEPORT first: it
        # skips the port instead of joining its group and sharing the leg's media.
        theirs = PortAllocator(HOST, 43100, 43103)
        other = theirs.lease()
        assert other.port == 43102
        other.release()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            with pytest.raises(OSError):
                plain.bind((HOST, 43100))
    finally:
        lease.release()
    assert lease.stray.fileno() == -1 and lease.sock.fileno() == -1


@reuse_port
def test_the_legs_socket_is_connected_to_its_remote_and_strangers_reach_the_twin() -> None:
    async def scenario(lab: Lab) -> None:
        phone, stranger = await lab.peer(), await lab.peer()
        leg = await lab.leg("customer", phone)
        assert leg._sock.getpeername() == phone.address  # the kernel checks the source
        stranger.send_audio(leg.local_address, b"\x01" * 160, 0)
        phone.send_audio(leg.local_address, b"\x02" * 160, 0)
        await until(lambda: leg.received + leg.strangers >= 2)
        assert (leg.received, leg.strangers) == (1, 1)  # the stranger counted on the twin
        leg.set_media(None)  # nothing accepted: the old peer is a stranger now
        phone.send_audio(leg.local_address, b"\x03" * 160, 0)
        await until(lambda: leg.strangers >= 2)
        assert leg.received == 1 and leg.tx.send is None

    run_lab(scenario, port_min=43110, port_max=43119)


@reuse_port
def test_symmetric_rtp_latches_the_connected_socket_to_the_first_source() -> None:
    async def scenario(lab: Lab) -> None:
        in_sdp, behind_nat = await lab.peer(), await lab.peer()
        leg = await lab.leg("agent", in_sdp, symmetric=True)
        behind_nat.send_audio(leg.local_address, b"\x04" * 160, 0)
        await until(lambda: leg.received >= 1)
        assert leg.remote_address == behind_nat.address
        assert leg._sock.getpeername() == behind_nat.address  # its next packets: the fast path
        behind_nat.send_audio(leg.local_address, b"\x05" * 160, 0)
        await until(lambda: leg.received >= 2)
        assert leg.strangers == 0

    run_lab(scenario, port_min=43120, port_max=43129)


@reuse_port
def test_a_platform_refusing_so_reuseport_gets_one_unconnected_socket_per_leg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "SO_REUSEPORT", 0x7FFF)  # an option no kernel knows: refused

    async def scenario(lab: Lab) -> None:
        phone, stranger = await lab.peer(), await lab.peer()
        leg = await lab.leg("customer", phone)
        assert not lab.allocator.reuse_port and leg._stray is None
        stranger.send_audio(leg.local_address, b"\x01" * 160, 0)
        phone.send_audio(leg.local_address, b"\x02" * 160, 0)
        await until(lambda: leg.received + leg.strangers >= 2)
        assert (leg.received, leg.strangers) == (1, 1)  # the source checked in Python

    run_lab(scenario, port_min=43130, port_max=43139)
