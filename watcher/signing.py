"""Signature headers for each scheme, and verify() helpers for receivers and tests.

The signature always covers the exact bytes sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

MLFLOW_SIGNATURE = "X-MLflow-Signature"
MLFLOW_DELIVERY_ID = "X-MLflow-Delivery-Id"
MLFLOW_TIMESTAMP = "X-MLflow-Timestamp"
MLFLOW_SIGNATURE_VERSION = "v1"

DEFAULT_TOLERANCE = 300
"""Seconds a receiver accepts between the signed timestamp and its own clock (replay window)."""


def mlflow_signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """MLflow's native webhook scheme: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{MLFLOW_SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def sign(
    scheme: str, secret: str | None, delivery_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The headers that identify and sign one delivery attempt."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {MLFLOW_DELIVERY_ID: delivery_id, MLFLOW_TIMESTAMP: str(timestamp)}
    if scheme == "mlflow":
        if not secret:
            raise ValueError("the mlflow signature scheme needs a secret")
        headers[MLFLOW_SIGNATURE] = mlflow_signature(secret, delivery_id, timestamp, body)
    elif scheme != "none":
        raise ValueError(f"unknown signature scheme {scheme!r}")
    return headers


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def verify_mlflow(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str | None:
    """None when the request is authentic and fresh, else the reason it is not."""
    signature = _header(headers, MLFLOW_SIGNATURE)
    delivery_id = _header(headers, MLFLOW_DELIVERY_ID)
    timestamp = _header(headers, MLFLOW_TIMESTAMP)
    if not signature or not delivery_id or not timestamp:
        return "missing signature headers"
    if not timestamp.isdigit():
        return "malformed timestamp"
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance:
        return "timestamp outside the tolerance window"
    expected = mlflow_signature(secret, delivery_id, int(timestamp), body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return "signature mismatch"
    return None
