"""The onboarding and inspection commands, run against the database the settings name::

    callbridge account create NAME --callback-url URL [--allow-cidr CIDR]... [--allow-origin O]...
                                   [--agent-confirm dtmf] [--time-limit SECONDS]
    callbridge account list
    callbridge key create|list ACCOUNT          callbridge key revoke KEY_ID_OR_PREFIX
    callbridge callerid add|remove ACCOUNT NUMBER        callbridge callerid list ACCOUNT
    callbridge agent add|remove ACCOUNT CRM_USERNAME     callbridge agent list ACCOUNT
    callbridge agent add ACCOUNT CRM_USERNAME --password   (read from the terminal or stdin)
    callbridge agent password|signin-link ACCOUNT CRM_USERNAME
    callbridge account launch-secret ACCOUNT
    callbridge calls list [--account ACCOUNT] [--limit N]
    callbridge calls show CALL_ID
    callbridge callbacks list [--account ACCOUNT] [--status STATUS] [--limit N]
    callbridge callbacks redeliver EVENT_ID

ACCOUNT is an account's name or id. Every command reads its settings as ``serve`` does
(``--config FILE``, then ``CALLBRIDGE_*`` variables; only ``storage.database_url`` is used)
and takes ``--json``, which prints one JSON document (an object or a list) on stdout and
nothing else. Without it the output is text for people.

Exit status: 0 done; 1 bad input, or something named does not exist, or the database failed
(``callbridge: error: <message>`` on stderr); 2 a usage or configuration error.

Secrets are shown once, when they are made: an account's callback signing secret (Standard
Webhooks ``whsec_...``) by ``account create``, an API key by ``key create`` (only its SHA-256
is stored, so nothing can show it again).

Input is checked before the database is opened, so a typo never creates a database file. The
API modules (Starlette) are imported only by the commands that need them, to keep
``callbridge --help`` quick.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import enum
import functools
import ipaddress
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from callbridge.config import is_host, load_settings
from callbridge.errors import CallbridgeError, ConfigError
from callbridge.numbers import display_number, parse_indian_number
from callbridge.store import open_store
from callbridge.store.models import Account, ApiKey, Call, OutboxEntry, OutboxStatus, Store
from callbridge.webhooks.signing import new_secret

__all__ = [
    "AdminError",
    "add_commands",
    "check_account_name",
    "check_agent_confirm",
    "check_callback_url",
    "check_cidrs",
    "check_crm_username",
    "check_origins",
    "check_time_limit",
]

#: The exit statuses of :mod:`callbridge.cli`.
EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2

_NAME_MAX = 100
#: DESIGN.md: an agent is known by the CRM's user name; these characters survive a SIP URI
#: user part and a URL path segment without escaping (RFC 3261 §25.1 "unreserved").
_CRM_USERNAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_WEB_SCHEMES = ("http", "https")
_DEFAULT_LIMIT = 50


class AdminError(CallbridgeError):
    """Bad input to an admin command, or something it names does not exist."""


@dataclass(frozen=True)
class Output:
    """What a command prints: ``doc`` as JSON with ``--json``, else ``text``."""

    doc: Any
    text: str


class _Database:
    """The store, opened on first use, so input is checked before any database file exists."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._store: Store | None = None

    async def store(self) -> Store:
        if self._store is None:
            self._store = await open_store(self._url)
        return self._store

    async def close(self) -> None:
        # aiosqlite's thread is not a daemon: an open store would keep the process alive.
        if self._store is not None:
            await self._store.close()


Handler = Callable[[argparse.Namespace, _Database], Awaitable[Output]]


# -- the command line ---------------------------------------------------------------------


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config_argument: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register the admin commands on the ``callbridge`` parser's subcommands; each gets
    ``--config`` (through ``add_config_argument``, shared with ``serve``) and ``--json``."""
    common = argparse.ArgumentParser(add_help=False)
    add_config_argument(common)
    common.add_argument("--json", action="store_true", help="print one JSON document")

    def group(name: str, help: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        return commands.add_parser(name, help=help).add_subparsers(metavar="ACTION", required=True)

    def action(group: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, parents=[common], help=help)
        parser.set_defaults(command=functools.partial(run, handler))
        return parser

    accounts = group("account", "accounts: callback URL and signing secret, access limits")
    create = action(accounts, "create", _account_create, "create an account")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--callback-url", required=True, metavar="URL",
                        help="http(s) URL the status callbacks are POSTed to")  # fmt: skip
    create.add_argument("--allow-cidr", action="append", metavar="CIDR",
                        help="accept API requests only from this network (repeatable)")  # fmt: skip
    create.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                        help="accept browser requests only from this origin,"
                             " scheme://host[:port] (repeatable)")  # fmt: skip
    create.add_argument("--agent-confirm", metavar="MODE",
                        help="default for calls that do not say: 'dtmf', the agent presses"
                             " 1 before the customer is dialled (default: none)")  # fmt: skip
    create.add_argument("--time-limit", metavar="SECONDS",
                        help="default longest talk time of a call, 10..14400 seconds; the call"
                             " is hung up when it is reached (default: no limit)")  # fmt: skip
    action(accounts, "list", _account_list, "list the accounts")

    keys = group("key", "API keys (shown once, stored hashed)")
    _account_argument(action(keys, "create", _key_create, "make an API key and print it once"))
    _account_argument(action(keys, "list", _key_list, "list an account's API keys"))
    revoke = action(keys, "revoke", _key_revoke, "revoke an API key")
    revoke.add_argument("key", metavar="KEY_ID_OR_PREFIX", help="the key's id, prefix, or itself")

    callerids = group("callerid", "the numbers an account may call from (from_number)")
    for name, handler, help in (
        ("add", _callerid_add, "allow a caller ID"),
        ("remove", _callerid_remove, "withdraw a caller ID"),
    ):
        _account_argument(action(callerids, name, handler, help)).add_argument("number")
    _account_argument(action(callerids, "list", _callerid_list, "list an account's caller IDs"))

    agents = group("agent", "softphone agents, by CRM user name (crm_username)")
    for name, handler, help in (
        ("add", _agent_add, "add an agent"),
        ("remove", _agent_remove, "remove an agent"),
    ):
        parser = _account_argument(action(agents, name, handler, help))
        parser.add_argument("crm_username", metavar="CRM_USERNAME")
        if name == "add":
            parser.add_argument("--password", action="store_true",
                                help="set a softphone password, read from the terminal (or"
                                     " one line of standard input)")  # fmt: skip
    _account_argument(action(agents, "list", _agent_list, "list an account's agents"))
    password = _account_argument(action(agents, "password", _agent_password,
                                        "set an agent's softphone password (read as for add)"))
    password.add_argument("crm_username", metavar="CRM_USERNAME")
    link = _account_argument(action(agents, "signin-link", _agent_signin_link,
                                    "print a one-time softphone sign-in link"))
    link.add_argument("crm_username", metavar="CRM_USERNAME")
    link.add_argument("--hours", type=_positive, default=24, metavar="N",
                      help="the link expires after N hours (default 24)")
    _account_argument(action(accounts, "launch-secret", _account_launch_secret,
                             "make (or replace) the softphone launch-token secret, shown once"))

    calls = group("calls", "inspect calls")
    _filters(action(calls, "list", _calls_list, "the latest calls, newest first"))
    action(calls, "show", _calls_show, "one call with its legs").add_argument("call_id")

    callbacks = group("callbacks", "inspect and redeliver status callbacks")
    listing = _filters(action(callbacks, "list", _callbacks_list, "the latest callbacks"))
    listing.add_argument("--status", choices=[s.value for s in OutboxStatus])
    redeliver = action(
        callbacks, "redeliver", _callbacks_redeliver, "queue a delivered or failed callback again"
    )
    redeliver.add_argument("event_id")


def _account_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("account", metavar="ACCOUNT", help="the account's name or id")
    return parser


def _filters(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--account", metavar="ACCOUNT", help="only this account (name or id)")
    parser.add_argument("--limit", type=_positive, default=_DEFAULT_LIMIT, metavar="N",
                        help=f"at most N, newest first (default {_DEFAULT_LIMIT})")  # fmt: skip
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Run one admin command; print its output or its error; return the exit status."""
    config: Path | None = args.config
    try:
        settings = load_settings(config, os.environ)
        output = asyncio.run(_execute(handler, args, settings.storage.database_url))
    except ConfigError as exc:
        print(f"callbridge: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CallbridgeError as exc:
        print(f"callbridge: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(output.doc, indent=2, ensure_ascii=False) if args.json else output.text)
    return EXIT_OK


async def _execute(handler: Handler, args: argparse.Namespace, database_url: str) -> Output:
    database = _Database(database_url)
    try:
        return await handler(args, database)
    finally:
        await database.close()


# -- checking input -----------------------------------------------------------------------


def check_account_name(text: str) -> str:
    """An account name: 1..100 characters, no control characters, outer spaces dropped."""
    name = text.strip()
    if not name:
        raise AdminError("the account name is empty")
    if len(name) > _NAME_MAX or _CONTROL.search(name):
        raise AdminError(
            f"account name {text!r}: expected at most {_NAME_MAX} characters, no control characters"
        )
    return name


def check_agent_confirm(text: str) -> str:
    """An agent confirmation mode, as ``POST /calls`` takes it (only ``dtmf`` today)."""
    from callbridge.api.validation import AGENT_CONFIRM_MODES

    mode = text.strip()
    if mode not in AGENT_CONFIRM_MODES:
        choices = ", ".join(AGENT_CONFIRM_MODES)
        raise AdminError(f"agent confirmation {text!r}: expected {choices}")
    return mode


def check_time_limit(text: str) -> int:
    """A talk-time limit in whole seconds, in the range ``POST /calls`` accepts."""
    from callbridge.api.validation import TIME_LIMIT_RANGE

    low, high = TIME_LIMIT_RANGE
    seconds = text.strip()
    if not (seconds.isascii() and seconds.isdigit()) or not low <= int(seconds) <= high:
        raise AdminError(f"time limit {text!r}: expected whole seconds, {low}..{high}")
    return int(seconds)


def check_callback_url(text: str) -> str:
    """An absolute http(s) URL with a host; a query is kept, a fragment is refused."""
    url = text.strip()
    problem = _web_url_problem(url)
    if problem is None and urlsplit(url).fragment:
        problem = "has a #fragment, which is never sent"
    if problem:
        raise AdminError(f"callback URL {text!r} {problem}")
    return url


def check_cidrs(values: Iterable[str]) -> tuple[str, ...]:
    """Networks as written by ``--allow-cidr`` (repeatable, or comma-separated), each in its
    canonical form (``10.1.2.3/8`` is ``10.0.0.0/8``, a bare address a /32 or /128)."""
    networks: list[str] = []
    for item in _items(values):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise AdminError(
                f"--allow-cidr {item!r} is not a network such as 10.0.0.0/8, 192.0.2.7"
                " or 2001:db8::/32"
            ) from None
        networks.append(str(network))
    return tuple(dict.fromkeys(networks))


def check_origins(values: Iterable[str]) -> tuple[str, ...]:
    """Browser origins as written by ``--allow-origin``: ``scheme://host[:port]`` with no path
    (a trailing "/" is forgiven), stored in the form the origin check compares."""
    from callbridge.api.origin import normalize_origin  # Starlette: see the module docstring

    origins: list[str] = []
    for item in _items(values):
        problem = _web_url_problem(item)
        parts = urlsplit(item) if problem is None else None
        if parts is not None and (parts.path not in ("", "/") or parts.query or parts.fragment):
            problem = "has a path, query or fragment; an origin has none"
        elif parts is not None and "@" in parts.netloc:
            problem = "has a user name; an origin has none"
        if problem:
            raise AdminError(
                f"--allow-origin {item!r} {problem} (expected scheme://host[:port],"
                " e.g. https://crm.example.com)"
            )
        origins.append(normalize_origin(item))
    return tuple(dict.fromkeys(origins))


def check_crm_username(text: str) -> str:
    if not _CRM_USERNAME.fullmatch(text):
        raise AdminError(
            f"crm_username {text!r}: expected 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )
    return text


def _web_url_problem(url: str) -> str | None:
    """Why ``url`` is not an absolute http(s) URL with a valid host, or None if it is."""
    if not url:
        return "is empty"
    if _SPACE_OR_CONTROL.search(url):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError as exc:
        return f"is malformed ({exc})"
    if parts.scheme.lower() not in _WEB_SCHEMES:
        return "must start with http:// or https://"
    if not parts.hostname or not is_host(parts.hostname):
        return "has no valid host"
    return None


def _items(values: Iterable[str] | None) -> list[str]:
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def _caller_id(text: str) -> str:
    try:
        return parse_indian_number(text, mobile_only=False)
    except ValueError as exc:
        raise AdminError(f"caller ID: {exc}") from None


async def _account(store: Store, name_or_id: str) -> Account:
    account = await store.find_account(name_or_id)
    if account is None:
        raise AdminError(
            f"no account has the name or id {name_or_id!r} (see `callbridge account list`)"
        )
    return account


# -- accounts -------------------------------------------------------------------------------


async def _account_create(args: argparse.Namespace, db: _Database) -> Output:
    name = check_account_name(args.name)
    url = check_callback_url(args.callback_url)
    cidrs, origins = check_cidrs(args.allow_cidr or ()), check_origins(args.allow_origin or ())
    confirm = None if args.agent_confirm is None else check_agent_confirm(args.agent_confirm)
    limit = None if args.time_limit is None else check_time_limit(args.time_limit)
    store = await db.store()
    if any(account.name == name for account in await store.list_accounts()):
        raise AdminError(f"an account named {name!r} exists already")
    account = await store.create_account(
        name, url, new_secret(), allow_cidrs=cidrs, allow_origins=origins,
        agent_confirm=confirm, time_limit=limit,
    )  # fmt: skip
    shown = [*_account_fields(account), ("secret", account.callback_secret)]
    text = (
        f"Account {name!r} created.\n{_fields(shown)}\n\n"
        "Store this callback signing secret now: your receiver verifies callbacks with it\n"
        "(Standard Webhooks), and no callbridge command shows it again."
    )
    return Output({**_account_doc(account), "callback_secret": account.callback_secret}, text)


async def _account_list(args: argparse.Namespace, db: _Database) -> Output:
    accounts = await (await db.store()).list_accounts()
    rows = [
        (a.id, a.name, a.callback_url, _joined(a.allow_cidrs), _joined(a.allow_origins),
         _confirm(a.agent_confirm), _limit(a.time_limit), _time(a.created_at))
        for a in accounts
    ]  # fmt: skip
    headers = ("ID", "NAME", "CALLBACK URL", "CIDRS", "ORIGINS", "CONFIRM", "LIMIT", "CREATED")
    return Output([_account_doc(a) for a in accounts], _table(headers, rows, "No accounts."))


def _account_doc(account: Account) -> dict[str, Any]:
    return _doc(account, drop=("callback_secret", "launch_secret"))


def _account_fields(account: Account) -> list[tuple[str, str]]:
    return [
        ("id", account.id),
        ("name", account.name),
        ("callback_url", account.callback_url),
        ("allow_cidrs", _joined(account.allow_cidrs)),
        ("allow_origins", _joined(account.allow_origins)),
        ("agent_confirm", _confirm(account.agent_confirm)),
        ("time_limit", _limit(account.time_limit)),
    ]


def _confirm(mode: str | None) -> str:
    return mode or "off"


def _limit(seconds: int | None) -> str:
    return "none" if seconds is None else f"{seconds}s"


# -- API keys ---------------------------------------------------------------------------------


async def _key_create(args: argparse.Namespace, db: _Database) -> Output:
    from callbridge.api.auth import hash_api_key, key_prefix, new_api_key

    store = await db.store()
    account = await _account(store, args.account)
    key = new_api_key()
    stored = await store.add_api_key(account.id, hash_api_key(key), key_prefix(key))
    text = (
        f"API key created for account {account.name!r}.\n"
        f"{_fields([('id', stored.id), ('prefix', stored.prefix), ('key', key)])}\n\n"
        "Store this key now: callbridge keeps only its hash and cannot show it again."
    )
    return Output({**_key_doc(stored, account), "key": key}, text)


async def _key_list(args: argparse.Namespace, db: _Database) -> Output:
    store = await db.store()
    account = await _account(store, args.account)
    keys = await store.list_api_keys(account.id)
    rows = [(k.id, k.prefix, _time(k.created_at), _time(k.revoked_at, "active")) for k in keys]
    text = _table(("ID", "PREFIX", "CREATED", "REVOKED"), rows, f"{account.name!r} has no keys.")
    return Output([_key_doc(k, account) for k in keys], text)


async def _key_revoke(args: argparse.Namespace, db: _Database) -> Output:
    store = await db.store()
    key = await _one_key(store, args.key.strip())
    if not key.active:
        raise AdminError(f"API key {key.prefix} (id {key.id}) is revoked already")
    if not await store.revoke_api_key(key.id):
        raise AdminError(f"API key {key.prefix} (id {key.id}) could not be revoked")
    account = await store.get_account(key.account_id)
    revoked = next(k for k in await store.list_api_keys(key.account_id) if k.id == key.id)
    owner = account.name if account else key.account_id
    text = f"Revoked API key {revoked.prefix} (id {revoked.id}) of account {owner!r}."
    return Output(_key_doc(revoked, account), text)


async def _one_key(store: Store, wanted: str) -> ApiKey:
    """The key ``wanted`` names: its id, its prefix (one active key must have it), or the key
    itself (looked up by hash)."""
    from callbridge.api.auth import KEY_PREFIX, hash_api_key, key_prefix

    if wanted.startswith(KEY_PREFIX) and len(wanted) > len(key_prefix(wanted)):
        found = await store.find_api_key(hash_api_key(wanted))
        if found is None:
            raise AdminError("no such API key")
        return found
    keys = [k for a in await store.list_accounts() for k in await store.list_api_keys(a.id)]
    by_id = [k for k in keys if k.id == wanted]
    by_prefix = [k for k in keys if k.prefix == wanted]
    active = [k for k in by_prefix if k.active]
    if by_id or len(active) == 1:
        return (by_id or active)[0]
    if len(active) > 1:
        raise AdminError(
            f"{len(active)} active API keys have the prefix {wanted!r}: give the key's id"
            " (see `callbridge key list ACCOUNT`)"
        )
    if by_prefix:
        return by_prefix[0]
    raise AdminError(f"no API key has the id or prefix {wanted!r}")


def _key_doc(key: ApiKey, account: Account | None) -> dict[str, Any]:
    return {**_doc(key), "account": account.name if account else None, "active": key.active}


# -- caller IDs and agents ----------------------------------------------------------------------


async def _callerid_add(args: argparse.Namespace, db: _Database) -> Output:
    number = _caller_id(args.number)
    store = await db.store()
    account = await _account(store, args.account)
    if not await store.add_caller_id(account.id, number):
        raise AdminError(f"account {account.name!r} has caller ID {display_number(number)} already")
    text = f"Caller ID {display_number(number)} ({number}) added to account {account.name!r}."
    return Output(_caller_id_doc(account, number), text)


async def _callerid_remove(args: argparse.Namespace, db: _Database) -> Output:
    number = _caller_id(args.number)
    store = await db.store()
    account = await _account(store, args.account)
    if not await store.remove_caller_id(account.id, number):
        raise AdminError(f"account {account.name!r} has no caller ID {display_number(number)}")
    text = f"Caller ID {display_number(number)} ({number}) removed from account {account.name!r}."
    return Output(_caller_id_doc(account, number), text)


async def _callerid_list(args: argparse.Namespace, db: _Database) -> Output:
    store = await db.store()
    account = await _account(store, args.account)
    numbers = await store.list_caller_ids(account.id)
    rows = [(display_number(n), n) for n in numbers]
    text = _table(("NUMBER", "E.164"), rows, f"{account.name!r} has no caller IDs.")
    return Output([_caller_id_doc(account, n) for n in numbers], text)


def _caller_id_doc(account: Account, number: str) -> dict[str, Any]:
    return {"account_id": account.id, "account": account.name, "number": number,
            "display": display_number(number)}  # fmt: skip


async def _agent_add(args: argparse.Namespace, db: _Database) -> Output:
    username = check_crm_username(args.crm_username)
    password = _read_password() if args.password else ""
    store = await db.store()
    account = await _account(store, args.account)
    if not await store.add_agent(account.id, username):
        raise AdminError(f"account {account.name!r} has an agent {username!r} already")
    agent = await store.get_agent(account.id, username)
    text = f"Agent {username!r} added to account {account.name!r}."
    if args.password:
        await store.set_agent_password(account.id, username, _hashed_password(password))
        text += " Softphone password set."
    doc = _doc(agent) if agent else {"account_id": account.id, "crm_username": username}
    return Output({**doc, "account": account.name}, text)


async def _agent_remove(args: argparse.Namespace, db: _Database) -> Output:
    username = check_crm_username(args.crm_username)
    store = await db.store()
    account = await _account(store, args.account)
    if not await store.remove_agent(account.id, username):
        raise AdminError(f"account {account.name!r} has no agent {username!r}")
    text = (f"Agent {username!r} removed from account {account.name!r}; its softphone"
            " sessions and sign-in links no longer work.")  # fmt: skip
    return Output(
        {"account_id": account.id, "account": account.name, "crm_username": username}, text
    )


async def _agent_list(args: argparse.Namespace, db: _Database) -> Output:
    store = await db.store()
    account = await _account(store, args.account)
    agents = await store.list_agents(account.id)
    rows = [(a.crm_username, _time(a.created_at)) for a in agents]
    text = _table(("CRM_USERNAME", "ADDED"), rows, f"{account.name!r} has no agents.")
    return Output([{**_doc(a), "account": account.name} for a in agents], text)


# -- the softphone's credentials --------------------------------------------------------------


def _read_password() -> str:
    """The new password: asked twice on a terminal, else one line of standard input (never
    an argument, which other users see in ``ps``)."""
    from callbridge.softphone.auth import MIN_PASSWORD

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Softphone password: ")
        if getpass.getpass("Again: ") != password:
            raise AdminError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise AdminError(f"the password must have at least {MIN_PASSWORD} characters")
    return password


def _hashed_password(password: str) -> str:
    from callbridge.softphone.auth import hash_password

    return hash_password(password)


async def _agent_password(args: argparse.Namespace, db: _Database) -> Output:
    username = check_crm_username(args.crm_username)
    password = _read_password()
    store = await db.store()
    account = await _account(store, args.account)
    if not await store.set_agent_password(account.id, username, _hashed_password(password)):
        raise AdminError(f"account {account.name!r} has no agent {username!r}")
    text = (f"Softphone password of agent {username!r} of account {account.name!r} set; the"
            " agent's existing sessions are signed out (open pages within seconds) and earlier"
            " sign-in links no longer work.")  # fmt: skip
    doc = {"account_id": account.id, "account": account.name, "crm_username": username}
    return Output(doc, text)


async def _agent_signin_link(args: argparse.Namespace, db: _Database) -> Output:
    from datetime import timedelta

    from callbridge.softphone.auth import SoftphoneAuth

    username = check_crm_username(args.crm_username)
    public_url = load_settings(args.config, os.environ).http.public_url
    store = await db.store()
    account = await _account(store, args.account)
    if await store.get_agent(account.id, username) is None:
        raise AdminError(f"account {account.name!r} has no agent {username!r}")
    ttl = timedelta(hours=args.hours)
    token = await SoftphoneAuth(store, lambda: datetime.now(UTC)).new_signin_link(
        account.id, username, ttl)  # fmt: skip
    url = f"{public_url}/softphone/signin-link?token={token}"
    expires = _time(datetime.now(UTC) + ttl)
    text = f"One-time sign-in link for {username!r} ({account.name!r}), until {expires}:\n{url}"
    return Output({"account_id": account.id, "account": account.name, "crm_username": username,
                   "url": url, "expires_at": expires}, text)  # fmt: skip


async def _account_launch_secret(args: argparse.Namespace, db: _Database) -> Output:
    from callbridge.softphone.auth import new_launch_secret

    store = await db.store()
    account = await _account(store, args.account)
    secret = new_launch_secret()
    await store.set_launch_secret(account.id, secret)
    text = (
        f"Launch secret of account {account.name!r} (id {account.id}):\n{secret}\n\n"
        "Store it in your CRM's backend now: it signs softphone launch tokens (see\n"
        "/integration-guide.html), any earlier one stops working, and no command shows it again."
    )
    return Output({"account_id": account.id, "account": account.name, "launch_secret": secret},
                  text)  # fmt: skip


# -- calls and callbacks --------------------------------------------------------------------


async def _calls_list(args: argparse.Namespace, db: _Database) -> Output:
    store = await db.store()
    account_id = (await _account(store, args.account)).id if args.account else None
    calls = await store.list_calls(account_id, limit=args.limit)
    names = {a.id: a.name for a in await store.list_accounts()}
    rows = [
        (c.call_id, _time(c.created_at), names.get(c.account_id, c.account_id), c.call_status,
         display_number(c.to_number), _agent_of(c), f"{c.duration}s")
        for c in calls
    ]  # fmt: skip
    headers = ("CALL_ID", "CREATED", "ACCOUNT", "STATUS", "TO", "AGENT", "TALK")
    return Output([_doc(c) for c in calls], _table(headers, rows, "No calls."))


async def _calls_show(args: argparse.Namespace, db: _Database) -> Output:
    store = await db.store()
    call = await store.get_call(args.call_id.strip())
    if call is None:
        raise AdminError(f"no call {args.call_id!r}")
    account = await store.get_account(call.account_id)
    fields = [
        ("call_id", call.call_id), ("account", account.name if account else call.account_id),
        ("uuid", call.uuid), ("status", call.call_status),
        ("from", display_number(call.from_number)), ("to", display_number(call.to_number)),
        ("agent", _agent_of(call)),
        ("recording", call.recording_url or ("on" if call.recording else "off")),
        ("created", _time(call.created_at)), ("answered", _time(call.start_time)),
        ("ended", _time(call.end_time)), ("talk", f"{call.duration}s"),
        ("hangup_source", call.hangup_source or "-"),
        ("agent_confirm", _confirm(call.agent_confirm)), ("time_limit", _limit(call.time_limit)),
    ]  # fmt: skip
    legs = [
        (str(leg.leg_id), leg.role, display_number(leg.number), leg.status,
         str(leg.sip_code or "-"), leg.reason or "-", _time(leg.answered_at), _time(leg.ended_at))
        for leg in call.legs
    ]  # fmt: skip
    headers = ("LEG", "ROLE", "NUMBER", "STATUS", "SIP", "REASON", "ANSWERED", "ENDED")
    return Output(_doc(call), f"{_fields(fields)}\n\n{_table(headers, legs, 'No legs.')}")


async def _callbacks_list(args: argparse.Namespace, db: _Database) -> Output:
    store = await db.store()
    account_id = (await _account(store, args.account)).id if args.account else None
    status = OutboxStatus(args.status) if args.status else None
    entries = await store.list_callbacks(account_id, status, limit=args.limit)
    rows = [
        (e.event_id, e.call_id, e.status, str(e.attempts), _time(e.created_at),
         _time(e.delivered_at or e.next_attempt_at), e.last_error or "-")
        for e in entries
    ]  # fmt: skip
    headers = ("EVENT_ID", "CALL_ID", "STATUS", "ATTEMPTS", "CREATED", "DELIVERED/DUE", "ERROR")
    return Output([_callback_doc(e) for e in entries], _table(headers, rows, "No callbacks."))


async def _callbacks_redeliver(args: argparse.Namespace, db: _Database) -> Output:
    store = await db.store()
    event_id = args.event_id.strip()
    entry = await store.get_callback(event_id)
    if entry is None:
        raise AdminError(f"no callback {event_id!r} (see `callbridge callbacks list`)")
    if entry.status is OutboxStatus.PENDING:
        text = (
            f"Callback {event_id} is pending already: the running server delivers it when it"
            f" is due ({_time(entry.next_attempt_at)})."
        )
        return Output({**_callback_doc(entry), "requeued": False}, text)
    if not await store.requeue_callback(event_id, datetime.now(UTC)):
        raise AdminError(f"callback {event_id!r} could not be requeued")
    requeued = await store.get_callback(event_id)
    text = (
        f"Callback {event_id} ({entry.status}) is queued again: the running server will"
        " deliver it within its poll interval."
    )
    return Output({**_callback_doc(requeued or entry), "requeued": True}, text)


def _callback_doc(entry: OutboxEntry) -> dict[str, Any]:
    # The payload is the call as the callback shows it: `calls show` has the call itself.
    return _doc(entry, drop=("payload",))


def _agent_of(call: Call) -> str:
    if call.agent_number:
        return display_number(call.agent_number)
    return call.crm_username or "-"


# -- output -------------------------------------------------------------------------------


def _doc(value: Any, drop: Sequence[str] = ()) -> dict[str, Any]:
    """A stored dataclass as a JSON object: times as ISO-8601 UTC, enums as their values."""
    fields = dataclasses.asdict(value)
    return {name: _plain(item) for name, item in fields.items() if name not in drop}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _time(value, None)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {name: _plain(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _time(moment: datetime | None, missing: str | None = "-") -> Any:
    """``2026-07-03T10:00:00Z``: to the second, as the callbacks write times."""
    if moment is None:
        return missing
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _joined(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "any"


def _fields(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join(f"{name:<{width}}{value}" for name, value in rows)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return empty
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(f"{cell!s:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)
