"""Delivery: the only package that sends HTTP. Takes due outbox rows, signs, POSTs, reschedules.

- ``deliverer``: ``Deliverer`` drains the outbox (lanes, worker caps, shutdown grace) and
  reports each outcome to its log and to an optional observer;
- ``http``: ``Sender`` renders, signs and POSTs one delivery;
- ``policy``: how an answer is classified and how long to wait before the next attempt;
- ``guard``: the private-address guard.

Import everything from here.
"""

from __future__ import annotations

from watcher.deliver.deliverer import (
    Deliverer,
    DeliveryObserver,
    DeliverySender,
    DrainReport,
    Outcome,
)
from watcher.deliver.guard import PrivateAddressError
from watcher.deliver.http import (
    REDACTED,
    RESPONSE_SNIPPET,
    USER_AGENT,
    Prepared,
    Sender,
    format_options,
    redact_request,
)
from watcher.deliver.policy import (
    RETRYABLE_4XX,
    Result,
    backoff_delay,
    is_dead_at_once,
    parse_retry_after,
)

__all__ = [
    "REDACTED",
    "RESPONSE_SNIPPET",
    "RETRYABLE_4XX",
    "USER_AGENT",
    "Deliverer",
    "DeliveryObserver",
    "DeliverySender",
    "DrainReport",
    "Outcome",
    "Prepared",
    "PrivateAddressError",
    "Result",
    "Sender",
    "backoff_delay",
    "format_options",
    "is_dead_at_once",
    "parse_retry_after",
    "redact_request",
]
