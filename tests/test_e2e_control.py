"""Live call control end to end: add-leg (conference, warm transfer), hangup, DTMF, agent
confirmation, time limits; SIPp plays every party (uas_by_number.xml), and what the parties
heard is captured off loopback and decoded (root only, as CI runs)."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from callbridge.media.g711 import ulaw_decode
from e2e_support import Rig, bridged, legs_of, rig, run, wait_for_view
from rtp_sniffer import LoopbackRtpSniffer, can_sniff
from sipp import by_number_trunk, free_udp_port

pytestmark = pytest.mark.sipp

AGENT_440 = "9876543400"
AGENT_HANGS_UP = "9876543404"
CUSTOMER_1K = "9876543100"
CUSTOMER_RINGS = "9876543102"
THIRD_600 = "9876543600"
THIRD_BUSY = "9876543601"
THIRD_HANGS_UP = "9876543604"
needs_root = pytest.mark.skipif(not can_sniff(), reason="capturing loopback RTP needs root")


def leg_status(n: int, status: str) -> Any:
    return lambda view: len(view["legs"]) >= n and view["legs"][n - 1]["status"] == status


async def add_leg(r: Rig, call_id: str, number: str, ring: int = 10) -> int:
    response = await r.http.post(f"/calls/{call_id}/add-leg", headers=r.auth,
                                 json={"number": number, "max_ring_time": ring})
    assert response.status_code == 200, response.text
    leg_id: int = response.json()["leg_id"]
    return leg_id


def levels(payloads: list[bytes]) -> dict[int, float]:
    """Spectral magnitude at 440, 600 and 1000 Hz of a stream of PCMU payloads."""
    return levels_of_pcm(ulaw_decode(b"".join(payloads)))


@needs_root
def test_three_way_everyone_hears_both_others_and_not_themselves(tmp_path: Path) -> None:
    media_port = free_udp_port()

    async def body() -> None:
        trunk = by_number_trunk(calls=3, recv_timeout=20, extra_args=("-mp", str(media_port)))
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=CUSTOMER_1K)
            await wait_for_view(r, call_id, bridged)
            assert await add_leg(r, call_id, THIRD_600) == 3
            view = await wait_for_view(r, call_id, leg_status(3, "JOINED"))
            assert view["legs"][2]["role"] == "destination"
            await asyncio.sleep(2.0)  # let the conference talk: the audio is what we test
            response = await r.http.post(f"/calls/{call_id}/hangup", headers=r.auth)
            assert response.status_code == 200
            payload = await r.callback()
            assert payload["status"] == "ANSWER" and len(payload["legs"]) == 3
            assert await trunk.wait() == 0, trunk.report()
        audio, _ = soundfile.read(tmp_path / "recordings" / f"crm_{call_id}.wav", dtype="int16")
        right = levels_of_pcm(audio[-12000:, 1])
        assert right[1000] > 5 * right[440] and right[600] > 5 * right[440]

    with LoopbackRtpSniffer(dst_port=media_port) as sniffer:
        run(body)
    streams = [s[-60:-10] for s in sniffer.streams().values() if len(s) > 100]
    assert len(streams) == 3
    heard = [levels(s) for s in streams]
    # One party hears 1 kHz + 600 Hz (the agent), one 440 + 600 (the customer), one 440 +
    # 1 kHz (the third): nobody hears their own tone.
    missing = sorted(min(h, key=h.__getitem__) for h in heard)
    assert missing == [440, 600, 1000], heard
    for h in heard:
        quiet = min(h.values())
        assert sorted(h.values())[1] > 5 * quiet, h  # the two others are clearly there


def levels_of_pcm(pcm: np.ndarray) -> dict[int, float]:
    spectrum = np.abs(np.fft.rfft(pcm.astype(float) * np.hanning(len(pcm))))
    bins = {hz: round(hz * len(pcm) / 8000) for hz in (440, 600, 1000)}
    return {hz: float(spectrum[b - 2: b + 3].max()) for hz, b in bins.items()}


@needs_root
@pytest.mark.parametrize(("third", "code"), [(THIRD_BUSY, 486), ("9876543602", 487)],
                         ids=["busy", "unanswered"])
def test_added_leg_that_fails_leaves_the_call_untouched(tmp_path: Path, third: str,
                                                        code: int) -> None:
    media_port = free_udp_port()

    async def body() -> None:
        trunk = by_number_trunk(calls=3, recv_timeout=15, extra_args=("-mp", str(media_port)))
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=CUSTOMER_1K)
            await wait_for_view(r, call_id, bridged)
            leg = await add_leg(r, call_id, third, ring=5)
            view = await wait_for_view(r, call_id, leg_status(leg, "FAILED"), timeout=10)
            assert legs_of(view)[2] == ("destination", "FAILED", code)
            assert bridged(view)
            await asyncio.sleep(2.0)  # the two original parties keep talking: listen to them
            await r.http.post(f"/calls/{call_id}/hangup", headers=r.auth)
            payload = await r.callback()
            assert payload["status"] == "ANSWER" and payload["hangup_source"] == "api"
            assert await trunk.wait() == 0, trunk.report()

    with LoopbackRtpSniffer(dst_port=media_port) as sniffer:
        run(body)
    streams = [s for s in sniffer.streams().values() if len(s) > 60]
    heard = sorted((levels(s[-50:-5]) for s in streams), key=lambda h: h[440])
    assert len(heard) == 2  # the third party never got any audio from us
    to_agent, to_customer = heard  # the agent hears 1 kHz, the customer 440 Hz
    assert to_agent[1000] > 5 * to_agent[440] and to_customer[440] > 5 * to_customer[1000]


def test_warm_transfer_agent_leaves_then_the_call_ends_with_one_callback(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=3, variables={"hangup_ms": 2500}, recv_timeout=15)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_HANGS_UP, to_number=CUSTOMER_1K)
            await wait_for_view(r, call_id, bridged)
            await add_leg(r, call_id, THIRD_HANGS_UP)
            await wait_for_view(r, call_id, leg_status(3, "JOINED"))
            view = await wait_for_view(r, call_id, leg_status(1, "LEFT"))
            assert bridged(view)  # customer and third party still connected
            payload = await r.callback(timeout=15)  # the third party hangs up in turn
            assert payload["status"] == "ANSWER" and payload["hangup_source"] == "destination"
            assert [leg["status"] for leg in payload["legs"]] == ["LEFT", "LEFT", "LEFT"]
            assert len(r.callbacks.received) == 1
            assert await trunk.wait() == 0, trunk.report()

    run(body)


def test_hangup_while_ringing_is_canceled_and_idempotent(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, recv_timeout=10)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=CUSTOMER_RINGS)
            await wait_for_view(r, call_id, leg_status(2, "DIALING"))
            for _ in range(2):
                response = await r.http.post(f"/calls/{call_id}/hangup", headers=r.auth)
                assert response.status_code == 200
            payload = await r.callback()
            assert payload["status"] == "CANCELED" and payload["hangup_source"] == "api"
            again = await r.http.post(f"/calls/{call_id}/hangup", headers=r.auth)
            assert again.status_code == 200
            assert len(r.callbacks.received) == 1
            assert await trunk.wait() == 0, trunk.report()

    run(body)


def test_hangup_of_a_bridged_call_is_answer_with_duration(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, recv_timeout=10)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=CUSTOMER_1K)
            await wait_for_view(r, call_id, bridged)
            await asyncio.sleep(1.2)  # talk time is what this test measures
            await r.http.post(f"/calls/{call_id}/hangup", headers=r.auth)
            payload = await r.callback()
            assert payload["status"] == "ANSWER" and payload["duration"] >= 1
            assert await trunk.wait() == 0, trunk.report()

    run(body)


def test_add_leg_on_a_call_not_bridged_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, recv_timeout=10)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=CUSTOMER_RINGS)
            await wait_for_view(r, call_id, leg_status(2, "DIALING"))
            response = await r.http.post(f"/calls/{call_id}/add-leg", headers=r.auth,
                                         json={"number": THIRD_600})
            assert response.status_code == 400
            assert response.json()["error_code"] == "CALL_NOT_ACTIVE"
            await r.http.post(f"/calls/{call_id}/hangup", headers=r.auth)
            await r.callback()
            assert await trunk.wait() == 0, trunk.report()

    run(body)


def test_time_limit_hangs_up_with_source_system(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, recv_timeout=20)
        async with trunk, rig(trunk, tmp_path) as r:
            await r.place(agent_number=AGENT_440, to_number=CUSTOMER_1K, time_limit=10)
            payload = await r.callback(timeout=20)
            assert payload["status"] == "ANSWER" and payload["hangup_source"] == "system"
            assert payload["duration"] == 10
            assert await trunk.wait() == 0, trunk.report()

    run(body)


@needs_root
def test_dtmf_reaches_the_customer_as_rfc4733_events(tmp_path: Path) -> None:
    media_port = free_udp_port()

    async def body() -> None:
        trunk = by_number_trunk(calls=2, recv_timeout=10, extra_args=("-mp", str(media_port)))
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_440, to_number=CUSTOMER_1K)
            await wait_for_view(r, call_id, bridged)
            response = await r.http.post(f"/calls/{call_id}/dtmf", headers=r.auth,
                                         json={"digits": "12#"})
            assert response.status_code == 200, response.text
            await asyncio.sleep(1.0)  # the digits take 3 x 160 ms to send, in real time
            await r.http.post(f"/calls/{call_id}/hangup", headers=r.auth)
            await r.callback()
            assert await trunk.wait() == 0, trunk.report()

    with LoopbackRtpSniffer(dst_port=media_port) as sniffer:
        run(body)
    ends: dict[int, list[int]] = {}
    for payload in sniffer.events():
        event, flags, duration = struct.unpack("!BBH", payload[:4])
        if flags & 0x80:
            ends.setdefault(event, []).append(duration)
    assert sorted(ends) == [1, 2, 11]  # "1", "2", "#" (RFC 4733 §3.2: # is 11)
    assert all(durations[0] == 800 and len(durations) == 3 for durations in ends.values())


AGENT_CONFIRMS = "9876543407"  # answers, presses 1 (RFC 4733) after dtmf_ms, plays 440 Hz
AGENT_NEVER_CONFIRMS = "9876543408"  # answers, plays 440 Hz, presses nothing


@needs_root  # SIPp plays the keypress from a pcap, through a raw socket
def test_agent_confirmation_dials_the_customer_after_a_1(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=2, variables={"dtmf_ms": 600, "hangup_ms": 1500},
                                recv_timeout=15)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_CONFIRMS, to_number="9876543104",
                                    agent_confirm="dtmf")
            payload = await r.callback(timeout=20)
            assert payload["status"] == "ANSWER", payload
            assert legs_of(await r.view(call_id)) == [("agent", "LEFT", None),
                                                       ("destination", "LEFT", None)]
            assert await trunk.wait() == 0, trunk.report()
        assert len(trunk.received("INVITE")) == 2

    run(body)


def test_no_confirmation_dials_nobody_and_ends_no_answer(tmp_path: Path) -> None:
    async def body() -> None:
        trunk = by_number_trunk(calls=1, recv_timeout=15)
        async with trunk, rig(trunk, tmp_path) as r:
            call_id = await r.place(agent_number=AGENT_NEVER_CONFIRMS, to_number=CUSTOMER_1K,
                                    agent_confirm="dtmf", max_ring_time=5)
            payload = await r.callback(timeout=15)
            assert payload["status"] == "NO_ANSWER"
            view = await r.view(call_id)
            assert legs_of(view) == [("agent", "LEFT", None)]
            assert view["legs"][0]["reason"] == "AGENT_NOT_CONFIRMED"
            assert await trunk.wait() == 0, trunk.report()
        assert len(trunk.received("INVITE")) == 1  # the customer was never dialled

    run(body)
