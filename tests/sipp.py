"""SIPp as a test double: the carrier's SIP trunk (a UAS), or a client toward callbridge.

    async with Sipp("uas_answer.xml", variables={"ring_ms": 200}) as trunk:
        ...  # point callbridge's [trunk] at trunk.address, place a call
        assert await trunk.wait() == 0, trunk.report()
    assert len(trunk.received("INVITE")) == 1

    with Sipp("uas_busy.xml") as trunk:          # the same, without an event loop
        ...
        assert trunk.wait_sync() == 0, trunk.report()

    agent = sipp_uac("selftest/uac_for_answer.xml", ("127.0.0.1", 5060))  # SIPp calls us

    trunk = by_number_trunk(calls=2)   # uas_by_number.xml: agent and customer legs at once
    ...
    trunk.calls_to("9876543400")       # the messages of the call to that number
    trunk.received("INFO")             # e.g. the in-dialog INFOs callbridge sent the trunk

Tests import it as `from sipp import Sipp` (pytest puts tests/ on sys.path: there is no
tests/__init__.py). Scenario names are looked up in sipp_scenarios/; paths work too.

SIPp always stops by itself: `-timeout` bounds the run (and makes SIPp exit non-zero
when it fires) and `-recv_timeout` bounds every receive. The trunk scenarios in
sipp_scenarios/ answer OPTIONS pings and stop SIPp when their call ends, so they run
without `-m`; any other scenario gets `-m 1`. Each run writes SIPp's logs (message
trace, errors, <log> actions, screen) to a directory of its own; their texts stay
readable here after the process is gone, and a temporary directory is then removed.

SIPp's exit codes: 0 every call succeeded, 1 a call failed, 97 stopped by an internal
command, 99 no call processed, 254 could not bind its socket, 255 fatal error or
-timeout reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "sipp_scenarios"

#: Request-URI user of the copy uas_auth_407.xml sends to itself to run verifyauth.
LOOPBACK_USER = "sipp-verifyauth"

#: The tones uas_by_number.xml loops as RTP (raw mu-law, sipp_scenarios/audio/make_audio.py).
AUDIO_DIR = SCENARIO_DIR / "audio"
#: uas_by_number.xml's tones by frequency; each is the `-key tone_<hz>` its rtp_stream names.
TONES_HZ = (440, 600, 1000)
#: The digit "1" as RFC 4733 events (telephone-event, payload type 101) that uas_by_number.xml
#: plays on ...07 numbers: SIPp's own capture, shipped by Debian's sip-tester.
DTMF_1_PCAP = Path("/usr/share/sip-tester/dtmf_2833_1.pcap")

_BIND_FAILED = 254
_STOP_GRACE = 2.0
_LOG_FILES = {
    "messages": "messages.log",
    "errors": "errors.log",
    "actions": "actions.log",
    "screen": "screen.log",
}
_ENTRY = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d)[ \t](\d\d:\d\d:\d\d\.\d+)\n", re.MULTILINE)
_TRAILING_LF = re.compile(r"(?<!\r)\n+\Z")
_EVENT = re.compile(r"\n?(\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\.\d+\t)")


@dataclass(frozen=True)
class SippMessage:
    """One SIP message from SIPp's message trace, as SIPp sent or received it."""

    direction: str  #: "sent" or "received"
    time: datetime
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].strip()

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        token = self.first_line.split(" ", 1)[0]
        return None if token.startswith("SIP/") else token

    @property
    def status(self) -> int | None:
        """The response status code, or None for a request."""
        parts = self.first_line.split(" ", 2)
        return int(parts[1]) if parts[0].startswith("SIP/") else None

    @property
    def request_uri(self) -> str | None:
        return None if self.method is None else self.first_line.split(" ")[1]

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        head = self.text.split("\r\n\r\n", 1)[0]
        for line in head.split("\r\n")[1:]:
            field, sep, value = line.partition(":")
            if sep and field.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def body(self) -> str:
        return self.text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in self.text else ""

    @property
    def is_loopback(self) -> bool:
        """True for the copy uas_auth_407.xml sends to itself (never on the wire to us)."""
        return (self.request_uri or "").startswith(f"sip:{LOOPBACK_USER}@")

    def matches(self, kind: str | int | None) -> bool:
        """`kind` is a method ("INVITE"), a status (486), or None for anything."""
        if kind is None:
            return True
        return self.status == kind if isinstance(kind, int) else self.method == kind


def parse_message_log(text: str) -> list[SippMessage]:
    """Split SIPp's -trace_msg file into messages, in order."""
    heads = list(_ENTRY.finditer(text))
    ends = [head.start() for head in heads[1:]] + [len(text)]
    messages: list[SippMessage] = []
    for head, end in zip(heads, ends[: len(heads)], strict=True):
        block = text[head.end() : end]
        intro, _, message = block.partition("\n\n")
        direction = "received" if "received" in intro else "sent"
        stamp = datetime.fromisoformat(f"{head[1]} {head[2]}")
        # SIPp appends a bare LF after each message; the message's own CRLFs stay.
        messages.append(SippMessage(direction, stamp, _TRAILING_LF.sub("", message)))
    return messages


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port the kernel just handed out, free for SIPp to bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _udp_port_bound(port: int, protocol: str = "udp") -> bool:
    """Whether some socket on this host is bound to `port` (Linux /proc), UDP or TCP."""
    suffix = f":{port:04X}"
    try:
        tables = [Path(f"/proc/net/{protocol}{v}").read_text() for v in ("", "6")]
    except OSError:
        return True  # cannot tell: SIPp's first packet may then need a retransmission
    return any(
        line.split()[1].endswith(suffix) for table in tables for line in table.splitlines()[1:]
    )


def resolve_scenario(scenario: str | os.PathLike[str]) -> Path:
    """A scenario name in sipp_scenarios/ ("uas_busy.xml") or a path to one."""
    path = Path(scenario)
    for candidate in (path, SCENARIO_DIR / path):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no SIPp scenario {scenario!s} (looked in {SCENARIO_DIR})")


class Sipp:
    """One SIPp process: a UAS on host:port, or a UAC toward `remote` when given."""

    def __init__(
        self,
        scenario: str | os.PathLike[str],
        *,
        port: int | None = None,
        remote: tuple[str, int] | None = None,
        variables: Mapping[str, object] | None = None,
        auth: tuple[str, str] | None = None,
        service: str | None = None,
        extra_args: Sequence[str] = (),
        timeout: float = 30.0,
        recv_timeout: float = 5.0,
        calls: int | None = None,
        host: str = "127.0.0.1",
        log_dir: Path | None = None,
    ) -> None:
        self.scenario = resolve_scenario(scenario)
        self.remote = remote
        self.variables = dict(variables or {})
        self.auth = auth
        self.service = service
        self.extra_args = list(extra_args)
        self.timeout = timeout
        self.recv_timeout = recv_timeout
        self.calls = calls if calls is not None else self._default_calls()
        self.host = host
        self._fixed_port = port
        self.port = port or 0
        self._own_dir = log_dir is None
        # A temporary directory is made when SIPp starts and removed once it has exited.
        self.log_dir = log_dir or Path(tempfile.gettempdir(), f"sipp-{secrets.token_hex(6)}")
        self._proc: subprocess.Popen[bytes] | None = None
        self._texts: dict[str, str] | None = None
        self.stopped = False

    def _default_calls(self) -> int | None:
        # The trunk scenarios stop SIPp themselves, so pings before the call are harmless.
        return None if "stop_gracefully" in self.scenario.read_text() else 1

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.returncode

    @property
    def command(self) -> list[str]:
        sipp = shutil.which("sipp") or "sipp"
        args = [sipp] if self.remote is None else [sipp, f"{self.remote[0]}:{self.remote[1]}"]
        args += ["-sf", str(self.scenario), "-i", self.host, "-p", str(self.port), "-ci", self.host]
        args += ["-nostdin", "-trace_msg", "-message_file", self._path("messages")]
        args += ["-trace_err", "-error_file", self._path("errors")]
        args += ["-trace_logs", "-log_file", self._path("actions")]
        args += ["-timeout", f"{round(self.timeout * 1000)}ms", "-timeout_error"]
        args += ["-recv_timeout", f"{round(self.recv_timeout * 1000)}ms"]
        if self.calls is not None:
            args += ["-m", str(self.calls)]
        if self.service is not None:
            args += ["-s", self.service]
        if self.auth is not None:
            args += ["-au", self.auth[0], "-ap", self.auth[1]]
        for name, value in self.variables.items():
            args += ["-set", name, str(value)]
        return args + self.extra_args

    def _path(self, log: str) -> str:
        return str(self.log_dir / _LOG_FILES[log])

    # --- starting ---------------------------------------------------------------------

    def _spawn(self) -> None:
        if self._fixed_port is None:
            self.port = free_udp_port(self.host)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self._path("screen"), "wb") as screen:
            self._proc = subprocess.Popen(
                self.command,
                cwd=self.log_dir,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=subprocess.STDOUT,
            )

    @property
    def _protocol(self) -> str:
        """"tcp" when run with `-t t1`/`-t tn` (SIPp's TCP modes), else "udp"."""
        args = self.extra_args
        tcp = any(a == "-t" and args[i + 1 : i + 2] in (["t1"], ["tn"]) for i, a in enumerate(args))
        return "tcp" if tcp else "udp"

    def _startup_state(self) -> str:
        """Where startup stands: "ready", "waiting", or "retry" (the picked port was taken)."""
        assert self._proc is not None
        code = self._proc.poll()
        if code is None:
            return "ready" if _udp_port_bound(self.port, self._protocol) else "waiting"
        return "retry" if code == _BIND_FAILED and self._fixed_port is None else "ready"

    def start(self) -> Sipp:
        """Start SIPp and return once its socket is bound (or it has already exited)."""
        for _ in range(3):
            self._spawn()
            deadline = time.monotonic() + 5.0
            while (state := self._startup_state()) == "waiting" and time.monotonic() < deadline:
                time.sleep(0.005)
            if state != "retry":
                return self
        return self

    async def start_async(self) -> Sipp:
        """`start()` without blocking the event loop."""
        for _ in range(3):
            self._spawn()
            deadline = time.monotonic() + 5.0
            while (state := self._startup_state()) == "waiting" and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if state != "retry":
                return self
        return self

    # --- waiting and stopping ---------------------------------------------------------

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("SIPp was not started")
        return self._proc

    def _limit(self, timeout: float | None) -> float:
        # SIPp's own -timeout fires first; the margin covers its startup and shutdown.
        return self.timeout + 5.0 if timeout is None else timeout

    async def wait(self, timeout: float | None = None) -> int:
        """SIPp's exit code. If it runs past `timeout`, kill it and raise TimeoutError."""
        proc = self._started()
        try:
            await asyncio.wait_for(_exited(proc), self._limit(timeout))
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"SIPp did not exit in time\n{self.report()}") from None
        return self._finish()

    def wait_sync(self, timeout: float | None = None) -> int:
        """`wait()` for code without an event loop."""
        proc = self._started()
        try:
            proc.wait(self._limit(timeout))
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"SIPp did not exit in time\n{self.report()}") from None
        return self._finish()

    def stop(self) -> None:
        """End SIPp now if it still runs (SIGTERM, then SIGKILL); the logs stay readable.

        The exit code of a stopped SIPp says nothing about the scenario: see `stopped`.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.stopped = True
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None:
            self._finish()

    def run(self, timeout: float | None = None) -> int:
        """Start, wait for the exit code, and always clean up."""
        with self:
            return self.wait_sync(timeout)

    def _finish(self) -> int:
        proc = self._started()
        code = proc.wait()
        if self._texts is None:
            self._texts = {log: self._read(log) for log in _LOG_FILES}
            if self._own_dir:
                shutil.rmtree(self.log_dir, ignore_errors=True)
        return code

    def __enter__(self) -> Sipp:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Sipp:
        return await self.start_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.stopped = True
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_exited(proc), _STOP_GRACE)
        self.stop()

    # --- what SIPp saw ----------------------------------------------------------------

    def _read(self, log: str) -> str:
        if self._texts is not None:
            return self._texts[log]
        try:  # newline="": SIP's CRLFs must survive the read
            with open(self._path(log), newline="", errors="replace") as file:
                return file.read()
        except FileNotFoundError:
            return ""

    @property
    def message_log(self) -> str:
        """SIPp's message trace (-trace_msg) as text."""
        return self._read("messages")

    @property
    def error_log(self) -> str:
        """Unexpected messages, timeouts, failed checks and <warning> actions (-trace_err)."""
        return self._read("errors")

    @property
    def action_log(self) -> str:
        """Lines from the scenario's <log> actions (-trace_logs)."""
        return self._read("actions")

    @property
    def screen(self) -> str:
        """SIPp's statistics screens and fatal errors (its stdout and stderr)."""
        return self._read("screen")

    def messages(self) -> list[SippMessage]:
        return parse_message_log(self.message_log)

    def received(self, kind: str | int | None = None) -> list[SippMessage]:
        """Messages SIPp received from its peer: a method, a status code, or all."""
        return [
            m
            for m in self.messages()
            if m.direction == "received" and not m.is_loopback and m.matches(kind)
        ]

    def sent(self, kind: str | int | None = None) -> list[SippMessage]:
        """Messages SIPp sent to its peer: a method, a status code, or all."""
        return [
            m
            for m in self.messages()
            if m.direction == "sent" and not m.is_loopback and m.matches(kind)
        ]

    def calls_to(self, number: str) -> list[SippMessage]:
        """The messages, in order, of every call whose INVITE went to `number`.

        Numbers compare by their last 10 digits, so "+919876543400", "09876543400" and
        "9876543400" are one number, whatever format the Request-URI user has.
        """
        call_ids = {
            m.header("Call-ID")
            for m in self.received("INVITE")
            if _national(_uri_user(m.request_uri or "")) == _national(number)
        }
        return [m for m in self.messages() if not m.is_loopback and m.header("Call-ID") in call_ids]

    def report(self) -> str:
        """What to print when a test fails: the command, the exit, the logs' tails."""
        flow = "\n".join(f"  {m.direction:8} {m.first_line}" for m in self.messages())
        lines = [
            f"command: {' '.join(self.command)}",
            f"exit code: {self.returncode}" + (" (stopped by the harness)" if self.stopped else ""),
            f"messages:\n{flow or '  (none)'}",
            f"errors:\n{_one_event_a_line(self.error_log)[-3000:] or '  (none)'}",
            f"screen (tail):\n{self.screen.strip()[-1500:]}",
        ]
        return "\n".join(lines)


def _one_event_a_line(log: str) -> str:
    """SIPp's error log runs its events together; start each on a line of its own."""
    return _EVENT.sub(r"\n\1", log).strip()


def sipp_uac(scenario: str | os.PathLike[str], remote: tuple[str, int], **options: Any) -> Sipp:
    """SIPp as a client placing calls to `remote` (callbridge, or a trunk scenario).

    `options` are Sipp's keyword arguments; `calls` defaults to 1 (`-m 1`).
    """
    return Sipp(scenario, remote=remote, **options)


def tone_keys() -> list[str]:
    """`-key` arguments that hand uas_by_number.xml its tone files.

    SIPp reads an rtp_stream attribute when it loads the scenario, before any -set variable
    exists, and opens the file from its working directory (the log directory here); an
    attribute that is all one `[keyword]` takes its `-key` value instead: the absolute path,
    `-1` (loop until the call ends) and payload type 0 (PCMU).
    """
    args: list[str] = []
    for hz in TONES_HZ:
        args += ["-key", f"tone_{hz}", f"{AUDIO_DIR / f'tone_{hz}.ulaw'},-1,0"]
    return args


def dtmf_keys() -> list[str]:
    """`-key` arguments that hand uas_by_number.xml the capture its ...07 numbers play.

    Like a tone, a play_pcap_audio attribute is read when SIPp loads the scenario, so the
    capture must exist even when no ...07 number is dialled.
    """
    if not DTMF_1_PCAP.is_file():
        raise FileNotFoundError(f"{DTMF_1_PCAP} is missing: install sip-tester (SIPp)")
    return ["-key", "dtmf_1", str(DTMF_1_PCAP)]


def can_play_pcap() -> bool:
    """Whether SIPp may play a capture here: play_pcap_audio sends through a raw socket.

    Without root, the first ...07 call would end SIPp with a fatal error.
    """
    return os.geteuid() == 0


def by_number_trunk(
    *,
    calls: int = 1,
    variables: Mapping[str, object] | None = None,
    extra_args: Sequence[str] = (),
    **options: Any,
) -> Sipp:
    """SIPp as the trunk that acts on the dialled number (uas_by_number.xml).

    It takes `calls` INVITEs, at once or one after another, and stops once they have all
    ended; `variables` are its other parameters (ring_ms, hangup_ms, early_ms, dtmf_ms);
    `options` are Sipp's keyword arguments.
    """
    return Sipp(
        "uas_by_number.xml",
        variables={"calls": calls, **(variables or {})},
        extra_args=[*tone_keys(), *dtmf_keys(), *extra_args],
        **options,
    )


def _uri_user(uri: str) -> str:
    """The user part of a sip:/sips: URI ("" when it has none), without user parameters."""
    scheme, _, rest = uri.partition(":")
    user, at, _host = rest.partition("@")
    return user.split(";", 1)[0] if scheme in ("sip", "sips") and at else ""


def _national(number: str) -> str:
    """The last 10 digits of a number: +91/91/0 prefixes and separators dropped."""
    return "".join(c for c in number if c.isdigit())[-10:]


async def _exited(proc: subprocess.Popen[bytes]) -> None:
    """Return once `proc` has exited, without polling where Linux offers a pidfd."""
    if proc.poll() is not None:
        return
    if not hasattr(os, "pidfd_open"):
        while proc.poll() is None:
            await asyncio.sleep(0.01)
        return
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(proc.pid)
    readable = loop.create_future()
    loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
    try:
        await readable
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    proc.wait()
