"""Diagnostics on stderr, and loggers that put the call and leg on every line.

Each asyncio-facing module keeps one ``logging.getLogger(__name__)``; code working on a call
wraps it with ``call_logger(logger, call_id, leg)`` so that every line reads
``... INFO callbridge.b2bua.call: [call=3f2a... leg=2] 180 Ringing``. The call id and leg are
also set as ``call_id`` and ``leg`` attributes on each record, for filters and formatters.
"""

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _CallbridgeHandler(logging.StreamHandler[TextIO]):
    """Marks the handler ``setup_logging`` installed, so a second call replaces it."""


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """Send log records at ``level`` and above (one of LEVELS) to ``stream``, by default the
    process's stderr. Calling it again replaces the previous set-up."""
    handler = _CallbridgeHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CallbridgeHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level.lower()])


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with ``[call=<id> leg=<n>]`` from ``extra["call_id"]`` and
    ``extra["leg"]`` (``leg`` may be None: ``[call=<id>]``)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        call_id, leg = extra.get("call_id"), extra.get("leg")
        prefix = f"[call={call_id}]" if leg is None else f"[call={call_id} leg={leg}]"
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"{prefix} {msg}", kwargs

    def for_leg(self, leg: int) -> "CallLogger":
        """The same call's logger for another leg."""
        return CallLogger(self.logger, {**(self.extra or {}), "leg": leg})


def call_logger(logger: logging.Logger, call_id: str, leg: int | None = None) -> CallLogger:
    """A logger whose lines carry ``call_id`` and, when given, ``leg``."""
    return CallLogger(logger, {"call_id": call_id, "leg": leg})
