"""Softphone sign-in: passwords (scrypt), the session cookie and its flags, one-time sign-in
links, launch tokens (valid once; expired, reused, tampered or foreign refused), the launch
page, and the admin commands that set passwords and print links."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.cli import main as cli_main
from callbridge.softphone.auth import (
    SESSION_COOKIE,
    SoftphoneAuth,
    hash_password,
    mint_launch_token,
    seal,
    unseal,
    verify_password,
)
from softphone_support import AGENT, PASSWORD, PUBLIC_URL, Softphone, make_softphone

CREDENTIALS = {"account": "acme", "crm_username": AGENT, "password": PASSWORD}
Test = Callable[[Softphone, httpx.AsyncClient], Awaitable[None]]


def run(tmp_path: Path, test: Test, **options: Any) -> None:
    async def main() -> None:
        phone = await make_softphone(tmp_path, **options)
        transport = httpx.ASGITransport(phone.app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
                await test(phone, client)
        finally:
            await phone.store.close()

    asyncio.run(main())


def set_cookie(response: httpx.Response) -> str:
    [header] = response.headers.get_list("set-cookie")
    return header


def token_for(phone: Softphone, *, now: float | None = None, **claims: Any) -> str:
    base: dict[str, Any] = {"crm_username": AGENT, "to_number": "9876543210", "uuid": "crm-1"}
    moment = phone.now.timestamp() if now is None else now
    return mint_launch_token(phone.account, **{**base, **claims}, now=moment)


# -- passwords -----------------------------------------------------------------------------------


def test_a_password_hash_is_salted_and_verifies_only_its_password() -> None:
    first, second = hash_password("s3cret-pass"), hash_password("s3cret-pass")
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert verify_password("s3cret-pass", first) and verify_password("s3cret-pass", second)
    assert not verify_password("s3cret-Pass", first)
    assert not verify_password("s3cret-pass", None)
    assert not verify_password("s3cret-pass", "scrypt$garbage")


# -- signing in ----------------------------------------------------------------------------------


def test_signin_with_the_right_password_sets_a_strict_httponly_cookie(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        response = await client.post("/softphone/signin", json=CREDENTIALS)
        assert response.status_code == 200
        assert response.json() == {"account_id": phone.account.id, "crm_username": AGENT}
        cookie = set_cookie(response).lower()
        assert cookie.startswith(SESSION_COOKIE + "=")
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/softphone" in cookie
        assert "secure" not in cookie  # public_url is http
        session = await client.get("/softphone/session")
        assert session.json() == {"account_id": phone.account.id, "crm_username": AGENT}

    run(tmp_path, test)


def test_the_cookie_is_secure_when_public_url_is_https(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        response = await client.post("/softphone/signin", data=CREDENTIALS)  # a form
        assert response.status_code == 200
        assert "; secure" in set_cookie(response).lower()

    run(tmp_path, test, public_url="https://calls.example.com")


@pytest.mark.parametrize("wrong", [
    {"password": "wrong horse battery"},
    {"crm_username": "nobody"},
    {"account": "other"},
    {"crm_username": "no.password", "password": ""},
    {"crm_username": "no.password"},
])  # fmt: skip
def test_signin_with_wrong_credentials_is_401_and_sets_nothing(
    tmp_path: Path, wrong: dict[str, str]
) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        response = await client.post("/softphone/signin", json={**CREDENTIALS, **wrong})
        assert response.status_code in (400, 401)
        assert "set-cookie" not in response.headers
        assert (await client.get("/softphone/session")).status_code == 401

    run(tmp_path, test)


def test_signin_from_another_origin_is_refused(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        headers = {"Origin": "https://evil.example"}
        response = await client.post("/softphone/signin", json=CREDENTIALS, headers=headers)
        assert response.status_code == 403
        assert "set-cookie" not in response.headers

    run(tmp_path, test)


def test_a_forged_or_expired_cookie_is_no_session(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        forged = seal(b"not the server secret", {"a": phone.account.id, "u": AGENT, "exp": 2**40})
        client.cookies.set(SESSION_COOKIE, forged)
        assert (await client.get("/softphone/session")).status_code == 401

        client.cookies.clear()
        await client.post("/softphone/signin", json=CREDENTIALS)
        assert (await client.get("/softphone/session")).status_code == 200
        phone.now += timedelta(hours=13)  # a session lasts 12 hours
        assert (await client.get("/softphone/session")).status_code == 401

    run(tmp_path, test)


def test_signout_clears_the_cookie(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        await client.post("/softphone/signin", json=CREDENTIALS)
        response = await client.post("/softphone/signout")
        assert response.status_code == 200 and "max-age=0" in set_cookie(response).lower()
        assert (await client.get("/softphone/session")).status_code == 401

    run(tmp_path, test)


async def session_with(client: httpx.AsyncClient, cookie: str) -> int:
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, cookie)
    status = (await client.get("/softphone/session")).status_code
    client.cookies.clear()
    return status


async def sign_out_with(client: httpx.AsyncClient, cookie: str | None) -> httpx.Response:
    client.cookies.clear()
    if cookie is not None:
        client.cookies.set(SESSION_COOKIE, cookie)
    response = await client.post("/softphone/signout")
    client.cookies.clear()
    return response


async def revocations(phone: Softphone) -> list[tuple[str, str]]:
    rows = await phone.store._query("dump", "SELECT session_id, expires_at FROM revoked_sessions")
    return [(row["session_id"], row["expires_at"]) for row in rows]


def test_each_session_has_its_own_signed_id_and_signing_out_ends_only_it(
    tmp_path: Path,
) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        cookies = []
        for _ in range(2):
            client.cookies.clear()
            response = await client.post("/softphone/signin", json=CREDENTIALS)
            cookies.append(str(response.cookies[SESSION_COOKIE]))
        first, second = cookies
        key = await SoftphoneAuth(phone.store, lambda: phone.now).key()
        claims = [unseal(key, cookie) for cookie in cookies]
        assert claims[0] is not None and claims[1] is not None
        assert len(claims[0]["s"]) >= 16 and claims[0]["s"] != claims[1]["s"]

        response = await sign_out_with(client, first)
        assert response.status_code == 200 and "max-age=0" in set_cookie(response).lower()
        assert await session_with(client, first) == 401  # any copy of it, anywhere
        assert await session_with(client, second) == 200
        # Kept until the cookie would have expired anyway (12 hours after signing in).
        expiry = (phone.now + timedelta(hours=12)).isoformat(timespec="microseconds")
        assert await revocations(phone) == [(claims[0]["s"], expiry)]

    run(tmp_path, test)


def test_a_signout_without_a_live_session_records_nothing(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        forged = seal(b"not the server secret", {"a": phone.account.id, "u": AGENT,
                                                 "exp": 2**40, "g": "", "s": "forged"})
        client.cookies.clear()
        await client.post("/softphone/signin", json=CREDENTIALS)
        expired = str(client.cookies[SESSION_COOKIE])
        phone.now += timedelta(hours=13)
        for cookie in (None, "junk", forged, expired):
            response = await sign_out_with(client, cookie)
            assert response.status_code == 200 and "max-age=0" in set_cookie(response).lower()
        assert await revocations(phone) == []

    run(tmp_path, test)


def test_a_signout_the_database_cannot_record_is_503_and_keeps_the_cookie(
    tmp_path: Path,
) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        await client.post("/softphone/signin", json=CREDENTIALS)
        cookie = str(client.cookies[SESSION_COOKIE])
        await phone.store.close()  # the server secret is known already; the write fails
        response = await sign_out_with(client, cookie)
        assert response.status_code == 503
        assert response.json()["error_code"] == "STORAGE_UNAVAILABLE"
        assert "set-cookie" not in response.headers  # not signed out: the page stays so

    run(tmp_path, test)


def test_sessions_from_a_signin_link_or_a_launch_token_are_signed_out_alike(
    tmp_path: Path,
) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        auth = SoftphoneAuth(phone.store, lambda: phone.now)
        link = await auth.new_signin_link(phone.account.id, AGENT, timedelta(hours=1))
        client.cookies.clear()
        by_link = await client.post("/softphone/signin-link", data={"token": link})
        client.cookies.clear()
        by_token = await client.get("/softphone/launch", params={"token": token_for(phone)})
        cookies = [str(r.cookies[SESSION_COOKIE]) for r in (by_link, by_token)]
        for cookie in cookies:
            assert await session_with(client, cookie) == 200
            assert (await sign_out_with(client, cookie)).status_code == 200
            assert await session_with(client, cookie) == 401
        assert len(await revocations(phone)) == 2

    run(tmp_path, test)


# -- one-time sign-in links ----------------------------------------------------------------------


def test_a_signin_link_works_once(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        auth = SoftphoneAuth(phone.store, lambda: phone.now)
        token = await auth.new_signin_link(phone.account.id, AGENT, timedelta(hours=1))
        # Opening the link uses nothing: it shows a button that posts the token.
        page = await client.get("/softphone/signin-link", params={"token": token})
        assert page.status_code == 200 and token in page.text
        assert "set-cookie" not in page.headers

        first = await client.post("/softphone/signin-link", data={"token": token})
        assert first.status_code == 303 and first.headers["location"] == "/softphone"
        assert "samesite=strict" in set_cookie(first).lower()
        assert (await client.get("/softphone/session")).json()["crm_username"] == AGENT

        client.cookies.clear()
        again = await client.post("/softphone/signin-link", data={"token": token})
        assert again.status_code == 401 and "set-cookie" not in again.headers

    run(tmp_path, test)


def test_an_expired_or_unknown_signin_link_is_refused(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        auth = SoftphoneAuth(phone.store, lambda: phone.now)
        token = await auth.new_signin_link(phone.account.id, AGENT, timedelta(minutes=5))
        phone.now += timedelta(minutes=6)
        for tried in (token, "made-up"):
            response = await client.post("/softphone/signin-link", data={"token": tried})
            assert response.status_code == 401 and "set-cookie" not in response.headers

    run(tmp_path, test)


def test_signin_links_are_stored_hashed(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        auth = SoftphoneAuth(phone.store, lambda: phone.now)
        token = await auth.new_signin_link(phone.account.id, AGENT, timedelta(hours=1))
        rows = await phone.store._query("dump", "SELECT token_hash FROM signin_links")
        assert [row["token_hash"] for row in rows] != [token] and len(rows) == 1
        assert token not in rows[0]["token_hash"]

    run(tmp_path, test)


# -- launch tokens ---------------------------------------------------------------------------


def test_a_launch_token_signs_in_and_opens_the_call_once(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        token = token_for(phone, from_number="919800000000")
        response = await client.get("/softphone/launch", params={"token": token})
        assert response.status_code == 303
        assert "samesite=strict" in set_cookie(response).lower()
        assert (await client.get("/softphone/session")).json()["crm_username"] == AGENT

        page = await client.get(response.headers["location"])
        assert page.status_code == 200
        data = page_data(page)
        assert data["pending"]["to_number"] == "9876543210"
        assert data["pending"]["uuid"] == "crm-1"
        assert data["pending"]["from_number"] == "919800000000"
        assert data["pending"]["ticket"]  # the pre-authorisation travels on

        client.cookies.clear()
        replay = await client.get("/softphone/launch", params={"token": token})
        assert replay.status_code == 403 and "set-cookie" not in replay.headers

    run(tmp_path, test)


def test_an_expired_launch_token_is_refused(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        token = token_for(phone, now=phone.now.timestamp() - 61)
        response = await client.get("/softphone/launch", params={"token": token})
        assert response.status_code == 403 and "set-cookie" not in response.headers

    run(tmp_path, test)


def test_a_launch_token_living_longer_than_60_s_is_refused(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        with pytest.raises(ValueError, match="expires_in"):
            token_for(phone, expires_in=61)
        # Minted elsewhere with a far expiry, correctly signed.
        token = token_for(phone, now=phone.now.timestamp() + 3600)
        response = await client.get("/softphone/launch", params={"token": token})
        assert response.status_code == 403

    run(tmp_path, test)


def tamper(token: str, **changes: Any) -> str:
    version, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = json.dumps(claims).encode()
    return f"{version}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{signature}"


@pytest.mark.parametrize("mangle", [
    lambda t: tamper(t, to_number="9999999999"),
    lambda t: tamper(t, crm_username="no.password"),
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
    lambda t: "v2" + t[2:],
    lambda t: t.replace(".", "", 1),
    lambda t: "garbage",
])  # fmt: skip
def test_a_tampered_launch_token_is_refused(
    tmp_path: Path, mangle: Callable[[str], str]
) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        response = await client.get("/softphone/launch", params={"token": mangle(token_for(phone))})
        assert response.status_code == 403 and "set-cookie" not in response.headers

    run(tmp_path, test)


def test_a_token_signed_with_another_secret_or_for_an_unknown_agent_is_refused(
    tmp_path: Path,
) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        other = replace(phone.account, launch_secret="lsec_someone-else")
        forged = mint_launch_token(other, AGENT, "9876543210", "u1", now=phone.now.timestamp())
        unknown = token_for(phone, crm_username="ghost")
        for token in (forged, unknown):
            response = await client.get("/softphone/launch", params={"token": token})
            assert response.status_code == 403

    run(tmp_path, test)


def test_launch_tokens_are_refused_when_the_account_has_no_launch_secret(
    tmp_path: Path,
) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        token = token_for(phone)
        await phone.store.set_launch_secret(phone.account.id, None)
        response = await client.get("/softphone/launch", params={"token": token})
        assert response.status_code == 403

    run(tmp_path, test)


# -- the pages -----------------------------------------------------------------------------------


def page_data(response: httpx.Response) -> Any:
    start = response.text.index('id="callbridge-data">') + len('id="callbridge-data">')
    return json.loads(response.text[start : response.text.index("</script>", start)])


def test_launch_by_number_renders_the_call_and_cannot_inject_markup(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        evil = "</script><script>alert(1)</script>"
        response = await client.get("/softphone/launch",
                                    params={"to_number": "9876543210", "uuid": evil})  # fmt: skip
        assert response.status_code == 200
        assert "<script>alert" not in response.text
        assert page_data(response)["pending"] == {
            "to_number": "9876543210", "uuid": evil, "from_number": None, "ticket": None}
        assert "script-src 'self'" in response.headers["content-security-policy"]
        missing = await client.get("/softphone/launch", params={"to_number": "9876543210"})
        assert missing.status_code == 400

    run(tmp_path, test)


def test_a_forged_ticket_is_dropped_from_the_page(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        ticket = seal(b"wrong", {"k": "call", "to": "9876543210", "uuid": "u", "exp": 2**40})
        params = {"to_number": "9876543210", "uuid": "u", "ticket": ticket}
        response = await client.get("/softphone/launch", params=params)
        assert page_data(response)["pending"]["ticket"] is None

    run(tmp_path, test)


def test_the_page_script_and_integration_guide_are_served(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        page = await client.get("/softphone")
        assert page.status_code == 200 and '<script src="/softphone/softphone.js">' in page.text
        assert page_data(page) == {"pending": None}
        script = await client.get("/softphone/softphone.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert "/softphone/ws" in script.text and "NotAllowedError" in script.text
        guide = await client.get("/integration-guide.html")
        assert guide.status_code == 200
        assert f"{PUBLIC_URL}/softphone/launch?token=" in guide.text
        assert "HMAC-SHA256" in guide.text and "signin-link" in guide.text

    run(tmp_path, test)


def test_the_guides_python_snippet_mints_tokens_callbridge_accepts(tmp_path: Path) -> None:
    async def test(phone: Softphone, client: httpx.AsyncClient) -> None:
        guide = (await client.get("/integration-guide.html")).text
        start = guide.index("<pre><code>import base64")
        code = guide[start + len("<pre><code>") : guide.index("# In the view", start)]
        code = code.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
        namespace: dict[str, Any] = {}
        exec(code, namespace)
        token = namespace["launch_token"](launch_secret_of(phone), phone.account.id, AGENT,
                                          "9876543210", "crm-9")  # fmt: skip
        auth = SoftphoneAuth(phone.store, lambda: phone.now)
        phone.now = phone.now.fromtimestamp(json_exp(token) - 30, phone.now.tzinfo)
        session, call = await auth.use_launch_token(token)
        assert (session.crm_username, call.uuid, call.authorised) == (AGENT, "crm-9", True)

    run(tmp_path, test)


def launch_secret_of(phone: Softphone) -> str:
    assert phone.account.launch_secret is not None
    return phone.account.launch_secret


def json_exp(token: str) -> int:
    payload = token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def test_sealed_values_do_not_verify_under_another_key() -> None:
    token = seal(b"k1", {"a": 1})
    assert unseal(b"k1", token) == {"a": 1}
    assert unseal(b"k2", token) is None


# -- the admin commands ----------------------------------------------------------------------


def test_admin_sets_a_password_and_prints_a_working_signin_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    db = f"sqlite:///{tmp_path / 'admin.db'}"
    monkeypatch.setenv("CALLBRIDGE_STORAGE_DATABASE_URL", db)
    monkeypatch.setenv("CALLBRIDGE_HTTP_PUBLIC_URL", "https://calls.example.com")

    def admin(*args: str, stdin: str = "") -> Any:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert cli_main([*args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    admin("account", "create", "acme", "--callback-url", "https://crm.example.com/cb")
    admin("agent", "add", "acme", AGENT, "--password", stdin=PASSWORD + "\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli_main(["agent", "password", "acme", AGENT]) == 1
    assert "at least 8" in capsys.readouterr().err
    link = admin("agent", "signin-link", "acme", AGENT, "--hours", "2")
    assert link["url"].startswith("https://calls.example.com/softphone/signin-link?token=")
    secret = admin("account", "launch-secret", "acme")["launch_secret"]
    assert secret.startswith("lsec_")
    listed = admin("account", "list")
    assert all("launch_secret" not in a for a in listed)

    async def check() -> None:
        from callbridge.store import open_store

        store = await open_store(db)
        try:
            account = await store.find_account("acme")
            assert account is not None and account.launch_secret == secret
            auth = SoftphoneAuth(store, lambda: phone_now())
            assert await auth.sign_in("acme", AGENT, PASSWORD) is not None
            token = link["url"].split("token=")[1]
            assert await auth.use_signin_link(token) is not None
            assert await auth.use_signin_link(token) is None
        finally:
            await store.close()

    asyncio.run(check())


def phone_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
