"""Registering MLflow's native webhook that sends the watcher its hints (``hints register``).

MLflow 3.3+ on a SQL store has webhooks; a file store, an older server or a server refusing
the URL each get an error saying what the server lacks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from watcher.errors import RegistryError, first_line
from watcher.registry.readers import (
    _bound_client_retries,
    _check_sqlite_store,
    _select_workspace,
    registry_identity,
)
from watcher.scan import ReaderSettings


def register_hint_webhook(
    settings: ReaderSettings,
    *,
    name: str,
    url: str,
    secret: str,
    events: tuple[str, ...],
    fallback_events: tuple[str, ...] = (),
) -> tuple[str, bool]:
    """Create MLflow's native webhook ``name`` sending ``events`` to ``url``, signed with
    ``secret``, or update the one of that name (so running it twice changes nothing).
    Returns (webhook id, whether it was created).

    A server that refuses ``events`` but would take ``fallback_events`` (an MLflow 3 from
    before the prompt events) gets those. Raises RegistryError saying what the server lacks:
    webhooks need MLflow 3.3+ on a SQL store, and by default an https URL to a public
    address.
    """
    where = registry_identity(settings.registry_uri)
    if urlsplit(settings.registry_uri).scheme in ("file", ""):
        raise RegistryError(f"{where} is a file store: MLflow's webhooks need a SQL store")
    _bound_client_retries(settings.timeout)
    _select_workspace(settings.workspace)  # the webhook goes in the workspace that is read
    _check_sqlite_store(settings.registry_uri)  # the webhook goes in, nothing is migrated
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri
        )
    except Exception as exc:
        raise RegistryError(
            f"cannot open MLflow registry {where}: {first_line(str(exc))}"
        ) from None
    if not hasattr(client, "create_webhook"):
        raise RegistryError("this MLflow client has no webhooks: MLflow 3.3 or later is needed")
    try:
        existing = next((w for w in _all_webhooks(client) if w.name == name), None)
        for attempt in (events, fallback_events):
            try:
                if existing is None:
                    made = client.create_webhook(
                        name=name, url=url, events=list(attempt), secret=secret, status="ACTIVE"
                    )
                    return str(made.webhook_id), True
                client.update_webhook(
                    existing.webhook_id,
                    url=url,
                    events=list(attempt),
                    secret=secret,
                    status="ACTIVE",
                )
                return str(existing.webhook_id), False
            except MlflowException as exc:
                if (
                    not fallback_events
                    or attempt is fallback_events
                    or "prompt" not in str(exc).lower()
                ):
                    raise
        raise AssertionError("unreachable")
    except Exception as exc:
        raise RegistryError(_webhook_problem(where, exc)) from None


def _all_webhooks(client: Any) -> list[Any]:
    webhooks: list[Any] = []
    token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        webhooks.extend(page)
        token = page.token
        if not token:
            return webhooks


def _webhook_problem(where: str, exc: Exception) -> str:
    """What MLflow's refusal means for whoever registers the hints webhook."""
    text = first_line(str(exc))
    code = str(getattr(exc, "error_code", ""))
    if isinstance(exc, NotImplementedError) or "does not support" in text:
        return f"{where} has no webhooks (a file store): MLflow's webhooks need a SQL store"
    if code == "ENDPOINT_NOT_FOUND" or "404" in text:
        return f"{where} has no webhook API: MLflow 3.3 or later, on a SQL store, is needed"
    if code == "INTERNAL_ERROR" or "500" in text:
        return (
            f"{where} failed to list or create webhooks ({text}): a server on a file store, "
            "or older than MLflow 3.3, has none; its log says which"
        )
    if "scheme" in text:
        return (
            f"{where} refused the URL: {text} (use https://, or start the MLflow server with "
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https)"
        )
    if "resolve" in text or "public" in text or "private" in text:
        return (
            f"{where} refused the URL: {text} (use a public address, or start the MLflow "
            "server with MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true)"
        )
    return f"{where} refused the webhook: {text}"
