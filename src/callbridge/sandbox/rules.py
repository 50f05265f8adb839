"""What a dialled number does in the sandbox, and what its party sounds like. Pure.

The last two digits of the dialled number pick the :class:`Rule`; the digit before them the
tone the party plays (see the table in ``callbridge.sandbox``). Whatever the number's format
(``+91XXXXXXXXXX``, ``91...``, ``0...``, plain), only its digits count.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from callbridge.media.tones import TonePlan, sine_plan
from callbridge.sip.uri import SipUri, TelUri, Uri

__all__ = [
    "AGENT_VOICE",
    "BEEPS_1000",
    "CUSTOMER_VOICE",
    "DEFAULT_TIMINGS",
    "PRESSES",
    "REFUSALS",
    "TONE_600",
    "Rule",
    "SandboxTimings",
    "dialled_digits",
    "rule_for",
    "voice_for",
]


class Rule(enum.Enum):
    #: ``...01``: 486 Busy Here.
    BUSY = "busy"
    #: ``...02``: 180 Ringing, never answers; a CANCEL gets 200, then 487 for the INVITE.
    RINGS_OUT = "rings out"
    #: ``...03``: 503 Service Unavailable, a carrier failure.
    FAILURE = "failure"
    #: ``...04``: answers after the ring, talks, then hangs up itself with a BYE.
    HANGS_UP = "hangs up"
    #: ``...05``: 183 Session Progress with SDP and audio, then 200 with the same SDP.
    EARLY_MEDIA = "early media"
    #: ``...06``: 480 Temporarily Unavailable.
    UNAVAILABLE = "unavailable"
    #: ``...07``: answers after the ring, then presses 1 (RFC 4733) and talks on: an agent
    #: confirming the call (``agent_confirm: "dtmf"``).
    CONFIRMS = "confirms"
    #: ``...08``: answers after the ring and talks, never pressing a key: an agent who does
    #: not confirm.
    NEVER_CONFIRMS = "never confirms"
    #: Anything else: 180, then 200 after the ring; talks until the caller hangs up.
    ANSWERS = "answers"


_BY_SUFFIX: Final = {
    "01": Rule.BUSY,
    "02": Rule.RINGS_OUT,
    "03": Rule.FAILURE,
    "04": Rule.HANGS_UP,
    "05": Rule.EARLY_MEDIA,
    "06": Rule.UNAVAILABLE,
    "07": Rule.CONFIRMS,
    "08": Rule.NEVER_CONFIRMS,
}

#: The rules that refuse the INVITE outright, with the status they answer.
REFUSALS: Final = {Rule.BUSY: 486, Rule.FAILURE: 503, Rule.UNAVAILABLE: 480}
#: The rules that press keys once talking, with the keys (sent as RFC 4733 events).
PRESSES: Final = {Rule.CONFIRMS: "1"}

#: A long 440 Hz tone (0.8 s on, 0.2 s off): the agent's default voice.
AGENT_VOICE: Final = sine_plan(440.0, ((800, 200),))
#: Short 1 kHz beeps (0.2 s on, 0.2 s off): the customer's default voice.
BEEPS_1000: Final = sine_plan(1000.0, ((200, 200),))
CUSTOMER_VOICE: Final = BEEPS_1000
#: 600 Hz, 0.4 s on, 0.4 s off: a third party (a conference) can be told apart too.
TONE_600: Final = sine_plan(600.0, ((400, 400),))

#: The digit before the last two chooses the voice outright.
_BY_TONE_DIGIT: Final = {"4": AGENT_VOICE, "1": BEEPS_1000, "6": TONE_600}

_NOT_DIGITS = re.compile(r"[^0-9]")


@dataclass(frozen=True)
class SandboxTimings:
    """How long the sandbox's parties take, in seconds (shorten them in tests)."""

    #: 180 to 200 on answering numbers (``...04`` and anything else).
    ring: float = 0.5
    #: 183 to 200 on ``...05``.
    early_media: float = 1.0
    #: ACK to our BYE on ``...04``.
    hangup_after: float = 5.0
    #: ACK to the keypress on ``...07``.
    confirm_after: float = 1.0

    def __post_init__(self) -> None:
        if min(self.ring, self.early_media, self.hangup_after, self.confirm_after) < 0:
            raise ValueError(f"sandbox timings must not be negative: {self}")


DEFAULT_TIMINGS: Final = SandboxTimings()


def dialled_digits(uri: Uri) -> str:
    """The digits of the number an INVITE's Request-URI dials ("" when it names none)."""
    if isinstance(uri, SipUri):
        return _NOT_DIGITS.sub("", uri.user or "")
    if isinstance(uri, TelUri):
        return _NOT_DIGITS.sub("", uri.number)
    return ""


def rule_for(digits: str) -> Rule:
    """The rule the last two digits choose."""
    return _BY_SUFFIX.get(digits[-2:], Rule.ANSWERS)


def voice_for(digits: str, *, customer: bool) -> TonePlan:
    """What the party plays once it talks: the digit before the last two picks it (``4``
    440 Hz, ``1`` 1 kHz beeps, ``6`` 600 Hz); for any other digit the agent leg plays
    :data:`AGENT_VOICE` and the customer leg :data:`CUSTOMER_VOICE`, so that a demo call's
    two channels always differ. ``customer``: callbridge marks its customer leg with
    P-Asserted-Identity (the caller ID shown to the customer)."""
    chosen = _BY_TONE_DIGIT.get(digits[-3:-2])
    if chosen is not None:
        return chosen
    return CUSTOMER_VOICE if customer else AGENT_VOICE
