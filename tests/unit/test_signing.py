"""Signature headers, checked against an independent implementation of MLflow's recipe."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from watcher.signing import (
    DEFAULT_TOLERANCE,
    MLFLOW_DELIVERY_ID,
    MLFLOW_SIGNATURE,
    MLFLOW_TIMESTAMP,
    bearer_token,
    same_secret,
    sign,
    verify_mlflow,
)

SECRET = "whsec-test-secret"
DELIVERY_ID = "5b0f8a52-59a4-5c43-9f52-2e3b7d1c0a11"
TIMESTAMP = 1_700_000_000
BODY = '{"event":"MODEL_VERSION_TRANSITIONED_STAGE","model_name":"fraud-détecteur"}'.encode()


def reference_mlflow_signature(secret: str, delivery_id: str, timestamp: str, payload: str) -> str:
    """MLflow's documented recipe (mlflow/webhooks/delivery.py), written out independently."""
    signed_content = f"{delivery_id}.{timestamp}.{payload}"
    digest = hmac.new(secret.encode("utf-8"), signed_content.encode("utf-8"), hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode("utf-8")


def signed_headers(body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    return sign("mlflow", secret, DELIVERY_ID, body, timestamp=TIMESTAMP)


def test_mlflow_scheme_matches_mlflows_recipe() -> None:
    headers = signed_headers()
    assert headers[MLFLOW_DELIVERY_ID] == DELIVERY_ID
    assert headers[MLFLOW_TIMESTAMP] == str(TIMESTAMP)
    expected = reference_mlflow_signature(
        SECRET, DELIVERY_ID, headers[MLFLOW_TIMESTAMP], BODY.decode("utf-8")
    )
    assert headers[MLFLOW_SIGNATURE] == expected
    assert headers[MLFLOW_SIGNATURE].startswith("v1,")


def test_header_names_are_mlflows() -> None:
    assert set(signed_headers()) == {
        "X-MLflow-Signature",
        "X-MLflow-Delivery-Id",
        "X-MLflow-Timestamp",
    }


def test_signature_covers_the_body_and_the_delivery_id() -> None:
    def signature(delivery_id: str, timestamp: int, body: bytes) -> str:
        return sign("mlflow", SECRET, delivery_id, body, timestamp=timestamp)[MLFLOW_SIGNATURE]

    base = signature(DELIVERY_ID, TIMESTAMP, BODY)
    assert signature(DELIVERY_ID, TIMESTAMP, BODY) == base
    assert signature(DELIVERY_ID, TIMESTAMP, BODY + b" ") != base
    assert signature("other-id", TIMESTAMP, BODY) != base
    assert signature(DELIVERY_ID, TIMESTAMP + 1, BODY) != base


def test_sign_uses_the_current_time_when_no_timestamp_is_given() -> None:
    headers = sign("mlflow", SECRET, DELIVERY_ID, BODY)
    timestamp = headers[MLFLOW_TIMESTAMP]
    assert timestamp.isdigit()
    assert headers[MLFLOW_SIGNATURE] == reference_mlflow_signature(
        SECRET, DELIVERY_ID, timestamp, BODY.decode()
    )
    assert verify_mlflow(SECRET, headers, BODY) is None


def test_verify_accepts_an_authentic_fresh_request() -> None:
    assert verify_mlflow(SECRET, signed_headers(), BODY, now=TIMESTAMP + 10) is None


def test_verify_accepts_a_request_signed_by_the_reference() -> None:
    headers = {
        MLFLOW_DELIVERY_ID: DELIVERY_ID,
        MLFLOW_TIMESTAMP: str(TIMESTAMP),
        MLFLOW_SIGNATURE: reference_mlflow_signature(
            SECRET, DELIVERY_ID, str(TIMESTAMP), BODY.decode()
        ),
    }
    assert verify_mlflow(SECRET, headers, BODY, now=TIMESTAMP) is None


def test_verify_rejects_a_wrong_secret() -> None:
    assert verify_mlflow("wrong", signed_headers(), BODY, now=TIMESTAMP) == "signature mismatch"


def test_verify_rejects_a_tampered_body() -> None:
    tampered = BODY.replace(b"fraud", b"fraux")
    assert verify_mlflow(SECRET, signed_headers(), tampered, now=TIMESTAMP) == "signature mismatch"


def test_verify_rejects_a_tampered_delivery_id() -> None:
    headers = {**signed_headers(), MLFLOW_DELIVERY_ID: "another-id"}
    assert verify_mlflow(SECRET, headers, BODY, now=TIMESTAMP) == "signature mismatch"


@pytest.mark.parametrize("skew", [DEFAULT_TOLERANCE + 1, -(DEFAULT_TOLERANCE + 1), 86_400])
def test_verify_rejects_a_stale_or_future_timestamp(skew: int) -> None:
    reason = verify_mlflow(SECRET, signed_headers(), BODY, now=TIMESTAMP + skew)
    assert reason == "timestamp outside the tolerance window"


def test_verify_tolerance_is_configurable() -> None:
    headers = signed_headers()
    assert verify_mlflow(SECRET, headers, BODY, now=TIMESTAMP + 60, tolerance=30) is not None
    assert verify_mlflow(SECRET, headers, BODY, now=TIMESTAMP + 60, tolerance=120) is None


@pytest.mark.parametrize("missing", [MLFLOW_SIGNATURE, MLFLOW_DELIVERY_ID, MLFLOW_TIMESTAMP])
def test_verify_rejects_missing_headers(missing: str) -> None:
    headers = {k: v for k, v in signed_headers().items() if k != missing}
    assert verify_mlflow(SECRET, headers, BODY, now=TIMESTAMP) == "missing signature headers"


def test_verify_rejects_a_malformed_timestamp() -> None:
    headers = {**signed_headers(), MLFLOW_TIMESTAMP: "yesterday"}
    assert verify_mlflow(SECRET, headers, BODY, now=TIMESTAMP) == "malformed timestamp"


def test_verify_header_lookup_is_case_insensitive() -> None:
    lower = {k.lower(): v for k, v in signed_headers().items()}
    upper = {k.upper(): v for k, v in signed_headers().items()}
    assert verify_mlflow(SECRET, lower, BODY, now=TIMESTAMP) is None
    assert verify_mlflow(SECRET, upper, BODY, now=TIMESTAMP) is None


def test_scheme_none_has_no_signature_header() -> None:
    headers = sign("none", None, DELIVERY_ID, BODY, timestamp=TIMESTAMP)
    assert {k.lower() for k in headers}.isdisjoint({"x-mlflow-signature"})
    assert headers[MLFLOW_DELIVERY_ID] == DELIVERY_ID
    assert headers[MLFLOW_TIMESTAMP] == str(TIMESTAMP)
    assert verify_mlflow(SECRET, headers, BODY, now=TIMESTAMP) == "missing signature headers"


def test_scheme_none_ignores_a_secret() -> None:
    headers = sign("none", SECRET, DELIVERY_ID, BODY, timestamp=TIMESTAMP)
    assert MLFLOW_SIGNATURE not in headers


def test_unknown_scheme_raises() -> None:
    with pytest.raises(ValueError, match="unknown signature scheme"):
        sign("md5", SECRET, DELIVERY_ID, BODY, timestamp=TIMESTAMP)


@pytest.mark.parametrize("secret", [None, ""])
def test_mlflow_scheme_without_a_secret_raises(secret: str | None) -> None:
    with pytest.raises(ValueError, match="needs a secret"):
        sign("mlflow", secret, DELIVERY_ID, BODY, timestamp=TIMESTAMP)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer s3cret", "s3cret"),
        ("bearer  s3cret ", "s3cret"),
        ("Basic czNjcmV0", None),
        ("s3cret", None),
        ("", None),
        (None, None),
    ],
)
def test_a_bearer_token_comes_from_its_header_only(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_secrets_are_compared_whole_and_any_text_compares() -> None:
    assert same_secret("s3cret", "s3cret")
    assert not same_secret("s3cre", "s3cret")
    assert not same_secret("s3cret", "")
    assert same_secret("clé", "clé")  # not only ASCII: compared as UTF-8 bytes
