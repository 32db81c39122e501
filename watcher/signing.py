"""Signature headers for each scheme, and verify() helpers for receivers and tests.

The signature always covers the exact bytes sent. Every delivery also carries
``X-MLflow-Delivery-Id`` and ``X-MLflow-Timestamp``, whatever the scheme, so receivers can
deduplicate on the delivery id.

========== ======================================= ==============================================
scheme     signature header                        signed content
========== ======================================= ==============================================
mlflow     X-MLflow-Signature: v1,<base64>         HMAC-SHA256(secret, "{id}.{timestamp}.{body}")
standard   webhook-signature: v1,<base64> [...]    HMAC-SHA256(base64-decoded whsec_ key,
           (with webhook-id, webhook-timestamp)    "{id}.{timestamp}.{body}"), one per key
databricks X-Databricks-Signature: <hex>           HMAC-SHA256(secret, body)
github     X-Hub-Signature-256: sha256=<hex>       HMAC-SHA256(secret, body)
none       -                                       -
========== ======================================= ==============================================

Only ``standard`` can carry several signatures, so only it uses ``previous_secrets`` (a key
rotation: receivers that know only the old key keep verifying). The databricks and github
schemes sign the body alone: their signature does not protect against replays.

Every secret a request offers is compared in constant time (:func:`same_secret`): the
signatures here, and the bearer tokens of the health server and the console.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

SCHEMES = ("mlflow", "standard", "databricks", "github", "none")

MLFLOW_SIGNATURE = "X-MLflow-Signature"
MLFLOW_DELIVERY_ID = "X-MLflow-Delivery-Id"
MLFLOW_TIMESTAMP = "X-MLflow-Timestamp"
MLFLOW_SIGNATURE_VERSION = "v1"

STANDARD_ID = "webhook-id"
STANDARD_TIMESTAMP = "webhook-timestamp"
STANDARD_SIGNATURE = "webhook-signature"
STANDARD_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
STANDARD_MIN_KEY_BYTES = 24
"""The Standard Webhooks spec asks for keys of 24 to 64 bytes; shorter ones are refused."""

DATABRICKS_SIGNATURE = "X-Databricks-Signature"
GITHUB_SIGNATURE = "X-Hub-Signature-256"

DEFAULT_TOLERANCE = 300
"""Seconds a receiver accepts between the signed timestamp and its own clock (replay window)."""

_SIGNATURE_HEADERS = (
    (STANDARD_SIGNATURE, "standard"),
    (MLFLOW_SIGNATURE, "mlflow"),
    (GITHUB_SIGNATURE, "github"),
    (DATABRICKS_SIGNATURE, "databricks"),
)


# --------------------------------------------------------------------------- recipes


def mlflow_signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """MLflow's native webhook scheme: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{MLFLOW_SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64-decoded after the whsec_ prefix.

    Raises ValueError for a secret that is not one (see :func:`check_secret`).
    """
    problem = _standard_secret_problem(secret)
    if problem is not None:
        raise ValueError(f"a Standard Webhooks secret must be {problem}")
    return _decode_standard(secret)


def _decode_standard(secret: str) -> bytes:
    encoded = secret.removeprefix(STANDARD_SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


def _standard_secret_problem(secret: str) -> str | None:
    expected = (
        f'"{STANDARD_SECRET_PREFIX}" followed by the base64 of a random key of '
        f"at least {STANDARD_MIN_KEY_BYTES} bytes"
    )
    if not secret.startswith(STANDARD_SECRET_PREFIX):
        return expected
    try:
        key = _decode_standard(secret)
    except (binascii.Error, ValueError):
        return expected
    if len(key) < STANDARD_MIN_KEY_BYTES:
        return expected
    return None


def standard_signature(key: bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode('ascii')}"


def body_hex_signature(secret: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the body alone (databricks; github after "sha256=")."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- sending


def check_secret(scheme: str, secret: str) -> str | None:
    """None when ``secret`` can sign with ``scheme``, else what was expected."""
    if scheme not in SCHEMES:
        return f"one of the signature schemes {', '.join(SCHEMES)}"
    if scheme == "none":
        return None
    if not secret:
        return "a non-empty secret"
    if scheme == "standard":
        return _standard_secret_problem(secret)
    return None


def sign(
    scheme: str,
    secret: str | None,
    delivery_id: str,
    body: bytes,
    timestamp: int | None = None,
    previous_secrets: Sequence[str] = (),
) -> dict[str, str]:
    """The headers that identify and sign one delivery attempt.

    ``previous_secrets`` (standard only) add one signature each after the current one, for a
    key rotation; the other schemes carry a single signature and ignore them.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown signature scheme {scheme!r}")
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {MLFLOW_DELIVERY_ID: delivery_id, MLFLOW_TIMESTAMP: str(timestamp)}
    if scheme == "none":
        return headers
    if not secret:
        raise ValueError(f"the {scheme} signature scheme needs a secret")
    if scheme == "mlflow":
        headers[MLFLOW_SIGNATURE] = mlflow_signature(secret, delivery_id, timestamp, body)
    elif scheme == "standard":
        keys = [standard_key(s) for s in (secret, *previous_secrets)]
        headers[STANDARD_ID] = delivery_id
        headers[STANDARD_TIMESTAMP] = str(timestamp)
        headers[STANDARD_SIGNATURE] = " ".join(
            standard_signature(key, delivery_id, timestamp, body) for key in keys
        )
    elif scheme == "databricks":
        headers[DATABRICKS_SIGNATURE] = body_hex_signature(secret, body)
    else:  # github
        headers[GITHUB_SIGNATURE] = f"sha256={body_hex_signature(secret, body)}"
    return headers


# --------------------------------------------------------------------------- receiving


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def detect_scheme(headers: Mapping[str, str]) -> str | None:
    """The scheme whose signature header is present (None: the request is not signed)."""
    return next((scheme for name, scheme in _SIGNATURE_HEADERS if _header(headers, name)), None)


def _fresh(timestamp: str, tolerance: int, now: float | None) -> str | None:
    if not timestamp.isdigit():
        return "malformed timestamp"
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance:
        return "timestamp outside the tolerance window"
    return None


_TIMESTAMPED_HEADERS = {
    "mlflow": (MLFLOW_DELIVERY_ID, MLFLOW_TIMESTAMP, MLFLOW_SIGNATURE),
    "standard": (STANDARD_ID, STANDARD_TIMESTAMP, STANDARD_SIGNATURE),
}
"""The (id, timestamp, signature) headers of the schemes that sign a delivery id and a time."""


def _timestamped(
    scheme: str, headers: Mapping[str, str], tolerance: int, now: float | None
) -> tuple[str, str, str] | str:
    """The (id, timestamp, signature) headers of a scheme that signs them, or why the request
    is refused: one of them is missing, or the timestamp is outside the tolerance window."""
    names = _TIMESTAMPED_HEADERS[scheme]
    delivery_id, timestamp, signature = (_header(headers, name) for name in names)
    if not signature or not delivery_id or not timestamp:
        return "missing signature headers"
    stale = _fresh(timestamp, tolerance, now)
    if stale is not None:
        return stale
    return delivery_id, timestamp, signature


def verify_mlflow(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str | None:
    """None when the request is authentic and fresh, else the reason it is not."""
    return _verify_timestamped("mlflow", [secret], headers, body, tolerance, now)


def _verify_timestamped(
    scheme: str,
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: int,
    now: float | None,
) -> str | None:
    """The mlflow or standard scheme: the headers first (missing, stale), then the secrets
    (a standard one must decode), then any secret's signature among those offered."""
    signed = _timestamped(scheme, headers, tolerance, now)
    if isinstance(signed, str):
        return signed
    delivery_id, timestamp, signature = signed
    if scheme == "mlflow":
        offered = [signature.strip().encode()]
        expected = [mlflow_signature(s, delivery_id, int(timestamp), body) for s in secrets]
    else:
        problem = next(filter(None, map(_standard_secret_problem, secrets)), None)
        if problem is not None:
            return f"the secret is not a Standard Webhooks secret (expected {problem})"
        offered = [s.encode() for s in signature.split() if s.startswith("v1,")]
        expected = [
            standard_signature(_decode_standard(s), delivery_id, int(timestamp), body)
            for s in secrets
        ]
    for candidate in expected:
        if any(hmac.compare_digest(candidate.encode(), sent) for sent in offered):
            return None
    return "signature mismatch"


def _verify_body_hex(
    secrets: Sequence[str], header: str | None, prefix: str, body: bytes
) -> str | None:
    if not header:
        return "missing signature headers"
    header = header.strip()
    if not header.lower().startswith(prefix):
        return "malformed signature"
    offered = header[len(prefix) :].lower().encode()
    for secret in secrets:
        if hmac.compare_digest(body_hex_signature(secret, body).encode(), offered):
            return None
    return "signature mismatch"


def verify(
    scheme: str,
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str | None:
    """None when the request is authentic (and, where the scheme signs a time, fresh).

    Any of ``secrets`` may match (a receiver in the middle of a rotation); header names are
    case-insensitive. Otherwise the reason, e.g. "signature mismatch".
    """
    if scheme not in SCHEMES:
        return f"unknown signature scheme {scheme!r}"
    if scheme == "none":
        return None
    secrets = [s for s in secrets if s]
    if not secrets:
        return "no secret to verify with"
    if scheme in _TIMESTAMPED_HEADERS:
        return _verify_timestamped(scheme, secrets, headers, body, tolerance, now)
    if scheme == "databricks":
        return _verify_body_hex(secrets, _header(headers, DATABRICKS_SIGNATURE), "", body)
    return _verify_body_hex(secrets, _header(headers, GITHUB_SIGNATURE), "sha256=", body)


def same_secret(given: str, expected: str) -> bool:
    """Whether a credential a request offers is the expected one, in constant time: how long
    the comparison takes does not tell how much of it matched."""
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case), or
    None for any other header or none."""
    scheme, _, given = (authorization or "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None
