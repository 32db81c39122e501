"""The targeted reads of a poll: what it reads of the hot models and of the models a hint named,
beyond the watermark searches. :class:`watcher.incremental.IncrementalReader` decides when;
this module reads, and times the hot set's share so :class:`watcher.hotset.HotSet` can keep it
within its budget. What the reads bring is folded by :class:`watcher.merge.Draft`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from watcher.hotset import HotSet
from watcher.merge import Draft
from watcher.scan import Watches


class TargetedReads:
    """Reads of named models within a poll: the hot set's and the hints'."""

    def __init__(
        self,
        hot: HotSet,
        watches: Watches,
        log: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hot = hot
        self.watches = watches
        self.log = log
        self._clock = clock
        self._hot_records_s = 0.0
        """What this poll's search of recent models spent on the hot models' records."""

    def models_since(self, draft: Draft, hot: list[str], since: int) -> None:
        """The models updated since the watermark or, with a hot set, since the window's
        edge: the hot models' records (aliases, tags) come with them, and a hot model the
        answer lacks is settled (deleted, or hidden by paging). A model hot only through its
        versions' timestamps is older than the edge: it is asked for directly."""
        if not hot:
            draft.models_updated(draft.reader.models_updated_since(since, self.watches))
            return
        since = min(since, self.hot.edge(draft.previous.read_at))
        models = draft.previous.models
        expected = [n for n in hot if models[n].last_updated_timestamp >= since]
        started = self._clock()
        draft.models_recent(draft.reader.models_updated_since(since, self.watches), expected)
        draft.refresh_models(n for n in hot if models[n].last_updated_timestamp < since)
        self._hot_records_s = self._clock() - started
        draft.plan.mark("hot")

    def read_hot(self, draft: Draft, hot: list[str]) -> None:
        """The versions of the hot models this poll reads (all, or a slice in rotation),
        timed: the cost decides the next slice and what the scans have left."""
        if not hot:
            return
        draft.plan.mark("hot")
        chosen = self.hot.choose(hot)
        started = self._clock()
        draft.reread_hot(chosen)
        took = self._clock() - started
        self.hot.spent(len(chosen), took, self._hot_records_s)
        draft.plan.hot_ms = (took + self._hot_records_s) * 1000
        self._hot_records_s = 0.0
        news = self.hot.news()
        if news is not None:
            self.log.info("poll.hot", **news)

    def read_hinted(self, draft: Draft, hinted: frozenset[str]) -> None:
        """The models a verified hint named, read now whatever the hot set chose: their
        records (aliases, tags, existence) and their versions. A hint only says where to
        look; what the read finds decides. A name the snapshot lacks is a new model (the
        poll finds it by its timestamp) or one not watched: nothing to read."""
        names = sorted(n for n in hinted if n in draft.previous.models)
        if not names:
            return
        draft.plan.mark("hinted")
        draft.refresh_models(names)
        draft.reread_hot(names)
