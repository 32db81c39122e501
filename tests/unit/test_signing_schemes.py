"""Every signature scheme, each checked against a verifier the watcher did not write.

standard: the ``standardwebhooks`` package; databricks and github: the recipes from their docs,
written out inline here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from watcher.model import EventType
from watcher.payloads import FormatOptions, example_event, render
from watcher.receiver import Receiver, decode_body
from watcher.signing import (
    DEFAULT_TOLERANCE,
    MLFLOW_DELIVERY_ID,
    MLFLOW_TIMESTAMP,
    SCHEMES,
    check_secret,
    detect_scheme,
    sign,
    verify,
)

DELIVERY_ID = "5b0f8a52-59a4-5c43-9f52-2e3b7d1c0a11"
BODY = '{"event":"MODEL_VERSION_TRANSITIONED_STAGE","model_name":"fraud-détecteur"}'.encode()
PLAIN_SECRET = "plain-shared-secret"


def whsec(seed: bytes) -> str:
    """A Standard Webhooks secret: whsec_ + base64 of a 32-byte key."""
    return "whsec_" + base64.b64encode(hashlib.sha256(seed).digest()).decode()


CURRENT = whsec(b"current")
OLD = whsec(b"old")
OLDER = whsec(b"older")

SIGNED_SCHEMES = [s for s in SCHEMES if s != "none"]


def secret_for(scheme: str) -> str:
    return CURRENT if scheme == "standard" else PLAIN_SECRET


def now_signed(scheme: str) -> dict[str, str]:
    return sign(scheme, secret_for(scheme), DELIVERY_ID, BODY)


# --------------------------------------------------------------------------- standard


def test_standard_headers_follow_the_spec() -> None:
    stamp = int(time.time())
    headers = sign("standard", CURRENT, DELIVERY_ID, BODY, timestamp=stamp)
    assert headers["webhook-id"] == DELIVERY_ID
    assert headers["webhook-timestamp"] == str(stamp)
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    # The delivery headers every scheme carries.
    assert headers[MLFLOW_DELIVERY_ID] == DELIVERY_ID
    assert headers[MLFLOW_TIMESTAMP] == str(stamp)


def test_standard_is_verified_by_the_standardwebhooks_package() -> None:
    headers = sign("standard", CURRENT, DELIVERY_ID, BODY)
    payload = Webhook(CURRENT).verify(BODY, headers)
    assert payload["model_name"] == "fraud-détecteur"


def test_standardwebhooks_rejects_a_tampered_body_or_another_key() -> None:
    headers = sign("standard", CURRENT, DELIVERY_ID, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(CURRENT).verify(BODY.replace(b"fraud", b"fraux"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY, headers)


def test_standard_rotation_signs_with_every_key_current_first() -> None:
    headers = sign("standard", CURRENT, DELIVERY_ID, BODY, previous_secrets=[OLD, OLDER])
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 3
    assert all(s.startswith("v1,") for s in signatures)
    alone = sign(
        "standard", CURRENT, DELIVERY_ID, BODY, timestamp=int(headers["webhook-timestamp"])
    )
    assert signatures[0] == alone["webhook-signature"]
    # A receiver that knows only one of the keys, old or new, still verifies.
    for key in (CURRENT, OLD, OLDER):
        assert Webhook(key).verify(BODY, headers)["model_name"] == "fraud-détecteur"
        assert verify("standard", [key], headers, BODY) is None
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec(b"never-used")).verify(BODY, headers)


def test_standard_verify_accepts_the_packages_own_signature() -> None:
    stamp = int(time.time())
    reference = Webhook(CURRENT)
    signature = reference.sign(DELIVERY_ID, _utc(stamp), BODY.decode())
    headers = {
        "webhook-id": DELIVERY_ID,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }
    assert verify("standard", [CURRENT], headers, BODY) is None
    assert verify("standard", [OLD], headers, BODY) == "signature mismatch"


def test_standard_receiver_in_rotation_accepts_any_of_its_keys() -> None:
    headers = sign("standard", OLD, DELIVERY_ID, BODY)
    assert verify("standard", [CURRENT, OLD], headers, BODY) is None


def test_standard_needs_a_whsec_secret_to_sign() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        sign("standard", PLAIN_SECRET, DELIVERY_ID, BODY)
    with pytest.raises(ValueError, match="whsec_"):
        sign("standard", CURRENT, DELIVERY_ID, BODY, previous_secrets=["not-a-key"])


def _utc(stamp: int) -> datetime:
    return datetime.fromtimestamp(stamp, tz=UTC)


# --------------------------------------------------------------------------- databricks, github


def databricks_reference(secret: str, body: bytes) -> str:
    """Databricks' documented check: hex HMAC-SHA256 of the raw body with the shared secret."""
    return hmac.new(bytes(secret, "utf-8"), msg=body, digestmod=hashlib.sha256).hexdigest()


def github_reference_verify(secret: str, body: bytes, signature_header: str) -> bool:
    """GitHub's documented recipe ("Validating webhook deliveries"), written out here."""
    hash_object = hmac.new(secret.encode("utf-8"), msg=body, digestmod=hashlib.sha256)
    expected_signature = "sha256=" + hash_object.hexdigest()
    return hmac.compare_digest(expected_signature, signature_header)


def test_databricks_signature_is_lowercase_hex_of_the_body() -> None:
    headers = sign("databricks", PLAIN_SECRET, DELIVERY_ID, BODY, timestamp=1)
    signature = headers["X-Databricks-Signature"]
    assert signature == databricks_reference(PLAIN_SECRET, BODY)
    assert signature == signature.lower()
    assert len(signature) == 64
    # The body alone is signed: another delivery id or time gives the same signature.
    assert (
        sign("databricks", PLAIN_SECRET, "other", BODY, timestamp=2)["X-Databricks-Signature"]
        == signature
    )


def test_github_signature_passes_githubs_recipe() -> None:
    headers = sign("github", PLAIN_SECRET, DELIVERY_ID, BODY)
    assert headers["X-Hub-Signature-256"].startswith("sha256=")
    assert github_reference_verify(PLAIN_SECRET, BODY, headers["X-Hub-Signature-256"])
    assert not github_reference_verify("wrong", BODY, headers["X-Hub-Signature-256"])
    assert not github_reference_verify(PLAIN_SECRET, BODY + b" ", headers["X-Hub-Signature-256"])


def test_github_example_from_the_docs() -> None:
    # GitHub's documentation test values for X-Hub-Signature-256.
    headers = sign("github", "It's a Secret to Everybody", DELIVERY_ID, b"Hello, World!")
    assert headers["X-Hub-Signature-256"] == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_verify_accepts_references_for_databricks_and_github() -> None:
    databricks = {"x-databricks-signature": databricks_reference(PLAIN_SECRET, BODY)}
    assert verify("databricks", [PLAIN_SECRET], databricks, BODY) is None
    github = {"X-HUB-SIGNATURE-256": "sha256=" + databricks_reference(PLAIN_SECRET, BODY)}
    assert verify("github", [PLAIN_SECRET], github, BODY) is None


# --------------------------------------------------------------------------- every scheme


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_every_scheme_round_trips(scheme: str) -> None:
    headers = now_signed(scheme)
    assert verify(scheme, [secret_for(scheme)], headers, BODY) is None
    assert detect_scheme(headers) == scheme
    assert headers[MLFLOW_DELIVERY_ID] == DELIVERY_ID


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_verify_rejects_a_tampered_body(scheme: str) -> None:
    headers = now_signed(scheme)
    tampered = BODY.replace(b"fraud", b"fraux")
    assert verify(scheme, [secret_for(scheme)], headers, tampered) == "signature mismatch"


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_verify_rejects_another_secret(scheme: str) -> None:
    headers = now_signed(scheme)
    other = OLD if scheme == "standard" else "another-secret"
    assert verify(scheme, [other], headers, BODY) == "signature mismatch"


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_verify_rejects_a_tampered_signature(scheme: str) -> None:
    headers = now_signed(scheme)
    name = next(k for k in headers if k.lower() in _SIGNATURE_NAMES)
    value = headers[name]
    flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    assert verify(scheme, [secret_for(scheme)], {**headers, name: flipped}, BODY) is not None


_SIGNATURE_NAMES = {
    "x-mlflow-signature",
    "webhook-signature",
    "x-databricks-signature",
    "x-hub-signature-256",
}


@pytest.mark.parametrize("scheme", ["mlflow", "standard"])
def test_timed_schemes_reject_a_tampered_id_or_timestamp(scheme: str) -> None:
    headers = now_signed(scheme)
    id_header = "webhook-id" if scheme == "standard" else MLFLOW_DELIVERY_ID
    time_header = "webhook-timestamp" if scheme == "standard" else MLFLOW_TIMESTAMP
    secret = [secret_for(scheme)]
    assert (
        verify(scheme, secret, {**headers, id_header: "another-id"}, BODY) == "signature mismatch"
    )
    later = str(int(headers[time_header]) + 1)
    assert verify(scheme, secret, {**headers, time_header: later}, BODY) == "signature mismatch"


@pytest.mark.parametrize("scheme", ["mlflow", "standard"])
def test_timed_schemes_reject_stale_requests(scheme: str) -> None:
    headers = sign(scheme, secret_for(scheme), DELIVERY_ID, BODY, timestamp=1_700_000_000)
    secret = [secret_for(scheme)]
    late = 1_700_000_000 + DEFAULT_TOLERANCE + 1
    assert (
        verify(scheme, secret, headers, BODY, now=late) == "timestamp outside the tolerance window"
    )
    assert verify(scheme, secret, headers, BODY, now=late, tolerance=DEFAULT_TOLERANCE + 5) is None


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_verify_reports_missing_headers(scheme: str) -> None:
    headers = sign("none", None, DELIVERY_ID, BODY)
    assert verify(scheme, [secret_for(scheme)], headers, BODY) == "missing signature headers"


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_verify_needs_a_secret(scheme: str) -> None:
    assert verify(scheme, [], now_signed(scheme), BODY) == "no secret to verify with"


def test_verify_standard_with_a_plain_secret_says_why() -> None:
    reason = verify("standard", [PLAIN_SECRET], now_signed("standard"), BODY)
    assert reason is not None
    assert "whsec_" in reason


def test_verify_unknown_scheme() -> None:
    assert verify("md5", [PLAIN_SECRET], {}, BODY) == "unknown signature scheme 'md5'"


def test_scheme_none_signs_nothing_and_is_detected_as_unsigned() -> None:
    headers = sign("none", None, DELIVERY_ID, BODY, timestamp=5)
    assert headers == {MLFLOW_DELIVERY_ID: DELIVERY_ID, MLFLOW_TIMESTAMP: "5"}
    assert detect_scheme(headers) is None


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_signed_schemes_need_a_secret(scheme: str) -> None:
    with pytest.raises(ValueError, match="needs a secret"):
        sign(scheme, None, DELIVERY_ID, BODY)


def test_only_standard_carries_previous_secrets() -> None:
    for scheme in ("mlflow", "databricks", "github"):
        rotated = sign(scheme, PLAIN_SECRET, DELIVERY_ID, BODY, timestamp=9, previous_secrets=["x"])
        assert rotated == sign(scheme, PLAIN_SECRET, DELIVERY_ID, BODY, timestamp=9)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-MLflow-Signature": "v1,x"}, "mlflow"),
        ({"Webhook-Signature": "v1,x"}, "standard"),
        ({"x-databricks-signature": "ab"}, "databricks"),
        ({"X-Hub-Signature-256": "sha256=ab"}, "github"),
        ({"X-MLflow-Delivery-Id": "d"}, None),
        ({}, None),
    ],
)
def test_detect_scheme(headers: dict[str, str], expected: str | None) -> None:
    assert detect_scheme(headers) == expected


# --------------------------------------------------------------------------- check_secret

_GOOD = [
    ("mlflow", "anything"),
    ("databricks", "anything"),
    ("github", "anything"),
    ("standard", CURRENT),
    ("standard", CURRENT.rstrip("=")),  # unpadded base64 is accepted, as the package does
    ("none", ""),
]
_BAD: list[tuple[str, str, Callable[[str], bool]]] = [
    ("standard", PLAIN_SECRET, lambda m: "whsec_" in m),
    ("standard", "whsec_!!!not base64!!!", lambda m: "base64" in m),
    ("standard", "whsec_" + base64.b64encode(b"short").decode(), lambda m: "24 bytes" in m),
    ("mlflow", "", lambda m: "non-empty" in m),
    ("github", "", lambda m: "non-empty" in m),
    ("md5", "x", lambda m: "mlflow" in m and "standard" in m),
]


@pytest.mark.parametrize(("scheme", "secret"), _GOOD)
def test_check_secret_accepts(scheme: str, secret: str) -> None:
    assert check_secret(scheme, secret) is None


@pytest.mark.parametrize(("scheme", "secret", "says"), _BAD)
def test_check_secret_says_what_was_expected(
    scheme: str, secret: str, says: Callable[[str], bool]
) -> None:
    expected = check_secret(scheme, secret)
    assert expected is not None
    assert says(expected), expected


def test_a_secret_check_secret_accepts_can_sign_and_verify() -> None:
    for scheme, secret in _GOOD:
        if scheme == "none":
            continue
        headers = sign(scheme, secret, DELIVERY_ID, BODY)
        assert verify(scheme, [secret], headers, BODY) is None


# --------------------------------------------------------------------------- the receive command


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[str | None], Receiver]]:
    made: list[Receiver] = []

    def make(secret: str | None) -> Receiver:
        receiver = Receiver("127.0.0.1", 0, secret=secret, out=io.StringIO())
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.server.server_close()


@pytest.mark.parametrize("scheme", SIGNED_SCHEMES)
def test_receiver_detects_and_verifies_every_scheme(
    scheme: str, receiver_factory: Callable[[str | None], Receiver]
) -> None:
    receiver = receiver_factory(secret_for(scheme))
    headers = now_signed(scheme)
    status, answer = receiver.handle("/hook", headers, BODY)
    assert (status, answer) == (200, {"ok": True})
    assert isinstance(receiver.out, io.StringIO)
    assert f"signature: valid ({scheme})" in receiver.out.getvalue()
    status, answer = receiver.handle("/hook", headers, BODY + b" ")
    assert status == 401
    assert answer["error"] == f"INVALID: signature mismatch ({scheme})"


def test_receiver_refuses_unsigned_requests_when_it_has_a_secret(
    receiver_factory: Callable[[str | None], Receiver],
) -> None:
    receiver = receiver_factory(PLAIN_SECRET)
    status, answer = receiver.handle("/hook", sign("none", None, DELIVERY_ID, BODY), BODY)
    assert (status, answer["error"]) == (401, "INVALID: no signature header")
    unchecked = receiver_factory(None)
    assert unchecked.handle("/hook", {}, BODY)[0] == 200


def test_receiver_prints_a_form_body_as_a_dict_without_the_token() -> None:
    rendered = render(
        example_event(EventType.MODEL_VERSION_TRANSITIONED_STAGE),
        "ci",
        FormatOptions(format="gitlab", token="glptt-secret-token"),
    )
    decoded = decode_body({"content-type": rendered.content_type}, rendered.body)
    assert decoded["token"] == "***"
    assert decoded["ref"] == "main"
    assert decoded["variables[MODEL_NAME]"] == "fraud-model"
    assert decode_body({}, b'{"a": 1}') == {"a": 1}
    assert decode_body({}, b"plain text") == "plain text"
