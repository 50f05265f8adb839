"""The callback worker over real HTTP (tests/callback_server.py) and a real SQLite file.

Entries get into the outbox the way the call service puts them there: an account, a call,
then ``finish_call`` with the call's final state and its callback in one transaction. Tests
that follow the backoff schedule to the second use a fake clock and ``run_once``; tests of
the running worker use the real clock with a backoff base of 50 ms and wait on events (the
receiver's requests, the worker's recorded attempts), never on sleeps.
"""

import asyncio
import logging
import socket
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from callback_server import CallbackServer, Received
from callbridge import __version__
from callbridge.errors import StorageError
from callbridge.store.models import (
    Account,
    Call,
    CallStatus,
    HangupSource,
    Leg,
    LegRole,
    LegStatus,
    OutboxEntry,
    OutboxStatus,
    Store,
)
from callbridge.store.sqlite import SqliteStore
from callbridge.webhooks import signing
from callbridge.webhooks.delivery import Attempt, CallbackWorker
from callbridge.webhooks.payload import new_outbox_entry

T = TypeVar("T")
SECRET = signing.new_secret()
T0 = datetime(2026, 7, 3, 10, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def run(scenario: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(30):
            return await scenario

    return asyncio.run(bounded())


@pytest.fixture
def server() -> Iterator[CallbackServer]:
    with CallbackServer() as receiver:
        yield receiver


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "callbridge.db"


async def open_store(path: Path) -> Store:
    return await SqliteStore.open(path)


async def add_account(store: Store, url: str, secret: str = SECRET) -> Account:
    return await store.create_account("acme", url, secret)


async def add_finished_call(
    store: Store, account: Account, now: datetime, uuid: str = "crm-1"
) -> OutboxEntry:
    """An answered call ended at ``now``, stored with its callback as the call service does."""
    call_id = f"call-{uuid}"
    dialled = Call(
        call_id=call_id,
        account_id=account.id,
        uuid=uuid,
        from_number="+919800000000",
        to_number="+919876543210",
        agent_number="+919876543211",
        crm_username=None,
        recording=False,
        max_ring_time=30,
        request_hash="0" * 64,
        created_at=now,
        legs=(Leg(call_id, 1, LegRole.AGENT, "+919876543211", LegStatus.DIALING),),
    )
    await store.create_call(dialled)
    legs = (
        Leg(call_id, 1, LegRole.AGENT, "+919876543211", LegStatus.LEFT, 200, "OK", now, now),
        Leg(call_id, 2, LegRole.DESTINATION, "+919876543210", LegStatus.LEFT, 200, "OK", now, now),
    )
    ended = Call(
        **{
            **dialled.__dict__,
            "call_status": CallStatus.ANSWER,
            "start_time": now,
            "end_time": now,
            "hangup_source": HangupSource.AGENT,
            "legs": legs,
        }
    )
    entry = new_outbox_entry(account, ended, None, now)
    await store.finish_call(ended, entry)
    return entry


async def next_attempt_at(store: Store, entry: OutboxEntry) -> datetime | None:
    stored = await store.get_callback(entry.event_id)
    assert stored is not None
    return stored.next_attempt_at


async def collect(queue: "asyncio.Queue[Attempt]", count: int) -> list[Attempt]:
    """The next ``count`` attempts the worker records (in ten seconds at most)."""
    async with asyncio.timeout(10):
        return [await queue.get() for _ in range(count)]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_signed(request: Received, entry: OutboxEntry, secret: str = SECRET) -> None:
    assert request.headers["webhook-id"] == entry.event_id
    timestamp = int(request.headers["webhook-timestamp"])
    assert signing.verify(secret, request.headers, request.body, now=timestamp)


# -- the running worker, real clock ------------------------------------------------------------


def test_delivers_on_the_first_try_signed_as_json(server: CallbackServer, db_path: Path) -> None:
    async def scenario() -> tuple[OutboxEntry, OutboxEntry | None]:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        attempts: asyncio.Queue[Attempt] = asyncio.Queue()
        worker = CallbackWorker(store, backoff_base=0.05, on_attempt=attempts.put_nowait)
        await worker.start()
        entry = await add_finished_call(store, account, datetime.now(UTC))
        worker.wake()
        [attempt] = await collect(attempts, 1)
        assert attempt.delivered and attempt.number == 1 and attempt.error is None
        await worker.stop()
        stored = await store.get_callback(entry.event_id)
        await store.close()
        return entry, stored

    entry, stored = run(scenario())
    [request] = server.received
    assert (request.method, request.path) == ("POST", "/callbacks")
    assert request.body == entry.payload.encode()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"callbridge/{__version__}"
    assert_signed(request, entry)
    # Signed just now: a receiver with the default five-minute tolerance accepts it.
    assert signing.verify(SECRET, request.headers, request.body, now=request.at.timestamp())
    assert stored is not None
    assert stored.status is OutboxStatus.DELIVERED
    assert (stored.attempts, stored.last_error) == (1, None)
    assert stored.delivered_at is not None


def test_two_failures_then_success_is_three_posts_of_one_event_with_backoff(
    server: CallbackServer, db_path: Path
) -> None:
    server.fail_next(2)

    async def scenario() -> tuple[OutboxEntry, list[Attempt], OutboxEntry | None]:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        attempts: asyncio.Queue[Attempt] = asyncio.Queue()
        # No polling to speak of: the worker must wake for its own retries, on time.
        worker = CallbackWorker(
            store, backoff_base=0.05, poll_interval=3600, on_attempt=attempts.put_nowait
        )
        await worker.start()
        entry = await add_finished_call(store, account, datetime.now(UTC))
        worker.wake()
        seen = await collect(attempts, 3)
        await worker.stop()
        stored = await store.get_callback(entry.event_id)
        await store.close()
        return entry, seen, stored

    entry, seen, stored = run(scenario())
    assert [(a.number, a.delivered, a.error) for a in seen] == [
        (1, False, "HTTP 500"),
        (2, False, "HTTP 500"),
        (3, True, None),
    ]
    requests = server.received
    assert len(requests) == 3
    for request in requests:
        assert request.body == entry.payload.encode()  # the same uuid and event_id
        assert_signed(request, entry)
    # Exponential backoff: 50 ms after the first failure, 100 ms after the second.
    assert requests[1].at - requests[0].at >= timedelta(seconds=0.05)
    assert requests[2].at - requests[1].at >= timedelta(seconds=0.10)
    assert stored is not None
    assert (stored.status, stored.attempts) == (OutboxStatus.DELIVERED, 3)


def test_four_failures_leave_it_failed_and_a_requeue_delivers_it(
    server: CallbackServer, db_path: Path
) -> None:
    server.fail_next(4, status=503)

    async def scenario() -> None:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        attempts: asyncio.Queue[Attempt] = asyncio.Queue()
        # No polling to speak of: the worker must wake for its own retries, on time.
        worker = CallbackWorker(
            store, backoff_base=0.05, poll_interval=3600, on_attempt=attempts.put_nowait
        )
        await worker.start()
        entry = await add_finished_call(store, account, datetime.now(UTC))
        worker.wake()
        seen = await collect(attempts, 4)
        assert [a.number for a in seen] == [1, 2, 3, 4]
        assert [a.next_attempt_at is None for a in seen] == [False, False, False, True]

        failed = await store.get_callback(entry.event_id)
        assert failed is not None
        assert (failed.status, failed.attempts) == (OutboxStatus.FAILED, 4)
        assert (failed.last_error, failed.next_attempt_at) == ("HTTP 503", None)
        # Nothing is due any more, now or later: there is no fifth try.
        assert await worker.run_once() == 0
        assert len(server.received) == 4

        assert await store.requeue_callback(entry.event_id, datetime.now(UTC))
        worker.wake()
        [again] = await collect(attempts, 1)
        assert (again.number, again.delivered) == (1, True)
        await worker.stop()
        delivered = await store.get_callback(entry.event_id)
        assert delivered is not None
        assert (delivered.status, delivered.attempts) == (OutboxStatus.DELIVERED, 1)
        await store.close()
        assert len(server.received) == 5
        assert_signed(server.received[4], entry)

    run(scenario())


def test_wake_delivers_without_waiting_for_the_poll(server: CallbackServer, db_path: Path) -> None:
    async def scenario() -> None:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        worker = CallbackWorker(store, poll_interval=3600)
        await worker.start()
        await add_finished_call(store, account, datetime.now(UTC))
        worker.wake()
        await server.wait_for(1, timeout=10)
        await worker.stop()
        await store.close()

    run(scenario())


def test_the_poll_finds_entries_written_by_someone_else(
    server: CallbackServer, db_path: Path
) -> None:
    async def scenario() -> None:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        worker = CallbackWorker(store, poll_interval=0.05)
        await worker.start()
        other = await open_store(db_path)  # another process's connection; nobody wakes us
        entry = await add_finished_call(other, account, datetime.now(UTC))
        [request] = await server.wait_for(1, timeout=10)
        assert request.headers["webhook-id"] == entry.event_id
        await worker.stop()
        await other.close()
        await store.close()

    run(scenario())


def test_a_restarted_worker_delivers_what_the_last_run_left_pending(
    server: CallbackServer, db_path: Path
) -> None:
    server.fail_next(2)

    async def before_the_crash() -> list[OutboxEntry]:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        now = datetime.now(UTC)
        tried = [await add_finished_call(store, account, now, uuid=f"crm-{n}") for n in (1, 2)]
        worker = CallbackWorker(store, backoff_base=3600)  # retries due in an hour
        assert await worker.run_once() == 2
        # Written, never attempted: the process died before the worker got to it.
        untried = await add_finished_call(store, account, now, uuid="crm-3")
        await worker.stop()
        await store.close()
        return [*tried, untried]

    async def after_restart() -> list[OutboxEntry]:
        store = await open_store(db_path)
        attempts: asyncio.Queue[Attempt] = asyncio.Queue()
        later = datetime.now(UTC) + timedelta(hours=2)
        worker = CallbackWorker(store, clock=lambda: later, on_attempt=attempts.put_nowait)
        await worker.start()
        await collect(attempts, 3)
        await worker.stop()
        stored = await store.list_callbacks()
        await store.close()
        return stored

    entries = run(before_the_crash())
    stored = run(after_restart())
    assert {e.event_id: (e.status, e.attempts) for e in stored} == {
        entries[0].event_id: (OutboxStatus.DELIVERED, 2),
        entries[1].event_id: (OutboxStatus.DELIVERED, 2),
        entries[2].event_id: (OutboxStatus.DELIVERED, 1),
    }
    ids = [r.headers["webhook-id"] for r in server.received]
    assert len(ids) == 5
    assert sorted(ids[2:]) == sorted(e.event_id for e in entries)


def test_stop_lets_an_attempt_in_flight_finish_and_records_it(
    server: CallbackServer, db_path: Path
) -> None:
    server.hang_next(1)

    async def scenario() -> OutboxEntry | None:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        worker = CallbackWorker(store, timeout=0.3)
        await worker.start()
        entry = await add_finished_call(store, account, datetime.now(UTC))
        worker.wake()
        await server.wait_for(1)
        await worker.stop()
        stored = await store.get_callback(entry.event_id)
        await store.close()
        return stored

    stored = run(scenario())
    assert stored is not None
    assert (stored.status, stored.attempts, stored.last_error) == (
        OutboxStatus.PENDING,
        1,
        "timeout",
    )


def test_at_most_concurrency_posts_are_in_flight(server: CallbackServer, db_path: Path) -> None:
    server.hang_next(2)

    async def scenario() -> None:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        for n in range(3):
            await add_finished_call(store, account, datetime.now(UTC), uuid=f"crm-{n}")
        worker = CallbackWorker(store, timeout=0.3, concurrency=2)
        assert await worker.run_once() == 3
        await worker.stop()
        await store.close()

    run(scenario())
    first, _, third = server.received
    # The third POST had to wait for a slot, freed when a hung one timed out.
    assert third.at - first.at >= timedelta(seconds=0.25)


# -- one attempt at a time, fake clock -----------------------------------------------------------


def test_backoff_schedule_is_30_60_120_then_failed(
    server: CallbackServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_next(4)
    caplog.set_level(logging.INFO, logger="callbridge.webhooks.delivery")
    clock = FakeClock()

    async def scenario() -> tuple[OutboxEntry, list[datetime | None]]:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        entry = await add_finished_call(store, account, clock())
        worker = CallbackWorker(store, backoff_base=30, clock=clock)
        assert await worker.run_once() == 1
        schedule = [await next_attempt_at(store, entry)]
        for wait in (30, 60, 120):
            clock.advance(wait - 0.001)
            assert await worker.run_once() == 0  # not due yet
            clock.advance(0.001)
            assert await worker.run_once() == 1
            schedule.append(await next_attempt_at(store, entry))
        clock.advance(10**6)
        assert await worker.run_once() == 0
        await worker.stop()
        final = await store.get_callback(entry.event_id)
        assert final is not None
        assert (final.status, final.attempts, final.last_error) == (
            OutboxStatus.FAILED,
            4,
            "HTTP 500",
        )
        await store.close()
        return entry, schedule

    entry, schedule = run(scenario())
    assert schedule == [
        T0 + timedelta(seconds=30),
        T0 + timedelta(seconds=30 + 60),
        T0 + timedelta(seconds=30 + 60 + 120),
        None,
    ]
    requests = server.received
    assert len(requests) == 4
    # Each attempt is signed afresh at its own time, under the same webhook-id.
    stamps = [int(r.headers["webhook-timestamp"]) - int(T0.timestamp()) for r in requests]
    assert stamps == [0, 30, 90, 210]
    for request in requests:
        assert_signed(request, entry)
    lines = [r.getMessage() for r in caplog.records if r.name == "callbridge.webhooks.delivery"]
    assert len(lines) == 4
    assert all(entry.call_id in line and entry.event_id in line for line in lines)
    assert "HTTP 500" in lines[0] and "FAILED" in lines[3]


def test_connection_refused_is_a_failed_attempt_retried_later(db_path: Path) -> None:
    clock = FakeClock()

    async def scenario() -> OutboxEntry | None:
        store = await open_store(db_path)
        account = await add_account(store, f"http://127.0.0.1:{closed_port()}/cb")
        entry = await add_finished_call(store, account, clock())
        worker = CallbackWorker(store, backoff_base=30, clock=clock)
        assert await worker.run_once() == 1
        await worker.stop()
        stored = await store.get_callback(entry.event_id)
        await store.close()
        return stored

    stored = run(scenario())
    assert stored is not None
    assert (stored.status, stored.attempts) == (OutboxStatus.PENDING, 1)
    assert stored.last_error is not None and stored.last_error.startswith("connect error")
    assert stored.next_attempt_at == T0 + timedelta(seconds=30)


def test_a_receiver_that_never_answers_times_out_and_the_retry_succeeds(
    server: CallbackServer, db_path: Path
) -> None:
    server.hang_next(1)
    clock = FakeClock()

    async def scenario() -> list[OutboxEntry | None]:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        entry = await add_finished_call(store, account, clock())
        worker = CallbackWorker(store, backoff_base=30, timeout=0.2, clock=clock)
        seen = []
        for _ in range(2):
            assert await worker.run_once() == 1
            seen.append(await store.get_callback(entry.event_id))
            clock.advance(30)
        await worker.stop()
        await store.close()
        return seen

    timed_out, delivered = run(scenario())
    assert timed_out is not None and delivered is not None
    assert (timed_out.status, timed_out.attempts, timed_out.last_error) == (
        OutboxStatus.PENDING,
        1,
        "timeout",
    )
    assert (delivered.status, delivered.attempts) == (OutboxStatus.DELIVERED, 2)


class UnwritableOnce:
    """A store whose first ``record_attempt`` fails, as a locked SQLite database does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def record_attempt(self, event_id: str, **outcome: Any) -> None:
        if not self.failed:
            self.failed = True
            raise StorageError("database is locked")
        await self.store.record_attempt(event_id, **outcome)


def test_an_attempt_that_cannot_be_recorded_is_retried_after_a_pause(
    server: CallbackServer, db_path: Path
) -> None:
    clock = FakeClock()

    async def scenario() -> OutboxEntry | None:
        store = await open_store(db_path)
        account = await add_account(store, server.url)
        entry = await add_finished_call(store, account, clock())
        worker = CallbackWorker(
            UnwritableOnce(store), poll_interval=1, backoff_base=30, clock=clock
        )
        assert await worker.run_once() == 1
        # Still due in the outbox, but not POSTed again at once: no tight loop.
        assert await worker.run_once() == 0
        clock.advance(30)
        assert await worker.run_once() == 1
        await worker.stop()
        stored = await store.get_callback(entry.event_id)
        await store.close()
        return stored

    stored = run(scenario())
    assert stored is not None
    assert (stored.status, stored.attempts) == (OutboxStatus.DELIVERED, 1)
    assert len(server.received) == 2


@pytest.mark.parametrize("status", [301, 400, 404, 429, 500])
def test_any_status_but_2xx_is_a_failure(
    server: CallbackServer, db_path: Path, status: int
) -> None:
    server.fail_next(1, status=status)
    stored = run(one_attempt(db_path, server.url))
    assert stored is not None
    assert (stored.status, stored.last_error) == (OutboxStatus.PENDING, f"HTTP {status}")


@pytest.mark.parametrize("status", [200, 202, 204])
def test_every_2xx_is_a_delivery(server: CallbackServer, db_path: Path, status: int) -> None:
    server.default_status = status
    stored = run(one_attempt(db_path, server.url))
    assert stored is not None
    assert stored.status is OutboxStatus.DELIVERED


def test_a_redirect_is_not_followed(server: CallbackServer, db_path: Path) -> None:
    server.redirect_next(server.url + "/elsewhere")
    stored = run(one_attempt(db_path, server.url))
    assert stored is not None
    assert stored.last_error == "HTTP 307"
    assert [r.path for r in server.received] == ["/callbacks"]


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/cb", "file:///etc/passwd", "127.0.0.1:8080/cb", "http://", ""]
)
def test_a_url_that_is_not_http_fails_at_once_without_a_request(db_path: Path, url: str) -> None:
    stored = run(one_attempt(db_path, url))
    assert stored is not None
    assert (stored.status, stored.attempts) == (OutboxStatus.FAILED, 1)
    assert stored.last_error is not None and "URL" in stored.last_error


def test_a_malformed_secret_fails_at_once(server: CallbackServer, db_path: Path) -> None:
    stored = run(one_attempt(db_path, server.url, secret="whsec_"))
    assert stored is not None
    assert (stored.status, stored.attempts) == (OutboxStatus.FAILED, 1)
    assert stored.last_error is not None and "secret" in stored.last_error
    assert server.received == []


def test_secret_for_overrides_the_account_secret(server: CallbackServer, db_path: Path) -> None:
    rotated = signing.new_secret()

    async def secret_for(account_id: str) -> str:
        return rotated

    stored = run(one_attempt(db_path, server.url, secret_for=secret_for))
    assert stored is not None and stored.status is OutboxStatus.DELIVERED
    [request] = server.received
    assert_signed(request, stored, secret=rotated)


def test_a_shared_client_is_left_open(server: CallbackServer, db_path: Path) -> None:
    async def scenario() -> bool:
        async with httpx.AsyncClient() as client:
            store = await open_store(db_path)
            account = await add_account(store, server.url)
            await add_finished_call(store, account, datetime.now(UTC))
            worker = CallbackWorker(store, client=client)
            await worker.start()
            await server.wait_for(1)
            await worker.stop()
            await store.close()
            return client.is_closed

    assert run(scenario()) is False


async def one_attempt(
    db_path: Path, url: str, secret: str = SECRET, **options: Any
) -> OutboxEntry | None:
    """Store one callback to ``url`` and make exactly one attempt at it."""
    clock = FakeClock()
    store = await open_store(db_path)
    account = await add_account(store, url, secret)
    entry = await add_finished_call(store, account, clock())
    worker = CallbackWorker(store, timeout=2.0, clock=clock, **options)
    assert await worker.run_once() == 1
    await worker.stop()
    stored = await store.get_callback(entry.event_id)
    await store.close()
    return stored
