"""PROTOS c07-sip (University of Oulu, 2003): read the test-case templates and fill them in.

The cases are GPL-2 test data: they stay in the shared folder beside the repository
(``../shared/vectors/protos-c07-sip-cases.tar.xz``) and are read from there at test time,
never copied into this repository.

The tarball holds ``GROUPS.tsv`` (group name, first case, case count, MUST_PASS/MUST_FAIL)
and ``cases/NNNNNNN``. A case file is a sequence of records ``<decimal length> <that many
bytes>``: an INVITE, then its teardown. The lengths count the *template* bytes, so a file
is split into records first and each record filled afterwards.

Placeholders are filled the way the PROTOS injector does: ``<To>`` a user at the server,
``<From>`` a user at the sender, ``<From-Address>``/``<From-IP>``/``<Local-Port>`` the
sender's socket, ``<Call-ID>`` and ``<Branch-ID>`` unique per case, ``<CSeq>`` a number,
``<Teardown-Method>`` CANCEL (INVITE still pending) or ACK (it got a final response), and
``<Content-Length>`` last, from the body as filled.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

#: Where CI and /work keep the shared material: a sibling of the repository's folder.
PROTOS_TARBALL = (
    Path(__file__).resolve().parents[2] / "shared" / "vectors" / "protos-c07-sip-cases.tar.xz"
)
#: The largest payload one IPv4 UDP datagram carries (65,535 - 20 IP - 8 UDP).
MAX_UDP_PAYLOAD = 65507


@dataclass(frozen=True)
class Group:
    """One row of GROUPS.tsv: the cases ``first .. first + count - 1``."""

    name: str
    first: int
    count: int
    verdict: str  #: "MUST_PASS" (valid SIP) or "MUST_FAIL" (malformed on purpose)

    @property
    def numbers(self) -> range:
        return range(self.first, self.first + self.count)


@dataclass(frozen=True)
class Case:
    """One test case: the INVITE template and its teardown template, unfilled."""

    number: int
    invite: bytes
    teardown: bytes


@dataclass(frozen=True)
class Sender:
    """The addresses a filled case names: the server it goes to, the socket it comes from."""

    server_host: str
    server_port: int
    host: str
    port: int


def load(path: Path = PROTOS_TARBALL) -> tuple[list[Group], dict[int, Case]]:
    """The groups and every case of the tarball at ``path``, keyed by case number."""
    groups: list[Group] = []
    cases: dict[int, Case] = {}
    with tarfile.open(path, "r:xz") as tar:
        for member in tar:
            if not member.isfile():
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            data = extracted.read()
            name = member.name.removeprefix("./")
            if name == "GROUPS.tsv":
                groups = parse_groups(data.decode("ascii"))
            elif name.startswith("cases/"):
                number = int(name.removeprefix("cases/"))
                invite, teardown = split_records(data)
                cases[number] = Case(number, invite, teardown)
    return groups, cases


def load_groups(path: Path = PROTOS_TARBALL) -> list[Group]:
    """GROUPS.tsv alone."""
    with tarfile.open(path, "r:xz") as tar:
        for member in tar:
            if member.name.removeprefix("./") == "GROUPS.tsv":
                extracted = tar.extractfile(member)
                assert extracted is not None
                return parse_groups(extracted.read().decode("ascii"))
    raise ValueError(f"{path}: no GROUPS.tsv")


def parse_groups(text: str) -> list[Group]:
    groups = []
    for line in io.StringIO(text):
        if line.strip():
            name, first, count, verdict = line.rstrip("\r\n").split("\t")
            groups.append(Group(name, int(first), int(count), verdict))
    return groups


def split_records(data: bytes) -> list[bytes]:
    """``<decimal length> <bytes>`` records; a length that overruns the file is an error."""
    records = []
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        length = int(data[at:space])
        start = space + 1
        if start + length > len(data):
            raise ValueError(f"record at byte {at} claims {length} bytes, past the end")
        records.append(data[start : start + length])
        at = start + length
    return records


def call_id(number: int) -> str:
    """The Call-ID (and branch) token of case ``number``: unique, and findable in replies."""
    return f"c07-{number:07d}"


def fill(template: bytes, number: int, sender: Sender, teardown_method: str = "CANCEL") -> bytes:
    """The datagram for one record of case ``number``, placeholders filled."""
    token = call_id(number).encode()
    values = {
        b"<To>": f"callbridge@{sender.server_host}:{sender.server_port}".encode(),
        b"<From>": f"protos@{sender.host}".encode(),
        b"<From-Address>": sender.host.encode(),
        b"<From-IP>": sender.host.encode(),
        b"<Local-Port>": str(sender.port).encode(),
        b"<Call-ID>": token,
        b"<Branch-ID>": token,
        b"<CSeq>": str(number + 1).encode(),
        b"<Teardown-Method>": teardown_method.encode(),
    }
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template.replace(b"<Content-Length>", str(len(body_of(template))).encode())


def body_of(message: bytes) -> bytes:
    """What follows the first empty line (RFC 3261 §7.5); nothing if there is none."""
    _, blank, body = message.partition(b"\r\n\r\n")
    return body if blank else b""
