"""One browser's WebRTC audio, terminated with aiortc and presented to the relay as RTP.

The relay only knows :class:`~callbridge.media.endpoint.LegEndpoint`: a UDP socket that
speaks plain G.711 RTP. A browser speaks ICE + DTLS-SRTP (RFC 8829, RFC 5764). Rather than
teach the relay a second transport, :class:`BrowserMedia` is a loopback shim: it owns one
UDP socket on 127.0.0.1 and is, to the leg's endpoint, just another phone sending PCMU
(PT 0) every 20 ms::

    browser ==ICE/DTLS-SRTP== aiortc ---> BrowserMedia socket ---RTP--> LegEndpoint ---> Room
                                     <---                     <--RTP---

Codecs. The answer prefers PCMU, then Opus (``setCodecPreferences``, RFC 8829 §4.2.4.1),
so a browser that offers PCMU talks G.711 end to end and the trunk hears it untranscoded:

- **relay -> browser**: with PCMU negotiated the G.711 payloads are handed to aiortc as
  ``av.Packet`` objects, which it packetizes without decoding (pass-through); with Opus they
  are decoded to 8 kHz PCM and aiortc's Opus encoder resamples them.
- **browser -> relay**: aiortc always decodes what it receives; the frames (8 kHz from PCMU,
  48 kHz stereo from Opus) are resampled to 8 kHz mono and encoded as PCMU. For PCMU the
  decode/encode round trip is lossless: G.711 re-encodes its own decoded values exactly.

The leg's endpoint is opened by the caller (from the ``PortAllocator``, like any leg) and
pointed at :attr:`BrowserMedia.leg_media`; :meth:`BrowserMedia.connect` tells the shim where
that endpoint listens. Only that address may send to the shim.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import secrets
import socket
import time
from typing import Final

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import SessionDescription
from av.frame import Frame
from av.packet import Packet

from callbridge.config import IceServer
from callbridge.media.endpoint import LegMedia
from callbridge.media.g711 import ulaw_decode, ulaw_encode
from callbridge.media.rtp import RtpError, RtpPacket, is_rtcp

__all__ = ["BrowserMedia", "RelayTrack", "codec_preferences", "with_public_candidates"]

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = 160  # 20 ms at 8 kHz
FRAME_SECONDS: Final = FRAME_SAMPLES / SAMPLE_RATE
PCMU_PT: Final = 0
#: The answer's audio codecs, most preferred first: G.711 needs no transcoding to the trunk.
PREFERRED_CODECS: Final = ("audio/PCMU", "audio/opus")
#: Frames queued towards the browser before the oldest is dropped: bounds the added delay.
MAX_QUEUED_FRAMES: Final = 5
_TIME_BASE: Final = fractions.Fraction(1, SAMPLE_RATE)
_ULAW_SILENCE: Final = b"\xff" * FRAME_SAMPLES


def codec_preferences() -> list[RTCRtpCodecCapability]:
    """aiortc's audio capabilities in :data:`PREFERRED_CODECS` order (others left out)."""
    capabilities = RTCRtpSender.getCapabilities("audio").codecs
    return [
        codec
        for mime in PREFERRED_CODECS
        for codec in capabilities
        if codec.mimeType.lower() == mime.lower()
    ]


class RelayTrack(MediaStreamTrack):
    """What the browser hears: the relay's PCMU payloads, one 20 ms frame per ``recv``.

    Paced by the clock like a sound card (frame ``n`` is due ``n * 20 ms`` after the first);
    a frame with nothing queued is silence, so the browser's stream never stalls.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        #: True when the negotiated codec is PCMU: payloads go out as packets, undecoded.
        self.passthrough = False
        self._queue: collections.deque[bytes] = collections.deque()
        self._start: float | None = None
        self._frames = 0
        self.dropped = 0

    def push(self, payload: bytes) -> None:
        """Queue one 20 ms PCMU payload from the relay (the oldest goes when too many wait)."""
        if len(self._queue) >= MAX_QUEUED_FRAMES:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(payload)

    async def recv(self) -> Frame | Packet:  # type: ignore[type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._frames * FRAME_SECONDS
        if due > now:
            await asyncio.sleep(due - now)
        payload = self._queue.popleft() if self._queue else _ULAW_SILENCE
        pts = self._frames * FRAME_SAMPLES
        self._frames += 1
        if self.passthrough:
            packet = av.Packet(payload)
            packet.pts = pts
            packet.time_base = _TIME_BASE
            return packet
        pcm = ulaw_decode(payload)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = _TIME_BASE
        return frame


class BrowserMedia:
    """One browser leg's media: an aiortc peer connection plus the loopback RTP shim.

    ``answer(offer)`` negotiates with the browser; ``connect(address)`` names the
    :class:`LegEndpoint` the shim exchanges RTP with (its ``local_address``), and that
    endpoint is given :attr:`leg_media`. ``close()`` ends both sides.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str = "127.0.0.1", *,
                 ice_servers: tuple[IceServer, ...] = (), public_host: str = "") -> None:
        self._loop = loop
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.bind((host, 0))
        self._address: tuple[str, int] = self._sock.getsockname()[:2]
        loop.add_reader(self._sock.fileno(), self._read)
        self._remote: tuple[str, int] | None = None
        # Only the configured ICE servers ([softphone] ice_servers): with none, aiortc would
        # ask a public STUN server of its own choosing; the browser reaches our host
        # candidates, and public_host's.
        self.ice_servers = [RTCIceServer(urls=s.url, username=s.username,
                                         credential=s.credential) for s in ice_servers]
        self.public_host = public_host
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        self._pc.on("track", self._on_track)
        self.track = RelayTrack()
        self._pump: asyncio.Task[None] | None = None
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._pending = np.zeros(0, dtype=np.int16)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        #: The audio codec the browser and we send, once answered (``"PCMU"``, ``"opus"``).
        self.codec: str | None = None
        #: Frames received from the browser, and RTP packets sent to / taken from the relay.
        self.frames_in = 0
        self.rtp_out = 0
        self.rtp_in = 0
        self.strangers = 0
        self.closed = False

    @property
    def rtp_address(self) -> tuple[str, int]:
        """The shim's socket: where the leg's endpoint sends the browser's audio."""
        return self._address

    @property
    def leg_media(self) -> LegMedia:
        """What the leg's endpoint is given (``set_media``): PCMU towards the shim."""
        return LegMedia(*self._address, PCMU_PT, "PCMU")

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState

    def connect(self, remote: tuple[str, int]) -> None:
        """Exchange RTP with the leg endpoint listening on ``remote``."""
        self._remote = (remote[0], remote[1])

    async def answer(self, offer_sdp: str) -> str:
        """The SDP answer to the browser's offer: audio sendrecv, PCMU preferred, then Opus.

        Raises ``ValueError`` when the offer has no codec in common with us.
        """
        # The transceiver exists before the offer is applied so that our codec preference
        # shapes the negotiation (aiortc picks codecs in setRemoteDescription).
        transceiver = self._pc.addTransceiver(self.track, direction="sendrecv")
        transceiver.setCodecPreferences(codec_preferences())
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except Exception as exc:  # aiortc raises OperationError and friends
            raise ValueError(f"unusable offer: {exc}") from exc
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        answer = with_public_candidates(self._pc.localDescription.sdp, self.public_host)
        self.codec = _first_audio_codec(answer)
        self.track.passthrough = self.codec == "PCMU"
        log.info("browser media answered with %s", self.codec)
        return answer

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._pump is not None:
            self._pump.cancel()
        self.track.stop()
        await self._pc.close()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)

    # -- browser -> relay -------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._pump is None:
            self._pump = self._loop.create_task(self._pump_audio(track))

    async def _pump_audio(self, track: MediaStreamTrack) -> None:
        """Every frame the browser sends, as 20 ms PCMU packets to the leg endpoint."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            self.frames_in += 1
            for resampled in self._resampler.resample(frame):
                self._pending = np.concatenate(
                    (self._pending, resampled.to_ndarray().reshape(-1).astype(np.int16))
                )
            while self._pending.size >= FRAME_SAMPLES:
                self._send(ulaw_encode(self._pending[:FRAME_SAMPLES]))
                self._pending = self._pending[FRAME_SAMPLES:]

    def _send(self, payload: bytes) -> None:
        if self._remote is None or self.closed:
            return  # not connected yet: the audio has nowhere to go
        packet = RtpPacket(
            payload_type=PCMU_PT,
            sequence_number=self._seq,
            timestamp=self._ts,
            ssrc=self._ssrc,
            marker=self.rtp_out == 0,
            payload=payload,
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
        try:
            self._sock.sendto(packet.serialize(), self._remote)
        except OSError as exc:  # a full buffer or ICMP error: lose this frame, not the leg
            log.debug("rtp to the leg endpoint failed: %s", exc)
            return
        self.rtp_out += 1

    # -- relay -> browser -------------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                data, addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("rtp shim read failed: %s", exc)
                return
            if self._remote is None or (addr[0], addr[1]) != self._remote:
                self.strangers += 1  # only the leg endpoint may feed the browser
                continue
            if is_rtcp(data):
                continue
            try:
                packet = RtpPacket.parse(data)
            except RtpError:
                continue
            if packet.payload_type != PCMU_PT:
                continue  # telephone-events are not played to the browser
            self.rtp_in += 1
            self.track.push(packet.payload)


def with_public_candidates(sdp: str, public_host: str) -> str:
    """``sdp`` with each host candidate repeated at ``public_host`` (same port: a 1:1 NAT
    forwards it), so a browser outside the NAT has an address to check (RFC 8445 §5.1.1.1:
    a host candidate is any address we are reachable on). No-op without ``public_host``."""
    if not public_host:
        return sdp
    lines = sdp.split("\r\n")
    out: list[str] = []
    for line in lines:
        out.append(line)
        fields = line.split()
        # a=candidate:foundation component transport priority address port typ host
        if line.startswith("a=candidate:") and fields[6:8] == ["typ", "host"] \
                and fields[4] != public_host:
            fields[0] = f"a=candidate:p{fields[0].partition(':')[2]}"  # its own foundation
            fields[4] = public_host
            out.append(" ".join(fields))
    return "\r\n".join(out)


def _first_audio_codec(sdp: str) -> str | None:
    """The first codec of the first audio m-line: the one both ends send (RFC 3264 §6.1)."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "audio" and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType.split("/", 1)[1]
    return None
