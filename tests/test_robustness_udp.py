"""Robustness of the running ``callbridge serve`` over UDP.

One server process for the whole module. Every RFC 4475 torture message and every PROTOS
c07-sip case (INVITE, then its teardown) goes to it from a UDP socket on loopback, and after
every single datagram an OPTIONS probe must be answered 200 within PROBE_TIMEOUT. At the end
nothing may be left behind: no transaction, leg, asyncio task or socket beyond what the
server had when it started, no exception caught at the edge (``internal_errors``), and a
clean exit on SIGTERM.

Replies land where RFC 3261 §18.2.2 sends them: the packet's source address with the Via's
sent-by port (5060 when absent, 5061 for TLS, 5050 in quotbal.dat), or the source port with
``rport``. So the test's sockets sit on a random 127.x.y.z address at those ports: every
routable reply to a torture message comes back to us, and its status is checked against
MANIFEST.tsv. PROTOS cases name the test's own port in their Via.

The whole module takes about 15-25 s on two cores, most of it the 4,527 PROTOS cases.
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import protos
from callbridge.sip.errors import SipParseError
from callbridge.sip.message import Request, parse_message

RFC4475 = Path(__file__).parent / "vectors" / "rfc4475"
#: How long one OPTIONS probe may wait for its 200.
PROBE_TIMEOUT = 2.0
#: Consecutive unanswered probes after which a PROTOS group stops: the service is gone.
GIVE_UP_AFTER = 3
#: The ports replies to the RFC 4475 messages go to: 5060 (sent-by without a port), 5050
#: (quotbal.dat) and 5061 (a TLS Via without a port, bext01.dat).
REPLY_PORTS = (5060, 5050, 5061)
#: RFC 3261 T1 for the server: every transaction ends within 64*T1 = 1.28 s.
T1 = 0.02
#: How long a server transaction can outlive its request (Timer J, 64*T1), with slack.
TRANSACTION_LIFETIME = 64 * T1 + 0.5


# -- the server process ---------------------------------------------------------------------


class Server:
    """``callbridge serve`` as a subprocess; stderr is read by a thread, line by line."""

    def __init__(self, config: Path) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callbridge", "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            cwd=config.parent,
        )
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.host, self.port = self._wait_bound(timeout=20.0)

    def _wait_bound(self, timeout: float) -> tuple[str, int]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        match = re.fullmatch(r"callbridge: SIP on (\S+):(\d+)(, HTTP on \S+)?\s*", line)
        if match is None:
            self.stop()
            pytest.fail(f"server did not start: stdout {line!r}, stderr {self.log_tail()}")
        return match.group(1), int(match.group(2))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._changed:
                self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log()[-lines:])

    def log(self) -> list[str]:
        """The stderr lines so far."""
        with self._changed:
            return list(self.stderr)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stats(self, timeout: float = 5.0) -> dict[str, int]:
        """Ask for one ``stats`` line (SIGUSR1) and parse it."""
        with self._changed:
            seen = len(self.stderr)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.stderr[seen:]:
                    if " stats " in line:
                        return parse_stats(line)
                seen = len(self.stderr)
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive():
                    pytest.fail(f"no stats line after SIGUSR1; stderr:\n{self.log_tail()}")
                self._changed.wait(left)

    def socket_count(self) -> int:
        """The sockets among the process's file descriptors."""
        fds = Path(f"/proc/{self.proc.pid}/fd")
        count = 0
        for fd in fds.iterdir():
            with contextlib.suppress(FileNotFoundError):  # closed while we looked
                count += os.readlink(fd).startswith("socket:")
        return count

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        self._reader.join(5.0)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return self.proc.returncode


def parse_stats(line: str) -> dict[str, int]:
    figures = line.split(" stats ", 1)[1]
    return {k: int(v) for k, v in (item.split("=") for item in figures.split())}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Baseline:
    """What the server had right after it started."""

    tasks: int
    sockets: int


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tmp_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short T1 ends every transaction within 64*T1; T4 short too, for Timers I and K.
    folder = tmp_path_factory.mktemp("robustness")
    config = folder / "callbridge.toml"
    config.write_text(
        f'[http]\nhost = "127.0.0.1"\nport = {free_tcp_port()}\n'
        f'[storage]\ndatabase_url = "sqlite:///{folder}/callbridge.db"\n'
        f'recordings_dir = "{folder}/recordings"\n'
        f'[media]\nrtp_port_min = 41000\nrtp_port_max = 41099\n'
        f'[sip]\nhost = "127.0.0.1"\nport = {free_udp_port()}\n'
        f"t1 = {T1}\nt2 = {8 * T1}\nt4 = {10 * T1}\n"
        f'[trunk]\nmode = "sip"\nhost = "127.0.0.1"\nport = {free_udp_port()}\n'
        "options_interval = 0\n"
        '[log]\nlevel = "info"\n'
    )
    return config


@pytest.fixture(scope="module")
def server(tmp_config: Path) -> Iterator[Server]:
    server = Server(tmp_config)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def baseline(server: Server) -> Baseline:
    return Baseline(tasks=server.stats()["tasks"], sockets=server.socket_count())


# -- the test's side: sockets and the OPTIONS probe -----------------------------------------


STATUS = re.compile(rb"\ASIP/2\.0 (\d+) ")
CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def status_of(reply: bytes) -> int | None:
    match = STATUS.match(reply)
    return int(match.group(1)) if match else None


def call_id_of(reply: bytes) -> bytes | None:
    match = CALL_ID.search(reply)
    return match.group(1) if match else None


@dataclass
class Client:
    """UDP sockets on one loopback address: ``sock`` (port 5060) sends everything."""

    host: str
    sockets: list[socket.socket]
    seen: set[bytes] = field(default_factory=set)  #: every reply so far, to spot resends
    probes: int = 0

    @property
    def sock(self) -> socket.socket:
        return self.sockets[0]

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def send(self, data: bytes, server: Server) -> None:
        self.sock.sendto(data[: protos.MAX_UDP_PAYLOAD], (server.host, server.port))

    def probe(self, server: Server) -> tuple[bool, list[bytes]]:
        """Send an OPTIONS and wait for its 200: (answered, the other new replies meanwhile).

        A reply byte-identical to an earlier one is a retransmission (Timer G) and is left
        out; so are the probe's own replies.
        """
        self.probes += 1
        call_id = f"probe-{self.probes}@{self.host}".encode()
        self.send(self._options(call_id.decode(), server), server)
        others: list[bytes] = []
        deadline = time.monotonic() + PROBE_TIMEOUT
        answered = False
        while (left := deadline - time.monotonic()) > 0:
            # Once the probe is answered, whatever the server sent before it is already
            # queued on some socket: drain them all without waiting, then stop.
            ready, _, _ = select.select(self.sockets, [], [], 0 if answered else left)
            if not ready and answered:
                break
            for sock in ready:
                reply = sock.recv(65535)
                if call_id_of(reply) == call_id:
                    answered = answered or status_of(reply) == 200
                elif reply not in self.seen:
                    self.seen.add(reply)
                    others.append(reply)
        return answered, others

    def _options(self, call_id: str, server: Server) -> bytes:
        target = f"callbridge@{server.host}:{server.port}"
        branch = f"z9hG4bK-{call_id.split('@')[0]}"
        return (
            f"OPTIONS sip:{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{self.host}>;tag={self.probes}\r\n"
            f"To: <sip:{target}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def bind_client() -> Client:
    """Sockets on REPLY_PORTS of a random 127.x.y.z (all of 127/8 is loopback on Linux)."""
    rng = random.Random()
    for _ in range(50):
        host = f"127.{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        sockets: list[socket.socket] = []
        try:
            for port in REPLY_PORTS:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((host, port))
        except OSError:
            for sock in sockets:
                sock.close()
            continue
        return Client(host, sockets)
    pytest.fail(f"no 127.x.y.z address has ports {REPLY_PORTS} free")


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    client = bind_client()
    try:
        yield client
    finally:
        client.close()


def send_and_probe(client: Client, server: Server, datagram: bytes) -> list[bytes]:
    """Send one datagram, then require the probe's 200; the new replies meanwhile."""
    client.send(datagram, server)
    answered, replies = client.probe(server)
    assert server.alive(), f"server exited ({server.proc.returncode}):\n{server.log_tail()}"
    assert answered, f"no 200 to the OPTIONS probe; stderr:\n{server.log_tail()}"
    return replies


# -- RFC 4475 -----------------------------------------------------------------------------------


def _manifest(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {r["file"]: r for r in rows if (folder / r["file"]).exists()}


MANIFEST = {
    **_manifest(RFC4475),
    **{f"variants/{k}": v for k, v in _manifest(RFC4475 / "variants").items()},
}

#: What callbridge answers a well-formed out-of-dialog request of each method: it refuses
#: INVITE (no relaying of calls it did not start), knows but declines REGISTER and MESSAGE
#: (405), answers OPTIONS, and meets anything else with 501.
ACCEPTED = {"INVITE": 403, "OPTIONS": 200, "REGISTER": 405, "MESSAGE": 405}
#: SEMANTIC files (and REJECT ones with a specific code): the statuses the RFC allows.
#: An INVITE may be refused (403) before its content is looked at: authorization comes
#: first in RFC 3261 §8.2.
SPECIFIC = {
    "wsinv.dat": {481},  # its To has a tag: no such dialog (§12.2.2)
    "test.dat": set(),  # no Via: nowhere to send a 400 (§18.2.2)
    "badvers.dat": {505},
    "mismatch02.dat": {400, 501},
    "badbranch.dat": {200, 400},  # §3.2.1: 400, or fall back to RFC 2543 matching
    "insuf.dat": {400},
    "unkscm.dat": {416},  # RFC 3261 §8.2.2.1
    "novelsc.dat": {416, 404},
    "unksm2.dat": {400, 405},  # a registrar says 400; we are none
    "bext01.dat": {420},  # §8.2.2.3: Require lists what we do not support
    "invut.dat": {403, 415},
    "regaut01.dat": {405},  # non-registrar
    "multi01.dat": {400},
    "mcl01.dat": {400},
    "zeromf.dat": {200},  # an endpoint processes Max-Forwards 0 normally
    "cparam01.dat": {405},
    "cparam02.dat": {405},
    "regescrt.dat": {405},
    "sdp01.dat": {403, 406},
    "inv2543.dat": {403},  # RFC 2543 syntax is still to be accepted
    "bcast.dat": set(),
}


def expected_statuses(name: str) -> set[int]:
    """The reply statuses allowed for one file; empty: no reply at all."""
    row = MANIFEST[name]
    if row["kind"] == "response":
        return set()  # a response matching no transaction is discarded, never answered
    if Path(name).name in SPECIFIC:
        return SPECIFIC[Path(name).name]
    method = (RFC4475 / name).read_bytes().split(b" ", 1)[0].decode("ascii", "replace")
    accepted = ACCEPTED.get(method, 501)
    verdict = row["rfc_verdict"]
    if verdict == "ACCEPT":
        return {accepted}
    if verdict == "REJECT":
        return {400}
    assert verdict == "REJECT_OR_LENIENT", f"{name}: no expectation for {verdict}"
    return {400, accepted}


#: Files whose top Via branch, sent-by and method repeat an earlier file's: within that
#: transaction's lifetime the server rightly takes them for a retransmission (§17.2.3) and
#: resends the first file's response. They run last, once that transaction has ended.
REUSED_BRANCH = {
    "cparam02.dat": "cparam01.dat",
    "regescrt.dat": "escnull.dat",
    "unkscm.dat": "novelsc.dat",
}
#: When each file was sent (time.monotonic()).
SENT_AT: dict[str, float] = {}

#: Deviations the regression tests reproduce; the marker goes when the fix lands.
KNOWN_BUGS: dict[str, str] = {}


def rfc4475_params(names: list[str]) -> list[object]:
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n]))
        if n in KNOWN_BUGS
        else n
        for n in names
    ]


def transaction_key(name: str) -> tuple[str, str, int | None, str] | None:
    """The §17.2.3 server transaction key (branch, sent-by, method) of a parseable request."""
    try:
        message = parse_message((RFC4475 / name).read_bytes())
        via = message.top_via
    except SipParseError:
        return None  # answered statelessly, if at all: no transaction
    if not isinstance(message, Request) or via.branch is None:
        return None
    method = "INVITE" if message.method == "ACK" else message.method
    return (via.branch, via.host, via.port, method)


def test_every_rfc4475_file_has_an_expectation() -> None:
    assert len(MANIFEST) == 51
    for name in MANIFEST:
        expected_statuses(name)


def test_reused_branches_are_the_ones_listed() -> None:
    first_with: dict[object, str] = {}
    reused = {}
    for name in sorted(MANIFEST):
        key = transaction_key(name)
        if key is not None and key in first_with:
            reused[name] = first_with[key]
        first_with.setdefault(key, name)
    assert reused == REUSED_BRANCH


@pytest.mark.parametrize("name", rfc4475_params(sorted(set(MANIFEST) - set(REUSED_BRANCH))))
def test_rfc4475_message_answered_as_manifest_says_and_probe_answered(
    server: Server, baseline: Baseline, client: Client, name: str
) -> None:
    check_rfc4475(server, client, name)


def check_rfc4475(server: Server, client: Client, name: str) -> None:
    SENT_AT[name] = time.monotonic()
    replies = send_and_probe(client, server, (RFC4475 / name).read_bytes())
    # An INVITE may be met with 100 Trying first (RFC 3261 §17.2.1); the final one counts.
    statuses = [status_of(r) for r in replies if status_of(r) != 100]
    expected = expected_statuses(name)
    if expected:
        assert len(statuses) == 1 and statuses[0] in expected, (name, statuses, expected)
    else:
        assert [status_of(r) for r in replies] == [], name


# -- broadcast, multicast, port 0 -------------------------------------------------------------


def _options_via(via: str, tag: str) -> bytes:
    return (
        "OPTIONS sip:callbridge@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:viacheck@example.com>;tag={tag}\r\n"
        "To: <sip:callbridge@127.0.0.1>\r\n"
        f"Call-ID: viacheck-{tag}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _bcast_response(via_port: str) -> bytes:
    return (
        (RFC4475 / "bcast.dat")
        .read_bytes()
        .replace(b"255.255.255.255;", f"255.255.255.255{via_port};".encode())
    )


#: (datagram, reply expected at our socket). A request's reply goes to the packet's source
#: address whatever the Via's host says (§18.2.2), so a broadcast or multicast Via still
#: gets its 200 here; a Via port of 0 (or beyond 65535) leaves no valid port to reply to.
VIA_CASES = {
    "bcast.dat": (_bcast_response(""), False),
    "bcast port 0": (_bcast_response(":0"), False),
    "broadcast Via": (_options_via("255.255.255.255;branch=z9hG4bKv1", "v1"), True),
    "broadcast Via port 5060": (_options_via("255.255.255.255:5060;branch=z9hG4bKv2", "v2"), True),
    "multicast Via": (_options_via("224.0.0.1:5060;branch=z9hG4bKv3", "v3"), True),
    "Via port 0": (_options_via("127.0.0.1:0;branch=z9hG4bKv4", "v4"), False),
    "Via port 0, rport": (_options_via("127.0.0.1:0;branch=z9hG4bKv9;rport", "v9"), True),
    "Via port 65536": (_options_via("127.0.0.1:65536;branch=z9hG4bKv5", "v5"), False),
    "Via port 99999999": (_options_via("127.0.0.1:99999999;branch=z9hG4bKv6", "v6"), False),
    "INVITE Via port 0": (
        _options_via("127.0.0.1:0;branch=z9hG4bKv7", "v7").replace(b"OPTIONS", b"INVITE"),
        False,
    ),
    "received broadcast": (
        _options_via("127.0.0.1;received=255.255.255.255;branch=z9hG4bKv8", "v8"),
        True,
    ),
}
BAD_DESTINATION = re.compile(r"send to (255\.255\.255\.255|22[4-9]\.|23\d\.|\S+:0 )")


@pytest.mark.parametrize("case", sorted(VIA_CASES))
def test_broadcast_multicast_and_port_0_vias_never_used(
    server: Server, baseline: Baseline, client: Client, case: str
) -> None:
    datagram, reply_expected = VIA_CASES[case]
    replies = send_and_probe(client, server, datagram)
    assert len(replies) == (1 if reply_expected else 0), (case, replies)
    assert not [line for line in server.log() if BAD_DESTINATION.search(line)]


# -- PROTOS c07-sip -------------------------------------------------------------------------------


#: GROUPS.tsv alone, read at collection for the parameter list (empty: the tests skip).
PROTOS_GROUPS = protos.load_groups() if protos.PROTOS_TARBALL.exists() else []
ABSENT = f"PROTOS c07-sip cases not found at {protos.PROTOS_TARBALL}"


@pytest.fixture(scope="module")
def protos_cases() -> dict[int, protos.Case]:
    if not protos.PROTOS_TARBALL.exists():
        pytest.skip(ABSENT)
    _, cases = protos.load(protos.PROTOS_TARBALL)
    return cases


def test_protos_tarball_is_complete(protos_cases: dict[int, protos.Case]) -> None:
    assert len(protos_cases) == 4527
    assert sum(g.count for g in PROTOS_GROUPS) == 4527 and len(PROTOS_GROUPS) == 54


def _answers_this_case(reply: bytes, number: int) -> bool:
    """A final response to case ``number``'s INVITE (not a late one for another case)."""
    status = status_of(reply)
    if status is None or status < 200:
        return False
    named = {int(n) for n in re.findall(rb"c07-(\d{7})", reply)}
    return not named or number in named


@pytest.mark.parametrize(
    "group",
    [pytest.param(g, id=g.name) for g in PROTOS_GROUPS]
    or [pytest.param(None, id="absent", marks=pytest.mark.skip(reason=ABSENT))],
)
def test_protos_group_keeps_service_answering(
    server: Server,
    baseline: Baseline,
    client: Client,
    protos_cases: dict[int, protos.Case],
    group: protos.Group,
) -> None:
    sender = protos.Sender(server.host, server.port, client.host, client.port)
    silent: list[str] = []
    for number in group.numbers:
        case = protos_cases[number]
        client.send(protos.fill(case.invite, number, sender), server)
        answered, replies = client.probe(server)
        if not answered:
            silent.append(f"{number} INVITE")
        # PROTOS tears down with CANCEL while the INVITE is pending, else with ACK.
        final = any(_answers_this_case(r, number) for r in replies)
        teardown = protos.fill(case.teardown, number, sender, "ACK" if final else "CANCEL")
        client.send(teardown, server)
        answered, _ = client.probe(server)
        if not answered:
            silent.append(f"{number} {'ACK' if final else 'CANCEL'}")
        assert server.alive(), f"died at case {number}:\n{server.log_tail()}"
        if len(silent) >= GIVE_UP_AFTER:
            break
    assert not silent, f"no probe answer after: {silent}\n{server.log_tail()}"
    assert server.stats()["internal_errors"] == 0, server.log_tail()


@pytest.mark.parametrize("name", rfc4475_params(sorted(REUSED_BRANCH)))
def test_rfc4475_message_reusing_a_branch_answered_once_that_transaction_ended(
    server: Server, baseline: Baseline, client: Client, name: str
) -> None:
    first_sent = SENT_AT.get(REUSED_BRANCH[name])
    if first_sent is not None:
        # Normally long past (the PROTOS run sits in between): wait out Timer J, if need be.
        time.sleep(max(0.0, first_sent + TRANSACTION_LIFETIME - time.monotonic()))
    check_rfc4475(server, client, name)


# -- afterwards: nothing left behind ---------------------------------------------------------------


def test_nothing_left_behind_and_clean_exit(server: Server, baseline: Baseline) -> None:
    deadline = time.monotonic() + 10.0
    while True:
        stats = server.stats()
        if (stats["transactions"], stats["legs"]) == (0, 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling the server's own timers (64*T1 = 1.28 s), not a fixed wait
    assert (stats["transactions"], stats["legs"]) == (0, 0), stats
    assert stats["internal_errors"] == 0, server.log_tail()
    assert not [line for line in server.log() if BAD_DESTINATION.search(line)]
    assert stats["tasks"] == baseline.tasks, stats
    assert server.socket_count() == baseline.sockets
    assert server.stop() == 0, server.log_tail()
