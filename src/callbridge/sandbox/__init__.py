"""The sandbox carrier: a simulated SIP trunk on loopback, for demos and CRM development.

A real SIP UAS (our own ``sip`` layer) with real RTP endpoints (our own ``media`` layer) that
answers every call by the number dialled. It runs inside ``callbridge serve`` when
``[trunk] mode = "sandbox"`` (the default when no trunk host is configured), or on its own
with ``callbridge sandbox [--host 127.0.0.1] [--port 5070]``, so that a ``serve`` with
``[trunk] mode = "sip"``, ``host = "127.0.0.1"``, ``port = 5070`` uses it like any trunk.
It takes only loopback traffic, over UDP, and never places a call itself.

What a number does, by its last two digits (any format: ``+91...``, ``0...``, plain):

| ends in | the sandbox party does | the call's status |
|---|---|---|
| ``01`` | busy: 100, 486 Busy Here | ``BUSY`` |
| ``02`` | rings out: 100, 180, never answers (CANCEL: 200, 487) | ``NO_ANSWER`` [1] |
| ``03`` | carrier failure: 100, 503 Service Unavailable | ``FAILED`` |
| ``04`` | answers as below, talks, hangs up itself (BYE) after 5 s | ``ANSWER`` [2] |
| ``05`` | early media: 100, 183 + SDP and audio; 200 after 1 s | ``ANSWER`` |
| ``06`` | temporarily unavailable: 100, 480 | ``NO_ANSWER`` |
| ``07`` | answers as below; 1 s after the ACK presses 1 (RFC 4733), talks on | ``ANSWER`` [3] |
| ``08`` | answers as below and talks, never pressing a key | ``ANSWER`` [4] |
| other | 100, 180; 200 after a 0.5 s ring; talks until hung up | ``ANSWER`` |

[1] once ``max_ring_time`` is up. [2] an agent ``04`` whose customer is still ringing when
it hangs up gives ``CANCELED``; a customer ``04`` gives ``hangup_source`` ``destination``.
[3] an agent ``07`` confirms a call placed with ``agent_confirm: "dtmf"``: the customer is
dialled once it presses 1. The key goes out as telephone-events on the party's RTP stream
(the tone pauses meanwhile), with the payload type the SDP answer agreed (callbridge offers
101); an offer without telephone-event gets no key. [4] an agent ``08`` with
``agent_confirm: "dtmf"`` gives ``NO_ANSWER`` once ``max_ring_time`` is up (agent leg reason
``AGENT_NOT_CONFIRMED``), and the customer is never dialled.

Both legs follow the table, so every outcome can be produced from the CRM's side: the agent
``9876543401`` gives ``BUSY``; agent ``9876543400`` with customer ``9876543102`` gives
``NO_ANSWER``; agent ``9876543404`` with customer ``9876543102`` gives ``CANCELED``; with
``agent_confirm: "dtmf"``, agent ``9876543407`` reaches the customer and agent ``9876543408``
gives ``NO_ANSWER``.

**Audio.** An answered party (and a ``05`` party from its 183) plays a tone pattern over RTP
until the call ends, so a recording has sound on both channels. The digit before the last two
picks it: ``4`` a long 440 Hz tone (0.8 s on, 0.2 s off), ``1`` short 1 kHz beeps (0.2 s on,
0.2 s off), ``6`` 600 Hz (0.4 s on, 0.4 s off). Any other digit: the agent leg plays the
440 Hz pattern and the customer leg the 1 kHz beeps (callbridge marks the customer leg with
P-Asserted-Identity), so the agent is on the left of a recording at 440 Hz, the customer on
the right at 1 kHz. What the party hears is kept (``SandboxCarrier.heard``), not echoed.

The delays (ring, early media, hang-up, keypress) are :class:`SandboxTimings`; tests
shorten them. The rule table is the one SIPp plays in ``sipp_scenarios/uas_by_number.xml``.
"""

from callbridge.sandbox.carrier import SandboxCarrier
from callbridge.sandbox.rules import Rule, SandboxTimings, rule_for, voice_for
from callbridge.sandbox.uas import CallState, Outcome, SandboxCall

__all__ = [
    "CallState",
    "Outcome",
    "Rule",
    "SandboxCall",
    "SandboxCarrier",
    "SandboxTimings",
    "rule_for",
    "voice_for",
]
