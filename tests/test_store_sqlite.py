"""The SQLite store's repository methods, on real database files: accounts, keys, caller IDs,
agents, calls and legs, the callback outbox; idempotent create_call under concurrency;
finish_call all-or-nothing; errors translated to StorageError."""

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from callbridge.errors import StorageError
from callbridge.store.migrations import MIGRATIONS
from callbridge.store.models import (
    Call,
    CallStatus,
    HangupSource,
    Leg,
    LegRole,
    LegStatus,
    OutboxEntry,
    OutboxStatus,
)
from callbridge.store.sqlite import SqliteStore
from store_support import database_at

T0 = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def run(path: Path, body: Callable[[SqliteStore], Awaitable[Any]], clock: Any = None) -> Any:
    """Open the store at ``path``, run ``body`` with it, and close it whatever happens."""

    async def main() -> Any:
        store = await SqliteStore.open(path, clock=clock or FakeClock())
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "callbridge.db"


def a_call(account_id: str, call_id: str = "call-1", uuid: str = "crm-1", **kw: Any) -> Call:
    agent = Leg(call_id, 1, LegRole.AGENT, "+919876543210", LegStatus.DIALING)
    fields: dict[str, Any] = dict(
        call_id=call_id,
        account_id=account_id,
        uuid=uuid,
        from_number="+918041234567",
        to_number="+919812345678",
        agent_number="+919876543210",
        crm_username=None,
        recording=True,
        max_ring_time=30,
        request_hash="h" * 64,
        legs=(agent,),
    )
    return Call(**{**fields, **kw})


def finished(call: Call, at: datetime) -> Call:
    legs = (
        replace(call.legs[0], status=LegStatus.LEFT, answered_at=at, ended_at=at),
        Leg(call.call_id, 2, LegRole.DESTINATION, call.to_number, LegStatus.LEFT, 200, "BYE",
            answered_at=at, ended_at=at + timedelta(seconds=42)),
    )  # fmt: skip
    return replace(
        call,
        call_status=CallStatus.ANSWER,
        start_time=at,
        end_time=at + timedelta(seconds=42),
        duration=42,
        recording_url=f"http://127.0.0.1:8080/recordings/crm_{call.call_id}.wav",
        hangup_source=HangupSource.DESTINATION,
        legs=legs,
    )


def an_entry(call: Call, event_id: str = "evt-1", **kw: Any) -> OutboxEntry:
    payload = json.dumps({"call_id": call.call_id})
    return OutboxEntry(event_id, call.account_id, call.call_id, "https://crm.example/cb", payload,
                       **kw)  # fmt: skip


async def an_account(store: SqliteStore, name: str = "acme") -> str:
    account = await store.create_account(name, "https://crm.example/cb", "whsec_c2VjcmV0")
    return account.id


# -- accounts and credentials --------------------------------------------------------------


def test_accounts_round_trip_and_lookups(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        acme = await store.create_account(
            "acme", "https://acme/cb", "whsec_a", allow_cidrs=("10.0.0.0/8", "192.0.2.7/32"),
            allow_origins=("https://crm.acme.example",),
        )  # fmt: skip
        beta = await store.create_account("beta", "https://beta/cb", "whsec_b")
        assert len(acme.id) == 32 and acme.id != beta.id
        assert acme.created_at == T0
        assert await store.get_account(acme.id) == acme
        assert await store.find_account("acme") == acme
        assert await store.find_account(beta.id) == beta
        assert await store.find_account("gamma") is None
        assert await store.get_account("acme") is None  # by id only
        assert await store.list_accounts() == [acme, beta]

    run(db, body)


def test_an_account_keeps_its_call_defaults(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        strict = await store.create_account("strict", "https://s/cb", "whsec_s",
                                            agent_confirm="dtmf", time_limit=3600)
        plain = await store.create_account("plain", "https://p/cb", "whsec_p")
        assert (strict.agent_confirm, strict.time_limit) == ("dtmf", 3600)
        assert (plain.agent_confirm, plain.time_limit) == (None, None)
        assert await store.get_account(strict.id) == strict
        assert await store.get_account(plain.id) == plain

    run(db, body)


def test_duplicate_account_name_is_a_storage_error(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await an_account(store, "acme")
        with pytest.raises(StorageError, match="create account: UNIQUE constraint") as info:
            await an_account(store, "acme")
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        assert len(await store.list_accounts()) == 1

    run(db, body)


def test_api_keys_found_by_hash_listed_and_revoked(db: Path) -> None:
    clock = FakeClock()

    async def body(store: SqliteStore) -> None:
        account = await an_account(store)
        first = await store.add_api_key(account, "hash-1", "cb_live_aaaa")
        clock.advance(1)
        second = await store.add_api_key(account, "hash-2", "cb_live_bbbb")
        assert first.active and first.created_at == T0
        assert await store.find_api_key("hash-1") == first
        assert await store.find_api_key("nope") is None
        assert await store.list_api_keys(account) == [first, second]

        clock.advance(1)
        assert await store.revoke_api_key("cb_live_aaaa")  # by prefix
        revoked = await store.find_api_key("hash-1")
        assert revoked is not None and not revoked.active and revoked.revoked_at == clock.now
        assert not await store.revoke_api_key("cb_live_aaaa")  # already revoked
        assert await store.revoke_api_key(second.id)  # by id
        assert not await store.revoke_api_key("unknown")
        assert [k.active for k in await store.list_api_keys(account)] == [False, False]

    run(db, body, clock)


def test_revoking_an_ambiguous_prefix_revokes_nothing(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        account = await an_account(store)
        await store.add_api_key(account, "hash-1", "cb_live_same")
        await store.add_api_key(account, "hash-2", "cb_live_same")
        assert not await store.revoke_api_key("cb_live_same")
        assert all(key.active for key in await store.list_api_keys(account))

    run(db, body)


def test_api_key_hash_is_unique_and_needs_an_account(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        account = await an_account(store)
        await store.add_api_key(account, "hash-1", "cb_live_aaaa")
        with pytest.raises(StorageError, match=r"UNIQUE constraint failed: api_keys\.key_hash"):
            await store.add_api_key(account, "hash-1", "cb_live_bbbb")
        with pytest.raises(StorageError, match="FOREIGN KEY constraint failed"):
            await store.add_api_key("no-such-account", "hash-2", "cb_live_cccc")

    run(db, body)


def test_caller_ids_per_account(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        acme, beta = await an_account(store, "acme"), await an_account(store, "beta")
        assert await store.add_caller_id(acme, "+918041234567")
        assert await store.add_caller_id(acme, "+912212345678")
        assert not await store.add_caller_id(acme, "+918041234567")
        assert await store.list_caller_ids(acme) == ["+912212345678", "+918041234567"]
        assert await store.has_caller_id(acme, "+918041234567")
        assert not await store.has_caller_id(beta, "+918041234567")
        assert await store.remove_caller_id(acme, "+918041234567")
        assert not await store.remove_caller_id(acme, "+918041234567")
        assert await store.list_caller_ids(acme) == ["+912212345678"]
        assert await store.list_caller_ids(beta) == []

    run(db, body)


def test_agents_per_account(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        acme, beta = await an_account(store, "acme"), await an_account(store, "beta")
        assert await store.add_agent(acme, "priya")
        assert await store.add_agent(acme, "arjun")
        assert not await store.add_agent(acme, "priya")
        agent = await store.get_agent(acme, "priya")
        assert agent is not None and agent.account_id == acme and agent.created_at == T0
        assert await store.get_agent(beta, "priya") is None
        assert [a.crm_username for a in await store.list_agents(acme)] == ["arjun", "priya"]
        assert await store.remove_agent(acme, "priya")
        assert not await store.remove_agent(acme, "priya")
        assert await store.get_agent(acme, "priya") is None

    run(db, body)


def test_a_new_password_or_removal_starts_a_new_session_epoch_and_voids_links(
    db: Path,
) -> None:
    async def body(store: SqliteStore) -> None:
        acme = await an_account(store, "acme")
        for name in ("priya", "arjun"):
            assert await store.add_agent(acme, name)
        pair, other = (acme, "priya"), (acme, "arjun")

        async def epochs() -> dict[tuple[str, str], str]:
            return await store.agent_session_epochs([pair, other, (acme, "nobody")])

        first = await epochs()
        assert set(first) == {pair, other} and first[pair] != first[other]
        link_until = T0 + timedelta(hours=1)
        for token in ("link-1", "link-2"):
            await store.add_signin_link(token, acme, "priya", link_until)
        await store.add_signin_link("arjuns-link", acme, "arjun", link_until)
        assert await store.use_signin_link("link-1", T0) == pair

        assert await store.set_agent_password(acme, "priya", "scrypt$new")
        second = await epochs()
        assert second[pair] != first[pair] and second[other] == first[other]
        assert await store.get_agent_password(acme, "priya") == "scrypt$new"
        assert await store.use_signin_link("link-2", T0) is None  # printed before the change
        assert not await store.set_agent_password(acme, "nobody", "scrypt$x")

        await store.add_signin_link("link-3", acme, "priya", link_until)
        assert await store.remove_agent(acme, "priya")
        assert await store.add_agent(acme, "priya")  # the same name again: a new agent
        third = await epochs()
        assert third[pair] not in (first[pair], second[pair])
        assert await store.use_signin_link("link-3", T0) is None
        assert await store.use_signin_link("arjuns-link", T0) == other  # not arjun's business

    run(db, body)


def test_session_epochs_of_many_agents_at_once(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        acme = await an_account(store, "acme")
        names = [f"agent{n:03d}" for n in range(700)]  # more than one query's parameters
        for name in names:
            await store.add_agent(acme, name)
        asked = [(acme, name) for name in names] + [(acme, "nobody"), ("other", "agent001")]
        found = await store.agent_session_epochs(asked)
        assert sorted(found) == [(acme, name) for name in names]
        assert len(set(found.values())) == len(names)
        assert await store.agent_session_epochs([]) == {}

    run(db, body)


def revocation_rows(db: Path) -> list[tuple[str, str]]:
    """The revoked_sessions table as another process reads it: (session_id, expires_at)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT session_id, expires_at FROM revoked_sessions"
                            " ORDER BY expires_at, session_id").fetchall()  # fmt: skip
    conn.close()
    return rows


def test_a_revoked_session_stays_revoked_until_its_cookie_would_expire(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        assert await store.revoked_sessions(["s-1", "s-2"]) == set()
        await store.revoke_session("s-1", T0 + timedelta(hours=1), T0)
        await store.revoke_session("s-2", T0 + timedelta(hours=12), T0)
        await store.revoke_session("s-1", T0 + timedelta(hours=1), T0)  # twice: no error
        assert await store.revoked_sessions(["s-1", "s-2", "s-3"]) == {"s-1", "s-2"}
        assert await store.revoked_sessions([]) == set()
        # A later sign-out forgets what expired by then, and nothing else.
        await store.revoke_session("s-3", T0 + timedelta(hours=12), T0 + timedelta(hours=1))
        assert await store.revoked_sessions(["s-1", "s-2", "s-3"]) == {"s-2", "s-3"}

    run(db, body)
    assert [row[0] for row in revocation_rows(db)] == ["s-2", "s-3"]
    assert revocation_rows(db)[0][1] == "2024-05-01T22:00:00.123456+00:00"


def test_a_sign_out_forgets_a_bounded_number_of_expired_revocations_oldest_first(
    db: Path,
) -> None:
    async def body(store: SqliteStore) -> list[int]:
        for n in range(700):  # more than one query's parameters, too
            await store.revoke_session(f"old-{n:03d}", T0 + timedelta(seconds=n + 1), T0)
        asked = [f"old-{n:03d}" for n in range(700)] + ["never"]
        assert len(await store.revoked_sessions(asked)) == 700
        later, left = T0 + timedelta(hours=13), []
        for n in range(8):
            await store.revoke_session(f"new-{n}", later + timedelta(hours=12), later)
            left.append(len(await store.revoked_sessions(asked)))
        return left

    left = run(db, body)
    assert left == [600, 500, 400, 300, 200, 100, 0, 0]
    assert [row[0] for row in revocation_rows(db)] == [f"new-{n}" for n in range(8)]


def test_a_v4_database_file_is_upgraded_in_place_keeping_its_agents(db: Path) -> None:
    database_at(db, 4, T0)  # what callbridge at v4 made
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO accounts (id, name, callback_url, callback_secret, created_at)"
                     " VALUES ('a1', 'acme', 'https://crm/cb', 'whsec_x', ?)", [T0.isoformat()])
        conn.execute("INSERT INTO agents (account_id, crm_username, created_at, password_hash,"
                     " session_epoch) VALUES ('a1', 'priya', ?, 'scrypt$kept', 'e4')",
                     [T0.isoformat()])  # fmt: skip
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert [m.version for m in MIGRATIONS[:4]] == [1, 2, 3, 4] and "revoked_sessions" not in tables
    inode = db.stat().st_ino

    async def body(store: SqliteStore) -> None:
        assert await store.agent_session_epochs([("a1", "priya")]) == {("a1", "priya"): "e4"}
        assert await store.get_agent_password("a1", "priya") == "scrypt$kept"
        await store.revoke_session("s-1", T0 + timedelta(hours=12), T0)
        assert await store.revoked_sessions(["s-1"]) == {"s-1"}

    run(db, body)
    assert db.stat().st_ino == inode  # the same file, not a copy
    with sqlite3.connect(db) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        index = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                             ["revoked_sessions_expiry"]).fetchone()  # fmt: skip
    conn.close()
    assert versions == [1, 2, 3, 4, 5] == [m.version for m in MIGRATIONS]
    assert "(expires_at)" in index[0]
    run(db, body)  # opening it again applies nothing, and the revocation is still there


# -- calls and legs ----------------------------------------------------------------------------


def test_create_call_stores_every_field_and_leg(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        account = await an_account(store)
        call = a_call(account, crm_username="priya", agent_number=None, recording=False)
        created, inserted = await store.create_call(call)
        assert inserted
        assert created == replace(call, created_at=T0)
        assert await store.get_call("call-1") == created
        assert await store.get_call("call-2") is None

    run(db, body)


def test_a_call_keeps_its_agent_confirm_and_time_limit(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        account = await an_account(store)
        call = a_call(account, agent_confirm="dtmf", time_limit=90)
        created, _ = await store.create_call(call)
        assert (created.agent_confirm, created.time_limit) == ("dtmf", 90)
        assert await store.get_call("call-1") == created
        await store.update_call(replace(created, time_limit=120))
        stored = await store.get_call("call-1")
        assert stored is not None and (stored.agent_confirm, stored.time_limit) == ("dtmf", 120)

    run(db, body)


def test_create_call_with_a_known_uuid_returns_the_first_and_writes_nothing(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        acme, beta = await an_account(store, "acme"), await an_account(store, "beta")
        first, _ = await store.create_call(a_call(acme))
        again, inserted = await store.create_call(a_call(acme, "call-2", to_number="+91999"))
        assert not inserted and again == first
        assert await store.get_call("call-2") is None
        # The uuid is unique per account only.
        _, inserted = await store.create_call(a_call(beta, "call-3"))
        assert inserted

    run(db, body)


def test_concurrent_duplicates_create_exactly_one_call(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        account = await an_account(store)
        results = await asyncio.gather(
            *(store.create_call(a_call(account, f"call-{i}")) for i in range(20))
        )
        winners = [call for call, inserted in results if inserted]
        assert len(winners) == 1
        assert {call.call_id for call, _ in results} == {winners[0].call_id}
        assert len(await store.list_calls()) == 1

    run(db, body)


def test_concurrent_duplicates_from_two_connections_create_exactly_one_call(db: Path) -> None:
    """Two stores on one file (as two processes would be): the unique index decides."""

    async def main() -> None:
        one = await SqliteStore.open(db)
        two = await SqliteStore.open(db)
        try:
            account = await an_account(one)
            results = await asyncio.gather(
                *(
                    (one if i % 2 else two).create_call(a_call(account, f"call-{i}"))
                    for i in range(20)
                )
            )
            assert sum(inserted for _, inserted in results) == 1
            assert len({call.call_id for call, _ in results}) == 1
        finally:
            await one.close()
            await two.close()

    asyncio.run(main())


def test_list_calls_newest_first_by_account_with_limit(db: Path) -> None:
    clock = FakeClock()

    async def body(store: SqliteStore) -> None:
        acme, beta = await an_account(store, "acme"), await an_account(store, "beta")
        for i in range(3):
            clock.advance(1)
            await store.create_call(a_call(acme, f"a{i}", f"u{i}"))
            await store.create_call(a_call(beta, f"b{i}", f"u{i}"))
        assert [c.call_id for c in await store.list_calls(acme)] == ["a2", "a1", "a0"]
        assert [c.call_id for c in await store.list_calls(limit=3)] == ["b2", "a2", "b1"]
        listed = await store.list_calls(beta, limit=1)
        assert [c.call_id for c in listed] == ["b2"] and listed[0].legs[0].call_id == "b2"

    run(db, body, clock)


def test_save_leg_inserts_then_replaces(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        call, _ = await store.create_call(a_call(await an_account(store)))
        customer = Leg(call.call_id, 2, LegRole.DESTINATION, call.to_number, LegStatus.DIALING)
        await store.save_leg(customer)
        answered = replace(customer, status=LegStatus.JOINED, sip_code=200, answered_at=T0)
        await store.save_leg(answered)
        stored = await store.get_call(call.call_id)
        assert stored is not None and stored.legs == (call.legs[0], answered)

    run(db, body)


def test_update_call_writes_its_fields_not_its_legs(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        call, _ = await store.create_call(a_call(await an_account(store)))
        bridged = replace(
            call,
            call_status=CallStatus.ANSWER,
            start_time=T0 + timedelta(seconds=9),
            legs=(replace(call.legs[0], status=LegStatus.JOINED),),
        )
        await store.update_call(bridged)
        assert await store.get_call(call.call_id) == replace(bridged, legs=call.legs)
        with pytest.raises(StorageError, match="no call nope"):
            await store.update_call(replace(call, call_id="nope", legs=()))

    run(db, body)


def test_times_come_back_as_the_same_instant_in_utc(db: Path) -> None:
    ist = timezone(timedelta(hours=5, minutes=30))

    async def body(store: SqliteStore) -> None:
        call, _ = await store.create_call(a_call(await an_account(store)))
        local = datetime(2024, 5, 1, 15, 30, 0, 7, tzinfo=ist)
        await store.update_call(replace(call, start_time=local))
        stored = await store.get_call(call.call_id)
        assert stored is not None and stored.start_time == local
        assert stored.start_time.tzinfo == UTC and stored.start_time.hour == 10
        with pytest.raises(ValueError, match="naive datetime"):
            await store.update_call(replace(call, start_time=datetime(2024, 5, 1)))

    run(db, body)


def test_finish_call_writes_state_legs_and_callback(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        call, _ = await store.create_call(a_call(await an_account(store)))
        done = finished(call, T0 + timedelta(seconds=5))
        await store.finish_call(done, an_entry(done))
        assert await store.get_call(call.call_id) == done
        entry = await store.get_callback("evt-1")
        assert entry == replace(an_entry(done), created_at=T0, next_attempt_at=T0)
        assert await store.unfinished_calls() == []

    run(db, body)


def test_finish_call_is_all_or_nothing(db: Path) -> None:
    """The outbox insert comes last; when it fails, the call's final state and legs written
    before it in the same transaction must be rolled back."""

    async def body(store: SqliteStore) -> None:
        account = await an_account(store)
        first, _ = await store.create_call(a_call(account, "call-1", "u1"))
        second, _ = await store.create_call(a_call(account, "call-2", "u2"))
        await store.finish_call(finished(first, T0), an_entry(first, "evt-same"))
        with pytest.raises(StorageError, match="finish call: UNIQUE constraint failed") as info:
            await store.finish_call(finished(second, T0), an_entry(second, "evt-same"))
        assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
        assert await store.get_call("call-2") == second  # untouched: INITIATED, one leg
        assert [c.call_id for c in await store.unfinished_calls()] == ["call-2"]
        assert [e.call_id for e in await store.list_callbacks()] == ["call-1"]
        # The failed transaction left nothing open: the next one goes through.
        await store.finish_call(finished(second, T0), an_entry(second, "evt-2"))
        assert await store.get_call("call-2") == finished(second, T0)

    run(db, body)


def test_unfinished_calls_oldest_first(db: Path) -> None:
    clock = FakeClock()

    async def body(store: SqliteStore) -> None:
        account = await an_account(store)
        calls = []
        for i in range(3):
            clock.advance(1)
            created, _ = await store.create_call(a_call(account, f"c{i}", f"u{i}"))
            calls.append(created)
        await store.finish_call(finished(calls[1], T0), an_entry(calls[1]))
        assert await store.unfinished_calls() == [calls[0], calls[2]]

    run(db, body, clock)


def test_a_cancelled_write_leaves_no_transaction_open(db: Path) -> None:
    """Cancel create_call at each of its awaits: afterwards the call is either wholly there
    or absent, and the store goes on working."""

    async def body(store: SqliteStore) -> None:
        account = await an_account(store)
        for steps in range(8):
            call = a_call(account, f"c{steps}", f"u{steps}")
            task = asyncio.create_task(store.create_call(call))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            stored = await store.get_call(call.call_id)
            assert stored is None or stored.legs == call.legs
            _, inserted = await store.create_call(a_call(account, f"again-{steps}", f"u{steps}"))
            assert inserted == (stored is None)

    run(db, body)


# -- the callback outbox ---------------------------------------------------------------------


async def three_finished_calls(store: SqliteStore, clock: FakeClock) -> list[Call]:
    account = await an_account(store)
    calls = []
    for i in range(3):
        clock.advance(1)
        call, _ = await store.create_call(a_call(account, f"c{i}", f"u{i}"))
        calls.append(finished(call, clock.now))
    return calls


def test_due_callbacks_pending_and_due_most_overdue_first(db: Path) -> None:
    clock = FakeClock()

    async def body(store: SqliteStore) -> None:
        c0, c1, c2 = await three_finished_calls(store, clock)
        now = clock.now
        # Created in the opposite order to when they are due: the due time decides.
        for call, event_id, due in ((c0, "late", 60), (c1, "due", -1), (c2, "older", -2)):
            clock.advance(0.001)
            entry = an_entry(call, event_id, next_attempt_at=now + timedelta(seconds=due))
            await store.finish_call(call, entry)
        assert [e.event_id for e in await store.due_callbacks(now)] == ["older", "due"]
        assert [e.event_id for e in await store.due_callbacks(now, limit=1)] == ["older"]
        await store.record_attempt(
            "older", delivered=True, attempts=1, next_attempt_at=None, error=None, at=now
        )
        assert [e.event_id for e in await store.due_callbacks(now)] == ["due"]
        assert await store.due_callbacks(now - timedelta(days=2)) == []

    run(db, body, clock)


def test_record_attempt_retry_then_fail_then_requeue(db: Path) -> None:
    clock = FakeClock()

    async def body(store: SqliteStore) -> None:
        call = (await three_finished_calls(store, clock))[0]
        await store.finish_call(call, an_entry(call))
        later = T0 + timedelta(seconds=30)
        await store.record_attempt(
            "evt-1", delivered=False, attempts=1, next_attempt_at=later, error="HTTP 503", at=T0
        )
        entry = await store.get_callback("evt-1")
        assert entry is not None
        assert (entry.status, entry.attempts, entry.next_attempt_at, entry.last_error) == (
            OutboxStatus.PENDING, 1, later, "HTTP 503",
        )  # fmt: skip
        await store.record_attempt(
            "evt-1", delivered=False, attempts=4, next_attempt_at=None, error="timeout", at=later
        )
        entry = await store.get_callback("evt-1")
        assert entry is not None and entry.status is OutboxStatus.FAILED
        assert (entry.attempts, entry.next_attempt_at, entry.last_error) == (4, None, "timeout")
        assert await store.due_callbacks(later + timedelta(days=1)) == []

        again = later + timedelta(hours=1)
        assert await store.requeue_callback("evt-1", again)
        assert not await store.requeue_callback("evt-1", again)  # pending already
        assert not await store.requeue_callback("nope", again)
        entry = await store.get_callback("evt-1")
        assert entry is not None
        assert (entry.status, entry.attempts, entry.next_attempt_at) == (
            OutboxStatus.PENDING, 0, again,
        )  # fmt: skip
        assert [e.event_id for e in await store.due_callbacks(again)] == ["evt-1"]

    run(db, body, clock)


def test_record_attempt_delivered_and_requeue_of_a_delivered_entry(db: Path) -> None:
    clock = FakeClock()

    async def body(store: SqliteStore) -> None:
        call = (await three_finished_calls(store, clock))[0]
        await store.finish_call(call, an_entry(call))
        at = T0 + timedelta(seconds=1)
        await store.record_attempt(
            "evt-1", delivered=True, attempts=1, next_attempt_at=None, error=None, at=at
        )
        entry = await store.get_callback("evt-1")
        assert entry is not None
        assert (entry.status, entry.delivered_at, entry.attempts) == (
            OutboxStatus.DELIVERED, at, 1,
        )  # fmt: skip
        assert await store.requeue_callback("evt-1", at)
        entry = await store.get_callback("evt-1")
        assert entry is not None and entry.status is OutboxStatus.PENDING
        assert entry.delivered_at is None and entry.next_attempt_at == at
        with pytest.raises(StorageError, match="no callback nope"):
            await store.record_attempt(
                "nope", delivered=True, attempts=1, next_attempt_at=None, error=None, at=at
            )

    run(db, body, clock)


def test_list_callbacks_newest_first_filtered(db: Path) -> None:
    clock = FakeClock()

    async def body(store: SqliteStore) -> None:
        c0, c1, c2 = await three_finished_calls(store, clock)
        other = await an_account(store, "beta")
        c3 = finished((await store.create_call(a_call(other, "c3", "u3")))[0], T0)
        for i, call in enumerate((c0, c1, c2, c3)):
            clock.advance(1)
            await store.finish_call(call, an_entry(call, f"e{i}"))
        await store.record_attempt(
            "e1", delivered=True, attempts=1, next_attempt_at=None, error=None, at=clock.now
        )
        ids = [e.event_id for e in await store.list_callbacks()]
        assert ids == ["e3", "e2", "e1", "e0"]
        ids = [e.event_id for e in await store.list_callbacks(c0.account_id, limit=2)]
        assert ids == ["e2", "e1"]
        pending = await store.list_callbacks(c0.account_id, OutboxStatus.PENDING)
        assert [e.event_id for e in pending] == ["e2", "e0"]
        delivered = await store.list_callbacks(status=OutboxStatus.DELIVERED)
        assert [e.event_id for e in delivered] == ["e1"]

    run(db, body, clock)


def test_a_closed_store_raises_storage_error(db: Path) -> None:
    async def main() -> None:
        store = await SqliteStore.open(db)
        await store.ping()
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(StorageError, match="list accounts: the store is closed"):
            await store.list_accounts()

    asyncio.run(main())



def test_find_call_by_account_and_uuid(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        acme, beta = await an_account(store, "acme"), await an_account(store, "beta")
        first, _ = await store.create_call(a_call(acme))
        assert await store.find_call(acme, "crm-1") == first
        assert await store.find_call(beta, "crm-1") is None
        assert await store.find_call(acme, "crm-2") is None

    run(db, body)
