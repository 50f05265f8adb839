"""Two legs bridged: each one's packets forwarded to the other, nothing decoded.

This is the per-packet path of every two-party call, so it does no more than it must: the
endpoint has already checked the source and unpacked the header; a direction looks up the
other leg's payload type, rewrites the header into the outgoing stream's buffer
(:meth:`TxStream.forward`: the receiver's SSRC, sequence and timestamp line) and sends.

- Codecs: when the legs negotiated different G.711 laws the payload goes through a 256-byte
  ``bytes.translate`` table (mu-law <-> A-law); no numpy, no linear PCM.
- Telephone-events (RFC 4733) keep their timestamps (§2.5.1.2: they must match the audio
  clock) and take the other leg's negotiated event payload type; when the other leg
  negotiated none they are dropped and counted.
- Recording: every received audio packet goes to the sink, if one is given, whole and as it
  arrived (the recorder takes the payload and the RTP timestamp out of it, in batches).
- Playout: while a player holds a leg, what the other leg says is not forwarded to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from callbridge.media.endpoint import LegEndpoint
from callbridge.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW

if TYPE_CHECKING:
    from callbridge.media.relay import FrameSink

__all__ = ["Bridge", "translation"]

_TRANSLATIONS: Final = {("PCMU", "PCMA"): ULAW_TO_ALAW, ("PCMA", "PCMU"): ALAW_TO_ULAW}


def translation(source: str | None, destination: str | None) -> bytes | None:
    """The ``bytes.translate`` table from one G.711 law to the other; None if none is needed."""
    return _TRANSLATIONS.get((source or "", destination or ""))


class _Direction:
    """Forwards ``src``'s packets to ``dst``: the RtpHandler connected to ``src``."""

    __slots__ = ("audio_pt", "bridge", "codec", "dst", "event_pt", "key", "sink", "src", "table")

    def __init__(self, bridge: Bridge, src: LegEndpoint, dst: LegEndpoint) -> None:
        self.bridge = bridge
        self.src = src
        self.dst = dst
        self.key = src.key
        self.sink: FrameSink | None = None
        self.audio_pt = -1
        self.event_pt = -1
        self.codec = ""
        self.table: bytes | None = None
        self.refresh()

    def refresh(self) -> None:
        """Recompute what depends on either leg's negotiated media."""
        dst_media = self.dst.media
        self.audio_pt = -1 if dst_media is None else dst_media.payload_type
        event_pt = None if dst_media is None else dst_media.telephone_event_pt
        self.event_pt = -1 if event_pt is None else event_pt
        self.codec = self.src.codec or ""
        self.table = translation(self.src.codec, self.dst.codec)

    def on_audio(self, data: bytes, marker: bool, seq: int, ts: int, ssrc: int, now: float) -> None:
        sink = self.sink
        if sink is not None:
            sink.on_audio(self.key, data, self.codec, now)
        dst = self.dst
        if dst.player is None and self.audio_pt >= 0:
            dst.tx.forward(data, self.audio_pt, marker, seq, ts, ssrc, now, self.table)

    def on_telephone_event(
        self, data: bytes, marker: bool, seq: int, ts: int, ssrc: int, now: float
    ) -> None:
        if self.event_pt < 0:
            self.bridge.events_dropped += 1
            return
        dst = self.dst
        if dst.player is None:
            dst.tx.forward(data, self.event_pt, marker, seq, ts, ssrc, now)

    def media_changed(self) -> None:
        self.bridge.refresh()


class Bridge:
    """Connects two legs until :meth:`close`; :meth:`replace` swaps one leg live."""

    def __init__(self, a: LegEndpoint, b: LegEndpoint, sink: FrameSink | None = None) -> None:
        if a is b:
            raise ValueError("a leg cannot be bridged to itself")
        #: Telephone-events dropped because the receiving leg negotiated none.
        self.events_dropped = 0
        self._sink = sink
        self._directions: tuple[_Direction, _Direction] = self._connect(a, b)

    @property
    def legs(self) -> tuple[LegEndpoint, LegEndpoint]:
        return self._directions[0].src, self._directions[1].src

    @property
    def sink(self) -> FrameSink | None:
        return self._sink

    @sink.setter
    def sink(self, sink: FrameSink | None) -> None:
        """Start (or stop) handing received audio to a recorder, mid-call."""
        self._sink = sink
        for direction in self._directions:
            direction.sink = sink

    def replace(self, old: LegEndpoint, new: LegEndpoint) -> None:
        """Bridge ``new`` where ``old`` was (a forked answer, a transfer). The remaining
        leg's stream carries on unbroken: its TxStream re-anchors on the new source."""
        a, b = self.legs
        if old is not a and old is not b:
            raise ValueError(f"leg {old.key} is not in this bridge")
        self._disconnect(old)
        self._directions = self._connect(new if old is a else a, new if old is b else b)

    def refresh(self) -> None:
        """A leg's media changed (re-INVITE): new payload types or codec."""
        for direction in self._directions:
            direction.refresh()

    def close(self) -> None:
        """Stop forwarding; the legs stay open for whatever comes next."""
        for leg in self.legs:
            self._disconnect(leg)

    def _connect(self, a: LegEndpoint, b: LegEndpoint) -> tuple[_Direction, _Direction]:
        forward, backward = _Direction(self, a, b), _Direction(self, b, a)
        for direction in (forward, backward):
            direction.sink = self._sink
            direction.dst.tx.reset_source()
            direction.src.connect(direction)
        return forward, backward

    def _disconnect(self, leg: LegEndpoint) -> None:
        if any(leg.handler is direction for direction in self._directions):
            leg.connect(None)
