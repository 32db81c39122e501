"""The composition root: the one place that builds the store, the pipeline (and its reader), the
deliverer and the metrics, for every mode of `run`.

Every mode goes through here, so every mode gets the same checks: a state file recorded for
another registry is refused by the daemon, by ``--once`` and by ``--dry-run`` alike. The
command line only parses options and reports what happened.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher.config import Config, StateConfig
from watcher.deliver import Deliverer, Sender
from watcher.hints import HintBox
from watcher.incremental import thread_runner
from watcher.leader import Leadership, LeaseTimings
from watcher.metrics import Metrics
from watcher.pipeline import CycleReport, Pipeline, PipelineOptions
from watcher.registry import Progress
from watcher.service import OnceResult, Service, run_once
from watcher.store import Store


@dataclass
class Assembly:
    """A pipeline with the deliverer and metrics around it, on an open, locked state."""

    config: Config
    log: Any
    pipeline: Pipeline
    deliverer: Deliverer
    metrics: Metrics
    leadership: Leadership | None = None
    """On a shared (PostgreSQL) state: this replica's part in the leader election."""
    wait_for_lock: bool = False

    def once(self, stopping: threading.Event) -> OnceResult:
        """``run --once``: one cycle reading everything, then each pending delivery once (on
        a shared state, as its leader for that long)."""
        try:
            if self.leadership is None:
                return run_once(self.pipeline, self.deliverer, stopping, self.metrics)
            with self.leadership.held(wait=self.wait_for_lock, stop=stopping):
                return run_once(self.pipeline, self.deliverer, stopping, self.metrics)
        finally:
            self.deliverer.close()

    def serve(self, stopping: threading.Event) -> int:
        """The daemon, until a signal (or ``stopping``) ends it; its exit status."""
        service = Service(
            self.config,
            self.pipeline,
            self.deliverer,
            self.log,
            stopping,
            metrics=self.metrics,
            leadership=self.leadership,
        )
        return service.run()


@contextmanager
def assemble(
    config: Config,
    log: Any,
    *,
    daemon: bool,
    emit_existing: bool = False,
    wait_for_lock: bool = False,
    progress: Progress | None = None,
) -> Iterator[Assembly]:
    """Open and lock the state, and build what a daemon (``daemon``) or ``run --once`` runs.

    The daemon's slow scans run on a thread of their own; ``--once`` reads everything in its
    one poll.
    """
    with Store.for_config(config.state, wait_for_lock=wait_for_lock) as store:
        hints = _hint_box(config) if daemon else None
        options = PipelineOptions(
            emit_existing=emit_existing,
            progress=progress,
            scan_runner=thread_runner if daemon else None,
            hints=hints,
        )
        pipeline = _checked_pipeline(config, store, log, options)
        leadership = None
        if config.state.shared:
            timings = LeaseTimings.derive(config.watch.interval, config.state.lease)
            leadership = Leadership(store, timings, log)
        metrics = Metrics(config, store, leadership, hints)
        # Metrics counts each delivery outcome the deliverer reports and times each request
        # its sender makes; a replica sends only while its lease can be trusted.
        deliverer = Deliverer(
            store,
            config,
            log,
            sender=metrics.timed(Sender(config.mlflow.payload_context)),
            observer=metrics,
            may_send=None if leadership is None else leadership.trusted,
        )
        yield Assembly(config, log, pipeline, deliverer, metrics, leadership, wait_for_lock)


def _hint_box(config: Config) -> HintBox | None:
    """The daemon's hint box with ``[hints]`` (a one-shot run serves nothing to receive them)."""
    secret = config.hints.secret
    if not config.hints.enabled or secret is None:
        return None
    return HintBox(secret.reveal(), config.hints.tolerance)


def dry_run(config: Config, log: Any, *, emit_existing: bool = False) -> CycleReport:
    """``run --dry-run``: observe one cycle reading everything; write and send nothing."""
    with _readonly_state(config.state) as store:
        options = PipelineOptions(emit_existing=emit_existing)
        pipeline = _checked_pipeline(config, store, log, options)
        return pipeline.observe(full=True).report


def _checked_pipeline(config: Config, store: Store, log: Any, options: PipelineOptions) -> Pipeline:
    """A pipeline on ``store``, once the state is known to be this registry's."""
    pipeline = Pipeline(config, store, log, options)
    pipeline.check_registry_matches()
    return pipeline


@contextmanager
def _readonly_state(state: StateConfig) -> Iterator[Store]:
    """The state for a dry run: the real one if it exists (unlocked, not written), else empty."""
    if state.shared or state.path.exists():
        with Store.for_config(state, lock=False) as store:
            yield store
        return
    with (
        tempfile.TemporaryDirectory() as tmp,
        Store.open(Path(tmp) / "state.db", lock=False) as store,
    ):
        yield store
