"""The pieces of the origin policy and of API keys, without the app."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from callbridge.api.auth import hash_api_key, key_prefix, new_api_key
from callbridge.api.errors import ApiError
from callbridge.api.origin import (
    check_origin,
    client_address,
    normalize_origin,
    parse_networks,
)
from callbridge.store.models import Account

PROXIES = parse_networks(["10.0.0.1", "10.0.1.0/24"])


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.5", [], "203.0.113.5"),
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # not a proxy of ours: ignored
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", ["1.1.1.1, 198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", ["198.51.100.1, 10.0.1.7"], "198.51.100.1"),  # two proxies deep
        ("10.0.0.1", ["198.51.100.1", "10.0.1.7"], "198.51.100.1"),  # two headers, in order
        ("10.0.0.1", ["10.0.1.7"], "10.0.1.7"),  # only proxies: the farthest
        ("10.0.0.1", [" 2001:db8::1 "], "2001:db8::1"),
        ("::ffff:10.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # IPv4-mapped peer
        ("10.0.0.1", ["::ffff:198.51.100.1"], "198.51.100.1"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], expected: str) -> None:
    assert client_address(peer, forwarded, PROXIES) == ip(expected)


@pytest.mark.parametrize(
    ("peer", "forwarded"),
    [(None, []), ("10.0.0.1", ["unknown"]), ("10.0.0.1", ["198.51.100.1:443"]),
     ("10.0.0.1", [""])],
)
def test_an_address_that_cannot_be_established_is_none(
        peer: str | None, forwarded: list[str]) -> None:
    assert client_address(peer, forwarded, PROXIES) is None


def account(cidrs: tuple[str, ...] = (), origins: tuple[str, ...] = ()) -> Account:
    return Account("a1", "acme", "http://crm.test/cb", "whsec_x", cidrs, origins)


def test_no_restriction_lets_everything_in() -> None:
    check_origin(account(), None, "https://anything.example")


def test_a_malformed_stored_cidr_allows_nothing_rather_than_failing() -> None:
    restricted = account(cidrs=("not-a-cidr", "192.0.2.0/24"))
    check_origin(restricted, ip("192.0.2.9"), None)
    with pytest.raises(ApiError) as refused:
        check_origin(restricted, ip("198.51.100.1"), None)
    assert (refused.value.status, refused.value.error_code) == (403, "ORIGIN_NOT_ALLOWED")


def test_both_restrictions_must_pass() -> None:
    both = account(cidrs=("192.0.2.0/24",), origins=("https://crm.example.com",))
    check_origin(both, ip("192.0.2.9"), "https://crm.example.com")
    check_origin(both, ip("192.0.2.9"), None)
    for client, origin in [(ip("198.51.100.1"), "https://crm.example.com"),
                           (ip("192.0.2.9"), "https://evil.example")]:
        with pytest.raises(ApiError):
            check_origin(both, client, origin)


def test_an_ipv6_client_and_ipv4_networks_do_not_match() -> None:
    with pytest.raises(ApiError):
        check_origin(account(cidrs=("0.0.0.0/0",)), ip("2001:db8::1"), None)


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("https://crm.example.com", "https://crm.example.com"),
        ("HTTPS://CRM.Example.COM:443/", "https://crm.example.com"),
        ("http://crm.example.com:80", "http://crm.example.com"),
        ("http://crm.example.com:8080", "http://crm.example.com:8080"),
        ("https://[2001:DB8::1]:443", "https://[2001:db8::1]"),
        ("null", "null"),
        ("https://crm.example.com:99999", "https://crm.example.com:99999"),
    ],
)
def test_normalize_origin(written: str, normal: str) -> None:
    assert normalize_origin(written) == normal


def test_api_keys_are_random_prefixed_and_hashed() -> None:
    key = new_api_key()
    assert key.startswith("cb_") and len(key) == 35
    assert new_api_key() != key
    # The stored form is SHA-256 hex of the key's text: what the admin commands store.
    assert hash_api_key("cb_test") == hashlib.sha256(b"cb_test").hexdigest()
    assert hash_api_key(key) != hash_api_key(new_api_key())
    assert key_prefix(key) == key[:8]
