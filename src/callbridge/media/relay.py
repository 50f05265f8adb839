"""The RTP relay: a call's legs connected, two by a bridge, three or more by a conference.

The pieces, each in its own module::

    ports.PortAllocator      even RTP ports of [media] rtp_port_min..max -> LegEndpoint
    endpoint.LegEndpoint     one leg's UDP socket: source check / latching, inactivity
    stream.TxStream          the one SSRC/seq/timestamp line a leg hears, whoever feeds it
    reactor                  all legs' sockets behind one epoll descriptor on the loop
    bridge.Bridge            two legs, packets forwarded (G.711 laws translated, events remapped)
    conference.Conference    three or more legs through the mixer, every 20 ms
    player.Player            tones or a WAV file into one leg (ringback, announcements)
    relay.Room               a call's legs, switching bridge <-> conference as legs come and go

Recording is a tap: whatever :class:`FrameSink` the call service attaches gets every received
audio packet of every connected leg, whole and still encoded. Media knows nothing of files or
calls.

What the call layer does with it (the media side of a click-to-call)::

    agent = await ports.open("call-1/agent", symmetric=nat)      # port for the SDP offer
    agent.set_media(LegMedia(host, port, 0, "PCMU", 101))        # from the SDP answer
    ringback = Player(agent, ToneGenerator(TONE_PLANS["in"]["ringback"])).start()
    ...customer answers...
    ringback.stop(); room = Room(recorder); room.add(agent); room.add(customer)
    ...add-leg answers...
    room.add(third)                                              # now a conference
    ...hang-up...
    room.close(); await agent.aclose(); await customer.aclose()  # ports back in the pool
"""

from __future__ import annotations

import enum
from typing import Protocol

from callbridge.media.bridge import Bridge
from callbridge.media.conference import Conference
from callbridge.media.endpoint import LegEndpoint

__all__ = ["FrameSink", "Room", "RoomMode"]


class FrameSink(Protocol):
    """Takes every received audio packet of every leg of a bridge or conference.

    ``packet`` is the whole RTP datagram as received: the 12-byte header, possibly CSRCs, a
    header extension and padding, then the payload; the sink parses it (the recorder places
    the audio by its RTP timestamp). Passing it unsliced spares the packet path a copy.
    Called on the packet path, so the sink must only store: the recorder parses and decodes
    in batches elsewhere. ``codec`` is the leg's negotiated audio codec, ``"PCMU"`` or
    ``"PCMA"`` (a sink may count anything else and drop it); ``arrival`` is the event loop's
    clock (``loop.time()``) when the packet arrived. Only packets of the leg's audio payload
    type come here: telephone-events and RTCP are not passed on.
    """

    def on_audio(self, leg_key: str, packet: bytes, codec: str, arrival: float) -> None: ...


class RoomMode(enum.Enum):
    """How a room's legs are connected."""

    #: Fewer than two legs: nothing to connect.
    IDLE = "idle"
    #: Two legs, packets forwarded.
    BRIDGE = "bridge"
    #: Three or more legs, mixed.
    CONFERENCE = "conference"


class Room:
    """The legs of one call whose audio is connected.

    Two legs are bridged, three or more conferenced; adding and removing legs switches
    between the two live. Every leg hears one unbroken stream throughout, because its
    :class:`TxStream` outlives the bridge or conference feeding it.
    """

    def __init__(self, sink: FrameSink | None = None) -> None:
        self._sink = sink
        self._legs: list[LegEndpoint] = []
        self._link: Bridge | Conference | None = None

    @property
    def legs(self) -> tuple[LegEndpoint, ...]:
        return tuple(self._legs)

    @property
    def mode(self) -> RoomMode:
        if isinstance(self._link, Bridge):
            return RoomMode.BRIDGE
        if isinstance(self._link, Conference):
            return RoomMode.CONFERENCE
        return RoomMode.IDLE

    @property
    def link(self) -> Bridge | Conference | None:
        """The bridge or conference connecting the legs now (for its counters)."""
        return self._link

    @property
    def sink(self) -> FrameSink | None:
        return self._sink

    @sink.setter
    def sink(self, sink: FrameSink | None) -> None:
        """Start or stop recording mid-call."""
        self._sink = sink
        if self._link is not None:
            self._link.sink = sink

    def add(self, leg: LegEndpoint) -> None:
        """Connect ``leg`` with the others: a second leg makes a bridge, a third a
        conference, later ones join the conference."""
        if leg in self._legs:
            return
        self._legs.append(leg)
        if isinstance(self._link, Conference):
            self._link.add(leg)
        else:
            self._rewire()

    def remove(self, leg: LegEndpoint) -> None:
        """Disconnect ``leg``; down to two legs the conference becomes a bridge again."""
        if leg not in self._legs:
            return
        self._legs.remove(leg)
        if isinstance(self._link, Conference) and len(self._legs) >= 3:
            self._link.remove(leg)
        else:
            self._rewire()

    def replace(self, old: LegEndpoint, new: LegEndpoint) -> None:
        """Put ``new`` where ``old`` was (a forked answer from another endpoint)."""
        index = self._legs.index(old)
        self._legs[index] = new
        if isinstance(self._link, Bridge):
            self._link.replace(old, new)
        elif isinstance(self._link, Conference):
            self._link.remove(old)
            self._link.add(new)

    def close(self) -> None:
        """Disconnect every leg (the legs themselves stay open)."""
        self._legs.clear()
        self._rewire()

    def _rewire(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
        if len(self._legs) == 2:
            self._link = Bridge(self._legs[0], self._legs[1], self._sink)
        elif len(self._legs) >= 3:
            self._link = Conference(self._legs, self._sink)
