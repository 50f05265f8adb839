"""The errors callbridge raises above its pure layers.

Our exception hierarchy::

    CallbridgeError
     ├── ConfigError          a setting is missing, malformed or out of range (names the key)
     ├── TransportError       a socket operation failed (OSError, mapped at the edge)
     ├── TrunkUnavailable     no call can be placed now (trunk down, no media ports, draining)
     ├── StorageError         the database failed (sqlite3/aiosqlite errors, mapped in store/)
     └── CallNotActive        live call control asked of a call that is not up (400)

The pure layers keep their own ``ValueError`` subclasses, which never cross the edge as they
are: ``callbridge.sip.errors.SipParseError`` carries the SIP status to answer with, and the
asyncio layer turns it into a response (or drops the datagram).

Foreign exceptions are translated in one place each, as httpx does with
``map_httpcore_exceptions``: ``map_os_errors`` below wraps socket work, so code above the
transport catches ``TransportError`` and never a bare ``OSError``.
"""

from collections.abc import Iterator
from contextlib import contextmanager


class CallbridgeError(Exception):
    """Base class of every error callbridge raises on purpose."""


class ConfigError(CallbridgeError):
    """A configuration problem, found at start-up.

    ``key`` is what the operator must fix: a setting as ``section.key`` (``sip.port``), an
    environment variable, or the configuration file itself when it cannot be read or parsed.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class TransportError(CallbridgeError):
    """A socket could not be bound, or a datagram or stream could not be sent.

    Raised from an ``OSError`` (kept as ``__cause__``) by ``map_os_errors``.
    """


class TrunkUnavailable(CallbridgeError):
    """The trunk cannot take a call now: marked down by OPTIONS pings, no free media ports,
    or the server draining. The REST API answers 502 ``TRUNK_UNAVAILABLE``."""


class CallNotActive(CallbridgeError):
    """add-leg or DTMF on a call that is not bridged (ended, or still ringing): the REST API
    answers 400 ``CALL_NOT_ACTIVE``."""


class StorageError(CallbridgeError):
    """A database operation failed; the driver's exception is kept as ``__cause__``."""


@contextmanager
def map_os_errors(action: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a ``TransportError``.

    ``action`` says what was being attempted, e.g. ``"bind udp 127.0.0.1:5060"``; the message
    becomes ``"bind udp 127.0.0.1:5060: [Errno 98] Address already in use"``.
    """
    try:
        yield
    except OSError as exc:
        raise TransportError(f"{action}: {exc}") from exc
