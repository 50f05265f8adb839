"""Errors raised by the pure SIP layer."""


class SipParseError(ValueError):
    """A SIP message, header or URI that cannot be accepted.

    ``status`` is the SIP response code to answer with when a reply can be routed (400 Bad
    Request, 505 Version Not Supported, ...): the parser decides *what* was wrong, the
    transport layer decides whether and where to answer (the wsproto ``ParseFailed`` shape).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
