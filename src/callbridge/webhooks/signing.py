"""Signing status callbacks per the Standard Webhooks specification (standardwebhooks.com).

Each delivery carries three headers:

- ``webhook-id``: the event's id, the same on every retry, so a receiver can drop duplicates;
- ``webhook-timestamp``: Unix seconds when this attempt was signed (each retry re-signs);
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` over ``"{id}.{timestamp}.{body}"``.

The secret is ``whsec_`` followed by base64 of the key bytes; only the part after the prefix
is the key. A receiver may be handed several space-separated signatures (a sender rotating
its secret signs with both); one match is enough. The timestamp is checked against a
tolerance in both directions, which is what stops a captured request being replayed later.

Any Standard Webhooks library verifies what :func:`headers` produces; :func:`verify` is the
same check for our tests and for CRM developers who want it in Python.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
#: The spec recommends rejecting timestamps more than five minutes off.
DEFAULT_TOLERANCE = 300
#: Header names, lower case as the spec writes them (HTTP header names are case-insensitive).
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key inside ``secret``: the base64 after ``whsec_`` (the prefix is optional, as
    receivers often paste the bare key). Raises ValueError for an empty or malformed secret."""
    encoded = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    try:
        # Padding is often trimmed by a copy-paste: put back what the length calls for.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not base64 after 'whsec_'") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one delivery: ``v1,<base64 signature>``."""
    digest = _digest(secret_key(secret), msg_id, timestamp, body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent as ``msg_id`` at ``timestamp``."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> bool:
    """Whether ``body`` with ``headers`` was signed with ``secret`` no more than ``tolerance``
    seconds from ``now`` (Unix seconds), either way. Header names are matched in any case.
    Signatures are compared in constant time; versions other than ``v1`` are skipped."""
    found = {name.lower(): value for name, value in headers.items()}
    msg_id = found.get(ID_HEADER, "")
    timestamp = _parse_timestamp(found.get(TIMESTAMP_HEADER, ""))
    if not msg_id or timestamp is None or abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret_key(secret), msg_id, timestamp, body)
    offered = found.get(SIGNATURE_HEADER, "").split(" ")
    # Every candidate is compared, not just up to the first match: no early exit to time.
    matches = [hmac.compare_digest(expected, sig) for sig in map(_v1_signature, offered)]
    return any(matches)


def _parse_timestamp(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _v1_signature(token: str) -> bytes:
    """The raw bytes of a ``v1,<base64>`` token; b"" (which never matches) for anything else."""
    version, _, encoded = token.partition(",")
    if version != "v1":
        return b""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return b""
