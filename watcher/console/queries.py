"""What the console asks the state beyond what ``status`` does: the store's console queries,
as the console sees them.

The store implements them (``ConsoleQueries``, mixed into :class:`watcher.store.Store`); the
console names them through this protocol, so that it reads only what it declares here, and
so that a test can stand in for one query without a database. Rows are read by attribute in
the templates (``WebhookStats``, ``ChartBucket``, ``DeliveryRow``, ``DeliveryDetail``,
``EventRow``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from watcher.model import Event
from watcher.store import Store


@dataclass(frozen=True)
class Filters:
    """The deliveries page's filters, parsed: what the store's delivery_page selects by."""

    webhook: str | None = None
    model: str | None = None
    event_type: str | None = None
    status: str | None = None
    since: float | None = None
    """created_at >= since"""
    until: float | None = None
    """created_at < until"""


class ConsoleQueries(Protocol):
    def webhook_stats(self, now: float) -> Sequence[Any]: ...

    def delivery_chart(self, now: float, *, hours: int = 24) -> Sequence[Any]: ...

    def delivery_page(
        self, f: Any, *, before: int | None = None, limit: int = 50
    ) -> tuple[Sequence[Any], int | None]: ...

    def delivery_detail(self, delivery_id: str) -> Any: ...

    def version_timeline(self, model: str, version: str | None) -> Sequence[Any]: ...

    def model_events(
        self,
        model: str | None,
        *,
        since: float | None = None,
        before: float | None = None,
        limit: int = 100,
    ) -> Sequence[Any]: ...

    def model_names(self, prefix: str = "", limit: int = 50) -> Sequence[str]: ...

    def queue_test_delivery(
        self, event: Event, webhook: str, delivery_id: str, now: float
    ) -> None: ...


def queries(store: Store) -> ConsoleQueries:
    """The store's console queries."""
    return cast(ConsoleQueries, store)
