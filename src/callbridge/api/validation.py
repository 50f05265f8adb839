"""Request bodies: parsed, typed and normalized, or refused with a precise code.

``POST /calls`` checks run in this order, and the first failure is answered (400 unless noted):

==========================  =========================================================
error_code                  when
==========================  =========================================================
PAYLOAD_TOO_LARGE (413)     the body is over the limit (64 KiB by default)
INVALID_JSON                not UTF-8 JSON, a duplicated key, NaN/Infinity, not an object
UNKNOWN_FIELD               a key the spec does not define (a typo such as
                            ``agent_numbr`` would otherwise route the call elsewhere)
MISSING_FIELD               ``from_number``, ``to_number`` or ``uuid`` absent or null
INVALID_FIELD               a value of the wrong JSON type: numbers as JSON numbers,
                            ``recording`` not true/false, ``max_ring_time`` or
                            ``time_limit`` not an integer (``true``, ``30.0`` and
                            ``"30"`` are not)
INVALID_UUID                ``uuid`` empty, over 128 characters, or with control characters
AGENT_REQUIRED              neither ``agent_number`` nor ``crm_username``
AGENT_CONFLICT              both
INVALID_NUMBER              ``to_number`` not an Indian mobile, ``agent_number`` not an
                            Indian number (:mod:`callbridge.numbers`)
INVALID_RING_TIME           ``max_ring_time`` outside 5..120 seconds
INVALID_AGENT_CONFIRM       ``agent_confirm`` not ``"dtmf"`` (or null)
INVALID_TIME_LIMIT          ``time_limit`` outside 10..14400 seconds
==========================  =========================================================

The account-dependent checks (CALLER_ID_NOT_ALLOWED, UNKNOWN_AGENT) need the store and are
made by the route. For the spec's optional fields, ``null`` means "not given", and so does an
empty ``agent_number`` or ``crm_username`` (web forms send ""). Our two per-call options differ
on purpose: absent, ``agent_confirm`` and ``time_limit`` take the account's default
(:data:`ACCOUNT_DEFAULT` until the route resolves it); ``null`` turns the option off for this
call, so a CRM can opt one call out of an account-wide default. The Content-Type is not
checked: the body is read as JSON whatever it claims.

:func:`request_hash` digests the *normalized* request, defaults filled in, so a retry that
writes a number another way or spells out a default is still the same request. The two
options enter it only as given: an absent one is left out (never the account default it
resolved to, which may change between a request and its retry), so a call stored before
they existed keeps its hash.

The live call control bodies follow the same rules (strict keys, JSON types, then values):
``add-leg`` ``{"number", "max_ring_time"}`` (any Indian number: a transfer target may be a
desk phone), ``dtmf`` ``{"digits", "leg"}`` (INVALID_DIGITS, INVALID_LEG), and ``hangup``
an empty body or ``{}``.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, TypeVar

from callbridge.api.errors import ApiError
from callbridge.numbers import parse_indian_number

__all__ = [
    "ACCOUNT_DEFAULT",
    "AccountDefault",
    "AddLegRequest",
    "CallRequest",
    "DtmfRequest",
    "parse_add_leg_request",
    "parse_call_request",
    "parse_dtmf_request",
    "parse_hangup_request",
    "read_body",
    "request_hash",
    "resolve",
]

DEFAULT_BODY_LIMIT = 64 * 1024
DEFAULT_RECORDING = True
DEFAULT_RING_TIME = 30
RING_TIME_RANGE = (5, 120)
#: A bridged call's longest life: 10 s (a sensible floor) to 4 h.
TIME_LIMIT_RANGE = (10, 14400)
#: The agent confirmation modes: the agent presses 1 before the customer is dialled.
AGENT_CONFIRM_MODES = ("dtmf",)
MAX_UUID_LENGTH = 128
#: RFC 4733 §3.2 events 0-15 are 0-9, *, #, A-D; 32 keys is more than any IVR wants at once.
_DIGITS = re.compile(r"[0-9*#A-D]{1,32}")

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
    "agent_confirm": str,
    "time_limit": int,
}
#: The per-call options that fall back to the account's default when absent.
_OPTIONS = ("agent_confirm", "time_limit")
_ADD_LEG_TYPES: dict[str, type] = {"number": str, "max_ring_time": int}
_DTMF_TYPES: dict[str, type] = {"digits": str, "leg": int}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

T = TypeVar("T")


class AccountDefault(enum.Enum):
    """The value of a per-call option the request left out."""

    #: Absent from the body: the account's default applies.
    TOKEN = "account default"


ACCOUNT_DEFAULT: Final = AccountDefault.TOKEN


def resolve(value: T | AccountDefault, default: T) -> T:
    """``value``, or ``default`` (the account's) when the request left it out."""
    return default if isinstance(value, AccountDefault) else value


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
    #: ``"dtmf"``, None (off for this call), or left to the account.
    agent_confirm: str | AccountDefault | None = ACCOUNT_DEFAULT
    #: Seconds, None (no limit for this call), or left to the account.
    time_limit: int | AccountDefault | None = ACCOUNT_DEFAULT


@dataclass(frozen=True)
class AddLegRequest:
    """``POST /calls/{call_id}/add-leg``: whom to add, in E.164, and how long to ring."""

    number: str
    max_ring_time: int


@dataclass(frozen=True)
class DtmfRequest:
    """``POST /calls/{call_id}/dtmf``: the keys, and the leg to send them on (None: the
    customer's)."""

    digits: str
    leg: int | None


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
    data = _checked_object(body, _TYPES, _REQUIRED)
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
        agent_confirm=_agent_confirm(data.get("agent_confirm", ACCOUNT_DEFAULT)),
        time_limit=_time_limit(data.get("time_limit", ACCOUNT_DEFAULT)),
    )


def request_hash(request: CallRequest, from_number_e164: str) -> str:
    """SHA-256 hex of the canonical request: normalized values, defaults filled in, keys
    sorted, compact JSON. ``from_number_e164`` replaces the caller ID as written. A per-call
    option left to the account is left out, so the hash of a request without the options is
    what it was before they existed."""
    canonical = {**asdict(request), "from_number": from_number_e164}
    for name in _OPTIONS:
        if isinstance(canonical[name], AccountDefault):
            del canonical[name]
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_add_leg_request(body: bytes) -> AddLegRequest:
    """Parse and check an add-leg body. The number may be a landline: the person added is
    often a colleague or a desk (a warm transfer), unlike the customer, who must be a mobile."""
    data = _checked_object(body, _ADD_LEG_TYPES, ("number",))
    ring_time = data.get("max_ring_time")
    return AddLegRequest(
        number=_number("number", data["number"], mobile_only=False),
        max_ring_time=_ring_time(DEFAULT_RING_TIME if ring_time is None else ring_time),
    )


def parse_dtmf_request(body: bytes) -> DtmfRequest:
    """Parse and check a DTMF body: ``digits`` from 0-9, *, #, A-D (1..32 of them), and an
    optional ``leg`` number (a positive integer; whether the call has it is the call's
    question)."""
    data = _checked_object(body, _DTMF_TYPES, ("digits",))
    if not _DIGITS.fullmatch(data["digits"]):
        raise _bad("INVALID_DIGITS", "digits must be 1..32 of 0-9, *, #, A-D")
    leg = data.get("leg")
    if leg is not None and leg < 1:
        raise _bad("INVALID_LEG", f"leg must be a leg_id of the call (1 or more), not {leg}")
    return DtmfRequest(data["digits"], leg)


def parse_hangup_request(body: bytes) -> None:
    """A hangup needs no body: accept none, or an empty JSON object; refuse anything else, as
    the other bodies refuse unknown fields."""
    if body.strip():
        _checked_object(body, {}, ())


# -- the steps --------------------------------------------------------------------------


def _checked_object(body: bytes, types: dict[str, type],
                    required: tuple[str, ...]) -> dict[str, Any]:
    """The body as a JSON object with only the keys of ``types``, ``required`` ones not null,
    each value of its JSON type (or null)."""
    data = _json_object(body)
    _reject_unknown(data, tuple(types))
    _require(data, required)
    for name, kind in types.items():
        _check_type(name, data.get(name), kind)
    return data


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


def _reject_unknown(data: dict[str, Any], fields: tuple[str, ...]) -> None:
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _bad("UNKNOWN_FIELD", f"unknown field {key!r}{hint}")


def _require(data: dict[str, Any], required: tuple[str, ...]) -> None:
    for name in required:
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


def _agent_confirm(mode: str | AccountDefault | None) -> str | AccountDefault | None:
    if isinstance(mode, str) and mode not in AGENT_CONFIRM_MODES:
        choices = ", ".join(repr(m) for m in AGENT_CONFIRM_MODES)
        raise _bad("INVALID_AGENT_CONFIRM", f"agent_confirm must be {choices} or null")
    return mode


def _time_limit(seconds: int | AccountDefault | None) -> int | AccountDefault | None:
    low, high = TIME_LIMIT_RANGE
    if isinstance(seconds, int) and not low <= seconds <= high:
        raise _bad("INVALID_TIME_LIMIT", f"time_limit must be {low}..{high} seconds or null")
    return seconds


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"the body must not exceed {limit} bytes")
