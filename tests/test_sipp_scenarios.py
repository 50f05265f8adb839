"""The SIPp trunk scenarios, each played against a SIPp client before callbridge meets them.

Every pair must exit 0; the auth scenarios must also fail a wrong password, and a trunk
whose UAC misbehaves must exit non-zero without waiting for its global timeout.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from sipp import SCENARIO_DIR, Sipp, SippMessage, parse_message_log, sipp_uac

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (sip-tester) is not installed"),
]


async def _play(
    trunk_scenario: str,
    uac_scenario: str,
    *,
    variables: Mapping[str, object] | None = None,
    auth: tuple[str, str] | None = None,
    recv_timeout: float = 3.0,
    uac_recv_timeout: float = 3.0,
    trunk_only: bool = False,
) -> tuple[Sipp, Sipp]:
    async with (
        Sipp(trunk_scenario, variables=variables, recv_timeout=recv_timeout, timeout=10) as trunk,
        sipp_uac(
            f"selftest/{uac_scenario}",
            trunk.address,
            auth=auth,
            recv_timeout=uac_recv_timeout,
            timeout=10,
        ) as agent,
    ):
        await asyncio.gather(trunk.wait(), *([] if trunk_only else [agent.wait()]))
    return trunk, agent


def play(trunk_scenario: str, uac_scenario: str, **options: Any) -> tuple[Sipp, Sipp]:
    """Run the trunk scenario, then a SIPp UAC toward it; both have exited on return.

    With trunk_only=True the UAC is stopped as soon as the trunk exits.
    """
    return asyncio.run(_play(trunk_scenario, uac_scenario, **options))


def assert_passed(*runs: Sipp) -> None:
    for run in runs:
        assert run.returncode == 0, run.report()


def flow(run: Sipp) -> list[str]:
    """The messages on the wire as 'sent 180' / 'received ACK'."""
    return [f"{m.direction} {m.method or m.status}" for m in run.messages() if not m.is_loopback]


def gap(earlier: SippMessage, later: SippMessage) -> timedelta:
    return later.time - earlier.time


SDP_CODECS = (
    "m=audio ",
    " RTP/AVP 0 8 101\r\n",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
)


def test_answer_rings_answers_with_sdp_and_takes_the_bye() -> None:
    trunk, agent = play("uas_answer.xml", "uac_for_answer.xml", variables={"ring_ms": 300})
    assert_passed(trunk, agent)
    assert flow(trunk) == [
        "received INVITE",
        "sent 100",
        "sent 180",
        "sent 200",
        "received ACK",
        "received BYE",
        "sent 200",
    ]
    ringing, ok = trunk.sent(180)[0], trunk.sent(200)[0]
    assert gap(ringing, ok) >= timedelta(milliseconds=300)
    assert all(part in ok.body for part in SDP_CODECS)
    invite_to = trunk.received("INVITE")[0].header("To")
    assert (ok.header("To") or "").startswith(f"{invite_to};tag=")


def test_answer_hangup_sends_an_in_dialog_bye() -> None:
    trunk, agent = play(
        "uas_answer_hangup.xml", "uac_for_answer_hangup.xml", variables={"hangup_ms": 300}
    )
    assert_passed(trunk, agent)
    assert flow(trunk)[-3:] == ["received ACK", "sent BYE", "received 200"]
    invite, ack, bye = trunk.received("INVITE")[0], trunk.received("ACK")[0], trunk.sent("BYE")[0]
    assert gap(ack, bye) >= timedelta(milliseconds=300)
    # RFC 3261 12.2.1.1: to the remote target, the parties swapped, our tag in From.
    assert invite.header("Contact") == f"<{bye.request_uri}>"
    assert bye.header("To") == invite.header("From")
    assert bye.header("From") == trunk.sent(200)[0].header("To")
    assert bye.header("Call-ID") == invite.header("Call-ID")


def test_busy_answers_486_and_takes_the_ack() -> None:
    trunk, agent = play("uas_busy.xml", "uac_for_busy.xml")
    assert_passed(trunk, agent)
    assert flow(trunk) == ["received INVITE", "sent 100", "sent 486", "received ACK"]


def test_ring_cancel_answers_the_cancel_and_terminates_the_invite() -> None:
    trunk, agent = play("uas_ring_cancel.xml", "uac_for_ring_cancel.xml")
    assert_passed(trunk, agent)
    assert flow(trunk) == [
        "received INVITE",
        "sent 100",
        "sent 180",
        "received CANCEL",
        "sent 200",
        "sent 487",
        "received ACK",
    ]
    assert trunk.sent(200)[0].header("CSeq") == "1 CANCEL"
    assert trunk.sent(487)[0].header("CSeq") == "1 INVITE"
    assert trunk.sent(487)[0].header("To") == trunk.sent(180)[0].header("To")


def test_auth_401_challenges_then_accepts_the_right_credentials() -> None:
    credentials = {"auth_user": "agent7", "auth_password": "s3cret", "realm": "carrier.example"}
    trunk, agent = play(
        "uas_auth_401.xml", "uac_for_auth.xml", variables=credentials, auth=("agent7", "s3cret")
    )
    assert_passed(trunk, agent)
    challenge = trunk.sent(401)[0].header("WWW-Authenticate") or ""
    assert challenge.startswith('Digest realm="carrier.example", nonce="')
    assert 'qop="auth"' in challenge
    assert 'username="agent7"' in (trunk.received("INVITE")[1].header("Authorization") or "")
    assert flow(trunk)[-6:] == [
        "sent 100",
        "sent 180",
        "sent 200",
        "received ACK",
        "received BYE",
        "sent 200",
    ]


@pytest.mark.parametrize(
    ("scenario", "variables"),
    [("uas_auth_401.xml", {}), ("uas_auth_407.xml", {"silence_ms": 100})],
)
def test_auth_refuses_a_wrong_password_and_fails(
    scenario: str, variables: dict[str, object]
) -> None:
    trunk, agent = play(scenario, "uac_for_auth.xml", variables=variables, auth=("callbridge", "x"))
    assert trunk.returncode == 1, trunk.report()
    assert flow(trunk)[-3:] == ["sent 100", "sent 403", "received ACK"]
    assert "verifyauth rejected" in trunk.error_log
    assert agent.received(403)


def test_auth_407_stays_silent_for_2_s_then_challenges_and_verifies() -> None:
    trunk, agent = play(
        "uas_auth_407.xml", "uac_for_auth.xml", auth=("callbridge", "secret"), uac_recv_timeout=5.0
    )
    assert_passed(trunk, agent)
    first, challenge = trunk.received("INVITE")[0], trunk.sent(407)[0]
    assert gap(first, challenge) >= timedelta(seconds=2)
    # Timer A: the INVITE came at 0, 0.5 and 1.5 s, all before the challenge.
    assert len([m for m in trunk.received("INVITE") if m.time < challenge.time]) == 3
    assert 'qop="auth"' in (challenge.header("Proxy-Authenticate") or "")
    assert (trunk.received("INVITE")[-1].header("Proxy-Authorization") or "").startswith(
        'Digest username="callbridge"'
    )
    # verifyauth ran on the loopback copy; the call then went on with the agent.
    assert [m.direction for m in trunk.messages() if m.is_loopback] == ["sent", "received"]
    assert flow(trunk)[-6:] == [
        "sent 100",
        "sent 180",
        "sent 200",
        "received ACK",
        "received BYE",
        "sent 200",
    ]


def test_early_media_sends_183_with_sdp_then_the_same_answer_in_200() -> None:
    trunk, agent = play(
        "uas_early_media.xml", "uac_for_early_media.xml", variables={"answer_ms": 300}
    )
    assert_passed(trunk, agent)
    progress, ok = trunk.sent(183)[0], trunk.sent(200)[0]
    assert gap(progress, ok) >= timedelta(milliseconds=300)
    assert all(part in progress.body for part in SDP_CODECS)
    assert ok.body == progress.body
    assert flow(trunk)[-4:] == ["sent 200", "received ACK", "received BYE", "sent 200"]


def test_reinvite_reoffers_media_in_the_dialog() -> None:
    trunk, agent = play("uas_reinvite.xml", "uac_for_reinvite.xml", variables={"reinvite_ms": 200})
    assert_passed(trunk, agent)
    assert flow(trunk)[4:] == [
        "received ACK",
        "sent INVITE",
        "received 200",
        "sent ACK",
        "received BYE",
        "sent 200",
    ]
    ack, reinvite = trunk.received("ACK")[0], trunk.sent("INVITE")[0]
    assert gap(ack, reinvite) >= timedelta(milliseconds=200)
    assert reinvite.header("CSeq") == "1 INVITE"
    assert trunk.sent("ACK")[0].header("CSeq") == "1 ACK"
    assert " 2 IN IP4 " in reinvite.body.split("\r\n")[1]  # o= version raised


def test_no_answer_takes_every_retransmission_and_sends_nothing() -> None:
    trunk, agent = play("uas_no_answer.xml", "uac_for_no_answer.xml", variables={"hold_ms": 2200})
    assert_passed(trunk, agent)
    assert len(trunk.received("INVITE")) == 3
    assert trunk.sent() == []


# The UAC waits longer than the trunk and is stopped when the trunk exits: were it to time
# out first, SIPp would abort its call with a BYE or CANCEL, which is what the trunk expects.


def test_trunk_fails_fast_when_the_uac_never_hangs_up() -> None:
    trunk, _agent = play(
        "uas_answer.xml", "uac_for_answer_hangup.xml", recv_timeout=0.5, trunk_only=True
    )
    assert trunk.returncode == 1, trunk.report()
    assert "uas_answer: the UAC did not complete the call" in trunk.error_log
    assert trunk.received("BYE") == []


def test_trunk_fails_fast_when_the_uac_never_cancels() -> None:
    trunk, _agent = play(
        "uas_ring_cancel.xml", "uac_for_answer.xml", recv_timeout=0.5, trunk_only=True
    )
    assert trunk.returncode == 1, trunk.report()
    assert "did not cancel" in trunk.error_log


def test_trunk_exits_with_an_error_when_no_invite_comes() -> None:
    trunk = Sipp("uas_busy.xml", timeout=1)
    assert trunk.run() not in (0, None)
    assert trunk.messages() == []


def test_trunk_answers_keepalive_options_and_still_takes_the_call() -> None:
    async def scenario() -> tuple[Sipp, Sipp, str]:
        async with Sipp("uas_busy.xml", recv_timeout=3, timeout=10) as trunk:
            reply = await asyncio.to_thread(_options_ping, trunk.address)
            async with sipp_uac("selftest/uac_for_busy.xml", trunk.address, timeout=10) as agent:
                await asyncio.gather(trunk.wait(), agent.wait())
        return trunk, agent, reply

    trunk, agent, reply = asyncio.run(scenario())
    assert reply.startswith("SIP/2.0 200 OK\r\n")
    assert "\r\nCall-ID: ping-1@test\r\n" in reply
    assert_passed(trunk, agent)
    assert flow(trunk)[:2] == ["received OPTIONS", "sent 200"]


def _options_ping(address: tuple[str, int]) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)
        port = sock.getsockname()[1]
        ping = (
            f"OPTIONS sip:{address[0]}:{address[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-ping-1\r\n"
            "From: <sip:callbridge@127.0.0.1>;tag=p1\r\n"
            f"To: <sip:{address[0]}:{address[1]}>\r\n"
            "Call-ID: ping-1@test\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(ping.encode(), address)
        return sock.recv(4096).decode()


def test_message_log_parsing_keeps_each_message_intact() -> None:
    log = (
        "----------------------------------------------- 2026-11-29 08:44:04.530290\n"
        "UDP message received [44] bytes :\n\n"
        "BYE sip:a@h SIP/2.0\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n\n"
        "----------------------------------------------- 2026-11-29 08:44:04.538418\n"
        "UDP message sent (57 bytes):\n\n"
        "SIP/2.0 200 OK\r\ncseq: 2 BYE\r\nContent-Length: 3\r\n\r\nv=0\r\n\n"
    )
    bye, ok = parse_message_log(log)
    assert (bye.direction, bye.method, bye.status) == ("received", "BYE", None)
    assert bye.text.endswith("Content-Length: 0\r\n\r\n")
    assert (ok.direction, ok.method, ok.status) == ("sent", None, 200)
    assert ok.header("CSeq") == "2 BYE"
    assert ok.body == "v=0\r\n"
    assert gap(bye, ok) == timedelta(microseconds=8128)


TRUNK_SCENARIOS = sorted(SCENARIO_DIR.glob("uas_*.xml"))


@pytest.mark.parametrize("path", TRUNK_SCENARIOS, ids=lambda p: p.name)
def test_trunk_scenario_keeps_the_conventions(path: Path) -> None:
    """Answers pings, stops SIPp itself, fails fast, documents its parameters."""
    steps = list(ElementTree.parse(path).getroot())
    recvs = [s for s in steps if s.tag == "recv"]
    assert recvs[0].attrib == {"request": "OPTIONS", "optional": "true", "next": "options"}
    assert recvs[1].get("request") == "INVITE"
    labels = {s.get("id") for s in steps if s.tag == "label"}
    assert {"options", "end"} <= labels
    assert "stop_gracefully" in path.read_text()
    # After the INVITE, a missing message must fail the call at -recv_timeout.
    waits = [r for r in recvs[2:] if r.get("optional") != "true" and "timeout" not in r.attrib]
    assert all(r.get("ontimeout") == "fail" for r in waits)
    assert "fail" in labels or not waits
    readme = (SCENARIO_DIR / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith(f"| `{path.name}` |"))
    for variables in (s.get("variables", "") for s in steps if s.tag == "Global"):
        assert all(f"`{name}`" in row for name in variables.split(","))


def test_every_trunk_scenario_has_a_selftest() -> None:
    names = {p.name for p in TRUNK_SCENARIOS}
    assert len(names) == 11
    # uas_by_number.xml has its own self-tests in test_sipp_by_number.py; uas_info_dtmf.xml is
    # driven by callbridge itself in test_e2e_dtmf_info.py (its message log checked there).
    here = Path(__file__)
    tested = "".join((here.parent / name).read_text() for name in (
        here.name, "test_sipp_by_number.py", "test_e2e_dtmf_info.py"))
    assert all(name in tested for name in names)
