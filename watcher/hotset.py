"""The hot set: models with recent activity, whose aliases, tags and versions each poll reads.

Aliases and gate tags are set right after a version is made, moved or validated, and MLflow
moves no timestamp for them (nor leaves one for a deleted model): without help only the full
scans see them. So the models with activity in the last ``window`` (a version created or
updated, the model created or updated, as the snapshot knows them) are read with every poll:
their registered-model records (aliases, model tags, existence) come with the poll's search of
recently updated models, whose start is moved back to the window's edge, and their versions
(tags) with ``name IN (...)`` searches (one by-name read per model where MLflow refuses a list).

The cost is bounded: the hot set may spend at most ``HOT_SHARE`` of ``max_duty``. When reading
every hot model's versions in each poll would cost more, a slice of them is read per poll, in
rotation, so every hot model is read once per round of a few polls; the scans' auto cadences
are spaced by what the hot set leaves of the budget. This module only plans (pure: no I/O, no
clock of its own); :mod:`watcher.incremental` reads and times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from watcher.model import Observation, SnapshotDelta

HOT_SHARE = 0.6
"""The share of max_duty the hot set's reads may take while it is busy; the scans share the
rest (all of it when no model is hot). Aliases and tags change where versions were just made:
the budget goes there first, and the scans keep at least 40% for every other model."""

SMOOTHING = 0.5
"""Weight of the newest measurement in the running cost per model and duty."""


@dataclass
class HotSet:
    """Which models are hot, which of them this poll reads, and what reading them costs."""

    window_ms: int
    """0: no hot set."""
    max_duty: float
    poll_interval: float
    activity: dict[str, int] = field(default_factory=dict)
    """Per model: the newest timestamp of the model or of any of its versions."""
    position: int = 0
    """Where the rotation resumes in the sorted hot set."""
    cost_per_model: float = 0.0
    """Seconds of reading per hot model's versions, as measured (0: not measured yet)."""
    duty: float = 0.0
    """The share of wall time the hot reads took, smoothed."""
    size: int = 0
    per_poll: int = 0
    records_s: float = 0.0
    """What the last poll's search of recent models took, the hot models' records with it."""
    shrunk_ms: int | None = None
    """The window in use when the records alone were over the budget (None: window_ms)."""
    _told: tuple[int, bool] = (0, False)
    """The rotation as last logged: (shrunk window, rotating)."""

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0

    def rebuild(self, snapshot: Observation) -> None:
        """The activity index of a whole snapshot (once per process, or after a resume)."""
        activity: dict[str, int] = {}
        for name, model in snapshot.models.items():
            activity[name] = max(model.last_updated_timestamp, model.creation_timestamp)
        for (name, _), version in snapshot.versions.items():
            if name in activity:
                activity[name] = max(activity[name], version.last_updated_timestamp)
        self.activity = activity

    def update(self, delta: SnapshotDelta) -> None:
        """Follow a committed snapshot change."""
        for model in delta.upsert_models:
            newest = max(model.last_updated_timestamp, model.creation_timestamp)
            self.activity[model.name] = max(self.activity.get(model.name, 0), newest)
        for version in delta.upsert_versions:
            if version.name in self.activity:
                self.activity[version.name] = max(
                    self.activity[version.name], version.last_updated_timestamp
                )
        for name in delta.delete_models:
            self.activity.pop(name, None)

    @property
    def budget_s(self) -> float:
        """Seconds of reading per poll the hot set may spend."""
        return self.max_duty * HOT_SHARE * self.poll_interval

    def edge(self, now_ms: int) -> int:
        return now_ms - (self.window_ms if self.shrunk_ms is None else self.shrunk_ms)

    def members(self, snapshot: Observation, now_ms: int) -> list[str]:
        """The hot models of the snapshot, sorted (empty when the hot set is off)."""
        if not self.enabled or now_ms <= 0:  # off, or a snapshot of unknown age
            return []
        edge = self.edge(now_ms)
        return sorted(n for n, at in self.activity.items() if at >= edge and n in snapshot.models)

    def choose(self, members: list[str]) -> list[str]:
        """The hot models whose versions this poll reads: all of them when the budget allows,
        else the next slice of the rotation."""
        self.size = len(members)
        budget = max(0.0, self.budget_s - self.records_s)
        fits = len(members) if self.cost_per_model <= 0 else int(budget / self.cost_per_model)
        self.per_poll = max(1, min(len(members), fits)) if members else 0
        if self.per_poll >= len(members):
            self.position = 0
            return members
        start = self.position % len(members)
        chosen = (members[start:] + members[:start])[: self.per_poll]
        self.position = start + self.per_poll
        return chosen

    def spent(self, models: int, seconds: float, records_s: float = 0.0) -> None:
        """Record what reading ``models`` hot models' versions took, and what reading their
        records took beyond the poll's own search (``records_s``: part of the duty, not of
        the rotation, since the records come in one newest-first search)."""
        if models:
            per_model = seconds / models
            self.cost_per_model = (
                per_model
                if self.cost_per_model <= 0
                else SMOOTHING * per_model + (1 - SMOOTHING) * self.cost_per_model
            )
        duty = (seconds + records_s) / self.poll_interval
        self.duty = SMOOTHING * duty + (1 - SMOOTHING) * self.duty
        self.records_s = records_s
        self._fit_window(records_s)

    def _fit_window(self, records_s: float) -> None:
        """The records come in one newest-first search that rotation cannot split: when it
        alone takes more than the budget, the window shrinks (the least recently active
        models leave the set first); it grows back while the search costs under half of it."""
        current = self.window_ms if self.shrunk_ms is None else self.shrunk_ms
        if records_s > self.budget_s:
            floor = round(self.poll_interval * 1000)
            self.shrunk_ms = max(floor, round(current * self.budget_s / records_s * 0.8))
        elif self.shrunk_ms is not None and records_s < self.budget_s / 2:
            grown = round(current * 1.25)
            self.shrunk_ms = None if grown >= self.window_ms else grown

    @property
    def rotating(self) -> bool:
        return 0 < self.per_poll < self.size

    def news(self) -> dict[str, object] | None:
        """What to log when the rotation starts, changes its slice or ends (None: nothing)."""
        state = (self.shrunk_ms or 0, self.rotating)
        told, self._told = self._told, state
        if state == told:
            return None
        return {
            "models": self.size,
            "per_poll": self.per_poll,
            "round_s": self.round_s(),
            "window_s": (self.window_ms if self.shrunk_ms is None else self.shrunk_ms) / 1000,
            "note": "the hot set is over its share of max_duty: "
            + ("window shrunk, " if self.shrunk_ms is not None else "")
            + ("read in rotation" if self.rotating else "every hot model read each poll")
            if self.rotating or self.shrunk_ms is not None
            else "every hot model is read with each poll again",
        }

    def round_s(self) -> float:
        """Seconds until every hot model has been read once: one poll unless rotating."""
        if not self.size:
            return 0.0
        return math.ceil(self.size / max(1, self.per_poll)) * self.poll_interval

    def scan_duty(self) -> float:
        """What is left of max_duty for the scans' auto cadences."""
        return self.max_duty - min(self.duty, self.max_duty * HOT_SHARE)
