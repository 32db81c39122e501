"""The experiment of a version's run, added to its events: what MLflow users ask their own
webhooks for (mlflow/mlflow#17919), since an artifact's path often holds it.

A registry read does not give it (a model version has a ``run_id``, not an experiment id), so
it is one ``runs/get`` per run, asked only for events that are about to be committed: a poll
without events asks nothing, a new version asks once for its run, and the version's later
events (its tags, its stage, an alias on it) find the run in this process's cache, since a run
never moves to another experiment. The cache is not kept in the state: after a restart the
first event of each run asks once more, which costs one request per run with a later event,
against a snapshot field that every re-read version would have to carry forward.

A run that cannot be read (garbage-collected after deletion, another tracking server, a
credential that may read the registry but not the experiment) never holds up the event: its
``experiment_id`` stays None, and ``event.experiment_unknown`` says why, once per run and poll.
Such a run is asked again with its next event (the failure may have been passing).

The first poll (the baseline) asks nothing: with ``emit_existing`` its events are every
version there is, and one request per run would hold the first commit for minutes at 100k.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from watcher.errors import RegistryError
from watcher.model import Event
from watcher.scan import Reader

CACHE_SIZE = 10_000
"""Runs remembered; the oldest is forgotten first (one request to learn it again)."""


class Experiments:
    """The experiment ids of runs, read once each and remembered for the process's life."""

    def __init__(self, log: Any, size: int = CACHE_SIZE) -> None:
        self._log = log
        self._size = size
        self._known: dict[str, str] = {}

    def add_to(self, events: Iterable[Event], reader: Reader) -> list[Event]:
        """The events, each about a version with a run carrying its ``experiment_id``."""
        found: dict[str, str | None] = {}
        filled = []
        for event in events:
            run_id = event.run_id
            if run_id and event.experiment_id is None:
                if run_id not in found:
                    found[run_id] = self.of(run_id, reader)
                event = replace(event, experiment_id=found[run_id])
            filled.append(event)
        return filled

    def of(self, run_id: str, reader: Reader) -> str | None:
        """The run's experiment id: remembered, or read (None, logged, when it cannot be)."""
        known = self._known.get(run_id)
        if known is not None:
            return known
        try:
            experiment_id = reader.run_experiment(run_id)
        except RegistryError as exc:
            self._log.warning("event.experiment_unknown", run_id=run_id, error=str(exc))
            return None
        if experiment_id is None:
            self._log.warning("event.experiment_unknown", run_id=run_id, error="no such run")
            return None
        if len(self._known) >= self._size:
            del self._known[next(iter(self._known))]
        self._known[run_id] = experiment_id
        return experiment_id
