"""The delivery worker: POSTs what the outbox holds until each entry is delivered or failed.

The outbox, not this worker, is the source of truth. A callback is stored with the call's
final state in one transaction (``Store.finish_call``); the worker only reads due entries
(``Store.due_callbacks``) and writes the outcome of each attempt (``Store.record_attempt``).
So a crash between the two loses nothing: at start-up the entries still pending are simply due.

Delivery is at least once. A POST whose answer never got recorded (a crash mid-request) is
sent again; every attempt carries the same ``webhook-id`` (the event id) and the same body,
so a receiver drops what it has seen already.

One entry's life, with ``retries = 3`` (one attempt plus up to three retries)::

    PENDING --2xx--> DELIVERED
       |  non-2xx, timeout, connection error: attempts + 1
       |    attempts <= retries: due again after backoff_base * 2 ** (attempts - 1)
       '--> FAILED  after the fourth failure, or at once for a URL that can never work;
                    ``callbridge callbacks redeliver`` (``Store.requeue_callback``) revives it

What counts as a failure is what Standard Webhooks says: anything but 2xx, and redirects
are not followed (a 3xx is a failure), since a callback must not be steered elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from callbridge import __version__
from callbridge.errors import CallbridgeError
from callbridge.logs import CallLogger, call_logger
from callbridge.store.models import OutboxEntry, Store
from callbridge.webhooks import signing

logger = logging.getLogger(__name__)

USER_AGENT = f"callbridge/{__version__}"
#: How many entries are read from the outbox per poll.
BATCH = 100


@dataclass(frozen=True)
class Attempt:
    """The outcome of one delivery attempt, as recorded in the outbox."""

    event_id: str
    call_id: str
    number: int  #: 1 for the first attempt
    delivered: bool
    error: str | None  #: "HTTP 500", "timeout", "connect error: ..."; None when delivered
    next_attempt_at: datetime | None  #: None: no more tries (delivered or FAILED)


class _Permanent(Exception):
    """A failure no retry can cure (a URL scheme we never POST to): FAILED at once."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CallbackWorker:
    """Delivers due outbox entries, at most ``concurrency`` at once.

    ``secret_for(account_id)`` gives the signing secret; by default the account's
    ``callback_secret`` is read from ``store``. ``clock`` gives aware UTC datetimes.
    ``on_attempt`` is called after each recorded attempt (for tests and metrics).
    """

    def __init__(
        self,
        store: Store,
        *,
        retries: int = 3,
        backoff_base: float = 30.0,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = _utcnow,
        secret_for: Callable[[str], Awaitable[str]] | None = None,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> None:
        self._store = store
        self._retries = retries
        self._backoff_base = backoff_base
        self._timeout = timeout
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._clock = clock
        self._secret_for = secret_for if secret_for is not None else self._account_secret
        self._slots = asyncio.Semaphore(concurrency)
        self._poll_interval = poll_interval
        self._on_attempt = on_attempt
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        #: Entries being delivered now: the outbox still lists them as due.
        self._inflight: dict[str, asyncio.Task[None]] = {}
        #: When the retries this worker scheduled fall due, so it wakes for them on time.
        self._retry_at: dict[str, datetime] = {}
        #: Entries whose last attempt could not be recorded (the database failed): still due
        #: in the outbox, but not to be POSTed again before this time, or a database that
        #: reads but cannot write would have us POST to the receiver in a tight loop.
        self._held: dict[str, datetime] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start delivering; entries left pending by an earlier run are due at once."""
        if self._loop_task is None:
            self._stopping = False
            self._loop_task = asyncio.create_task(self._run(), name="callback-worker")

    async def stop(self) -> None:
        """Stop polling, let the attempts in flight finish (each is bounded by ``timeout``)
        and record their outcome, then close the HTTP client if this worker made it. A
        stopped worker is done: make a new one to start again."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        if self._own_client:
            await self._client.aclose()

    def wake(self) -> None:
        """A new entry was stored: look now instead of at the next poll. Call it from the
        worker's event loop."""
        self._wake.set()

    async def run_once(self) -> int:
        """Attempt every entry due now and wait for the outcomes; the number attempted."""
        started = await self._dispatch_due()
        await asyncio.gather(*started)
        return len(started)

    # -- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._dispatch_due()
            except Exception:  # a bug must not end deliveries for the life of the process
                logger.exception("dispatching callbacks failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sleep_for())

    def _sleep_for(self) -> float:
        """Until the earliest retry this worker scheduled, at most ``poll_interval``: the
        poll finds entries written by another process (a CLI redeliver, another server)."""
        wake_at = [*self._retry_at.values(), *self._held.values()]
        if not wake_at:
            return self._poll_interval
        wait = (min(wake_at) - self._clock()).total_seconds()
        return min(max(wait, 0.0), self._poll_interval)

    async def _dispatch_due(self) -> list[asyncio.Task[None]]:
        now = self._clock()
        # A retry whose time has come is either in this batch or found by a later poll;
        # dropping it here keeps a store that disagrees on the time from making us spin.
        self._retry_at = {k: at for k, at in self._retry_at.items() if at > now}
        self._held = {k: at for k, at in self._held.items() if at > now}
        try:
            due = await self._store.due_callbacks(now, limit=BATCH)
        except CallbridgeError:
            logger.exception("reading due callbacks failed; trying again at the next poll")
            return []
        busy = self._inflight.keys() | self._held.keys()
        return [self._spawn(entry) for entry in due if entry.event_id not in busy]

    def _spawn(self, entry: OutboxEntry) -> asyncio.Task[None]:
        task = asyncio.create_task(self._attempt(entry), name=f"callback-{entry.event_id}")
        self._inflight[entry.event_id] = task
        task.add_done_callback(lambda _: self._finished(entry.event_id))
        return task

    def _finished(self, event_id: str) -> None:
        self._inflight.pop(event_id, None)
        # The loop recomputes its sleep: this entry may now have a retry time.
        self._wake.set()

    # -- one attempt -------------------------------------------------------------------------
    async def _attempt(self, entry: OutboxEntry) -> None:
        log = call_logger(logger, entry.call_id)
        try:
            async with self._slots:
                attempt = await self._deliver(entry)
                await self._store.record_attempt(
                    entry.event_id,
                    delivered=attempt.delivered,
                    attempts=attempt.number,
                    next_attempt_at=attempt.next_attempt_at,
                    error=attempt.error,
                    at=self._clock(),
                )
        except Exception:
            # Most likely the database: the entry stays due, to be tried again after a pause.
            log.exception("callback %s: attempt not recorded", entry.event_id)
            pause = max(self._poll_interval, self._backoff_base)
            self._held[entry.event_id] = self._clock() + timedelta(seconds=pause)
            return
        if attempt.next_attempt_at is not None:
            self._retry_at[entry.event_id] = attempt.next_attempt_at
        self._log(log, entry, attempt)
        if self._on_attempt is not None:
            self._on_attempt(attempt)

    async def _deliver(self, entry: OutboxEntry) -> Attempt:
        number = entry.attempts + 1
        try:
            error = await self._post(entry)
        except _Permanent as exc:
            return Attempt(entry.event_id, entry.call_id, number, False, str(exc), None)
        if error is None:
            return Attempt(entry.event_id, entry.call_id, number, True, None, None)
        return Attempt(entry.event_id, entry.call_id, number, False, error, self._retry(number))

    def _retry(self, attempts: int) -> datetime | None:
        """When to try again after ``attempts`` failures; None once the retries are spent."""
        if attempts > self._retries:
            return None
        delay = self._backoff_base * 2 ** (attempts - 1)
        return self._clock() + timedelta(seconds=delay)

    async def _post(self, entry: OutboxEntry) -> str | None:
        """POST the entry once: None on 2xx, else why not. Raises _Permanent when retrying
        cannot help."""
        url = _checked_url(entry.url)
        body = entry.payload.encode()
        secret = await self._signing_secret(entry.account_id)
        timestamp = int(self._clock().timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signing.headers(secret, entry.event_id, timestamp, body),
        }
        try:
            # One deadline for the whole exchange: httpx's own timeouts are per phase, and a
            # receiver trickling bytes would never trip them.
            async with asyncio.timeout(self._timeout):
                return await self._send(url, headers, body)
        except TimeoutError:
            return "timeout"
        except httpx.TimeoutException:
            return "timeout"
        except httpx.ConnectError as exc:
            return f"connect error: {exc}"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _send(self, url: httpx.URL, headers: dict[str, str], body: bytes) -> str | None:
        request = self._client.build_request(
            "POST", url, headers=headers, content=body, timeout=self._timeout
        )
        # The receiver's answer body is never read: its status is all that counts.
        response = await self._client.send(request, follow_redirects=False, stream=True)
        await response.aclose()
        return None if response.is_success else f"HTTP {response.status_code}"

    async def _signing_secret(self, account_id: str) -> str:
        secret = await self._secret_for(account_id)
        try:
            signing.secret_key(secret)
        except ValueError as exc:
            raise _Permanent(f"account {account_id}: {exc}") from exc
        return secret

    async def _account_secret(self, account_id: str) -> str:
        account = await self._store.get_account(account_id)
        if account is None:
            raise _Permanent(f"account {account_id} not found")
        return account.callback_secret

    def _log(self, log: CallLogger, entry: OutboxEntry, attempt: Attempt) -> None:
        target = httpx.URL(entry.url).host  # not the path or query, which may hold a token
        if attempt.delivered:
            log.info(
                "callback %s attempt %d to %s: delivered", entry.event_id, attempt.number, target
            )
        elif attempt.next_attempt_at is not None:
            log.warning(
                "callback %s attempt %d to %s: %s; next at %s",
                entry.event_id,
                attempt.number,
                target,
                attempt.error,
                attempt.next_attempt_at.isoformat(timespec="seconds"),
            )
        else:
            log.warning(
                "callback %s attempt %d to %s: %s; FAILED, no more tries",
                entry.event_id,
                attempt.number,
                target,
                attempt.error,
            )


def _checked_url(url: str) -> httpx.URL:
    """``url`` if it is an absolute http(s) URL; a callback never goes anywhere else."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise _Permanent(f"invalid callback URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _Permanent(f"callback URL must be http or https, not {url!r}")
    return parsed
