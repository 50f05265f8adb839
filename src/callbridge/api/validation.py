"""The ``POST /calls`` body: parsed, typed and normalized, or refused with a precise code.

Checks run in this order, and the first failure is answered (400 unless noted):

==========================  =========================================================
error_code                  when
==========================  =========================================================
PAYLOAD_TOO_LARGE (413)     the body is over the limit (64 KiB by default)
INVALID_JSON                not UTF-8 JSON, a duplicated key, NaN/Infinity, not an object
UNKNOWN_FIELD               a key the spec does not define (a typo such as
                            ``agent_numbr`` would otherwise route the call elsewhere)
MISSING_FIELD               ``from_number``, ``to_number`` or ``uuid`` absent or null
INVALID_FIELD               a value of the wrong JSON type: numbers as JSON numbers,
                            ``recording`` not true/false, ``max_ring_time`` not an
                            integer (``true``, ``30.0`` and ``"30"`` are not)
INVALID_UUID                ``uuid`` empty, over 128 characters, or with control characters
AGENT_REQUIRED              neither ``agent_number`` nor ``crm_username``
AGENT_CONFLICT              both
INVALID_NUMBER              ``to_number`` not an Indian mobile, ``agent_number`` not an
                            Indian number (:mod:`callbridge.numbers`)
INVALID_RING_TIME           ``max_ring_time`` outside 5..120 seconds
==========================  =========================================================

The account-dependent checks (CALLER_ID_NOT_ALLOWED, UNKNOWN_AGENT) need the store and are
made by the route. For the optional fields, ``null`` means "not given", and so does an empty
``agent_number`` or ``crm_username`` (web forms send ""). The Content-Type is not checked:
the body is read as JSON whatever it claims.

:func:`request_hash` digests the *normalized* request, defaults filled in, so a retry that
writes a number another way or spells out a default is still the same request.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from callbridge.api.errors import ApiError
from callbridge.numbers import parse_indian_number

__all__ = ["CallRequest", "parse_call_request", "read_body", "request_hash"]

DEFAULT_BODY_LIMIT = 64 * 1024
DEFAULT_RECORDING = True
DEFAULT_RING_TIME = 30
RING_TIME_RANGE = (5, 120)
MAX_UUID_LENGTH = 128

_REQUIRED = ("from_number", "to_number", "uuid")
#: Every field of InitiateCallRequest, and its JSON type.
_TYPES: dict[str, type] = {
    "from_number": str,
    "to_number": str,
    "agent_number": str,
    "crm_username": str,
    "uuid": str,
    "recording": bool,
    "max_ring_time": int,
}
_FIELDS = tuple(_TYPES)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class CallRequest:
    """A valid request, numbers in E.164. ``from_number`` is as the client wrote it: whether
    it is one of the account's caller IDs is the route's question."""

    from_number: str
    to_number: str
    agent_number: str | None
    crm_username: str | None
    uuid: str
    recording: bool
    max_ring_time: int


async def read_body(headers: Mapping[str, str], stream: AsyncIterator[bytes],
                    limit: int = DEFAULT_BODY_LIMIT) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``: from
    Content-Length before anything is read, else while reading."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def parse_call_request(body: bytes) -> CallRequest:
    """Parse and check a ``POST /calls`` body; raise ApiError naming the first problem."""
    data = _json_object(body)
    _reject_unknown(data)
    _require(data)
    for name, kind in _TYPES.items():
        _check_type(name, data.get(name), kind)
    _check_uuid(data["uuid"])
    agent_number, crm_username = _agent(data)
    recording, ring_time = data.get("recording"), data.get("max_ring_time")
    return CallRequest(
        from_number=data["from_number"],
        to_number=_number("to_number", data["to_number"], mobile_only=True),
        agent_number=agent_number and _number("agent_number", agent_number, mobile_only=False),
        crm_username=crm_username,
        uuid=data["uuid"],
        recording=DEFAULT_RECORDING if recording is None else recording,
        max_ring_time=_ring_time(DEFAULT_RING_TIME if ring_time is None else ring_time),
    )


def request_hash(request: CallRequest, from_number_e164: str) -> str:
    """SHA-256 hex of the canonical request: normalized values, defaults filled in, keys
    sorted, compact JSON. ``from_number_e164`` replaces the caller ID as written."""
    canonical = {**asdict(request), "from_number": from_number_e164}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# -- the steps --------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates,
                          parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad("INVALID_JSON", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad("INVALID_JSON", "the body must be a JSON object")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may keep different copies of a duplicated key; refuse the ambiguity.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _reject_unknown(data: dict[str, Any]) -> None:
    for key in data:
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _bad("UNKNOWN_FIELD", f"unknown field {key!r}{hint}")


def _require(data: dict[str, Any]) -> None:
    for name in _REQUIRED:
        if data.get(name) is None:
            raise _bad("MISSING_FIELD", f"{name} is required")


def _check_type(name: str, value: Any, kind: type) -> None:
    # bool is an int in Python; in JSON, true is not a number of seconds.
    if value is not None and (not isinstance(value, kind) or
                              (kind is int and isinstance(value, bool))):
        raise _bad("INVALID_FIELD", f"{name} must be {_KIND_NAMES[kind]}")


_KIND_NAMES = {str: "a string", bool: "true or false", int: "an integer"}


def _agent(data: dict[str, Any]) -> tuple[str | None, str | None]:
    agent_number = data.get("agent_number") or None
    crm_username = data.get("crm_username") or None
    if agent_number is None and crm_username is None:
        raise _bad("AGENT_REQUIRED", "give either agent_number or crm_username")
    if agent_number is not None and crm_username is not None:
        raise _bad("AGENT_CONFLICT", "give agent_number or crm_username, not both")
    return agent_number, crm_username


def _check_uuid(uuid: str) -> None:
    if not uuid or len(uuid) > MAX_UUID_LENGTH or _CONTROL.search(uuid):
        raise _bad(
            "INVALID_UUID",
            f"uuid must be 1..{MAX_UUID_LENGTH} characters without control characters",
        )


def _number(name: str, text: str, *, mobile_only: bool) -> str:
    try:
        return parse_indian_number(text, mobile_only=mobile_only)
    except ValueError as exc:
        raise _bad("INVALID_NUMBER", f"{name}: {exc}") from None


def _ring_time(seconds: int) -> int:
    low, high = RING_TIME_RANGE
    if not low <= seconds <= high:
        raise _bad("INVALID_RING_TIME", f"max_ring_time must be {low}..{high} seconds")
    return seconds


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
