"""Standard Webhooks signing: the specification's published test vector, and verify()."""

import base64

import pytest

from callbridge.webhooks import signing

# The vector every Standard Webhooks library tests against (standard-webhooks/standard-webhooks).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def vector_headers(**changes: str) -> dict[str, str]:
    found = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": SIGNATURE,
    }
    return {**found, **changes}


def test_sign_reproduces_the_published_vector() -> None:
    assert signing.sign(SECRET, MSG_ID, TIMESTAMP, BODY) == SIGNATURE


def test_headers_carry_id_timestamp_and_signature() -> None:
    assert signing.headers(SECRET, MSG_ID, TIMESTAMP, BODY) == vector_headers()


def test_verify_accepts_the_published_vector() -> None:
    assert signing.verify(SECRET, vector_headers(), BODY, now=TIMESTAMP)


def test_verify_matches_header_names_in_any_case() -> None:
    shouted = {name.upper(): value for name, value in vector_headers().items()}
    assert signing.verify(SECRET, shouted, BODY, now=TIMESTAMP)


def test_verify_rejects_a_tampered_body() -> None:
    assert not signing.verify(SECRET, vector_headers(), b'{"test": 2432232315}', now=TIMESTAMP)


def test_verify_rejects_another_message_id() -> None:
    headers = vector_headers(**{"webhook-id": "msg_other"})
    assert not signing.verify(SECRET, headers, BODY, now=TIMESTAMP)


def test_verify_rejects_the_wrong_secret() -> None:
    assert not signing.verify(signing.new_secret(), vector_headers(), BODY, now=TIMESTAMP)


def test_verify_rejects_a_timestamp_changed_after_signing() -> None:
    headers = vector_headers(**{"webhook-timestamp": str(TIMESTAMP + 1)})
    assert not signing.verify(SECRET, headers, BODY, now=TIMESTAMP)


@pytest.mark.parametrize("skew", [-301, 301, -10_000])
def test_verify_rejects_a_timestamp_outside_the_tolerance(skew: int) -> None:
    assert not signing.verify(SECRET, vector_headers(), BODY, now=TIMESTAMP - skew)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_verify_accepts_a_timestamp_at_the_edge_of_the_tolerance(skew: int) -> None:
    assert signing.verify(SECRET, vector_headers(), BODY, now=TIMESTAMP - skew)


def test_verify_honours_a_custom_tolerance() -> None:
    assert not signing.verify(SECRET, vector_headers(), BODY, now=TIMESTAMP + 11, tolerance=10)


def test_verify_accepts_one_match_among_several_signatures() -> None:
    # A sender rotating its secret signs with both; the list is space-separated.
    other = signing.sign(signing.new_secret(), MSG_ID, TIMESTAMP, BODY)
    for listed in (f"{other} {SIGNATURE}", f"{SIGNATURE} {other}"):
        headers = vector_headers(**{"webhook-signature": listed})
        assert signing.verify(SECRET, headers, BODY, now=TIMESTAMP)


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "v1,",
        "v1,not base64!",
        "v2," + SIGNATURE.removeprefix("v1,"),  # a version we don't know is skipped
        SIGNATURE.removeprefix("v1,"),
        "v1," + base64.b64encode(b"\0" * 32).decode(),
    ],
)
def test_verify_rejects_malformed_or_foreign_signatures(signature: str) -> None:
    headers = vector_headers(**{"webhook-signature": signature})
    assert not signing.verify(SECRET, headers, BODY, now=TIMESTAMP)


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_rejects_a_missing_header(name: str) -> None:
    headers = vector_headers()
    del headers[name]
    assert not signing.verify(SECRET, headers, BODY, now=TIMESTAMP)


@pytest.mark.parametrize("timestamp", ["", "abc", "1614265330.5", "-1614265330", "١٢٣"])
def test_verify_rejects_a_timestamp_that_is_not_whole_seconds(timestamp: str) -> None:
    headers = vector_headers(**{"webhook-timestamp": timestamp})
    assert not signing.verify(SECRET, headers, BODY, now=TIMESTAMP)


def test_new_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = signing.new_secret(), signing.new_secret()
    assert first.startswith("whsec_")
    assert len(signing.secret_key(first)) == 32
    assert first != second


def test_secret_key_accepts_the_bare_key_and_trimmed_padding() -> None:
    key = signing.secret_key(SECRET)
    assert signing.secret_key(SECRET.removeprefix("whsec_")) == key
    padded = "whsec_" + base64.b64encode(b"short").decode()
    assert padded.endswith("=")
    assert signing.secret_key(padded.rstrip("=")) == b"short"


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!", "whsec_a"])
def test_secret_key_rejects_empty_or_malformed_secrets(secret: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        signing.secret_key(secret)
