"""API keys: ``Authorization: Bearer <key>`` (RFC 6750 §2.1).

A key is ``cb_`` followed by 32 URL-safe characters (192 random bits). Only its SHA-256 hex
digest is stored, with its first characters (:func:`key_prefix`) so an operator can tell keys
apart; the key itself is shown once, when it is made, and never again.

A key that is missing, malformed, unknown, revoked, or whose account is gone is answered the
same way: 401 ``UNAUTHORIZED`` with ``WWW-Authenticate: Bearer`` (RFC 6750 §3), so a client
cannot tell which of them it was.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from callbridge.api.errors import ApiError
from callbridge.store.models import Account, Store

__all__ = ["authenticate", "hash_api_key", "key_prefix", "new_api_key"]

KEY_PREFIX = "cb_"
#: RFC 6750 §2.1 b64token, bounded: anything else is refused before a database lookup.
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{1,200}=*")
#: RFC 7235 §2.1: the scheme is case-insensitive; one or more spaces before the credentials.
_BEARER = re.compile(r"bearer +(\S+)", re.IGNORECASE)
#: Characters of the key kept in listings: "cb_" and 5 more, 30 bits: enough to tell keys
#: apart, far too few to help guess one.
_SHOWN = len(KEY_PREFIX) + 5


def new_api_key() -> str:
    """A fresh key: ``cb_`` + 32 URL-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_api_key(key: str) -> str:
    """The stored form of ``key``: SHA-256, lower-case hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    """The first characters of ``key``, stored beside its hash for listings."""
    return key[:_SHOWN]


async def authenticate(store: Store, authorization: str | None) -> Account:
    """The account whose key is in the ``Authorization`` header; else ApiError 401.

    The lookup is by digest, so what a lookup's timing could reveal is a prefix of a SHA-256
    digest, which says nothing useful about any key.
    """
    match = _BEARER.fullmatch(authorization.strip()) if authorization else None
    if match is None or not _TOKEN.fullmatch(match.group(1)):
        raise _unauthorized("missing or malformed Authorization: Bearer <API key>")
    found = await store.find_api_key(hash_api_key(match.group(1)))
    account = await store.get_account(found.account_id) if found and found.active else None
    if account is None:
        raise _unauthorized("invalid API key")
    return account


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "UNAUTHORIZED", message, {"WWW-Authenticate": "Bearer"})
