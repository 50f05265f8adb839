"""Log lines carry time, level, logger name, and the call and leg they concern."""

import io
import logging
import re
from collections.abc import Iterator

import pytest

from callbridge.logs import call_logger, setup_logging

LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+) +(?P<name>\S+): (?P<msg>.*)"
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[re.Match[str]]:
    matches = [LINE.fullmatch(line) for line in stream.getvalue().splitlines()]
    assert all(matches), stream.getvalue()
    return [m for m in matches if m]


def test_format_shows_time_level_name_and_message(stream: io.StringIO) -> None:
    setup_logging("info", stream)
    logging.getLogger("callbridge.test").info("hello %s", "world")
    logging.getLogger("callbridge.test").debug("not shown at info")
    [line] = lines(stream)
    assert line.group("level", "name", "msg") == ("INFO", "callbridge.test", "hello world")


def test_setting_up_again_replaces_the_handler(stream: io.StringIO) -> None:
    setup_logging("info", io.StringIO())
    setup_logging("DEBUG", stream)
    logging.getLogger("callbridge.test").debug("once")
    assert [m.group("msg") for m in lines(stream)] == ["once"]


def test_call_logger_prefixes_call_and_leg(stream: io.StringIO) -> None:
    setup_logging("debug", stream)
    base = logging.getLogger("callbridge.b2bua.call")
    log = call_logger(base, "3f2a", leg=2)
    log.info("180 Ringing")
    log.for_leg(3).warning("486 Busy Here")
    call_logger(base, "3f2a").debug("created")
    assert [m.group("msg") for m in lines(stream)] == [
        "[call=3f2a leg=2] 180 Ringing",
        "[call=3f2a leg=3] 486 Busy Here",
        "[call=3f2a] created",
    ]


def test_call_logger_sets_record_attributes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    call_logger(logging.getLogger("callbridge.x"), "abc", leg=1).info("m", extra={"sip": 200})
    [record] = caplog.records
    assert (record.call_id, record.leg, record.sip) == ("abc", 1, 200)  # type: ignore[attr-defined]
