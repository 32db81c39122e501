"""A cycle is observed, then committed: observing (all a dry run does) writes nothing to the
state; committing writes what was observed, or the failure to read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import TAG_SET
from tests.unit.test_incremental import FakeRegistry, Harness, types
from watcher import state_meta as sm
from watcher.errors import RegistryError


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    fake = FakeRegistry()
    fake.create_model("fraud")
    fake.create_version("fraud")
    with Harness(tmp_path, fake) as h:
        yield h


def test_observing_writes_nothing_and_committing_writes_the_cycle(harness: Harness) -> None:
    harness.cycle()
    meta = harness.store.all_meta()
    snapshot = harness.observed
    harness.fake.set_tag("fraud", "1", "team", "risk")

    cycle = harness.pipeline.observe(full=True)
    assert types(cycle.report.events) == [(TAG_SET, "fraud", "1")]
    assert harness.store.all_meta() == meta
    assert harness.observed == snapshot
    assert harness.store.recent_events(limit=10) == []

    report = harness.pipeline.commit(cycle)
    assert report is cycle.report
    assert types(harness.store.recent_events(limit=10)) == [(TAG_SET, "fraud", "1")]
    harness.assert_exact()


def test_a_failed_read_is_committed_as_a_failed_poll(harness: Harness) -> None:
    harness.cycle()
    harness.fake.failures["scan_versions"] = RegistryError("MLflow answered 503")

    cycle = harness.pipeline.observe(full=True)
    assert not cycle.report.ok
    assert sm.LAST_POLL_RESULT.get(harness.store.all_meta()) == sm.POLL_OK

    harness.pipeline.commit(cycle)
    meta = harness.store.all_meta()
    assert sm.LAST_POLL_RESULT.get(meta) == sm.POLL_FAILED
    assert sm.LAST_POLL_ERROR.get(meta) == "MLflow answered 503"


def test_only_a_read_as_the_cadences_ask_records_the_cadences(harness: Harness) -> None:
    harness.pipeline.run_cycle(full=True)  # run --once: every read is full, no cadence applies
    assert sm.SCAN_EVERY["versions"].get(harness.store.all_meta()) is None
    harness.cycle()
    assert sm.SCAN_EVERY["versions"].get(harness.store.all_meta()) is not None
