"""What the user agent reports about its legs (see :class:`callbridge.sip.useragent.UserAgent`).

Events are frozen dataclasses carrying the ``leg_id`` the caller chose when it placed the call.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Trying:
    leg_id: str


@dataclass(frozen=True)
class Ringing:
    leg_id: str
    status: int


@dataclass(frozen=True)
class EarlyMedia:
    leg_id: str
    sdp: bytes


@dataclass(frozen=True)
class Answered:
    leg_id: str
    sdp: bytes


@dataclass(frozen=True)
class Failed:
    """The INVITE ended without an answer: a final response, or 408 with ``timed_out`` when
    our own Timer B fired (the trunk never answered at all)."""

    leg_id: str
    status: int
    reason: str
    timed_out: bool = False


@dataclass(frozen=True)
class Cancelled:
    leg_id: str


@dataclass(frozen=True)
class RemoteHangup:
    """The far end sent BYE (answered 200)."""

    leg_id: str


@dataclass(frozen=True)
class HungUp:
    """Our BYE ended (answered, refused or timed out): the leg is gone."""

    leg_id: str
    status: int


@dataclass(frozen=True)
class MediaUpdate:
    """A re-INVITE or UPDATE from the far end carried a new offer (already answered)."""

    leg_id: str
    sdp: bytes


@dataclass(frozen=True)
class InfoReceived:
    leg_id: str
    content_type: str
    body: bytes


@dataclass(frozen=True)
class PingResult:
    """An OPTIONS ping ended: ``status`` 0 means no answer (Timer F)."""

    ping_id: str
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


Event = (
    Trying | Ringing | EarlyMedia | Answered | Failed | Cancelled | RemoteHangup | HungUp
    | MediaUpdate | InfoReceived | PingResult
)
