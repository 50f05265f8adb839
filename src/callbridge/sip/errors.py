"""Errors raised by the pure SIP layer.

The parsers (:mod:`~callbridge.sip.message`, :mod:`~callbridge.sip.headers`,
:mod:`~callbridge.sip.uri`) raise only :class:`SipParseError`, whatever the input: no
IndexError, UnicodeDecodeError or ValueError from ``int()`` escapes them, and the property
tests hold them to it.
"""


class SipParseError(ValueError):
    """A SIP message, header or URI that cannot be accepted.

    ``status`` is the SIP response code to answer with when a reply can be routed (400 Bad
    Request for any syntax error, 505 Version Not Supported for a SIP version other than 2.0,
    513 Message Too Large for a stream message over the size limit): the parser decides *what*
    was wrong, the transport layer decides whether and where to answer (the wsproto
    ``ParseFailed`` shape).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def excerpt(text: str, limit: int = 60) -> str:
    """``repr`` of at most ``limit`` characters of ``text``, for error messages: a 60 kB
    header must not become a 60 kB log line."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."
