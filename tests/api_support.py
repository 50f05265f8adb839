"""Shared pieces of the REST API tests: a real SQLite store with one onboarded account, a fake
call control (the call machine is not under test here), an httpx client on the app, and the
served OpenAPI document as JSON Schema to check every answer against."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import referencing
import uvicorn
import yaml

from callbridge.api.app import ApiContext, create_app
from callbridge.api.auth import hash_api_key, key_prefix, new_api_key
from callbridge.api.routes import openapi_text
from callbridge.config import Settings, StorageSettings
from callbridge.errors import CallNotActive, TrunkUnavailable
from callbridge.store.models import Account, Call
from callbridge.store.sqlite import SqliteStore

NOW = datetime(2026, 7, 3, 10, 0, 0, tzinfo=UTC)
CALLER_ID = "+919800000000"
AGENT = "agent.017"
#: A valid request by phone number: the spec's "byPhoneNumber" example.
BODY: dict[str, Any] = {
    "from_number": "919800000000",
    "to_number": "9876543210",
    "agent_number": "9876543211",
    "uuid": "550e8400-e29b-41d4-a716-446655440000",
}


class FakeCalls:
    """Records what the API asks of the call machinery. ``not_active`` makes add_leg and
    send_dtmf raise CallNotActive with that message; ``bad_leg`` makes send_dtmf raise
    ValueError with it, as for a leg the call does not have."""

    def __init__(self) -> None:
        self.started: list[Call] = []
        self.unavailable: str | None = None
        self.added: list[tuple[str, str, int]] = []  #: (call_id, number, max_ring_time)
        self.hung_up: list[str] = []  #: call ids
        self.dtmf: list[tuple[str, str, int | None]] = []  #: (call_id, digits, leg)
        self.not_active: str | None = None
        self.bad_leg: str | None = None
        #: The leg_id the next add_leg returns.
        self.next_leg = 3

    def check_available(self) -> None:
        if self.unavailable is not None:
            raise TrunkUnavailable(self.unavailable)

    async def start(self, call: Call) -> None:
        self.started.append(call)
        await asyncio.sleep(0)  # let concurrent requests interleave here, as real I/O would

    async def add_leg(self, call: Call, number: str, max_ring_time: int) -> int:
        if self.not_active is not None:
            raise CallNotActive(self.not_active)
        self.added.append((call.call_id, number, max_ring_time))
        self.next_leg += 1
        return self.next_leg - 1

    async def hangup(self, call: Call) -> None:
        self.hung_up.append(call.call_id)

    async def send_dtmf(self, call: Call, digits: str, leg: int | None) -> None:
        if self.not_active is not None:
            raise CallNotActive(self.not_active)
        if self.bad_leg is not None:
            raise ValueError(self.bad_leg)
        self.dtmf.append((call.call_id, digits, leg))


@dataclass
class Api:
    """One app around a fresh store, with an account, its key, caller ID and agent."""

    store: SqliteStore
    calls: FakeCalls
    account: Account
    key: str
    recordings: Path
    checks: dict[str, bool] = field(default_factory=lambda: {"database": True})
    #: Raised by the health checks instead of answering, when set.
    health_error: Exception | None = None
    client: httpx.AsyncClient = field(init=False)
    ctx: ApiContext = field(init=False)

    def build(self, client_host: str = "127.0.0.1", **options: Any) -> None:
        async def health() -> dict[str, bool]:
            if self.health_error is not None:
                raise self.health_error
            return self.checks

        settings = Settings(storage=StorageSettings(recordings_dir=str(self.recordings)))
        self.ctx = ApiContext(settings, self.store, self.calls, health, clock=lambda: NOW,
                              **options)
        transport = httpx.ASGITransport(create_app(self.ctx), client=(client_host, 40000))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://callbridge.test")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def post_call(self, body: Any = None, **headers: str) -> httpx.Response:
        payload = BODY if body is None else body
        return await self.client.post("/calls", json=payload, headers={**self.auth, **headers})

    async def restrict(self, *, cidrs: tuple[str, ...] = (),
                       origins: tuple[str, ...] = ()) -> None:
        """Give the account these restrictions (a second account with the same key setup)."""
        await self.switch_account("restricted", allow_cidrs=cidrs, allow_origins=origins)

    async def switch_account(self, name: str, **options: Any) -> None:
        """Make a second account, onboarded as the first, with ``options`` (the keyword
        arguments of ``create_account``), and use its key from now on."""
        account = await self.store.create_account(name, "http://crm.test/cb", "whsec_x",
                                                  **options)
        await onboard(self.store, account)
        self.account = account
        self.key = await add_key(self.store, account)


async def add_key(store: SqliteStore, account: Account) -> str:
    key = new_api_key()
    await store.add_api_key(account.id, hash_api_key(key), key_prefix(key))
    return key


async def onboard(store: SqliteStore, account: Account) -> None:
    await store.add_caller_id(account.id, CALLER_ID)
    await store.add_agent(account.id, AGENT)


def run_api(tmp_path: Path, scenario: Callable[[Api], Awaitable[None]],
            **options: Any) -> None:
    """Run ``scenario`` against a fresh app, in a fresh event loop, with a 30 s bound."""

    async def main() -> None:
        async with await SqliteStore.open(tmp_path / "callbridge.db") as store:
            account = await store.create_account("acme", "http://crm.test/cb", "whsec_x")
            await onboard(store, account)
            recordings = tmp_path / "recordings"
            recordings.mkdir()
            api = Api(store, FakeCalls(), account, await add_key(store, account), recordings)
            api.build(**options)
            async with api.client:
                await asyncio.wait_for(scenario(api), 30)

    asyncio.run(main())


# -- real HTTP --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_http(api: Api) -> AsyncIterator[str]:
    """The app on a real uvicorn server on 127.0.0.1, in this event loop; yields its URL."""
    port = free_port()
    config = uvicorn.Config(create_app(api.ctx), host="127.0.0.1", port=port,
                            log_config=None, lifespan="off", http="h11", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# -- the OpenAPI document as JSON Schema ---------------------------------------------------


def load_spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(openapi_text())
    return document


_SPEC = load_spec()
_URI = "urn:callbridge:openapi"


def _strict(schema: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable`` becomes a "null" type, and objects
    declaring properties admit no others, so an undocumented field fails the test."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable"):
        out["type"] = [schema["type"], "null"]
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


_STRICT_REGISTRY = referencing.Registry().with_resource(
    _URI, referencing.Resource.from_contents(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", **_strict(_SPEC)}))
_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(text: object) -> bool:
    return not isinstance(text, str) or datetime.fromisoformat(text).tzinfo is not None


def response_doc(path: str, method: str, status: int) -> dict[str, Any]:
    """The spec's description of this answer; KeyError if it is undocumented."""
    answer: dict[str, Any] = _SPEC["paths"][path][method]["responses"][str(status)]
    if "$ref" in answer:
        answer = _SPEC["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return answer


def check_response(response: httpx.Response, path: str, method: str | None = None) -> Any:
    """Assert the answer is documented for ``path`` (a template) and its JSON body matches
    the documented schema, strictly; return the body."""
    method = method or response.request.method.lower()
    answer = response_doc(path, method, response.status_code)
    schema = answer["content"]["application/json"]["schema"]
    body = response.json()
    check_schema(body, schema)
    return body


def check_schema(instance: Any, schema: dict[str, Any]) -> None:
    pointer = _SPEC_REFS.get(id(schema))
    root = {"$ref": f"{_URI}#{pointer}"} if pointer else _strict(schema)
    validator = jsonschema.Draft202012Validator(root, registry=_STRICT_REGISTRY,
                                                format_checker=_FORMATS)
    validator.validate(instance)


def _index(node: Any, pointer: str, found: dict[int, str]) -> None:
    if isinstance(node, dict):
        found[id(node)] = pointer
        for key, value in node.items():
            _index(value, f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}", found)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _index(value, f"{pointer}/{i}", found)


#: id() of every dict in the spec -> its JSON pointer, so a schema found by walking the spec
#: is validated in place (its $refs resolve against the whole document).
_SPEC_REFS: dict[int, str] = {}
_index(_SPEC, "", _SPEC_REFS)


def error_of(response: httpx.Response) -> str:
    """The error_code of an error answer, after checking the error shape."""
    body = response.json()
    assert body["status"] == "error" and set(body) >= {"error_code", "message"}, body
    assert isinstance(body["message"], str) and body["message"], body
    return str(body["error_code"])


__all__ = [
    "AGENT",
    "BODY",
    "CALLER_ID",
    "NOW",
    "Api",
    "FakeCalls",
    "add_key",
    "check_response",
    "check_schema",
    "error_of",
    "free_port",
    "load_spec",
    "response_doc",
    "run_api",
    "serve_http",
]
