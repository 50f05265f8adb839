"""How an agent proves who they are to the softphone, without the API key reaching a browser.

Three ways in, each ending in the same signed session cookie:

- **Password**: set by ``callbridge agent add ACCOUNT USER --password``; stored as scrypt
  (RFC 7914) with a per-agent random salt, compared in constant time.
- **One-time sign-in link**: ``callbridge agent signin-link ACCOUNT USER`` prints a URL whose
  token is stored only as its SHA-256, expires, and works once.
- **Launch token**: a CRM backend signs ``v1.<payload>.<signature>`` with the account's
  launch secret (HMAC-SHA256); it lives at most 60 s, works once, signs the agent in and
  pre-authorises one call (to_number, uuid, from_number).

Format of a launch token, documented for CRM developers in ``integration-guide.html``::

    payload   = base64url(JSON {"v": 1, "jti": <random id>, "account": <account id or name>,
                                "crm_username": ..., "to_number": ..., "uuid": ...,
                                "from_number": ... (optional), "exp": <unix seconds>})
    signature = base64url(HMAC-SHA256(launch_secret, "v1." + payload))
    token     = "v1." + payload + "." + signature          (base64url without "=" padding)

The session cookie and the call tickets the page carries are the same construction with the
per-install server secret (``server_secrets``), see :func:`seal`.

Signing out everywhere: the cookie carries the agent's *session epoch* (random, stored with
the agent), and :meth:`SoftphoneAuth.session` refuses a cookie whose epoch is not the
current one. ``callbridge agent password`` gives the agent a new epoch and ``agent remove``
drops the agent, so every session made before ends at its next check; both also void the
agent's unused sign-in links (a link is a credential from before the change). The admin
command runs in another process: an open page is closed by the presence's periodic re-check
(:meth:`SoftphoneAuth.lapsed`, :class:`~callbridge.softphone.presence.Presence`).

Signing one session out: each session has a random *session id*, signed into its cookie.
``POST /softphone/signout`` (:meth:`SoftphoneAuth.sign_out`) records the id as revoked, kept
until the cookie would have expired, and every check refuses a revoked id: a copy of the
cookie (another browser, a stolen one) ends with it, while the agent's other sessions, with
other ids, go on. A cookie without an id (made before schema v5) is no session: revoking it
would be impossible, and refusing it costs one sign-in after the upgrade, as v4 did.
Sign-in links and launch tokens are not sessions: each is used once and makes a new one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from callbridge.store.models import Account, Store

__all__ = [
    "ENDED",
    "EXPIRED",
    "LAUNCH_TOKEN_MAX_AGE",
    "REVOKED",
    "SESSION_COOKIE",
    "LaunchError",
    "PendingCall",
    "Session",
    "SoftphoneAuth",
    "hash_password",
    "mint_launch_token",
    "new_launch_secret",
    "seal",
    "unseal",
    "verify_password",
]

SESSION_COOKIE = "callbridge_session"
#: How long a session lasts: one working day, then the agent signs in again.
SESSION_SECONDS = 12 * 3600
#: The longest a launch token may live (the issue: "expiry <= 60 s").
LAUNCH_TOKEN_MAX_AGE = 60
#: Clocks of the CRM and callbridge disagree a little; allowed on top of the maximum age.
_CLOCK_SKEW = 5
_TOKEN_VERSION = "v1"
_SERVER_SECRET = "softphone_session_hmac"
#: scrypt cost (RFC 7914 §2): N=2^14, r=8 is 16 MiB and about 50 ms, OWASP's minimum.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 2**14, 8, 1, 32
MIN_PASSWORD = 8


class LaunchError(ValueError):
    """A launch token that is malformed, forged, expired or used already."""


# -- passwords -------------------------------------------------------------------------------


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt>$<hash>`` (base64url), with a fresh 16-byte salt unless given."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (from :func:`hash_password`); constant time."""
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = _unb64(digest)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem: 128*r*N bytes are needed; the default limit (32 MiB) would refuse N=2^15.
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * r * n + 2**20, dklen=_SCRYPT_LEN)  # fmt: skip


# -- signed blobs ----------------------------------------------------------------------------


def seal(key: bytes, payload: dict[str, Any], version: str = _TOKEN_VERSION) -> str:
    """``version.base64url(JSON).base64url(HMAC-SHA256(key, "version." + payload))``."""
    body = f"{version}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
    return f"{body}.{_b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}"


def unseal(key: bytes, token: str, version: str = _TOKEN_VERSION) -> dict[str, Any] | None:
    """The payload of a token :func:`seal` made with ``key``; None if it is not one."""
    payload = _unverified(token, version)
    if payload is None:
        return None
    body, _, signature = token.rpartition(".")
    expected = hmac.new(key, body.encode(), hashlib.sha256).digest()
    try:
        good = hmac.compare_digest(_unb64(signature), expected)
    except ValueError:
        return None
    return payload if good else None


def _unverified(token: str, version: str) -> dict[str, Any] | None:
    """The payload of a well-formed token, before its signature is checked (to find the
    account whose key checks it)."""
    parts = token.split(".")
    if len(token) > 4096 or len(parts) != 3 or parts[0] != version:
        return None
    try:
        payload = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """base64url without padding; ValueError for anything else."""
    if not text.isascii():
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


# -- launch tokens ---------------------------------------------------------------------------


def new_launch_secret() -> str:
    """An account's launch secret: ``lsec_`` + 32 random bytes, base64url."""
    return "lsec_" + secrets.token_urlsafe(32)


def mint_launch_token(account: Account, crm_username: str, to_number: str, uuid: str,
                      from_number: str | None = None, *, now: float,
                      expires_in: int = LAUNCH_TOKEN_MAX_AGE,
                      token_id: str | None = None) -> str:
    """A launch token for ``account`` (which must have a launch secret), as a CRM backend
    mints one; the integration guide has the same in a dozen lines of plain Python."""
    if account.launch_secret is None:
        raise ValueError(f"account {account.name!r} has no launch secret")
    if not 0 < expires_in <= LAUNCH_TOKEN_MAX_AGE:
        raise ValueError(f"expires_in must be 1..{LAUNCH_TOKEN_MAX_AGE} seconds")
    payload: dict[str, Any] = {
        "v": 1, "jti": token_id or secrets.token_urlsafe(16), "account": account.id,
        "crm_username": crm_username, "to_number": to_number, "uuid": uuid,
        "exp": int(now) + expires_in,
    }  # fmt: skip
    if from_number is not None:
        payload["from_number"] = from_number
    return seal(account.launch_secret.encode(), payload)


@dataclass(frozen=True)
class PendingCall:
    """A call the page shows ready for the agent to place by clicking Call."""

    to_number: str
    uuid: str
    from_number: str | None = None
    #: True when a launch token pre-authorised it.
    authorised: bool = False


@dataclass(frozen=True)
class Session:
    """A signed-in agent."""

    account_id: str
    crm_username: str
    expires: int  #: unix seconds
    #: The agent's session epoch when the session began; a new password changes the agent's.
    epoch: str = ""
    #: This session's random id, which signing out revokes (its cookie's copies with it).
    sid: str = ""

    @property
    def agent(self) -> tuple[str, str]:
        return self.account_id, self.crm_username


#: Why :meth:`SoftphoneAuth.lapsed` ends a session (a WebSocket close reason: <= 123 bytes).
EXPIRED = "session expired: sign in again"
REVOKED = "signed out: the password changed or the agent was removed"
ENDED = "signed out: this session was ended by Sign out"


# -- the service the routes use ------------------------------------------------------------


class SoftphoneAuth:
    """Sign-in, sessions and launch tokens against one store. ``clock`` is timezone-aware
    UTC now (the API context's); the server secret is read (or made) on first use."""

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self._key: bytes | None = None

    async def key(self) -> bytes:
        if self._key is None:
            value = await self.store.server_secret(_SERVER_SECRET, secrets.token_urlsafe(32))
            self._key = value.encode()
        return self._key

    def now(self) -> float:
        return self.clock().timestamp()

    async def sign_in(self, account_name: str, crm_username: str, password: str) -> Session | None:
        """A session when the password is right; None for any kind of wrong, alike."""
        account = await self.store.find_account(account_name)
        stored, epoch = None, None
        if account is not None:
            # The epoch first: a password changed between the two reads leaves the session
            # with the old epoch, which the next check refuses.
            epoch = await self._epoch(account.id, crm_username)
            stored = await self.store.get_agent_password(account.id, crm_username)
        # An unknown agent costs the same scrypt as a known one: timing tells nothing.
        if not verify_password(password, stored or _DUMMY_HASH) or account is None or not stored:
            return None
        return self._session(account.id, crm_username, epoch)

    async def new_signin_link(self, account_id: str, crm_username: str,
                              ttl: timedelta) -> str:
        """A fresh one-time token, stored hashed; the caller builds the URL around it."""
        token = secrets.token_urlsafe(32)
        expires = self.clock() + ttl
        await self.store.add_signin_link(_sha256(token), account_id, crm_username, expires)
        return token

    async def use_signin_link(self, token: str) -> Session | None:
        found = await self.store.use_signin_link(_sha256(token), self.clock())
        epoch = None if found is None else await self._epoch(*found)
        if found is None or epoch is None:
            return None
        return self._session(*found, epoch)

    async def use_launch_token(self, token: str) -> tuple[Session, PendingCall]:
        """The session and the call a launch token carries; LaunchError when refused."""
        payload = _unverified(token, _TOKEN_VERSION)
        account = None
        if payload is not None and isinstance(payload.get("account"), str):
            account = await self.store.find_account(payload["account"])
        if account is None or account.launch_secret is None or payload is None:
            raise LaunchError("malformed token, or unknown account")
        if unseal(account.launch_secret.encode(), token) is None:
            raise LaunchError("bad signature")
        claims = _claims(payload, self.now())
        epoch = await self._epoch(account.id, claims["crm_username"])
        if epoch is None:
            raise LaunchError(f"no agent {claims['crm_username']!r}")
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        if not await self.store.use_launch_token(claims["jti"], expires, self.clock()):
            raise LaunchError("token used already")
        call = PendingCall(claims["to_number"], claims["uuid"], claims.get("from_number"), True)
        return self._session(account.id, claims["crm_username"], epoch), call

    def _session(self, account_id: str, crm_username: str, epoch: str | None) -> Session:
        return Session(account_id, crm_username, int(self.now()) + SESSION_SECONDS, epoch or "",
                       secrets.token_urlsafe(16))  # fmt: skip

    async def _epoch(self, account_id: str, crm_username: str) -> str | None:
        """The agent's current session epoch; None when there is no such agent."""
        agent = (account_id, crm_username)
        return (await self.store.agent_session_epochs([agent])).get(agent)

    async def cookie_value(self, session: Session) -> str:
        payload = {"a": session.account_id, "u": session.crm_username, "exp": session.expires,
                   "g": session.epoch, "s": session.sid}  # fmt: skip
        return seal(await self.key(), payload)

    async def session(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, if it is ours, unexpired, not signed out, its agent
        exists and it was made under the agent's current session epoch (no password change
        since)."""
        session = await self._unsealed(cookie)
        if session is None:
            return None
        return None if await self.lapsed([session]) else session

    async def sign_out(self, cookie: str | None) -> Session | None:
        """End the session ``cookie`` carries, wherever a copy of the cookie is; the agent's
        other sessions go on. The session ended, or None when the cookie carries no unexpired
        session of ours (nothing to end)."""
        session = await self._unsealed(cookie)
        if session is None or session.expires <= self.now():
            return None
        expires = datetime.fromtimestamp(session.expires, UTC)
        await self.store.revoke_session(session.sid, expires, self.clock())
        return session

    async def _unsealed(self, cookie: str | None) -> Session | None:
        """The session a cookie of ours carries, before any check against the store."""
        payload = unseal(await self.key(), cookie) if cookie else None
        if payload is None:
            return None
        account_id, username, expires = payload.get("a"), payload.get("u"), payload.get("exp")
        epoch, sid = payload.get("g"), payload.get("s")
        if not (isinstance(account_id, str) and isinstance(username, str)
                and isinstance(expires, int) and isinstance(epoch, str)
                and isinstance(sid, str) and sid):  # fmt: skip
            return None  # no sid: from before schema v5 (the module docstring says why)
        return Session(account_id, username, expires, epoch, sid)

    async def lapsed(self, sessions: Collection[Session]) -> dict[Session, str]:
        """The sessions among ``sessions`` that are over, each with why (:data:`EXPIRED`,
        :data:`REVOKED`, :data:`ENDED`); two store queries whatever their number."""
        current = await self.store.agent_session_epochs({s.agent for s in sessions})
        ended = await self.store.revoked_sessions({s.sid for s in sessions if s.sid})
        now = self.now()
        over: dict[Session, str] = {}
        for session in sessions:
            epoch = current.get(session.agent)
            if epoch is None or epoch != session.epoch:  # the cookie is signed: no secret here
                over[session] = REVOKED
            elif session.sid in ended:
                over[session] = ENDED
            elif session.expires <= now:
                over[session] = EXPIRED
        return over


def _claims(payload: dict[str, Any], now: float) -> dict[str, Any]:
    """The checked claims of a launch token whose signature is good."""
    for name in ("jti", "crm_username", "to_number", "uuid"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise LaunchError(f"missing {name}")
    if payload.get("from_number") is not None and not isinstance(payload["from_number"], str):
        raise LaunchError("from_number must be a string")
    expires = payload.get("exp")
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise LaunchError("missing exp")
    if expires <= now:
        raise LaunchError("token expired")
    if expires > now + LAUNCH_TOKEN_MAX_AGE + _CLOCK_SKEW:
        raise LaunchError(f"exp is more than {LAUNCH_TOKEN_MAX_AGE} s ahead")
    return payload


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


#: Checked against when there is no agent or no password, so a miss takes as long as a hit.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
