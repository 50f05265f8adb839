"""SDP bodies (RFC 8866, formerly RFC 4566) and the offer/answer model (RFC 3264).

callbridge terminates RTP itself: each leg's audio goes to our own UDP port and the relay
copies it across. So each leg negotiates on its own: exactly one audio stream, G.711 (PCMU,
PCMA) and RFC 4733 telephone-event, plain ``RTP/AVP``.

Parsing is lossless: :meth:`SessionDescription.parse` keeps every line it does not interpret
(``b=``, ``i=``, unknown attributes...) and :meth:`SessionDescription.serialize` writes them
back, in the order of the RFC 8866 §5 grammar, with CRLF endings. LF-only input is accepted.
Malformed bodies raise :class:`SdpError` (a :class:`SipParseError`, status 400).

Offer/answer:

- :func:`build_offer` makes our offer from :class:`MediaCapabilities`;
- :func:`negotiate` answers a remote offer (RFC 3264 §6) and returns the answer plus the
  :class:`NegotiatedMedia` to run the RTP leg with;
- :func:`accept_answer` reads the remote answer to our offer (§7);
- :class:`LocalSdp` stamps the o= line so sess-version moves only when our SDP changes (§8).

Negotiation failures raise :class:`NotAcceptable` (488 Not Acceptable Here, with a warn-code
for the Warning header, RFC 3261 §20.43). Identifiers and versions come in as arguments: this
module reads no clock and draws no random numbers.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from callbridge.sip.errors import SipParseError

#: One line we keep without interpreting it: (type letter, value).
Line = tuple[str, str]


class SdpError(SipParseError):
    """A body that is not SDP, or SDP too broken to use: answer 400 (RFC 3261 §21.4.1)."""


class NotAcceptable(Exception):
    """The offer or answer is valid SDP but has nothing we can use: 488 Not Acceptable Here.

    ``warn_code`` suits a Warning header (RFC 3261 §20.43): 304 media type not available,
    305 incompatible media format, 302 incompatible transport protocol.
    """

    status = 488

    def __init__(self, reason: str, warn_code: int = 305) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warn_code = warn_code


class Direction(enum.Enum):
    """Stream direction attribute (RFC 3264 §5.1, RFC 8866 §6.7), seen by whoever wrote it."""

    #: Send and receive: the default when no direction attribute is present.
    SENDRECV = "sendrecv"
    #: Only send (a party putting the other on hold).
    SENDONLY = "sendonly"
    #: Only receive.
    RECVONLY = "recvonly"
    #: Neither send nor receive.
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def mirrored(self) -> Direction:
        """The same stream seen from the other end: sendonly <-> recvonly (RFC 3264 §6.1)."""
        return Direction.of(self.receives, self.sends)

    def restricted(self, other: Direction) -> Direction:
        """What both directions allow."""
        return Direction.of(self.sends and other.sends, self.receives and other.receives)


_DIRECTIONS = {d.value: d for d in Direction}
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")
_DIGITS = re.compile(r"^[0-9]{1,20}$")


def _int(text: str, what: str, maximum: int | None = None) -> int:
    if not _DIGITS.match(text) or (maximum is not None and int(text) > maximum):
        raise SdpError(f"bad {what}: {text!r}")
    return int(text)


def _fields(value: str, count: int, what: str) -> list[str]:
    parts = value.split()
    if len(parts) != count:
        raise SdpError(f"{what} needs {count} fields: {value!r}")
    return parts


def _check_address(addrtype: str, address: str) -> None:
    """IP4/IP6 addresses are checked; an FQDN is allowed too (RFC 8866 §5.7)."""
    host = address.split("/", 1)[0]
    try:
        if addrtype == "IP6" and ":" in host:
            ipaddress.IPv6Address(host)
            return
        if addrtype == "IP4" and re.match(r"^[0-9.]+$", host):
            ipaddress.IPv4Address(host)
            return
    except ValueError as exc:
        raise SdpError(f"bad {addrtype} address: {address!r}") from exc
    if addrtype in ("IP4", "IP6") and not _HOSTNAME.match(host):
        raise SdpError(f"bad {addrtype} address: {address!r}")


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`` (§5.2)."""

    username: str
    session_id: str
    session_version: int
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Origin:
        user, sess_id, version, nettype, addrtype, address = _fields(value, 6, "o=")
        _check_address(addrtype, address)
        return cls(user, sess_id, _int(version, "sess-version"), address, nettype, addrtype)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """``c=<nettype> <addrtype> <address>`` (§5.7); ``address`` keeps any /ttl/count suffix."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Connection:
        nettype, addrtype, address = _fields(value, 3, "c=")
        _check_address(addrtype, address)
        return cls(address, nettype, addrtype)

    @classmethod
    def for_host(cls, host: str) -> Connection:
        """Our own address: IP6 when it has a colon (no brackets in SDP, RFC 5118 §4.6)."""
        return cls(host, "IN", "IP6" if ":" in host else "IP4")

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    @property
    def is_null(self) -> bool:
        """``c=IN IP4 0.0.0.0``: RFC 2543 hold, "do not send to me" (RFC 3264 §8.4)."""
        return self.addrtype == "IP4" and self.host == "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True)
class Attribute:
    """``a=<name>`` (a flag: ``value`` is None) or ``a=<name>:<value>`` (§5.13)."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, colon, value = text.partition(":")
        if not _TOKEN.match(name):
            raise SdpError(f"bad attribute name: {text!r}")
        return cls(name, value if colon else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True)
class Codec:
    """An RTP payload format: what ``a=rtpmap`` says about one payload type (§6.6)."""

    name: str
    payload_type: int
    clock_rate: int
    channels: int = 1

    @classmethod
    def parse_rtpmap(cls, value: str) -> Codec:
        """``<payload type> <encoding name>/<clock rate>[/<channels>]``."""
        parts = value.split()
        if len(parts) != 2:
            raise SdpError(f"bad rtpmap: {value!r}")
        pieces = parts[1].split("/")
        if len(pieces) not in (2, 3) or not _TOKEN.match(pieces[0]):
            raise SdpError(f"bad rtpmap: {value!r}")
        channels = _int(pieces[2], "rtpmap channels", 255) if len(pieces) == 3 else 1
        rate = _int(pieces[1], "rtpmap clock rate", 10**9)
        return cls(pieces[0], _int(parts[0], "payload type", 127), rate, channels)

    def same_format(self, other: Codec) -> bool:
        """Same encoding, whatever the payload type number (RFC 3264 §6.1)."""
        return (self.name.lower(), self.clock_rate, self.channels) == (
            other.name.lower(),
            other.clock_rate,
            other.channels,
        )

    def rtpmap(self) -> Attribute:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return Attribute("rtpmap", f"{self.payload_type} {self.name}/{self.clock_rate}{suffix}")


PCMU = Codec("PCMU", 0, 8000)
PCMA = Codec("PCMA", 8, 8000)
TELEPHONE_EVENT = "telephone-event"

#: Static audio payload types usable without an rtpmap line (RFC 3551 Table 4).
STATIC_PAYLOAD_TYPES = {
    c.payload_type: c
    for c in (
        PCMU, Codec("GSM", 3, 8000), Codec("G723", 4, 8000), Codec("DVI4", 5, 8000),
        Codec("DVI4", 6, 16000), Codec("LPC", 7, 8000), PCMA, Codec("G722", 9, 8000),
        Codec("L16", 10, 44100, 2), Codec("L16", 11, 44100), Codec("QCELP", 12, 8000),
        Codec("CN", 13, 8000), Codec("G728", 15, 8000), Codec("G729", 18, 8000),
    )
}  # fmt: skip


def _ptime(value: str | None) -> int | None:
    """ptime/maxptime in milliseconds; a fraction ("20.0") is truncated, garbage ignored."""
    text = (value or "").strip(" ")
    return int(float(text)) if re.match(r"^[0-9]{1,6}(\.[0-9]{1,6})?$", text) else None


@dataclass(frozen=True)
class Media:
    """One ``m=`` section (§5.14) with its connection, attributes and other lines.

    The typed views (codecs, ptime, ...) skip attribute values they cannot read rather than
    refuse the body: RFC 4475 §3.1.1.11 carries ``a=rtpmap:31 LPC`` in an acceptable INVITE.
    """

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: tuple[Attribute, ...] = ()
    extra_lines: tuple[Line, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Media:
        parts = value.split()
        tokens = [parts[0], *parts[2].split("/")] if len(parts) >= 4 else [""]
        if not all(_TOKEN.match(token) for token in tokens):  # proto: token *("/" token)
            raise SdpError(f"bad m= line: {value!r}")
        port_text, slash, count_text = parts[1].partition("/")
        port = _int(port_text, "media port", 65535)
        count = _int(count_text, "port count", 65535) if slash else None
        return cls(parts[0], port, parts[2], tuple(parts[3:]), count)

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name`` ("" for a flag), None when absent."""
        return _attribute(self.attributes, name)

    @property
    def codecs(self) -> tuple[Codec, ...]:
        """The RTP formats in m= line order, rtpmap first, else the static table; formats
        neither describes (dynamic without rtpmap, non-RTP tokens) are left out."""
        mapped: dict[int, Codec] = {}
        for attr in self.attributes:
            if attr.name == "rtpmap" and attr.value is not None:
                try:
                    codec = Codec.parse_rtpmap(attr.value)
                except SdpError:
                    continue
                mapped.setdefault(codec.payload_type, codec)
        found = (_payload_type(fmt) for fmt in self.formats)
        codecs = (mapped.get(pt) or STATIC_PAYLOAD_TYPES.get(pt) for pt in found if pt is not None)
        return tuple(c for c in codecs if c is not None)

    def fmtp(self, payload_type: int) -> str | None:
        """Parameters of ``a=fmtp:<payload_type> ...`` (§6.15)."""
        for attr in self.attributes:
            if attr.name == "fmtp" and attr.value is not None:
                fmt, _, params = attr.value.strip().partition(" ")
                if fmt == str(payload_type):
                    return params.strip()
        return None

    @property
    def ptime(self) -> int | None:
        return _ptime(self.attribute("ptime"))

    @property
    def maxptime(self) -> int | None:
        return _ptime(self.attribute("maxptime"))

    @property
    def direction(self) -> Direction | None:
        """The media-level direction attribute, None when absent (the session's applies)."""
        return _direction(self.attributes)

    @property
    def rtcp_port(self) -> int | None:
        """``a=rtcp:<port> [...]`` (RFC 3605), when RTCP is not on port + 1."""
        port = (self.attribute("rtcp") or "").split(" ", 1)[0]
        return int(port) if _DIGITS.match(port) and int(port) <= 65535 else None

    def lines(self) -> list[Line]:
        count = f"/{self.port_count}" if self.port_count is not None else ""
        m_line = f"{self.media} {self.port}{count} {self.proto} {' '.join(self.formats)}"
        # Media-level order (§5): m, i, c, b, k, a; unknown letters cannot occur (parse).
        out: list[Line] = [("m", m_line)]
        out += [line for line in self.extra_lines if line[0] == "i"]
        out += [("c", str(self.connection))] if self.connection else []
        out += [line for line in self.extra_lines if line[0] != "i"]
        return out + [("a", str(a)) for a in self.attributes]


def _payload_type(fmt: str) -> int | None:
    return int(fmt) if re.match(r"^[0-9]{1,3}$", fmt) and int(fmt) <= 127 else None


def _attribute(attributes: Iterable[Attribute], name: str) -> str | None:
    for attr in attributes:
        if attr.name == name:
            return "" if attr.value is None else attr.value
    return None


def _direction(attributes: Iterable[Attribute]) -> Direction | None:
    for attr in attributes:
        if attr.value is None and attr.name in _DIRECTIONS:
            return _DIRECTIONS[attr.name]
    return None


@dataclass(frozen=True)
class Timing:
    """``t=<start-time> <stop-time>`` (§5.9); ``0 0`` is an unbounded session."""

    start: int = 0
    stop: int = 0

    @classmethod
    def parse(cls, value: str) -> Timing:
        start, stop = _fields(value, 2, "t=")
        return cls(_int(start, "start time"), _int(stop, "stop time"))


#: Session-level line letters and where they sit (§5): 0 before c=, 1 between c= and t=,
#: 2 after t= (r=, further t=), 3 after those (z=, k=).
_SESSION_RANK = {"i": 0, "u": 0, "e": 0, "p": 0, "b": 1, "t": 2, "r": 2, "z": 3, "k": 3}
_MEDIA_LETTERS = frozenset("ibk")


@dataclass(frozen=True)
class SessionDescription:
    """A whole SDP body. Session-level ``b=``, ``i=``, ``r=`` etc. sit in ``extra_lines``."""

    origin: Origin
    session_name: str
    media: tuple[Media, ...] = ()
    connection: Connection | None = None
    time: Timing = Timing()
    attributes: tuple[Attribute, ...] = ()
    extra_lines: tuple[Line, ...] = ()
    version: int = 0

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        return _Parser(data).parse()

    def serialize(self) -> bytes:
        def rank(n: int) -> list[Line]:
            return [line for line in self.extra_lines if _SESSION_RANK.get(line[0], 3) == n]

        lines: list[Line] = [("v", str(self.version)), ("o", str(self.origin))]
        lines += [("s", self.session_name), *rank(0)]
        lines += [("c", str(self.connection))] if self.connection else []
        lines += [*rank(1), ("t", f"{self.time.start} {self.time.stop}"), *rank(2), *rank(3)]
        lines += [("a", str(a)) for a in self.attributes]
        for media in self.media:
            lines += media.lines()
        text = "".join(f"{kind}={value}\r\n" for kind, value in lines)
        return text.encode("utf-8", "surrogateescape")

    def attribute(self, name: str) -> str | None:
        return _attribute(self.attributes, name)

    def connection_for(self, media: Media) -> Connection | None:
        """The media's own c= wins over the session's (§5.7)."""
        return media.connection or self.connection

    def direction_of(self, media: Media) -> Direction:
        """The direction its writer declares: media attribute, else session, else sendrecv;
        c=0.0.0.0 (RFC 2543 hold) means it does not want to receive (RFC 3264 §8.4)."""
        declared = media.direction or _direction(self.attributes) or Direction.SENDRECV
        connection = self.connection_for(media)
        if connection is not None and connection.is_null:
            return declared.restricted(Direction.SENDONLY)
        return declared

    def on_hold(self, media: Media) -> bool:
        """The writer does not want to receive this stream: sendonly, inactive or c=0.0.0.0."""
        return not self.direction_of(media).receives


class _Parser:
    """One pass over the lines; the first m= ends the session section (§5)."""

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray):
            raise SdpError("SDP body must be bytes")
        text = bytes(data).decode("utf-8", "surrogateescape")
        self.lines = [ln.removesuffix("\r") for ln in text.split("\n")]
        self.session: dict[str, str] = {}
        self.session_connection: Connection | None = None
        self.session_attrs: list[Attribute] = []
        self.session_extra: list[Line] = []
        self.media: list[Media] = []

    def parse(self) -> SessionDescription:
        for kind, value in self._typed_lines():
            if kind == "m":
                self.media.append(Media.parse(value))
            elif self.media:
                self.media[-1] = _add_media_line(self.media[-1], kind, value)
            else:
                self._session_line(kind, value)
        return self._finish()

    def _typed_lines(self) -> Iterable[Line]:
        first = True
        for line in self.lines:
            if not line:
                continue  # blank lines (a trailing CRLF pair) carry nothing
            if len(line) < 2 or line[1] != "=" or line[0] not in "vosiuepcbtrzkam":
                # RFC 8866 §5: a type letter we do not understand rejects the description.
                raise SdpError(f"not an SDP line: {line[:40]!r}")
            if first and line[0] != "v":
                raise SdpError("SDP must start with v=")
            first = False
            yield line[0], line[2:]

    def _session_line(self, kind: str, value: str) -> None:
        if kind == "a":
            self.session_attrs.append(Attribute.parse(value))
        elif kind == "c" and self.session_connection is None:
            self.session_connection = Connection.parse(value)
        elif kind in "vos" or (kind == "t" and "t" not in self.session):
            if kind in self.session:
                raise SdpError(f"repeated {kind}= line")
            self.session[kind] = value
        elif kind == "c":
            raise SdpError("repeated session-level c= line")
        else:
            self.session_extra.append((kind, value))

    def _finish(self) -> SessionDescription:
        missing = [k for k in "vost" if k not in self.session]
        if missing:
            raise SdpError(f"SDP lacks {', '.join(k + '=' for k in missing)}")
        if self.session["v"] != "0":
            raise SdpError(f"unsupported SDP version {self.session['v']!r}")
        sdp = SessionDescription(
            origin=Origin.parse(self.session["o"]),
            session_name=self.session["s"],
            media=tuple(self.media),
            connection=self.session_connection,
            time=Timing.parse(self.session["t"]),
            attributes=tuple(self.session_attrs),
            # Stored in the order serialize() writes them, so a re-parse gives the same value.
            extra_lines=tuple(sorted(self.session_extra, key=lambda ln: _SESSION_RANK[ln[0]])),
        )
        for media in sdp.media:
            if media.port != 0 and sdp.connection_for(media) is None:
                raise SdpError(f"no c= line for the {media.media} stream (RFC 8866 §5.7)")
        return sdp


def _add_media_line(media: Media, kind: str, value: str) -> Media:
    if kind == "a":
        return replace(media, attributes=(*media.attributes, Attribute.parse(value)))
    if kind == "c" and media.connection is None:
        return replace(media, connection=Connection.parse(value))
    if kind in _MEDIA_LETTERS or kind == "c":  # more c= lines: layered multicast (§5.7)
        if kind == "c":
            Connection.parse(value)
        extra = sorted((*media.extra_lines, (kind, value)), key=lambda ln: ln[0] != "i")
        return replace(media, extra_lines=tuple(extra))
    raise SdpError(f"{kind}= is not allowed at media level")


# -- Offer/answer (RFC 3264) ------------------------------------------------------------------

RTP_AVP = "RTP/AVP"
#: Packetization when the peer names none: 20 ms is the G.711 default (RFC 3551 §4.5).
DEFAULT_PTIME = 20


@dataclass(frozen=True)
class MediaCapabilities:
    """What one leg of ours offers or accepts: one audio stream on our own RTP port.

    ``codecs`` is our preference order; ``telephone_events`` the RFC 4733 events we relay.
    ``direction`` is what we want (sendonly to put the peer on hold).
    """

    address: str
    port: int
    codecs: tuple[Codec, ...] = (PCMU, PCMA)
    telephone_event: bool = True
    telephone_event_pt: int = 101
    telephone_events: str = "0-16"
    ptime: int = DEFAULT_PTIME
    direction: Direction = Direction.SENDRECV


@dataclass(frozen=True)
class NegotiatedMedia:
    """How to run the RTP leg once offer and answer are known.

    Payload types are the *remote* SDP's numbers, the ones to send with (RFC 3264 §5.1: an
    SDP names the numbers its writer wants to receive). ``ptime`` is the remote's wish (or
    20). ``direction`` is ours (may we send, will we receive); ``remote_direction`` is what
    the peer declared, with c=0.0.0.0 read as "do not send to me".
    """

    remote_address: str
    remote_port: int
    codec: Codec
    telephone_event_pt: int | None
    ptime: int
    direction: Direction
    remote_direction: Direction

    @property
    def on_hold(self) -> bool:
        """The peer does not want our media (sendonly, inactive or c=0.0.0.0)."""
        return not self.remote_direction.receives


@dataclass(frozen=True)
class Negotiation:
    """Our answer to a remote offer and the media it settles."""

    answer: SessionDescription
    media: NegotiatedMedia


def build_offer(
    caps: MediaCapabilities, origin: Origin, session_name: str = "callbridge"
) -> SessionDescription:
    """Our offer: one audio stream with every codec we have, plus telephone-event."""
    te = _our_telephone_event(caps)
    media = _local_media(caps, caps.codecs, te, caps.telephone_events, caps.direction)
    return SessionDescription(origin, session_name, (media,), Connection.for_host(caps.address))


def negotiate(
    offer: SessionDescription,
    caps: MediaCapabilities,
    origin: Origin,
    session_name: str = "callbridge",
) -> Negotiation:
    """Answer a remote offer (RFC 3264 §6).

    The first usable audio stream (port not 0, RTP/AVP, a codec in common) is accepted with
    one codec, the first of ``caps.codecs`` the offer has, under the offer's payload type
    number. Every other m-line is answered with port 0, keeping the count and order (§6).
    Raises NotAcceptable when no stream is usable.
    """
    chosen: NegotiatedMedia | None = None
    lines: list[Media] = []
    for media in offer.media:
        accepted = None if chosen else _accept_stream(offer, media, caps)
        if accepted is None:
            lines.append(Media(media.media, 0, media.proto, media.formats))
        else:
            line, chosen = accepted
            lines.append(line)
    if chosen is None:
        if any(m.media == "audio" and m.port for m in offer.media):
            raise NotAcceptable("no common audio codec (RTP/AVP, PCMU/PCMA)", 305)
        raise NotAcceptable("no audio stream offered", 304)
    connection = Connection.for_host(caps.address)
    # §6: the t= line of the answer equals the offer's.
    answer = SessionDescription(origin, session_name, tuple(lines), connection, offer.time)
    return Negotiation(answer, chosen)


def accept_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedMedia:
    """Read the remote answer to our ``offer`` (RFC 3264 §7).

    The codec is the first one in the answer's m= line that we offered; telephone-event is
    used when we offered it and the answer kept it. Raises NotAcceptable when the answer
    rejects our audio stream (port 0) or does not fit the offer.
    """
    if len(answer.media) != len(offer.media):
        raise NotAcceptable(
            f"answer has {len(answer.media)} m-lines, the offer {len(offer.media)} (§6)"
        )
    index = next((i for i, m in enumerate(offer.media) if m.media == "audio" and m.port), None)
    if index is None:
        raise ValueError("our offer has no active audio stream")
    ours, theirs = offer.media[index], answer.media[index]
    if theirs.port == 0:
        raise NotAcceptable("the answer rejected the audio stream (port 0)", 304)
    if theirs.proto != ours.proto:
        raise NotAcceptable(f"the answer changed the transport to {theirs.proto}", 302)
    offered = [c for c in ours.codecs if not _is_telephone_event(c)]
    codec = _first_common([c for c in theirs.codecs if not _is_telephone_event(c)], offered)
    if codec is None:
        raise NotAcceptable("the answer names none of the codecs we offered", 305)
    we_offered_te = any(_is_telephone_event(c) for c in ours.codecs)
    te = _telephone_event(theirs, codec.clock_rate) if we_offered_te else None
    direction = offer.direction_of(ours).restricted(answer.direction_of(theirs).mirrored())
    return _negotiated(answer, theirs, codec, te, direction)


def _accept_stream(
    offer: SessionDescription, media: Media, caps: MediaCapabilities
) -> tuple[Media, NegotiatedMedia] | None:
    """Our answer m-line for one offered stream, or None to reject it."""
    if media.media != "audio" or media.port == 0 or media.proto != RTP_AVP:
        return None
    codec = _first_common(caps.codecs, media.codecs)  # the offer's payload type number
    if codec is None:
        return None
    te = _telephone_event(media, codec.clock_rate) if caps.telephone_event else None
    events = _common_events(media, te, caps.telephone_events)
    if events is None:
        te = None
    direction = offer.direction_of(media).mirrored().restricted(caps.direction)
    line = _local_media(caps, (codec,), te, events or "", direction)
    return line, _negotiated(offer, media, codec, te, direction)


def _negotiated(
    sdp: SessionDescription, media: Media, codec: Codec, te: Codec | None, direction: Direction
) -> NegotiatedMedia:
    connection = sdp.connection_for(media)
    if connection is None:  # parse() refuses this; only a hand-built SDP gets here
        raise NotAcceptable(f"no c= line for the {media.media} stream")
    return NegotiatedMedia(
        remote_address=connection.host,
        remote_port=media.port,
        codec=codec,
        telephone_event_pt=te.payload_type if te else None,
        ptime=media.ptime or DEFAULT_PTIME,
        direction=direction,
        remote_direction=sdp.direction_of(media),
    )


def _local_media(
    caps: MediaCapabilities,
    codecs: tuple[Codec, ...],
    te: Codec | None,
    events: str,
    direction: Direction,
) -> Media:
    formats = (*codecs, te) if te else codecs
    attributes = [c.rtpmap() for c in formats]
    if te:
        attributes.append(Attribute("fmtp", f"{te.payload_type} {events}"))
    attributes += [Attribute("ptime", str(caps.ptime)), Attribute(direction.value)]
    pts = tuple(str(c.payload_type) for c in formats)
    return Media("audio", caps.port, RTP_AVP, pts, attributes=tuple(attributes))


def _first_common(preferred: Iterable[Codec], available: Iterable[Codec]) -> Codec | None:
    """The first of ``preferred`` found in ``available``, as ``available`` numbers it."""
    candidates = list(available)
    for want in preferred:
        for have in candidates:
            if want.same_format(have):
                return have
    return None


def _is_telephone_event(codec: Codec) -> bool:
    return codec.name.lower() == TELEPHONE_EVENT


def _our_telephone_event(caps: MediaCapabilities) -> Codec | None:
    if not caps.telephone_event or not caps.codecs:
        return None
    return Codec(TELEPHONE_EVENT, caps.telephone_event_pt, caps.codecs[0].clock_rate)


def _telephone_event(media: Media, clock_rate: int) -> Codec | None:
    """RFC 4733 §7.1.1: events ride at the audio codec's clock rate."""
    for codec in media.codecs:
        if _is_telephone_event(codec) and codec.clock_rate == clock_rate:
            return codec
    return None


def _common_events(media: Media, te: Codec | None, ours: str) -> str | None:
    """The events both sides support, as an fmtp list; None when there are none.

    No fmtp in the offer means events 0-15 (RFC 4733 §7.1.1); an unreadable one, none.
    """
    if te is None:
        return None
    theirs = _parse_events(media.fmtp(te.payload_type) or "0-15")
    common = sorted((theirs or set()) & (_parse_events(ours) or set()))
    ranges: list[list[int]] = []
    for event in common:
        if ranges and ranges[-1][1] == event - 1:
            ranges[-1][1] = event
        else:
            ranges.append([event, event])
    text = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
    return text or None


def _parse_events(text: str) -> set[int] | None:
    """``0-15,66,70`` -> the event codes (RFC 4733 §2.4.1); None when malformed."""
    events: set[int] = set()
    for item in text.replace(" ", "").split(","):
        low, dash, high = item.partition("-")
        if not _DIGITS.match(low) or (dash and not _DIGITS.match(high)):
            return None
        first, last = int(low), int(high) if dash else int(low)
        if first > last or last > 255:
            return None
        events.update(range(first, last + 1))
    return events


class LocalSdp:
    """Our o= line across one dialog's offers and answers (RFC 3264 §8, RFC 8866 §5.2).

    :meth:`stamp` gives an SDP our origin: the same sess-version when the content equals
    what we sent last (a re-sent SDP), that version plus one whenever it changed. The
    caller picks ``session_id`` and the first version (from a clock or random source) once.
    """

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self._last: SessionDescription | None = None

    def stamp(self, sdp: SessionDescription) -> SessionDescription:
        candidate = replace(sdp, origin=self.origin)
        if self._last is not None and candidate != self._last:
            version = self.origin.session_version + 1
            self.origin = replace(self.origin, session_version=version)
            candidate = replace(sdp, origin=self.origin)
        self._last = candidate
        return candidate

    def offer(self, caps: MediaCapabilities) -> SessionDescription:
        return self.stamp(build_offer(caps, self.origin))

    def answer(self, offer: SessionDescription, caps: MediaCapabilities) -> Negotiation:
        result = negotiate(offer, caps, self.origin)
        return replace(result, answer=self.stamp(result.answer))
