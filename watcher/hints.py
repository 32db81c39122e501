"""Hints: MLflow's native webhooks, received as wake-up calls.

An MLflow 3.3+ server with a SQL store sends a signed webhook for each registry and prompt
change (a version created, an alias set, a tag deleted...). The watcher's health server takes
them at ``[hints] path`` and hands each one to a :class:`HintBox`, which verifies it (MLflow's
signature scheme, the watcher's own ``mlflow`` scheme), refuses replays, and keeps the name of
the registered model it names, so that the next poll can read that model at once.

A hint is never a source of content: only the model's name is kept, and the poll reads the
model from MLflow as it would without hints. A forged or replayed hint therefore costs at most
one read and produces no event; a lost hint costs only latency, as the poll's own reads still
find the change.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from watcher import signing
from watcher import state_meta as sm

Result = Literal["accepted", "replayed", "forged", "invalid"]
RESULTS: tuple[Result, ...] = sm.HINT_RESULTS

MODEL_EVENTS = (
    "registered_model.created",
    "model_version.created",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version_alias.created",
    "model_version_alias.deleted",
)
PROMPT_EVENTS = (
    "prompt.created",
    "prompt_version.created",
    "prompt_tag.set",
    "prompt_tag.deleted",
    "prompt_version_tag.set",
    "prompt_version_tag.deleted",
    "prompt_alias.created",
    "prompt_alias.deleted",
)
HINT_EVENTS = MODEL_EVENTS + PROMPT_EVENTS
"""The registry and prompt events MLflow sends, as ``entity.action``: each names a registered
model (a prompt is a registered model too) in its ``data.name``."""

MAX_NAMES = 10_000
"""Model names kept waiting for a poll, at most: beyond, a hint is counted but its name
dropped (the poll's own reads still find the change). Reached only when nobody takes them."""
MAX_BODY = 1 << 20
"""Bytes a hint's body may have: MLflow's largest (a prompt version with its template) are
far smaller; a larger body is refused unread."""
MAX_SEEN = 100_000
"""Delivery ids remembered against replays, at most (a signed hint needs the secret, so only
MLflow itself can fill this; at the cap the oldest id is forgotten first)."""


@dataclass(frozen=True)
class Verdict:
    """What became of one hint: its result, why (for the log and the answer), and the event
    and model it named once that was known."""

    result: Result
    reason: str = ""
    event: str | None = None
    model: str | None = None

    @property
    def accepted(self) -> bool:
        return self.result == "accepted"


@dataclass(frozen=True)
class HintStats:
    """Counts by result since this box was made, and the time of the last accepted hint."""

    counts: Mapping[str, int]
    last_accepted_at: float | None
    waiting: int
    """Model names waiting for a poll to take them."""
    dropped: int
    """Names dropped because MAX_NAMES were already waiting."""

    def meta(self) -> dict[str, str]:
        """The state meta entries ``status`` shows (see watcher.state_meta)."""
        entries = [sm.HINTS_COUNT[result].entry(self.counts.get(result, 0)) for result in RESULTS]
        if self.last_accepted_at is not None:
            entries.append(sm.LAST_HINT_AT.entry(self.last_accepted_at))
        return sm.meta(*entries)


class HintBox:
    """Verified hints in, model names out: thread-safe (the health server's threads offer,
    the poll takes).

    ``arrived`` is set by each accepted hint, to wake whoever starts polls; it is theirs to
    clear. :meth:`take` hands over the names waiting and empties the box.
    """

    def __init__(
        self,
        secret: str,
        tolerance: float = signing.DEFAULT_TOLERANCE,
        *,
        max_names: int = MAX_NAMES,
        max_seen: int = MAX_SEEN,
    ) -> None:
        if not secret:
            raise ValueError("hints need a secret to verify MLflow's signatures with")
        self._secret = secret
        self.tolerance = int(tolerance)
        self._max_names = max_names
        self._max_seen = max_seen
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._seen: OrderedDict[str, int] = OrderedDict()
        """Delivery id -> its signed timestamp, oldest first, kept while inside the window."""
        self._counts: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self._last_accepted_at: float | None = None
        self._dropped = 0
        self._recorded: dict[str, str] | None = None
        """The counts' meta entries last written to the state (see :meth:`unrecorded`)."""
        self.arrived = threading.Event()

    def __repr__(self) -> str:
        return f"HintBox(tolerance={self.tolerance}, waiting={len(self._names)})"

    def offer(self, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        """Verify one request (its headers and exact body) and keep the model it names."""
        return self._record(self._judge(headers, body, now), now)

    def refuse(self, reason: str) -> Verdict:
        """Count a request refused before it could be offered (too large, no length)."""
        return self._record(Verdict("invalid", reason), 0.0)

    def _record(self, verdict: Verdict, now: float) -> Verdict:
        with self._lock:
            self._counts[verdict.result] += 1
            if verdict.accepted:
                assert verdict.model is not None
                self._last_accepted_at = now
                if verdict.model in self._names or len(self._names) < self._max_names:
                    self._names.add(verdict.model)
                else:
                    self._dropped += 1
        if verdict.accepted:
            self.arrived.set()
        return verdict

    def take(self) -> frozenset[str]:
        """The model names hinted since the last take; the box is empty after."""
        with self._lock:
            names, self._names = frozenset(self._names), set()
        return names

    def stats(self) -> HintStats:
        with self._lock:
            return HintStats(
                counts=dict(self._counts),
                last_accepted_at=self._last_accepted_at,
                waiting=len(self._names),
                dropped=self._dropped,
            )

    def unrecorded(self) -> dict[str, str]:
        """The counts' state meta entries (:meth:`HintStats.meta`) if they changed since the
        last :meth:`recorded`, else none: the poll's commit takes them along, and only what
        it did not take (a skipped poll, hints since) needs a write of its own."""
        entries = self.stats().meta()
        with self._lock:
            return {} if entries == self._recorded else entries

    def recorded(self, entries: Mapping[str, str]) -> None:
        """``entries`` (from :meth:`unrecorded`) are in the state now."""
        if entries:
            with self._lock:
                self._recorded = dict(entries)

    def _judge(self, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
        """Signature (with freshness), then replay, then the payload: a request that is not
        MLflow's learns nothing about what the box would accept."""
        refused = signing.verify(
            "mlflow", [self._secret], headers, body, tolerance=self.tolerance, now=now
        )
        if refused is not None:
            return self._unverified(refused, headers, body, now)
        delivery_id = _header(headers, signing.MLFLOW_DELIVERY_ID) or ""
        timestamp = int(_header(headers, signing.MLFLOW_TIMESTAMP) or "0")
        if not self._first_sight(delivery_id, timestamp, now):
            return Verdict("replayed", "delivery id already seen within the tolerance window")
        return parse_hint(body)

    def _unverified(
        self, reason: str, headers: Mapping[str, str], body: bytes, now: float
    ) -> Verdict:
        """A stale timestamp under a good signature is MLflow's own delivery, late: a replay,
        or clocks set apart (the reason says by how much). Anything else is forged."""
        if reason != "timestamp outside the tolerance window":
            return Verdict("forged", reason)
        signed_at = int(_header(headers, signing.MLFLOW_TIMESTAMP) or "0")
        genuine = signing.verify(
            "mlflow", [self._secret], headers, body, tolerance=self.tolerance, now=signed_at
        )
        if genuine is not None:
            return Verdict("forged", reason)
        return Verdict(
            "replayed",
            f"signed {round(abs(now - signed_at))} s away from this host's clock (tolerance "
            f"{self.tolerance} s): a replay, or MLflow's clock and this host's disagree",
        )

    def _first_sight(self, delivery_id: str, timestamp: int, now: float) -> bool:
        """Remember ``delivery_id``; False if it was already seen. Ids whose timestamp has left
        the window are forgotten: their signature no longer verifies anyway."""
        with self._lock:
            horizon = now - self.tolerance
            while self._seen and next(iter(self._seen.values())) < horizon:
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = timestamp
            while len(self._seen) > self._max_seen:
                self._seen.popitem(last=False)
            return True


def parse_hint(body: bytes) -> Verdict:
    """The event and the model a verified body names, or why it names none (``invalid``).

    MLflow's body is ``{"entity": ..., "action": ..., "timestamp": ..., "data": {"name": ...,
    ...}}``; only the entity, the action and the name are read.
    """
    try:
        payload: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return Verdict("invalid", "the body is not JSON")
    if not isinstance(payload, dict):
        return Verdict("invalid", "the body is not a JSON object")
    entity, action = payload.get("entity"), payload.get("action")
    event = f"{entity}.{action}"
    if not isinstance(entity, str) or not isinstance(action, str):
        return Verdict("invalid", "no entity and action")
    if event not in HINT_EVENTS:
        return Verdict("invalid", f"not a registry or prompt event: {event[:80]}")
    data = payload.get("data")
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        return Verdict("invalid", f"{event} without data.name", event=event)
    return Verdict("accepted", event=event, model=name)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)
