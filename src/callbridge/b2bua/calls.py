"""The call service: each click-to-call driven end to end on the event loop.

:class:`CallService` is what the REST API calls (``check_available`` then ``start``). Each
call runs as one :class:`CallRunner` task that feeds what the SIP legs report into the pure
:class:`CallMachine` and carries out the actions it returns: dial through the trunk, ringback
to the agent, bridge the RTP (:class:`Room`), record (:class:`Recorder`), store every state
change before reporting it, and on the way out store the final state together with its status
callback (one transaction) and wake the callback worker. Whatever goes wrong inside a call
ends that call FAILED with hangup_source ``system``: a call is never left half-made.

A ``crm_username`` call's agent is a softphone page, not a SIP phone: leg 1 is rung through
an :class:`AgentPhone` (the softphone package's) and its audio reaches leg 1's endpoint as
loopback RTP, so everything past the ring is the same as for a SIP agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import typing
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from callbridge.b2bua.call import (
    AGENT,
    CUSTOMER,
    AddLeg,
    BridgeLegs,
    Bye,
    CallAction,
    CallEnded,
    CallEvent,
    CallMachine,
    CallPhase,
    Cancel,
    ConnectEarlyMedia,
    Dial,
    DtmfReceived,
    HangupRequested,
    JoinRoom,
    LeaveRoom,
    LegAnswered,
    LegChanged,
    LegEarlyMedia,
    LegFailed,
    LegHungUp,
    PlayPrompt,
    PlayRingback,
)
from callbridge.b2bua.service import OutboundLeg, SipService
from callbridge.config import Settings
from callbridge.errors import CallbridgeError, CallNotActive, TrunkUnavailable
from callbridge.logs import CallLogger, call_logger
from callbridge.media.dtmf import DtmfError
from callbridge.media.endpoint import LegEndpoint, LegMedia
from callbridge.media.player import Player
from callbridge.media.ports import MediaPortsExhausted, PortAllocator
from callbridge.media.relay import Room
from callbridge.media.tones import TONE_PLANS, ToneGenerator, prompt_plan
from callbridge.numbers import format_for_trunk
from callbridge.recordings.naming import recording_name, recording_path
from callbridge.recordings.recorder import Recorder, Writers
from callbridge.recordings.repair import recorded_audio
from callbridge.sip.errors import SipParseError
from callbridge.sip.sdp import (
    MediaCapabilities,
    NotAcceptable,
    Origin,
    SessionDescription,
    accept_answer,
    build_offer,
    negotiate,
)
from callbridge.sip.useragent import (
    Answered,
    Cancelled,
    EarlyMedia,
    Event,
    Failed,
    MediaUpdate,
    RemoteHangup,
)
from callbridge.store.models import Call, CallStatus, HangupSource, Leg, LegRole, LegStatus, Store
from callbridge.webhooks.payload import new_outbox_entry

log = logging.getLogger(__name__)

#: What the SIP user agent reports (the rest of the queue is the call machine's own events).
_SIP_EVENTS = typing.get_args(Event)
#: SIP INFO digits (no telephone-event on the leg): each key held this long, one per spacing.
_INFO_DURATION_MS = 100
_INFO_SPACING = 0.16

Clock = Callable[[], datetime]


class AgentPresence(Protocol):
    """Which softphone agents have a page open (the softphone package provides it; b2bua
    sits below it and only asks)."""

    def is_online(self, account_id: str, crm_username: str) -> bool: ...


class AgentLeg(Protocol):
    """A browser agent being rung (or talking): where its audio comes from and goes."""

    @property
    def media(self) -> LegMedia:
        """What leg 1's endpoint is given (``set_media``): the browser's loopback RTP."""
        ...

    async def hangup(self) -> None:
        """The call is over for the agent (Cancel or Bye of leg 1): tell the page, free
        the media. Idempotent."""
        ...

    async def bridged(self, started_at: datetime) -> None:
        """The customer answered: talk time runs from ``started_at`` (the page's timer)."""
        ...


class AgentPhone(Protocol):
    """Rings a softphone agent's page instead of dialling SIP (the softphone package provides
    it). The leg reports into ``events`` with the call machine's own events for leg 1:
    ``LegAnswered``, ``LegFailed`` (e.g. 603 DECLINED) and ``LegHungUp``."""

    async def ring(self, call_id: str, account_id: str, crm_username: str, to_number: str,
                   endpoint: tuple[str, int],
                   events: asyncio.Queue[typing.Any]) -> AgentLeg | None:
        """Ring the agent's newest page; ``endpoint`` is leg 1's RTP socket (the browser's
        audio goes there). None when no page took the ring."""
        ...


class _NobodyOnline:
    def is_online(self, account_id: str, crm_username: str) -> bool:
        return False


def utc_now() -> datetime:
    return datetime.now(UTC)


class CallService:
    """Places and runs calls; the REST API's ``CallControl``."""

    def __init__(self, settings: Settings, store: Store, sip: SipService, ports: PortAllocator,
                 writers: Writers, *, clock: Clock = utc_now,
                 on_finished: Callable[[], None] = lambda: None,
                 presence: AgentPresence | None = None,
                 phone: AgentPhone | None = None) -> None:
        self.settings = settings
        self.store = store
        self.sip = sip
        self.ports = ports
        self.writers = writers
        self.clock = clock
        self.on_finished = on_finished
        self.presence = presence or _NobodyOnline()
        self.phone = phone
        self.draining = False
        self.runners: dict[str, CallRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- CallControl -------------------------------------------------------------------------

    def check_available(self) -> None:
        if self.draining:
            raise TrunkUnavailable("the server is shutting down")
        if self.sip.trunk_address is None:
            raise TrunkUnavailable("no SIP trunk is configured")
        if self.sip.trunk.up is False:
            raise TrunkUnavailable("the SIP trunk does not answer OPTIONS")
        if self.ports.capacity - self.ports.leased < 2:
            raise TrunkUnavailable("no free media ports")

    async def start(self, call: Call) -> None:
        runner = CallRunner(self, call)
        self.runners[call.call_id] = runner
        task = asyncio.get_running_loop().create_task(runner.run(), name=f"call-{call.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self.runners.pop(call.call_id, None))

    async def hangup(self, call: Call) -> None:
        """End a call whatever its state (idempotent: an ended call is left alone)."""
        self._hang_up(call.call_id, HangupSource.API)

    async def add_leg(self, call: Call, number: str, max_ring_time: int) -> int:
        return await self._runner(call).add_leg(number, max_ring_time)

    async def send_dtmf(self, call: Call, digits: str, leg: int | None) -> None:
        await self._runner(call).send_dtmf(digits, CUSTOMER if leg is None else leg)

    def _runner(self, call: Call) -> CallRunner:
        runner = self.runners.get(call.call_id)
        if runner is None or runner.machine.phase is not CallPhase.BRIDGED:
            raise CallNotActive(f"call {call.call_id} is not bridged")
        return runner

    def _hang_up(self, call_id: str, source: HangupSource) -> bool:
        runner = self.runners.get(call_id)
        if runner is None:
            return False
        runner.post(HangupRequested(source, f"{source.value.upper()}_HANGUP"))
        return True

    # -- life cycle ----------------------------------------------------------------------------

    async def recover(self) -> int:
        """At start-up: end every call a crash left unfinished (FAILED, system), with its
        callback, so no CRM waits for ever. Returns how many."""
        calls = await self.store.unfinished_calls()
        for call in calls:
            now = self.clock()
            legs = tuple(
                replace(leg, status=LegStatus.FAILED if leg.status is LegStatus.DIALING
                        else LegStatus.LEFT, reason=leg.reason or "SERVER_RESTART",
                        ended_at=leg.ended_at or now)
                for leg in call.legs
            )
            status = call.call_status
            # A recording the crash left open was repaired at start-up: hand it out.
            wav = recording_path(self.settings.storage.recordings_dir, call.call_id)
            url = self.recording_url(call.call_id) if call.recording and wav.exists() else None
            final = replace(
                call, legs=legs, end_time=now, hangup_source=HangupSource.SYSTEM,
                call_status=CallStatus.FAILED if status is CallStatus.INITIATED else status,
                recording_url=url,
            )
            account = await self.store.get_account(call.account_id)
            if account is None:
                await self.store.update_call(final)
                continue
            await self.store.finish_call(final, new_outbox_entry(account, final, url, now))
        if calls:
            self.on_finished()
        return len(calls)

    async def drain(self, timeout: float = 10.0) -> None:
        """Refuse new calls, hang up every live one, wait for them to be stored."""
        self.draining = True
        for call_id in list(self.runners):
            self._hang_up(call_id, HangupSource.SYSTEM)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def recording_url(self, call_id: str) -> str:
        return f"{self.settings.http.public_url}/recordings/{recording_name(call_id)}"


class CallRunner:
    """One call, from the agent's INVITE to the stored callback."""

    def __init__(self, service: CallService, call: Call) -> None:
        self.service = service
        self.call = call
        self.loop = asyncio.get_running_loop()
        self.log: CallLogger = call_logger(log, call.call_id)
        self.queue: asyncio.Queue[Event | CallEvent] = asyncio.Queue()
        self.machine = CallMachine(call.max_ring_time, self.loop.time(),
                                   # A softphone agent confirms by clicking Answer:
                                   # no voicemail can, so no keypress is asked for.
                                   agent_confirm=(call.agent_confirm == "dtmf"
                                                  and call.crm_username is None),
                                   time_limit=call.time_limit)
        self.legs: dict[int, Leg] = {leg.leg_id: leg for leg in call.legs}
        self.sip_legs: dict[int, OutboundLeg] = {}
        self.endpoints: dict[int, LegEndpoint] = {}
        self.offers: dict[int, SessionDescription] = {}
        self.room: Room | None = None
        #: What plays to the agent: the confirmation prompt, then ringback.
        self.ringback: Player | None = None
        self.recorder: Recorder | None = None
        #: Leg 1 when the agent is a softphone page (``crm_username``) rather than SIP.
        self.browser: AgentLeg | None = None

    def post(self, event: CallEvent) -> None:
        self.queue.put_nowait(event)

    async def add_leg(self, number: str, ring_time: int) -> int:
        """A new participant: stored DIALING, then dialled by the machine's rule."""
        leg_id = max(self.legs) + 1
        self.legs[leg_id] = Leg(self.call.call_id, leg_id, LegRole.DESTINATION, number,
                                LegStatus.DIALING)
        await self.service.store.save_leg(self.legs[leg_id])
        self.post(AddLeg(leg_id, ring_time))
        return leg_id

    async def send_dtmf(self, digits: str, leg: int) -> None:
        """RFC 4733 into the leg's RTP, or SIP INFO where it negotiated no telephone-event."""
        state = self.legs.get(leg)
        endpoint, sip_leg = self.endpoints.get(leg), self.sip_legs.get(leg)
        if state is None or state.status is not LegStatus.JOINED or sip_leg is None:
            raise ValueError(f"leg {leg} is not in the call")
        try:
            if endpoint is None:
                raise ValueError("no media")
            await endpoint.send_dtmf(digits)
        except DtmfError:
            raise  # a bad digit: no INFO either
        except ValueError:
            # application/dtmf-relay, one INFO per key, paced like the RFC 4733 path (100 ms
            # key + 60 ms gap): an IVR hears distinct presses, and INFOs sent back to back
            # over UDP could arrive out of CSeq order and be refused (RFC 3261 §12.2.2).
            for index, digit in enumerate(digits):
                if index:
                    await asyncio.sleep(_INFO_SPACING)
                sip_leg.info("application/dtmf-relay",
                             f"Signal={digit}\r\nDuration={_INFO_DURATION_MS}\r\n".encode())

    async def run(self) -> None:
        try:
            crm_username = self.call.crm_username
            if crm_username is not None and (
                    self.service.phone is None
                    or not self.service.presence.is_online(self.call.account_id, crm_username)):
                # An agent with no softphone page open fails at once, not after a ring
                # timeout. (sip_code 0: no SIP response was involved; the call ends FAILED.)
                reason = "AGENT_OFFLINE" if self.service.phone else "SOFTPHONE_UNAVAILABLE"
                await self._do(self.machine.handle(LegFailed(AGENT, 0, reason),
                                                   self.loop.time()))
            else:
                await self._do(self.machine.start())
            while self.machine.phase is not CallPhase.ENDED:
                event = await self._next_event()
                if event is not None:
                    await self._do(self.machine.handle(event, self.loop.time()))
        except Exception:
            self.log.exception("call failed inside callbridge")
        finally:
            try:
                await self._finish()
            except Exception:
                self.log.exception("could not store the end of the call")

    # -- events --------------------------------------------------------------------------------

    async def _next_event(self) -> CallEvent | None:
        deadline = self.machine.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline[0] - self.loop.time())
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            assert deadline is not None
            return deadline[1]
        if isinstance(item, _SIP_EVENTS):
            return self._translate(typing.cast(Event, item))
        return typing.cast(CallEvent, item)

    def _translate(self, event: Event) -> CallEvent | None:
        """A SIP leg's news, in the call machine's terms (and media updated on the way)."""
        leg = self._leg_of(getattr(event, "leg_id", ""))
        if leg is None:
            return None
        if isinstance(event, EarlyMedia):
            return LegEarlyMedia(leg) if self._apply_answer(leg, event.sdp) else None
        if isinstance(event, Answered):
            if not self._apply_answer(leg, event.sdp):
                self.sip_legs[leg].hangup()
                return LegFailed(leg, 488, "NO_COMMON_CODEC")
            return LegAnswered(leg)
        if isinstance(event, Failed):
            return LegFailed(leg, event.status, event.reason, local_timeout=event.timed_out)
        if isinstance(event, Cancelled):
            return LegFailed(leg, 487, "Request Terminated")
        if isinstance(event, RemoteHangup):
            return LegHungUp(leg)
        if isinstance(event, MediaUpdate):
            self._apply_answer(leg, event.sdp, offer=True)
        return None

    def _leg_of(self, sip_leg_id: str) -> int | None:
        for number, sip_leg in self.sip_legs.items():
            if sip_leg.leg_id == sip_leg_id:
                return number
        return None

    def _apply_answer(self, leg: int, sdp: bytes, *, offer: bool = False) -> bool:
        """Point the leg's RTP at what the far end's SDP says; False if unusable."""
        endpoint = self.endpoints.get(leg)
        if endpoint is None or not sdp:
            return endpoint is not None
        try:
            remote = SessionDescription.parse(sdp)
            if offer:  # a re-INVITE from the far end: follow its new address (RFC 3264 §8)
                host, port = endpoint.advertised_address
                media = negotiate(remote, MediaCapabilities(host, port),
                                  self.offers[leg].origin).media
                if media.on_hold:
                    return True  # they do not want our audio for now: keep the last target
            else:
                media = accept_answer(self.offers[leg], remote)
            endpoint.set_media(LegMedia(
                media.remote_address, media.remote_port, media.codec.payload_type,
                media.codec.name.upper(), media.telephone_event_pt, media.ptime))
        except (SipParseError, NotAcceptable, ValueError) as exc:
            self.log.warning("leg %d: unusable SDP: %s", leg, exc)
            return False
        return True

    # -- actions -------------------------------------------------------------------------------

    async def _do(self, actions: list[CallAction]) -> None:
        for action in actions:
            if isinstance(action, Dial):
                await self._dial(action.leg)
            elif isinstance(action, Cancel | Bye) and action.leg == AGENT and self.browser:
                await self.browser.hangup()
            elif isinstance(action, Cancel | Bye):
                sip_leg = self.sip_legs.get(action.leg)
                if sip_leg is not None:
                    sip_leg.hangup()
            elif isinstance(action, PlayRingback):
                self._play_to_agent(ToneGenerator(TONE_PLANS["in"]["ringback"]))
            elif isinstance(action, PlayPrompt):
                self._play_to_agent(ToneGenerator(prompt_plan()))
            elif isinstance(action, JoinRoom):
                if self.room is not None and action.leg in self.endpoints:
                    self.room.add(self.endpoints[action.leg])
            elif isinstance(action, LeaveRoom):
                await self._leave(action.leg)
            elif isinstance(action, ConnectEarlyMedia):
                self._connect()
            elif isinstance(action, BridgeLegs):
                await self._bridge()
            elif isinstance(action, LegChanged):
                await self._leg_changed(action)
            elif isinstance(action, CallEnded):
                self.log.info("ended %s (%s, %s)", action.status, action.hangup_source,
                              action.reason)

    async def _dial(self, leg: int) -> None:
        call, settings = self.call, self.service.settings
        number = {AGENT: call.agent_number, CUSTOMER: call.to_number}.get(leg)
        if number is None:
            number = self.legs[leg].number
        if leg not in self.legs:
            self.legs[leg] = Leg(call.call_id, leg, LegRole.DESTINATION, number, LegStatus.DIALING)
            await self.service.store.save_leg(self.legs[leg])
        try:
            endpoint = await self.service.ports.open(f"{call.call_id}/{leg}")
        except (MediaPortsExhausted, CallbridgeError) as exc:
            self.post(LegFailed(leg, 503, "MEDIA_PORTS_EXHAUSTED"))
            self.log.warning("leg %d: %s", leg, exc)
            return
        self.endpoints[leg] = endpoint
        if leg == AGENT:  # the agent's keypresses: confirmation now, more later
            endpoint.set_digit_handler(lambda _key, digit: self.post(DtmfReceived(AGENT, digit)))
            if call.crm_username is not None:
                await self._ring_browser(call.crm_username, endpoint)
                return
        host, port = endpoint.advertised_address
        offer = build_offer(MediaCapabilities(host, port),
                            Origin("callbridge", str(secrets.randbits(31)), 1, host))
        self.offers[leg] = offer
        fmt = settings.trunk.number_format
        caller = format_for_trunk(call.from_number, fmt)
        headers: tuple[tuple[str, str], ...] = ()
        if leg != AGENT:
            domain = settings.trunk.host or settings.sip.host
            headers = (("P-Asserted-Identity", f"<sip:{caller}@{domain}>"),)
        try:
            self.sip_legs[leg] = self.service.sip.call(
                format_for_trunk(number, fmt), caller=caller, sdp=offer.serialize(),
                leg_id=f"{call.call_id}/{leg}", headers=headers, events=self.queue)  # type: ignore[arg-type]
        except CallbridgeError as exc:
            self.log.warning("leg %d: cannot dial: %s", leg, exc)
            self.post(LegFailed(leg, 503, "TRUNK_UNAVAILABLE"))
        self.log.info("leg %d dialling %s", leg, number)

    async def _ring_browser(self, crm_username: str, endpoint: LegEndpoint) -> None:
        """Leg 1 is the agent's softphone page: its loopback RTP stands in for a SIP phone's,
        so the room, ringback and recording see an ordinary leg endpoint."""
        assert self.service.phone is not None
        self.browser = await self.service.phone.ring(
            self.call.call_id, self.call.account_id, crm_username, self.call.to_number,
            endpoint.local_address, self.queue)
        if self.browser is None:
            self.post(LegFailed(AGENT, 0, "AGENT_OFFLINE"))
            return
        endpoint.set_media(self.browser.media)
        self.log.info("leg %d ringing softphone %s", AGENT, crm_username)

    def _play_to_agent(self, tone: ToneGenerator) -> None:
        self._stop_ringback()
        agent = self.endpoints.get(AGENT)
        if agent is not None:
            self.ringback = Player(agent, tone).start()

    async def _leave(self, leg: int) -> None:
        """A participant left a call that goes on: out of the room, port back to the pool."""
        endpoint = self.endpoints.pop(leg, None)
        if endpoint is not None:
            if self.room is not None and endpoint in self.room.legs:
                self.room.remove(endpoint)
            await endpoint.aclose()

    def _stop_ringback(self) -> None:
        if self.ringback is not None:
            self.ringback.stop()
            self.ringback = None

    def _connect(self) -> None:
        """Agent and customer in one room (early media now, the conversation later)."""
        self._stop_ringback()
        if self.room is None:
            self.room = Room()
            for leg in (AGENT, CUSTOMER):
                if leg in self.endpoints:
                    self.room.add(self.endpoints[leg])

    async def _bridge(self) -> None:
        self._connect()
        now = self.service.clock()
        if self.call.recording and self.room is not None:
            directory = Path(self.service.settings.storage.recordings_dir)
            directory.mkdir(parents=True, exist_ok=True)
            self.recorder = Recorder(
                recording_path(directory, self.call.call_id), start=self.loop.time(),
                writers=self.service.writers, now=self.loop.time,
                left_legs={f"{self.call.call_id}/{AGENT}"})
            self.recorder.flush_every(self.loop)
            self.room.sink = self.recorder
        self.call = replace(self.call, call_status=CallStatus.ANSWER, start_time=now)
        await self.service.store.update_call(self.call)
        if self.browser is not None:
            await self.browser.bridged(now)

    async def _leg_changed(self, change: LegChanged) -> None:
        now = self.service.clock()
        leg = self.legs[change.leg]
        answered_at = now if change.status is LegStatus.JOINED else leg.answered_at
        ended = change.status in (LegStatus.LEFT, LegStatus.FAILED)
        self.legs[change.leg] = replace(
            leg, status=change.status, sip_code=change.sip_code or leg.sip_code,
            reason=change.reason or leg.reason, answered_at=answered_at,
            ended_at=now if ended else leg.ended_at)
        self.log.info("leg %d %s", change.leg, change.status.value)
        if self.machine.phase is not CallPhase.ENDED:
            await self.service.store.save_leg(self.legs[change.leg])

    # -- the end -------------------------------------------------------------------------------

    async def _finish(self) -> None:
        """Every exit path: legs let go, media closed, recording finalized, final state and
        callback stored in one transaction, callback worker woken."""
        self._stop_ringback()
        if self.browser is not None:
            with contextlib.suppress(Exception):
                await self.browser.hangup()
        for sip_leg in self.sip_legs.values():
            if not sip_leg.ended:
                sip_leg.hangup()
        if self.room is not None:
            self.room.close()
        recording_url = None
        if self.recorder is not None:
            try:
                await self.recorder.close(self.loop.time())
                recording_url = self.service.recording_url(self.call.call_id)
            except CallbridgeError:  # logged; what the writer wrote before failing still counts
                if await asyncio.to_thread(recorded_audio, self.recorder.path):
                    recording_url = self.service.recording_url(self.call.call_id)
        for endpoint in self.endpoints.values():
            with contextlib.suppress(Exception):
                await endpoint.aclose()
        now = self.service.clock()
        for number, leg in self.legs.items():
            if leg.status is LegStatus.DIALING:  # e.g. an add-leg that raced the end
                self.legs[number] = replace(leg, status=LegStatus.FAILED, ended_at=now,
                                            reason=leg.reason or "CANCELED")
        result = self.machine.result
        if result is None:  # an error inside callbridge ended the call early
            result = CallEnded(CallStatus.FAILED, HangupSource.SYSTEM, "INTERNAL_ERROR")
            for number, leg in self.legs.items():
                if leg.status in (LegStatus.DIALING, LegStatus.JOINED):
                    await self._leg_changed(LegChanged(
                        number, LegStatus.FAILED if leg.status is LegStatus.DIALING
                        else LegStatus.LEFT, None, "INTERNAL_ERROR"))
        final = replace(
            self.call, call_status=result.status, hangup_source=result.hangup_source,
            end_time=now, duration=self.machine.duration, recording_url=recording_url,
            legs=tuple(self.legs[n] for n in sorted(self.legs)))
        account = await self.service.store.get_account(final.account_id)
        if account is None:  # deleted under us: keep the call's record, no callback
            await self.service.store.update_call(final)
            return
        await self.service.store.finish_call(final, new_outbox_entry(account, final,
                                                                     recording_url, now))
        self.service.on_finished()

