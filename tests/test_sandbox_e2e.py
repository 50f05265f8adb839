"""Every sandbox rule yields its documented status through the REST API.

The whole server runs in-process with ``[trunk] mode = "sandbox"`` and no trunk host, so the
embedded sandbox carrier is the trunk; calls are placed over HTTP and their outcome read
from the signed status callback and ``GET /calls/{id}``. The sandbox's timings are cut short
(ring 0.2 s, early media 0.3 s), and what the sandbox saw is checked too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import soundfile

from callbridge.config import load_settings
from callbridge.errors import ConfigError
from callbridge.sandbox import Outcome, SandboxCarrier, SandboxTimings
from callbridge.server import Server
from e2e_support import dominant_hz, legs_of, rig, run

AGENT = "9876543400"  # answers, 440 Hz, talks until hung up
AGENT_BUSY = "9876543401"
AGENT_RINGS = "9876543402"
AGENT_503 = "9876543403"
AGENT_HANGS_UP = "9876543404"
AGENT_CONFIRMS = "9876543407"  # presses 1 after confirm_after
AGENT_NEVER_CONFIRMS = "9876543408"
CUSTOMER = "9876543100"  # answers, 1 kHz beeps
CUSTOMER_HANGS_UP = "9876543104"


def carrier(hangup_after: float = 1.0, confirm_after: float = 1.0) -> SandboxCarrier:
    timings = SandboxTimings(ring=0.2, early_media=0.3, hangup_after=hangup_after,
                             confirm_after=confirm_after)
    return SandboxCarrier(timings, rtp_port_min=43000, rtp_port_max=43099)


def test_answered_call_records_each_party_and_the_customer_hangs_up(tmp_path: Path) -> None:
    sandbox = carrier(hangup_after=2.0)

    async def body() -> str:
        async with rig(None, tmp_path, sandbox=sandbox) as r:
            call_id = await r.place(agent_number=AGENT, to_number=CUSTOMER_HANGS_UP)
            payload = await r.callback()
            assert (payload["status"], payload["hangup_source"]) == ("ANSWER", "destination")
            assert 1 <= payload["duration"] <= 3
            view = await r.view(call_id)
            assert legs_of(view) == [("agent", "LEFT", None), ("destination", "LEFT", None)]
            assert view["recording_url"].endswith(f"/recordings/crm_{call_id}.wav")
            return call_id

    call_id = _run(body)
    agent, customer = sandbox.calls_to(AGENT)[0], sandbox.calls_to(CUSTOMER_HANGS_UP)[0]
    assert (agent.sent, agent.outcome) == ([100, 180, 200], Outcome.CALLER_HUNG_UP)
    assert (customer.sent, customer.outcome) == ([100, 180, 200], Outcome.CARRIER_HUNG_UP)
    # Each sandbox party heard the other through callbridge's relay.
    assert abs(dominant_hz(sandbox.heard(agent)[-8000:].astype(float)) - 1000) < 15
    assert abs(dominant_hz(sandbox.heard(customer)[-8000:].astype(float)) - 440) < 15
    audio, rate = soundfile.read(tmp_path / "recordings" / f"crm_{call_id}.wav", dtype="int16")
    assert rate == 8000 and audio.shape[1] == 2
    talk = len(audio) / rate
    assert abs(talk - 2.0) < 0.5  # the customer talked 2 s, then hung up
    middle = audio[int(0.3 * rate): int((talk - 0.3) * rate)]
    assert abs(dominant_hz(middle[:, 0]) - 440) < 15  # the agent, on the left
    assert abs(dominant_hz(middle[:, 1]) - 1000) < 15  # the customer, on the right


@pytest.mark.parametrize(("agent", "customer", "status", "legs"), [
    (AGENT_BUSY, CUSTOMER, "BUSY", [("agent", "FAILED", 486)]),
    (AGENT_503, CUSTOMER, "FAILED", [("agent", "FAILED", 503)]),
    (AGENT, "9876543101", "BUSY", [("agent", "LEFT", None), ("destination", "FAILED", 486)]),
    (AGENT, "9876543103", "FAILED", [("agent", "LEFT", None), ("destination", "FAILED", 503)]),
    (AGENT, "9876543106", "NO_ANSWER",
     [("agent", "LEFT", None), ("destination", "FAILED", 480)]),
], ids=["agent-busy", "agent-503", "customer-busy", "customer-503", "customer-480"])
def test_refusals(tmp_path: Path, agent: str, customer: str, status: str,
                  legs: list[tuple[str, str, int | None]]) -> None:
    sandbox = carrier()

    async def body() -> None:
        async with rig(None, tmp_path, sandbox=sandbox) as r:
            call_id = await r.place(agent_number=agent, to_number=customer)
            payload = await r.callback()
            assert payload["status"] == status and payload["duration"] == 0
            assert payload["recording_url"] is None
            assert legs_of(await r.view(call_id)) == legs

    _run(body)
    refused = sandbox.calls[-1]
    assert refused.outcome is Outcome.REFUSED and refused.sent[-1] == legs[-1][2]
    assert len(sandbox.calls) == len(legs)


@pytest.mark.parametrize("who", ["agent", "customer"])
def test_ringing_out_is_no_answer_after_max_ring_time(tmp_path: Path, who: str) -> None:
    sandbox = carrier()
    numbers = {"agent": (AGENT_RINGS, CUSTOMER), "customer": (AGENT, "9876543102")}[who]
    expected = {"agent": [("agent", "FAILED", 487)],
                "customer": [("agent", "LEFT", None), ("destination", "FAILED", 487)]}[who]

    async def body() -> None:
        async with rig(None, tmp_path, sandbox=sandbox) as r:
            call_id = await r.place(agent_number=numbers[0], to_number=numbers[1],
                                    max_ring_time=5)
            payload = await r.callback(timeout=15)
            assert payload["status"] == "NO_ANSWER"
            view = await r.view(call_id)
            assert legs_of(view) == expected
            assert view["legs"][-1]["reason"] == "RING_TIMEOUT"

    _run(body)
    rang = sandbox.calls[-1]
    assert (rang.sent, rang.outcome) == ([100, 180, 487], Outcome.CANCELLED)


def test_agent_hanging_up_while_the_customer_rings_is_canceled(tmp_path: Path) -> None:
    sandbox = carrier(hangup_after=1.0)

    async def body() -> None:
        async with rig(None, tmp_path, sandbox=sandbox) as r:
            call_id = await r.place(agent_number=AGENT_HANGS_UP, to_number="9876543102")
            payload = await r.callback(timeout=15)
            assert (payload["status"], payload["hangup_source"]) == ("CANCELED", "agent")
            assert legs_of(await r.view(call_id)) == [("agent", "LEFT", None),
                                                       ("destination", "FAILED", 487)]

    _run(body)
    agent, customer = sandbox.calls
    assert agent.outcome is Outcome.CARRIER_HUNG_UP
    assert (customer.sent, customer.outcome) == ([100, 180, 487], Outcome.CANCELLED)


def test_early_media_then_answer(tmp_path: Path) -> None:
    sandbox = carrier(hangup_after=1.5)

    async def body() -> None:
        async with rig(None, tmp_path, sandbox=sandbox) as r:
            call_id = await r.place(agent_number=AGENT_HANGS_UP, to_number="9876543105")
            payload = await r.callback(timeout=15)
            assert (payload["status"], payload["hangup_source"]) == ("ANSWER", "agent")
            assert legs_of(await r.view(call_id)) == [("agent", "LEFT", None),
                                                       ("destination", "LEFT", None)]

    _run(body)
    customer = sandbox.calls[-1]
    assert (customer.sent, customer.outcome) == ([100, 183, 200], Outcome.CALLER_HUNG_UP)
    # The agent heard the customer's early media and then its talk: 1 kHz beeps.
    heard = sandbox.heard(sandbox.calls[0])
    assert abs(dominant_hz(heard[-4000:].astype(float)) - 1000) < 15


def test_an_agent_pressing_1_confirms_and_the_customer_is_dialled(tmp_path: Path) -> None:
    sandbox = carrier(hangup_after=1.0, confirm_after=0.5)

    async def body() -> None:
        async with rig(None, tmp_path, sandbox=sandbox) as r:
            call_id = await r.place(agent_number=AGENT_CONFIRMS, to_number=CUSTOMER_HANGS_UP,
                                    agent_confirm="dtmf")
            payload = await r.callback(timeout=15)
            assert (payload["status"], payload["hangup_source"]) == ("ANSWER", "destination")
            assert legs_of(await r.view(call_id)) == [("agent", "LEFT", None),
                                                       ("destination", "LEFT", None)]

    _run(body)
    agent, customer = sandbox.calls
    assert agent.number.endswith(AGENT_CONFIRMS) and customer.number.endswith(CUSTOMER_HANGS_UP)
    assert (agent.pressed, agent.outcome) == ("1", Outcome.CALLER_HUNG_UP)
    # callbridge waited for the key: the customer's INVITE came only after it.
    assert agent.pressed_at is not None and customer.started_at > agent.pressed_at
    assert (customer.sent, customer.outcome) == ([100, 180, 200], Outcome.CARRIER_HUNG_UP)


def test_an_agent_never_pressing_is_no_answer_and_the_customer_never_rings(
        tmp_path: Path) -> None:
    sandbox = carrier()

    async def body() -> None:
        async with rig(None, tmp_path, sandbox=sandbox) as r:
            call_id = await r.place(agent_number=AGENT_NEVER_CONFIRMS, to_number=CUSTOMER,
                                    agent_confirm="dtmf", max_ring_time=5)
            payload = await r.callback(timeout=15)
            assert payload["status"] == "NO_ANSWER" and payload["duration"] == 0
            view = await r.view(call_id)
            assert payload["hangup_source"] == "system"
            assert legs_of(view) == [("agent", "LEFT", None)]
            assert view["legs"][0]["reason"] == "AGENT_NOT_CONFIRMED"

    _run(body)
    (agent,) = sandbox.calls  # the customer was never dialled
    assert agent.number.endswith(AGENT_NEVER_CONFIRMS) and agent.pressed == ""
    assert agent.answered_at is not None and agent.ended_at is not None
    assert agent.outcome is Outcome.CALLER_HUNG_UP  # callbridge's BYE, after max_ring_time
    assert agent.ended_at - agent.answered_at == pytest.approx(5.0, abs=0.5)


def test_the_embedded_sandbox_is_the_trunk_and_answers_its_pings(tmp_path: Path) -> None:
    sandbox = carrier()

    async def body() -> None:
        async with rig(None, tmp_path, sandbox=sandbox) as r:
            assert r.server.sip is not None
            assert r.server.settings.trunk.mode == "sandbox"
            assert r.server.sip.trunk_address == sandbox.address
            assert await r.server.sip.ping() == 200  # OPTIONS, as the keepalive sends
            health = await r.http.get("/health")
            assert health.status_code == 200 and health.json()["checks"]["trunk"] is True

    _run(body)


def test_the_sandbox_refuses_a_tcp_server_by_name(tmp_path: Path) -> None:
    settings = load_settings(None, {"CALLBRIDGE_SIP_TRANSPORT": "tcp",
                                    "CALLBRIDGE_STORAGE_RECORDINGS_DIR": str(tmp_path)})
    assert settings.trunk.mode == "sandbox"
    with pytest.raises(ConfigError) as caught:
        asyncio.run(Server(settings).start())
    assert caught.value.key == "sip.transport"


def _run(body):  # type: ignore[no-untyped-def]
    """Run ``body`` on a fresh loop; return what it returns."""
    result = []

    async def keep() -> None:
        result.append(await body())

    run(keep, timeout=30)
    return result[0]
