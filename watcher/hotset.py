"""The hot set: models with recent activity, whose aliases, tags and versions each poll reads.

Aliases and gate tags are set right after a version is made, moved or validated, and MLflow
moves no timestamp for them (nor leaves one for a deleted model): without help only the full
scans see them. So the models with activity in the last ``window`` (a version created or
updated, the model created or updated, as the snapshot knows them) are read beside each poll,
in two parts of different cost:

- their registered-model records (aliases, model tags, existence): the poll's search of
  recently updated models starts at the window's edge instead of the watermark, so they come
  in one newest-first search, about a millisecond a model at 100k versions (MLflow 3 reads a
  page of 100 models' latest versions in one query);
- their versions (version tags, every version, not only the newest): ``name IN (...)``
  searches (one by-name read per model where MLflow refuses a list), about ten times dearer
  (a model of 100 versions: 100 rows).

The cost is bounded: the hot set may spend at most ``HOT_SHARE`` of ``max_duty``. The records
come first: aliases and deletions are what a team promotes and gates by, and one search brings
every hot model's. When it costs more than the budget of one poll it runs every few polls
(``records_every``), never shrinking the set: a model active this morning keeps its aliases
read within seconds. The versions get what the records leave, read in rotation when they do
not all fit (a slice per poll, so every hot model is read once per round of a few polls). The
scans' auto cadences are spaced by what the hot set leaves of max_duty. This module only plans
(pure: no I/O, no clock of its own); the read step reads and times.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from watcher.model import Observation, SnapshotDelta

HOT_SHARE = 0.6
"""The share of max_duty the hot set's reads may take while it is busy; the scans share the
rest (all of it when no model is hot). Aliases and tags change where versions were just made:
the budget goes there first, and the scans keep at least 40% for every other model."""

SMOOTHING = 0.5
"""Weight of the newest measurement in the running costs and duty."""


RECORDS_SEEN = 5
"""How many of the last searches of the hot records their cost is the mean of."""
SPIKE_BOUND = 3.0
"""A search counts at most this many times the median of the last ones."""


def _smooth(old: float, new: float) -> float:
    return new if old <= 0 else SMOOTHING * new + (1 - SMOOTHING) * old


@dataclass
class HotSet:
    """Which models are hot, what each poll reads of them, and what reading them costs."""

    window_ms: int
    """0: no hot set."""
    max_duty: float
    poll_interval: float
    activity: dict[str, int] = field(default_factory=dict)
    """Per model: the newest timestamp of the model or of any of its versions."""
    position: int = 0
    """Where the versions' rotation resumes in the sorted hot set."""
    cost_per_model: float = 0.0
    """Seconds of reading per hot model's versions, as measured (0: not measured yet)."""
    duty: float = 0.0
    """The share of wall time the hot reads took, smoothed."""
    size: int = 0
    per_poll: int = 0
    records_s: float = 0.0
    """What a search of recent models from the window's edge costs beyond the poll's own
    search from its watermark: the mean of the last RECORDS_SEEN, each counted at most
    SPIKE_BOUND times their median (0: not measured yet). The budget holds on average, and one
    search that waited behind a background scan's page on a one-worker server does not space
    the records out for minutes."""
    _records_seen: deque[float] = field(default_factory=lambda: deque(maxlen=RECORDS_SEEN))
    plain_s: float = 0.0
    """What the poll's own search of recent models (from the watermark) costs, smoothed."""
    records_every: int = 1
    """Polls between two reads of the hot models' records: 1 while they fit the budget."""
    _since_records: int = 0
    """Polls since the records were last read (the next poll reads them when it reaches
    records_every)."""
    _told: tuple[int, bool] = (1, False)
    """What was last logged: (records_every, rotating)."""

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
        return now_ms - self.window_ms

    def members(self, snapshot: Observation, now_ms: int) -> list[str]:
        """The hot models of the snapshot, sorted (empty when the hot set is off)."""
        if not self.enabled or now_ms <= 0:  # off, or a snapshot of unknown age
            return []
        edge = self.edge(now_ms)
        return sorted(n for n, at in self.activity.items() if at >= edge and n in snapshot.models)

    # ----------------------------------------------------------------- the records

    def records_due(self) -> bool:
        """Whether this poll reads the hot models' records (each poll calls it once, with a
        hot set): every poll while they fit the budget, else every ``records_every``."""
        self._since_records += 1
        if self._since_records < self.records_every:
            return False
        self._since_records = 0
        return True

    def searched(self, seconds: float, *, hot: bool) -> float:
        """Record what the poll's search of recent models took: from the window's edge with
        the hot records (``hot``), or from the watermark alone. Returns the hot set's part of
        it (what the search from the edge cost beyond a plain one), for the duty."""
        if not hot:
            self.plain_s = _smooth(self.plain_s, seconds)
            return 0.0
        extra = max(0.0, seconds - self.plain_s)
        self._records_seen.append(extra)
        bound = SPIKE_BOUND * statistics.median(self._records_seen)
        self.records_s = statistics.fmean(min(x, bound) for x in self._records_seen)
        # One model's versions a poll is kept out of the records' share (choose reads one at
        # least), so that both stay within the budget together.
        budget = self.budget_s - min(self.cost_per_model, self.budget_s / 2)
        self.records_every = max(1, math.ceil(self.records_s / budget))
        return extra

    def records_every_s(self) -> float:
        """Seconds between two reads of the hot models' records (aliases, existence)."""
        return self.records_every * self.poll_interval

    # ----------------------------------------------------------------- the versions

    def choose(self, members: list[str]) -> list[str]:
        """The hot models whose versions this poll reads: all of them when what the records
        leave of the budget allows, else the next slice of the rotation (one at least)."""
        self.size = len(members)
        budget = max(0.0, self.budget_s - self.records_s / self.records_every)
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
        """Record what reading ``models`` hot models' versions took, and what this poll spent
        on their records (``records_s``, as :meth:`searched` returned it): the duty counts
        both, the rotation only the versions."""
        if models:
            self.cost_per_model = _smooth(self.cost_per_model, seconds / models)
        duty = (seconds + records_s) / self.poll_interval
        self.duty = SMOOTHING * duty + (1 - SMOOTHING) * self.duty

    @property
    def rotating(self) -> bool:
        return 0 < self.per_poll < self.size

    def news(self) -> dict[str, object] | None:
        """What to log when the records' period or the rotation changes (None: nothing)."""
        state = (self.records_every, self.rotating)
        told, self._told = self._told, state
        if state == told:
            return None
        over = self.rotating or self.records_every > 1
        return {
            "models": self.size,
            "per_poll": self.per_poll,
            "round_s": self.round_s(),
            "records_every_s": self.records_every_s(),
            "window_s": self.window_ms / 1000,
            "note": "the hot set is over its share of max_duty: "
            + ("records read every few polls, " if self.records_every > 1 else "")
            + (
                "versions read in rotation"
                if self.rotating
                else "every hot model's versions each poll"
            )
            if over
            else "every hot model is read with each poll again",
        }

    def round_s(self) -> float:
        """Seconds until every hot model's versions have been read once: one poll unless
        rotating."""
        if not self.size:
            return 0.0
        return math.ceil(self.size / max(1, self.per_poll)) * self.poll_interval

    def scan_duty(self, hinted: float = 0.0) -> float:
        """What is left of max_duty for the scans' auto cadences, after the hot set's reads
        and the polls hints started (``hinted``, a share of wall time: :class:`HintedSpend`),
        which together take at most ``HOT_SHARE`` of it."""
        return self.max_duty - min(self.duty + hinted, self.max_duty * HOT_SHARE)


HINTED_WINDOW_S = 600.0
"""How far back the polls hints started are counted: ten minutes of hints set the scans'
share, so a burst of promotions slows the scans for a while, not for good."""

HINTED_MIN_S = 60.0
"""The shortest span the hints' reading is spread over, right after a start."""


@dataclass
class HintedSpend:
    """What the polls hints started spent reading (their own searches and the hinted models'
    reads; scans and the hot set are counted apart), as a share of wall time over the last
    ``HINTED_WINDOW_S`` (or since ``started``, when that is shorter, from a minute on).
    Hints go where changes happen: the budget follows, and the scans, the safety net for what
    no hint named, take what is left of max_duty."""

    started: float
    """When counting began (monotonic seconds)."""
    window_s: float = HINTED_WINDOW_S
    _spent: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, at: float, seconds: float) -> None:
        """A poll that took hints, ending at ``at`` (monotonic seconds), read for ``seconds``."""
        self._spent.append((at, max(0.0, seconds)))

    def duty(self, now: float) -> float:
        while self._spent and self._spent[0][0] < now - self.window_s:
            self._spent.popleft()
        span = max(HINTED_MIN_S, min(self.window_s, now - self.started))
        return sum(seconds for _, seconds in self._spent) / span
