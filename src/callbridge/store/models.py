"""What callbridge keeps: accounts, API keys, caller IDs, agents, calls, legs and the callback
outbox, as frozen dataclasses, and the :class:`Store` interface every backend implements.

SQLite (aiosqlite) is the default backend (:mod:`callbridge.store.sqlite`); a PostgreSQL one
can implement the same Protocol later. Every method commits before it returns, so a state
change is durable before anyone is told of it. Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class CallStatus(enum.StrEnum):
    INITIATED = "INITIATED"
    ANSWER = "ANSWER"
    NO_ANSWER = "NO_ANSWER"
    BUSY = "BUSY"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class LegStatus(enum.StrEnum):
    DIALING = "DIALING"
    JOINED = "JOINED"
    LEFT = "LEFT"
    FAILED = "FAILED"


class LegRole(enum.StrEnum):
    AGENT = "agent"
    DESTINATION = "destination"


class HangupSource(enum.StrEnum):
    AGENT = "agent"
    DESTINATION = "destination"
    API = "api"
    SYSTEM = "system"


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    callback_url: str
    #: Standard Webhooks signing secret, ``whsec_`` + base64 of 32 random bytes.
    callback_secret: str
    allow_cidrs: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    created_at: datetime | None = None
    #: Default for calls that do not say: ``"dtmf"`` (the agent presses 1 before the customer
    #: is dialled) or None (no confirmation).
    agent_confirm: str | None = None
    #: Default longest bridged time of a call, in seconds; None for no limit.
    time_limit: int | None = None
    #: HMAC key of the softphone launch tokens a CRM backend mints; None: refused.
    launch_secret: str | None = None


@dataclass(frozen=True)
class ApiKey:
    id: str
    account_id: str
    #: The first characters of the key, shown in listings so an operator can tell keys apart.
    prefix: str
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Agent:
    account_id: str
    crm_username: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class Leg:
    call_id: str
    leg_id: int  #: 1 the agent, 2 the customer, 3+ added participants
    role: LegRole
    number: str  #: E.164, or the crm_username for a softphone agent leg
    status: LegStatus
    sip_code: int | None = None
    reason: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Call:
    call_id: str  #: a random UUID4, ours
    account_id: str
    uuid: str  #: the CRM's own id; unique per account
    from_number: str  #: E.164 caller ID
    to_number: str  #: E.164 customer number
    agent_number: str | None  #: E.164, or None for a crm_username call
    crm_username: str | None
    recording: bool
    max_ring_time: int
    #: sha256 of the canonical request body: the same uuid with another body is a 409.
    request_hash: str
    call_status: CallStatus = CallStatus.INITIATED
    created_at: datetime | None = None
    start_time: datetime | None = None  #: bridge time
    end_time: datetime | None = None
    duration: int = 0  #: whole seconds bridged
    recording_url: str | None = None
    hangup_source: HangupSource | None = None
    legs: tuple[Leg, ...] = field(default=())
    #: ``"dtmf"``: the agent confirms with 1 before the customer is dialled; None: no
    #: confirmation. The request's value, else the account's default when the call was placed.
    agent_confirm: str | None = None
    #: Seconds a bridged call may last before the system hangs it up; None for no limit.
    #: Like ``agent_confirm``, fixed when the call is placed.
    time_limit: int | None = None


@dataclass(frozen=True)
class OutboxEntry:
    """One status callback: stored with the call's final state, then delivered."""

    event_id: str
    account_id: str
    call_id: str
    url: str
    payload: str  #: the exact JSON text to POST (the signature covers these bytes)
    status: OutboxStatus = OutboxStatus.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    created_at: datetime | None = None
    delivered_at: datetime | None = None


class Store(Protocol):
    """The persistence interface. Methods raise :class:`callbridge.errors.StorageError` for
    database failures (translated at this edge); "not found" is None or False, not an error."""

    async def close(self) -> None: ...
    async def ping(self) -> None:
        """A trivial query: raises StorageError when the database does not answer."""
        ...

    # -- accounts and credentials --------------------------------------------------------
    async def create_account(self, name: str, callback_url: str, callback_secret: str, *,
                             allow_cidrs: tuple[str, ...] = (),
                             allow_origins: tuple[str, ...] = (),
                             agent_confirm: str | None = None,
                             time_limit: int | None = None) -> Account: ...
    async def get_account(self, account_id: str) -> Account | None: ...
    async def find_account(self, name_or_id: str) -> Account | None: ...
    async def list_accounts(self) -> list[Account]: ...
    async def add_api_key(self, account_id: str, key_hash: str, prefix: str) -> ApiKey: ...
    async def find_api_key(self, key_hash: str) -> ApiKey | None: ...
    async def list_api_keys(self, account_id: str) -> list[ApiKey]: ...
    async def revoke_api_key(self, key_id_or_prefix: str) -> bool: ...
    async def add_caller_id(self, account_id: str, number: str) -> bool: ...
    async def remove_caller_id(self, account_id: str, number: str) -> bool: ...
    async def list_caller_ids(self, account_id: str) -> list[str]: ...
    async def has_caller_id(self, account_id: str, number: str) -> bool: ...
    async def add_agent(self, account_id: str, crm_username: str) -> bool: ...
    async def remove_agent(self, account_id: str, crm_username: str) -> bool:
        """Remove the agent and its sign-in links (its sessions end with it); False for no
        such agent."""
        ...
    async def get_agent(self, account_id: str, crm_username: str) -> Agent | None: ...
    async def list_agents(self, account_id: str) -> list[Agent]: ...

    # -- the softphone's credentials ------------------------------------------------------
    async def set_agent_password(self, account_id: str, crm_username: str,
                                 password_hash: str | None) -> bool:
        """Store the agent's password hash (None: no password); False for no such agent.
        Every existing session of the agent ends (a new session epoch) and its unused
        sign-in links stop working, in the same transaction."""
        ...
    async def agent_session_epochs(
        self, agents: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The current session epoch of each (account_id, crm_username) that exists; a
        session made under another epoch is over. One query for many agents."""
        ...
    async def get_agent_password(self, account_id: str, crm_username: str) -> str | None: ...
    async def set_launch_secret(self, account_id: str, secret: str | None) -> bool: ...
    async def server_secret(self, name: str, candidate: str) -> str:
        """The secret stored as ``name``; stores ``candidate`` first when there is none, so
        concurrent first starts agree on one value."""
        ...
    async def add_signin_link(self, token_hash: str, account_id: str, crm_username: str,
                              expires_at: datetime) -> None: ...
    async def use_signin_link(self, token_hash: str, now: datetime) -> tuple[str, str] | None:
        """Mark the link used and return its (account_id, crm_username); None when it is
        unknown, used already or expired."""
        ...
    async def use_launch_token(self, token_id: str, expires_at: datetime,
                               now: datetime) -> bool:
        """Record a launch token as used; False when it was used before (a replay). Tokens
        expired by ``now`` are forgotten."""
        ...
    async def revoke_session(self, session_id: str, expires_at: datetime,
                             now: datetime) -> None:
        """Record a softphone session as signed out, until ``expires_at`` (its cookie's
        expiry); a bounded number of revocations expired by ``now`` are forgotten."""
        ...
    async def revoked_sessions(self, session_ids: Collection[str]) -> set[str]:
        """Which of ``session_ids`` are signed out. One query for many sessions."""
        ...

    # -- calls ------------------------------------------------------------------------------
    async def create_call(self, call: Call) -> tuple[Call, bool]:
        """Insert ``call`` (with its legs). If (account_id, uuid) exists already, nothing is
        written and the existing call comes back with False: idempotency, safe under
        concurrent duplicates (a unique index decides)."""
        ...
    async def get_call(self, call_id: str) -> Call | None: ...
    async def find_call(self, account_id: str, uuid: str) -> Call | None:
        """The call an account placed with its own ``uuid`` (for idempotent replays)."""
        ...
    async def list_calls(self, account_id: str | None = None, limit: int = 50) -> list[Call]: ...
    async def save_leg(self, leg: Leg) -> None:
        """Insert or replace one leg (call_id, leg_id)."""
        ...
    async def update_call(self, call: Call) -> None:
        """Write the call's own fields (not its legs)."""
        ...
    async def finish_call(self, call: Call, outbox: OutboxEntry) -> None:
        """The final state, every leg, and the callback in ONE transaction."""
        ...
    async def unfinished_calls(self) -> list[Call]:
        """Calls with no end_time: what a crash left behind, to be ended at start-up."""
        ...

    # -- the callback outbox -----------------------------------------------------------------
    async def due_callbacks(self, now: datetime, limit: int = 100) -> list[OutboxEntry]: ...
    async def get_callback(self, event_id: str) -> OutboxEntry | None: ...
    async def list_callbacks(self, account_id: str | None = None,
                             status: OutboxStatus | None = None,
                             limit: int = 100) -> list[OutboxEntry]: ...
    async def record_attempt(self, event_id: str, *, delivered: bool, attempts: int,
                             next_attempt_at: datetime | None, error: str | None,
                             at: datetime) -> None:
        """After one delivery attempt: delivered, or failed with the next try's time (None:
        no more tries, the entry becomes FAILED)."""
        ...
    async def requeue_callback(self, event_id: str, now: datetime) -> bool:
        """Make a FAILED (or DELIVERED) entry PENDING again, due now, attempts reset."""
        ...
