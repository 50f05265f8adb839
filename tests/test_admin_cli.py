"""The admin commands, run as the real `callbridge` process against a SQLite file: accounts,
API keys (printed once, stored hashed, usable, revocable), caller IDs, agents, calls and
callbacks; `--json` output; bad input refused with exit status 1 and a clear message.

Each subprocess costs ~0.3 s, so a test runs a whole story of commands rather than one each.
"""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callbridge.api.auth import authenticate, hash_api_key, key_prefix
from callbridge.api.errors import ApiError
from callbridge.store.models import (
    Call,
    CallStatus,
    HangupSource,
    Leg,
    LegRole,
    LegStatus,
    OutboxStatus,
)
from callbridge.store.sqlite import SqliteStore
from callbridge.webhooks.payload import new_outbox_entry
from callbridge.webhooks.signing import secret_key

CALLBACK_URL = "https://crm.example.com/hooks/calls"


class Cli:
    """`python -m callbridge ...` with the database at ``path`` (set through the environment,
    as an operator would), and no other CALLBRIDGE_* variables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
        self.env["CALLBRIDGE_STORAGE_DATABASE_URL"] = f"sqlite:///{path}"

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "callbridge", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )

    def ok(self, *args: str) -> str:
        """The text a successful command prints."""
        result = self(*args)
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        """The one JSON document `ARGS --json` prints, and nothing else."""
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str, status: int = 1) -> str:
        """The message of a command that must fail with ``status``; stdout stays empty."""
        result = self(*args)
        assert result.returncode == status, (result.stdout, result.stderr)
        assert result.stdout == ""
        return result.stderr

    def store(self, body: Callable[[SqliteStore], Awaitable[Any]]) -> Any:
        """Run ``body`` with the same database opened in this process."""

        async def main() -> Any:
            store = await SqliteStore.open(self.path)
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(main())


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "data" / "callbridge.db")


def error(message: str) -> str:
    return f"callbridge: error: {message}\n"


# -- accounts -------------------------------------------------------------------------------


def test_account_create_prints_the_secret_and_list_never_shows_it(cli: Cli) -> None:
    created = cli.json(
        "account", "create", "acme", "--callback-url", CALLBACK_URL,
        "--allow-cidr", "10.1.2.3/8", "--allow-cidr", "192.0.2.7, 2001:db8::/32",
        "--allow-origin", "HTTPS://CRM.Example.com:443/", "--allow-origin", "http://localhost:3000",
        "--agent-confirm", "dtmf", "--time-limit", "3600",
    )  # fmt: skip
    assert created["name"] == "acme"
    assert (created["agent_confirm"], created["time_limit"]) == ("dtmf", 3600)
    assert created["callback_url"] == CALLBACK_URL
    # Canonical networks, and origins in the form the API's origin check compares.
    assert created["allow_cidrs"] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert created["allow_origins"] == ["https://crm.example.com", "http://localhost:3000"]
    secret = created["callback_secret"]
    assert secret.startswith("whsec_") and len(secret_key(secret)) == 32

    text = cli.ok("account", "create", "beta", "--callback-url", "http://10.0.0.5:8000/cb?t=1")
    assert "Store this callback signing secret now" in text
    beta_secret = next(line.split()[1] for line in text.splitlines() if line.startswith("secret"))
    assert beta_secret.startswith("whsec_") and beta_secret != secret
    assert "agent_confirm  off" in text and "time_limit     none" in text

    async def stored(store: SqliteStore) -> Any:
        return await store.find_account("acme"), await store.find_account("beta")

    acme, beta = cli.store(stored)
    assert (acme.id, acme.callback_secret) == (created["id"], secret)
    assert (beta.callback_url, beta.callback_secret) == ("http://10.0.0.5:8000/cb?t=1", beta_secret)
    assert acme.allow_cidrs == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")
    assert (acme.agent_confirm, acme.time_limit) == ("dtmf", 3600)
    assert (beta.agent_confirm, beta.time_limit) == (None, None)

    listed = cli.json("account", "list")
    assert [a["name"] for a in listed] == ["acme", "beta"]
    assert [(a["agent_confirm"], a["time_limit"]) for a in listed] == [("dtmf", 3600),
                                                                       (None, None)]
    assert all("callback_secret" not in a for a in listed)
    text = cli.ok("account", "list")
    assert "acme" in text and CALLBACK_URL in text and "whsec_" not in text
    assert "CONFIRM" in text and "dtmf" in text and "3600s" in text

    assert cli.fails("account", "create", "acme", "--callback-url", CALLBACK_URL) == error(
        "an account named 'acme' exists already"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--callback-url", "ftp://crm.example.com/cb"], "must start with http:// or https://"),
        (["--callback-url", "https:///cb"], "has no valid host"),
        (["--callback-url", "https://crm.example.com:99999/"], "is malformed"),
        (["--callback-url", "https://crm.example.com/#x"], "has a #fragment"),
        (["--callback-url", CALLBACK_URL, "--allow-cidr", "10.0.0.0/33"], "is not a network"),
        (["--callback-url", CALLBACK_URL, "--allow-origin", "https://crm.example.com/app"],
         "has a path, query or fragment"),
        (["--callback-url", CALLBACK_URL, "--allow-origin", "crm.example.com"],
         "must start with http:// or https://"),
        (["--callback-url", CALLBACK_URL, "--agent-confirm", "press1"], "expected dtmf"),
        (["--callback-url", CALLBACK_URL, "--time-limit", "9"], "whole seconds, 10..14400"),
        (["--callback-url", CALLBACK_URL, "--time-limit", "14401"], "10..14400"),
        (["--callback-url", CALLBACK_URL, "--time-limit", "1h"], "expected whole seconds"),
        (["--callback-url", CALLBACK_URL, "--time-limit", "\u0663\u0660"], "whole seconds"),
    ],
)  # fmt: skip
def test_account_create_refuses_bad_input_before_opening_the_database(
    cli: Cli, args: list[str], message: str
) -> None:
    stderr = cli.fails("account", "create", "acme", *args)
    assert stderr.startswith("callbridge: error: ")
    assert message in stderr
    assert repr(args[-1]) in stderr  # the offending value is quoted back
    assert not cli.path.exists()


def test_account_create_refuses_an_empty_name_and_a_missing_url(cli: Cli) -> None:
    assert cli.fails("account", "create", " ", "--callback-url", CALLBACK_URL) == error(
        "the account name is empty"
    )
    usage = cli.fails("account", "create", "acme", status=2)
    assert "the following arguments are required: --callback-url" in usage


# -- API keys -------------------------------------------------------------------------------


def test_key_is_printed_once_stored_hashed_usable_and_revocable(cli: Cli) -> None:
    cli.ok("account", "create", "acme", "--callback-url", CALLBACK_URL)
    created = cli.json("key", "create", "acme")
    key = created["key"]
    assert key.startswith("cb_") and created["prefix"] == key_prefix(key)
    assert (created["account"], created["active"]) == ("acme", True)
    text = cli.ok("key", "create", "acme")
    assert "Store this key now" in text
    second = next(line.split()[1] for line in text.splitlines() if line.startswith("key "))
    assert second.startswith("cb_") and second != key

    async def lookup(store: SqliteStore) -> Any:
        return await store.find_api_key(hash_api_key(key)), await authenticate(
            store, f"Bearer {key}"
        )

    found, account = cli.store(lookup)
    assert (found.id, found.prefix, account.name) == (created["id"], key_prefix(key), "acme")
    stored = b"".join(p.read_bytes() for p in cli.path.parent.iterdir())
    assert key.encode() not in stored and hash_api_key(key).encode() in stored

    listed = cli.json("key", "list", "acme")
    assert [k["prefix"] for k in listed] == [key_prefix(key), key_prefix(second)]
    assert all(k["active"] and "key" not in k for k in listed)
    assert key not in cli.ok("key", "list", "acme")

    revoked = cli.json("key", "revoke", key_prefix(key))
    assert (revoked["id"], revoked["active"]) == (created["id"], False)
    assert revoked["revoked_at"] is not None

    async def refused(store: SqliteStore) -> int:
        with pytest.raises(ApiError) as caught:
            await authenticate(store, f"Bearer {key}")
        return caught.value.status

    assert cli.store(refused) == 401
    assert cli.fails("key", "revoke", created["id"]) == error(
        f"API key {key_prefix(key)} (id {created['id']}) is revoked already"
    )
    # The key itself names it too (an operator pastes what leaked).
    assert "Revoked API key" in cli.ok("key", "revoke", second)
    assert [k["active"] for k in cli.json("key", "list", "acme")] == [False, False]
    assert cli.fails("key", "revoke", "cb_nope") == error(
        "no API key has the id or prefix 'cb_nope'"
    )
    assert cli.fails("key", "revoke", "cb_" + "x" * 32) == error("no such API key")
    assert cli.fails("key", "create", "nobody") == error(
        "no account has the name or id 'nobody' (see `callbridge account list`)"
    )


# -- caller IDs and agents ----------------------------------------------------------------


def test_caller_ids_are_stored_in_e164_and_shown_as_national_digits(cli: Cli) -> None:
    account_id = cli.json("account", "create", "acme", "--callback-url", CALLBACK_URL)["id"]
    added = cli.json("callerid", "add", "acme", "+91 98765-43210")
    assert added == {"account_id": account_id, "account": "acme", "number": "+919876543210",
                     "display": "9876543210"}  # fmt: skip
    # Landlines are caller IDs too; the account may be named by its id.
    assert "8041234567 (+918041234567)" in cli.ok("callerid", "add", account_id, "08041234567")
    assert cli.fails("callerid", "add", "acme", "919876543210") == error(
        "account 'acme' has caller ID 9876543210 already"
    )
    assert cli.store(lambda s: s.list_caller_ids(account_id)) == ["+918041234567", "+919876543210"]
    listed = cli.json("callerid", "list", "acme")
    assert [(c["number"], c["display"]) for c in listed] == [
        ("+918041234567", "8041234567"), ("+919876543210", "9876543210")
    ]  # fmt: skip
    assert "9876543210" in cli.ok("callerid", "list", "acme")

    assert cli.json("callerid", "remove", "acme", "9876543210")["number"] == "+919876543210"
    assert cli.fails("callerid", "remove", "acme", "9876543210") == error(
        "account 'acme' has no caller ID 9876543210"
    )
    assert cli.fails("callerid", "add", "acme", "12345") == error(
        "caller ID: '12345' has 5 digits: expected 10, optionally prefixed with +91, 91 or 0"
    )
    assert "is not a valid Indian phone number" in cli.fails(
        "callerid", "add", "acme", "5012345678"
    )
    assert "no account has the name or id 'beta'" in cli.fails("callerid", "list", "beta", "--json")


def test_agents_add_list_remove_and_refuse_bad_names(cli: Cli) -> None:
    cli.ok("account", "create", "acme", "--callback-url", CALLBACK_URL)
    added = cli.json("agent", "add", "acme", "alice.k@crm")
    assert (added["crm_username"], added["account"]) == ("alice.k@crm", "acme")
    assert "Agent 'bob_2' added" in cli.ok("agent", "add", "acme", "bob_2")
    assert cli.fails("agent", "add", "acme", "bob_2") == error(
        "account 'acme' has an agent 'bob_2' already"
    )
    assert [a["crm_username"] for a in cli.json("agent", "list", "acme")] == [
        "alice.k@crm",
        "bob_2",
    ]
    for bad in ("bob smith", "x" * 65):
        assert cli.fails("agent", "add", "acme", bad) == error(
            f"crm_username {bad!r}: expected 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )
    listed = cli.json("agent", "list", "acme")
    assert all("session_epoch" not in agent for agent in listed)  # internal, never shown
    removed = cli.ok("agent", "remove", "acme", "bob_2")
    assert "its softphone sessions and sign-in links no longer work" in removed
    assert cli.fails("agent", "remove", "acme", "bob_2") == error(
        "account 'acme' has no agent 'bob_2'"
    )
    assert "alice.k@crm" in cli.ok("agent", "list", "acme")
    assert cli.fails("agent", "add", "nobody", "carol").startswith(
        "callbridge: error: no account has the name or id 'nobody'"
    )


# -- calls and callbacks ------------------------------------------------------------------


def seed_calls(cli: Cli, account_name: str) -> tuple[Call, str]:
    """Two calls of ``account_name``: one still ringing, one answered and ended whose callback
    failed four times. Returns the ended call and its callback's event id."""
    t0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)

    def a_call(call_id: str, uuid: str, created: datetime, account_id: str) -> Call:
        agent = Leg(call_id, 1, LegRole.AGENT, "+919876543210", LegStatus.DIALING)
        return Call(call_id, account_id, uuid, "+918041234567", "+919812345678",
                    "+919876543210", None, True, 30, "h" * 64, created_at=created,
                    legs=(agent,))  # fmt: skip

    async def body(store: SqliteStore) -> tuple[Call, str]:
        account = await store.find_account(account_name)
        assert account is not None
        ended = replace(a_call("call-ended", "crm-1", t0, account.id), agent_confirm="dtmf",
                        time_limit=120)
        await store.create_call(ended)
        await store.create_call(a_call("call-ringing", "crm-2", t0 + timedelta(1), account.id))
        at = t0 + timedelta(seconds=10)
        legs = (
            Leg(ended.call_id, 1, LegRole.AGENT, "+919876543210", LegStatus.LEFT, 200,
                answered_at=t0, ended_at=at + timedelta(seconds=42)),
            Leg(ended.call_id, 2, LegRole.DESTINATION, "+919812345678", LegStatus.LEFT, 200,
                "BYE", answered_at=at, ended_at=at + timedelta(seconds=42)),
        )  # fmt: skip
        ended = replace(ended, call_status=CallStatus.ANSWER, start_time=at,
                        end_time=at + timedelta(seconds=42), duration=42,
                        hangup_source=HangupSource.DESTINATION, legs=legs)  # fmt: skip
        entry = new_outbox_entry(account, ended, None, at + timedelta(seconds=42))
        await store.finish_call(ended, entry)
        await store.record_attempt(entry.event_id, delivered=False, attempts=4,
                                   next_attempt_at=None, error="HTTP 500", at=at)  # fmt: skip
        return ended, entry.event_id

    result: tuple[Call, str] = cli.store(body)
    return result


def test_calls_list_and_show_with_legs(cli: Cli) -> None:
    cli.ok("account", "create", "acme", "--callback-url", CALLBACK_URL)
    cli.ok("account", "create", "beta", "--callback-url", CALLBACK_URL)
    seed_calls(cli, "acme")

    calls = cli.json("calls", "list")
    assert [c["call_id"] for c in calls] == ["call-ringing", "call-ended"]  # newest first
    assert calls[1]["call_status"] == "ANSWER" and calls[1]["duration"] == 42
    assert [
        c["call_id"] for c in cli.json("calls", "list", "--account", "acme", "--limit", "1")
    ] == ["call-ringing"]
    assert cli.json("calls", "list", "--account", "beta") == []
    assert cli.ok("calls", "list", "--account", "beta") == "No calls.\n"
    assert "call-ended" in cli.ok("calls", "list")

    shown = cli.json("calls", "show", "call-ended")
    assert shown["start_time"] == "2024-05-01T10:00:10Z"
    assert shown["hangup_source"] == "destination"
    assert (shown["agent_confirm"], shown["time_limit"]) == ("dtmf", 120)
    legs = [(leg["leg_id"], leg["role"], leg["status"], leg["sip_code"]) for leg in shown["legs"]]
    assert legs == [(1, "agent", "LEFT", 200), (2, "destination", "LEFT", 200)]
    text = cli.ok("calls", "show", "call-ended")
    assert "ANSWER" in text and "acme" in text and "BYE" in text and "42s" in text
    assert "agent_confirm  dtmf" in text and "time_limit     120s" in text
    assert "agent_confirm  off" in cli.ok("calls", "show", "call-ringing")
    assert cli.fails("calls", "show", "call-nope") == error("no call 'call-nope'")
    assert cli.fails("calls", "list", "--account", "nobody").startswith(
        "callbridge: error: no account has the name or id 'nobody'"
    )
    assert "--limit: expected a whole number >= 1" in cli.fails(
        "calls", "list", "--limit", "0", status=2
    )


def test_callbacks_list_and_redeliver_a_failed_one(cli: Cli) -> None:
    cli.ok("account", "create", "acme", "--callback-url", CALLBACK_URL)
    ended, event_id = seed_calls(cli, "acme")

    failed = cli.json("callbacks", "list", "--status", "failed")
    assert [(e["event_id"], e["call_id"], e["attempts"], e["last_error"]) for e in failed] == [
        (event_id, ended.call_id, 4, "HTTP 500")
    ]
    assert failed[0]["url"] == CALLBACK_URL
    assert "HTTP 500" in cli.ok("callbacks", "list", "--account", "acme")
    assert cli.json("callbacks", "list", "--status", "delivered") == []

    requeued = cli.json("callbacks", "redeliver", event_id)
    assert (requeued["status"], requeued["attempts"], requeued["requeued"]) == ("pending", 0, True)
    entry = cli.store(lambda s: s.get_callback(event_id))
    assert (entry.status, entry.attempts) == (OutboxStatus.PENDING, 0)
    assert entry.next_attempt_at <= datetime.now(UTC)  # due at once
    assert cli.json("callbacks", "list", "--status", "failed") == []

    # Pending already: nothing to do, and it says so.
    text = cli.ok("callbacks", "redeliver", event_id)
    assert text.startswith(f"Callback {event_id} is pending already")
    assert cli.fails("callbacks", "redeliver", "evt_nope") == error(
        "no callback 'evt_nope' (see `callbridge callbacks list`)"
    )
    assert "invalid choice: 'lost'" in cli.fails("callbacks", "list", "--status", "lost", status=2)


# -- settings -------------------------------------------------------------------------------


def test_admin_commands_read_config_files_and_report_bad_database_urls(
    cli: Cli, tmp_path: Path
) -> None:
    config = tmp_path / "callbridge.toml"
    config.write_text(f'[storage]\ndatabase_url = "sqlite:///{tmp_path}/other.db"\n')
    del cli.env["CALLBRIDGE_STORAGE_DATABASE_URL"]
    cli.ok("account", "create", "acme", "--callback-url", CALLBACK_URL, "--config", str(config))
    assert (tmp_path / "other.db").exists()
    assert [a["name"] for a in cli.json("account", "list", "--config", str(config))] == ["acme"]

    cli.env["CALLBRIDGE_STORAGE_DATABASE_URL"] = "postgresql://db/callbridge"
    assert cli.fails("account", "list", "--config", str(config), status=2) == (
        "callbridge: config error: storage.database_url:"
        " only sqlite:/// databases are supported, not 'postgresql'\n"
    )
    cli.env["CALLBRIDGE_STORAGE_DATABASE_URL"] = "nonsense"
    assert cli.fails("account", "list", status=2).startswith(
        "callbridge: config error: storage.database_url: must be a database URL"
    )
