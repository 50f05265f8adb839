"""Click-to-call end to end: the REST API over real HTTP, the whole server in-process, SIPp as
the trunk acting per dialled number (uas_by_number.xml), callbacks to a real HTTP receiver.

Dialled numbers choose what the trunk does (see sipp_scenarios/README.md): the last two
digits the outcome (01 busy, 02 rings out, 03 503, 04 answers then hangs up, 05 early media,
anything else answers), the digit before them the tone the party plays (4: 440 Hz, 1: 1 kHz).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import soundfile

from callback_server import CallbackServer
from callbridge.media.g711 import ulaw_decode
from callbridge.recordings.repair import recorded_audio
from e2e_support import CALLER_ID, bridged, dominant_hz, legs_of, rig, run, seed, wait_for_view
from rtp_sniffer import LoopbackRtpSniffer, can_sniff
from sipp import by_number_trunk, free_udp_port

pytestmark = pytest.mark.sipp

AGENT_440 = "9876543400"  # answers, plays 440 Hz, keeps the call until BYE
AGENT_BUSY = "9876543401"
AGENT_HANGS_UP = "9876543404"  # answers, plays 440 Hz, hangs up after hangup_ms
CUSTOMER_1K = "9876543100"  # answers, plays 1 kHz
CUSTOMER_HANGS_UP = "9876543104"  # answers, plays 1 kHz, hangs up after hangup_ms
CUSTOMER_BUSY = "9876543101"
CUSTOMER_RINGS = "9876543102"
CUSTOMER_503 = "9876543103"
CUSTOMER_EARLY = "9876543105"


def test_answered_call_is_bridged_recorded_and_reported(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, variables={"hangup_ms": 2500}, recv_timeout=15)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=CUSTOMER_HANGS_UP)
            payload = await r.callback()
            assert payload["call_id"] == call_id and payload["status"] == "ANSWER"
            assert payload["customer_number"] == CUSTOMER_HANGS_UP
            assert payload["agent_number"] == AGENT_440
            assert payload["hangup_source"] == "destination"
            assert 1 <= payload["duration"] <= 3
            view = await r.view(call_id)
            assert view["call_status"] == "ANSWER" and view["duration"] == payload["duration"]
            assert legs_of(view) == [("agent", "LEFT", None), ("destination", "LEFT", None)]
            assert view["recording_url"] == payload["recording_url"]
            url = view["recording_url"]
            assert url.endswith(f"/recordings/crm_{call_id}.wav")
            wav = await r.http.get(url)
            assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
            part = await r.http.get(url, headers={"Range": "bytes=0-99"})
            assert part.status_code == 206 and part.content == wav.content[:100]
            assert await trunk.wait() == 0, trunk.report()
            writer = r.server.writers.pid  # the recording was written by a child process
            assert writer is not None
        assert not os.path.exists(f"/proc/{writer}")  # stopping the server reaped it
        # Agent first, then the customer, with the account's caller ID in From and PAI, in
        # the trunk's number format ("plain": 10 digits).
        invites = trunk.received("INVITE")
        assert [m.request_uri.split("@")[0] for m in invites] == [  # type: ignore[union-attr]
            f"sip:{AGENT_440}", f"sip:{CUSTOMER_HANGS_UP}"]
        assert "sip:9800000000@" in (invites[1].header("From") or "")
        assert "sip:9800000000@" in (invites[1].header("P-Asserted-Identity") or "")
        audio, rate = soundfile.read(tmp_path / "recordings" / f"crm_{call_id}.wav",
                                     dtype="int16")
        assert rate == 8000 and audio.shape[1] == 2
        talk = len(audio) / rate
        assert abs(talk - 2.5) < 0.5  # hangup_ms: the customer talked 2.5 s, then hung up
        middle = audio[int(0.3 * rate): int((talk - 0.3) * rate)]
        assert abs(dominant_hz(middle[:, 0]) - 440) < 15  # the agent, on the left
        assert abs(dominant_hz(middle[:, 1]) - 1000) < 15  # the customer, on the right

    run(body)


def test_a_writer_killed_mid_call_costs_neither_call_nor_audio_so_far(tmp_path: Path) -> None:
    """The recordings writer process dies during the conversation: the call goes on to its
    end, the callback comes, and it points at the audio written until then."""

    async def body() -> None:
        trunk = by_number_trunk(calls=2, variables={"hangup_ms": 4000}, recv_timeout=15)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=CUSTOMER_HANGS_UP)
            await wait_for_view(r, call_id, bridged)
            path = tmp_path / "recordings" / f"crm_{call_id}.wav"
            deadline = asyncio.get_running_loop().time() + 10
            while recorded_audio(path) < 8000 * 4:  # a second on disk
                assert asyncio.get_running_loop().time() < deadline, "nothing written"
                await asyncio.sleep(0.05)
            writer = r.server.writers.pid
            assert writer is not None
            os.kill(writer, signal.SIGKILL)
            payload = await r.callback()
            assert payload["call_id"] == call_id and payload["status"] == "ANSWER"
            assert payload["hangup_source"] == "destination"  # the call ran to its end
            assert payload["recording_url"].endswith(f"/recordings/crm_{call_id}.wav")
            assert await trunk.wait() == 0, trunk.report()
        audio, rate = soundfile.read(path, dtype="int16")  # repaired: a valid WAV
        assert 1.0 <= len(audio) / rate < 4.0
        assert abs(dominant_hz(audio[int(0.3 * rate):int(0.8 * rate), 0]) - 440) < 15
        assert abs(dominant_hz(audio[int(0.3 * rate):int(0.8 * rate), 1]) - 1000) < 15

    run(body)


@pytest.mark.skipif(not can_sniff(), reason="capturing loopback RTP needs root (CI runs as root)")
def test_each_party_hears_the_other(tmp_path: Path) -> None:
    """What SIPp received, captured off lo and decoded: the agent heard ringback, then the
    customer's 1 kHz; the customer heard the agent's 440 Hz; nobody heard themselves."""

    async def body(media_port: int) -> None:
        trunk = by_number_trunk(calls=2, variables={"hangup_ms": 2500}, recv_timeout=15,
                                extra_args=("-mp", str(media_port)))
        async with trunk, rig(trunk, tmp_path) as r:
            await r.place(agent_number=AGENT_440, to_number=CUSTOMER_HANGS_UP)
            assert (await r.callback())["status"] == "ANSWER"
            assert await trunk.wait() == 0, trunk.report()

    media_port = free_udp_port()
    with LoopbackRtpSniffer(dst_port=media_port) as sniffer:
        run(lambda: body(media_port))
    streams = sorted(sniffer.streams().values(), key=len, reverse=True)
    assert len(streams) == 2, {len(s) for s in streams}
    to_agent, to_customer = streams  # the agent's stream also carried the ringback: longer
    heard_by_agent = ulaw_decode(b"".join(to_agent[-75:-25]))  # the last seconds: talk time
    heard_by_customer = ulaw_decode(b"".join(to_customer[25:-25]))
    assert abs(dominant_hz(heard_by_agent.astype(float)) - 1000) < 15
    assert abs(dominant_hz(heard_by_customer.astype(float)) - 440) < 15
    ringback = ulaw_decode(b"".join(to_agent[:10])).astype(float)
    assert abs(dominant_hz(ringback) - 400) < 30  # before the customer answered


def test_agent_busy(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_BUSY, to_number=CUSTOMER_1K)
            payload = await r.callback()
            assert payload["status"] == "BUSY" and payload["duration"] == 0
            assert payload["recording_url"] is None
            view = await r.view(call_id)
            assert legs_of(view) == [("agent", "FAILED", 486)]
            assert await trunk.wait() == 0, trunk.report()

    run(body)


@pytest.mark.parametrize(("customer", "status", "code"), [
    (CUSTOMER_BUSY, "BUSY", 486),
    (CUSTOMER_503, "FAILED", 503),
])
def test_customer_refuses(tmp_path: Path, customer: str, status: str, code: int) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, recv_timeout=10)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=customer)
            payload = await r.callback()
            assert payload["status"] == status
            view = await r.view(call_id)
            assert legs_of(view) == [("agent", "LEFT", None), ("destination", "FAILED", code)]
            assert await trunk.wait() == 0, trunk.report()

    run(body)


def test_customer_rings_out_is_no_answer(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, recv_timeout=10)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=CUSTOMER_RINGS,
                                    max_ring_time=5)
            payload = await r.callback(timeout=15)
            assert payload["status"] == "NO_ANSWER"
            view = await r.view(call_id)
            assert legs_of(view) == [("agent", "LEFT", None), ("destination", "FAILED", 487)]
            assert view["legs"][1]["reason"] == "RING_TIMEOUT"
            assert await trunk.wait() == 0, trunk.report()

    run(body)


def test_agent_hangs_up_while_customer_rings_is_canceled(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, variables={"hangup_ms": 1000}, recv_timeout=10)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_HANGS_UP, to_number=CUSTOMER_RINGS)
            payload = await r.callback(timeout=15)
            assert payload["status"] == "CANCELED" and payload["hangup_source"] == "agent"
            view = await r.view(call_id)
            assert legs_of(view) == [("agent", "LEFT", None), ("destination", "FAILED", 487)]
            assert await trunk.wait() == 0, trunk.report()

    run(body)


def test_early_media_then_answer(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, variables={"early_ms": 600}, recv_timeout=10)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_HANGS_UP, to_number=CUSTOMER_EARLY)
            payload = await r.callback(timeout=15)
            assert payload["status"] == "ANSWER" and payload["hangup_source"] == "agent"
            assert legs_of(await r.view(call_id)) == [("agent", "LEFT", None),
                                                       ("destination", "LEFT", None)]
            assert await trunk.wait() == 0, trunk.report()

    run(body)


def test_idempotent_replay_dials_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1)
        async with trunk, rig(trunk, tmp_path) as r:
            fields = {"from_number": CALLER_ID, "uuid": "crm-42", "agent_number": AGENT_BUSY,
                      "to_number": CUSTOMER_1K}
            first = await r.http.post("/calls", json=fields, headers=r.auth)
            again = await r.http.post("/calls", json=fields, headers=r.auth)
            assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
            assert again.json()["call_id"] == first.json()["call_id"]
            other = await r.http.post("/calls", json={**fields, "to_number": CUSTOMER_BUSY},
                                      headers=r.auth)
            assert other.status_code == 409 and other.json()["error_code"] == "DUPLICATE_UUID"
            await r.callback()
            assert await trunk.wait() == 0, trunk.report()
        assert len(trunk.received("INVITE")) == 1

    run(body)


def test_trunk_down_by_options_gives_502(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1)
        async with trunk, rig(trunk, tmp_path) as r:
            assert r.server.sip is not None
            r.server.sip.trunk.up = False  # what the OPTIONS loop sets when pings go unanswered
            response = await r.http.post("/calls", headers=r.auth, json={
                "from_number": CALLER_ID, "uuid": "crm-502", "agent_number": AGENT_440,
                "to_number": CUSTOMER_1K})
            assert response.status_code == 502
            assert response.json()["error_code"] == "TRUNK_UNAVAILABLE"
            health = await r.http.get("/health")
            assert health.status_code == 503 and health.json()["checks"]["trunk"] is False
            trunk.stop()

    run(body)


def test_callback_pending_at_sigkill_is_delivered_after_restart(tmp_path: Path) -> None:
    """The callback is in the outbox before the first attempt: kill -9 mid-delivery, start
    again, and the CRM still gets it (same event_id)."""

    def start_server(config: Path) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen([sys.executable, "-m", "callbridge", "serve", "--config",
                                 str(config)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "callbridge: SIP on ..., HTTP on HOST:PORT"
        assert "HTTP on" in line, line
        return proc, "http://" + line.rsplit("HTTP on ", 1)[1].strip()

    with CallbackServer() as callbacks:
        trunk = by_number_trunk(calls=1)
        trunk.start()
        try:
            key = asyncio.run(seed(tmp_path / "cb.db", callbacks.url))
            config = tmp_path / "callbridge.toml"
            config.write_text(
                f'[http]\nport = 0\n[sip]\nport = {free_udp_port()}\n'
                f'[trunk]\nmode = "sip"\nhost = "127.0.0.1"\nport = {trunk.address[1]}\n'
                'options_interval = 0\nnumber_format = "plain"\n'
                '[media]\nrtp_port_min = 42200\nrtp_port_max = 42299\n'
                f'[storage]\ndatabase_url = "sqlite:///{tmp_path}/cb.db"\n'
                f'recordings_dir = "{tmp_path}/recordings"\n')
            callbacks.hang_next(1)  # the first delivery never gets an answer
            proc, base = start_server(config)
            try:
                response = httpx.post(f"{base}/calls", headers={"Authorization": f"Bearer {key}"},
                                      json={"from_number": CALLER_ID, "uuid": "crm-kill",
                                            "agent_number": AGENT_BUSY, "to_number": CUSTOMER_1K})
                assert response.status_code == 200, response.text
                first = callbacks.wait_for_sync(1, timeout=20)[0]  # in flight, hanging
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                proc.stdout.close()  # type: ignore[union-attr]
            assert trunk.wait_sync() == 0, trunk.report()
            proc, _ = start_server(config)
            try:
                again = callbacks.wait_for_sync(2, timeout=20)[1]
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(20)
                proc.stdout.close()  # type: ignore[union-attr]
            assert code == 0
        finally:
            trunk.stop()
    assert again.body == first.body  # the same callback: same event_id, same payload
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    assert json.loads(again.body)["status"] == "BUSY"


def test_offline_softphone_agent_fails_at_once(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1)
        async with trunk, rig(trunk, tmp_path) as r:
            assert r.server.store is not None
            await r.server.store.add_agent(r.account.id, "agent.017")
            call_id = await r.place(crm_username="agent.017", to_number=CUSTOMER_1K)
            payload = await r.callback()
            assert payload["status"] == "FAILED" and payload["crm_username"] == "agent.017"
            view = await r.view(call_id)
            assert [(leg["status"], leg["reason"]) for leg in view["legs"]] == [
                ("FAILED", "AGENT_OFFLINE")]
            trunk.stop()
        assert trunk.received("INVITE") == []  # nothing was dialled

    run(body)
