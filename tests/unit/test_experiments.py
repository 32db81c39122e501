"""Each event about a version with a run carries the run's experiment id: one request per run,
none for a poll without events, and a run that cannot be read never holds an event up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RecordingLog
from tests.unit.test_incremental import FakeRegistry, Harness
from watcher.errors import RegistryError
from watcher.experiments import Experiments
from watcher.model import Event, EventType
from watcher.payloads import example_event
from watcher.registry import ReaderSettings, RestReader


class RunsRegistry(FakeRegistry):
    """The fake registry with a tracking server beside it: each run is in experiment
    ``exp-<run id>``, but for the runs in ``gone`` (404) and ``refused`` (an error)."""

    def __init__(self) -> None:
        super().__init__()
        self.run_reads: list[str] = []
        self.gone: set[str] = set()
        self.refused: set[str] = set()

    def run_experiment(self, run_id: str) -> str | None:
        self.run_reads.append(run_id)
        self.stats.requests += 1
        if run_id in self.refused:
            raise RegistryError("MLflow answered 403 to GET /api/2.0/mlflow/runs/get")
        return None if run_id in self.gone else f"exp-{run_id}"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    fake = RunsRegistry()
    fake.create_model("fraud")
    fake.create_version("fraud")
    with Harness(tmp_path, fake) as h:
        h.cycle()  # the baseline
        yield h


def runs(harness: Harness) -> RunsRegistry:
    assert isinstance(harness.fake, RunsRegistry)
    return harness.fake


def new_version(harness: Harness, **tags: str) -> tuple[str, str]:
    """A new version of "fraud" (with these tags): its number and its run's id."""
    fake = runs(harness)
    version = fake.create_version("fraud", tags=tags)
    return version, fake.versions[("fraud", version)].state().run_id


def test_the_baseline_and_steady_polls_read_no_run(harness: Harness) -> None:
    assert runs(harness).run_reads == []
    for _ in range(5):
        report = harness.cycle()
        assert report.events == []
    assert runs(harness).run_reads == []


def test_a_new_versions_events_carry_its_runs_experiment_read_once(harness: Harness) -> None:
    fake = runs(harness)
    version, run_id = new_version(harness, team="risk", gate="pending")
    report = harness.cycle()
    kinds = sorted(e.type for e in report.events)
    assert kinds == sorted(
        [
            EventType.MODEL_VERSION_CREATED,
            EventType.MODEL_VERSION_TAG_SET,
            EventType.MODEL_VERSION_TAG_SET,
        ]
    )
    assert {e.experiment_id for e in report.events} == {f"exp-{run_id}"}
    assert fake.run_reads == [run_id]
    stored = harness.store.recent_events(limit=10)
    assert {e.experiment_id for e in stored} == {f"exp-{run_id}"}

    fake.transition("fraud", version, "Staging")
    fake.set_alias("fraud", "champion", version)
    report = harness.cycle(scan_models=True)
    assert {e.experiment_id for e in report.events} == {f"exp-{run_id}"}
    assert fake.run_reads == [run_id], "the run's experiment is remembered"


def test_a_run_that_is_gone_leaves_the_event_without_experiment_and_says_so(
    harness: Harness,
) -> None:
    _, run_id = new_version(harness)
    runs(harness).gone.add(run_id)
    (event,) = harness.cycle().events
    assert event.type is EventType.MODEL_VERSION_CREATED
    assert event.experiment_id is None
    assert harness.log.events("event.experiment_unknown") == [
        {"run_id": run_id, "error": "no such run"}
    ]


def test_a_run_that_cannot_be_read_fails_nothing_and_is_asked_again_later(
    harness: Harness,
) -> None:
    fake = runs(harness)
    version, run_id = new_version(harness)
    fake.refused.add(run_id)
    report = harness.cycle()
    assert report.ok
    assert [e.experiment_id for e in report.events] == [None]
    (line,) = harness.log.events("event.experiment_unknown")
    assert line["run_id"] == run_id
    assert "403" in line["error"]

    fake.refused.clear()
    fake.transition("fraud", version, "Production")
    report = harness.cycle()
    assert {e.experiment_id for e in report.events} == {f"exp-{run_id}"}
    assert fake.run_reads == [run_id, run_id]


def test_a_reader_without_runs_gives_no_experiment_and_a_log_line(tmp_path: Path) -> None:
    fake = FakeRegistry()
    fake.create_model("fraud")
    with Harness(tmp_path, fake) as harness:
        harness.cycle()
        fake.create_version("fraud")
        (event,) = harness.cycle().events
    assert event.experiment_id is None
    (line,) = harness.log.events("event.experiment_unknown")
    assert line["error"] == "FakeRegistry does not read runs"


def test_events_without_a_run_or_with_an_experiment_ask_nothing() -> None:
    log = RecordingLog()
    experiments = Experiments(log)
    reader = RunsRegistry()
    model_event = example_event(EventType.REGISTERED_MODEL_CREATED)
    known = example_event(EventType.MODEL_VERSION_CREATED)
    assert experiments.add_to([model_event, known], reader) == [model_event, known]
    assert reader.run_reads == []


def test_the_cache_forgets_the_oldest_run_first() -> None:
    experiments = Experiments(RecordingLog(), size=2)
    reader = RunsRegistry()
    for run_id in ("a", "b", "c", "b", "a"):
        experiments.of(run_id, reader)
    assert reader.run_reads == ["a", "b", "c", "a"]


def test_one_poll_asks_once_for_a_run_that_fails() -> None:
    log = RecordingLog()
    reader = RunsRegistry()
    reader.refused.add("r1")
    base = example_event(EventType.MODEL_VERSION_TAG_SET)
    events: list[Event] = [
        Event.from_dict({**base.to_dict(), "experiment_id": None, "run_id": "r1"}) for _ in range(3)
    ]
    filled = Experiments(log).add_to(events, reader)
    assert [e.experiment_id for e in filled] == [None, None, None]
    assert reader.run_reads == ["r1"]
    assert len(log.events("event.experiment_unknown")) == 1


class Answer:
    """What MLflow's http_request returns, as much of it as the REST reader reads."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code = status_code
        self._body = body
        self.content = json.dumps(body).encode()
        self.text = self.content.decode()

    def json(self) -> dict[str, Any]:
        return self._body


Asked = list[tuple[str, str, list[tuple[str, Any]]]]


def rest_reader(
    answer: Answer, tracking_uri: str = "http://tracking.test:5000"
) -> tuple[RestReader, Asked]:
    """A REST reader of a registry at registry.test whose runs are at ``tracking_uri``; every
    request is answered with ``answer`` and recorded (host, endpoint, parameters)."""
    reader = RestReader(ReaderSettings(tracking_uri, "http://registry.test:5000"))
    asked: Asked = []

    def http_request(creds: Any, endpoint: str, method: str, **kwargs: Any) -> Answer:
        asked.append((creds.host, endpoint, kwargs["params"]))
        return answer

    reader._http_request = http_request
    return reader, asked


def test_the_rest_reader_asks_the_tracking_server_for_the_run() -> None:
    answer = Answer(200, {"run": {"info": {"run_id": "r1", "experiment_id": "7"}}})
    reader, asked = rest_reader(answer)
    assert reader.run_experiment("r1") == "7"
    assert asked == [("http://tracking.test:5000", "/api/2.0/mlflow/runs/get", [("run_id", "r1")])]
    assert reader.stats.requests == 1


def test_the_rest_reader_says_none_for_a_run_that_is_gone() -> None:
    gone = Answer(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'r1' not found"})
    reader, _ = rest_reader(gone)
    assert reader.run_experiment("r1") is None


def test_the_rest_reader_says_what_a_refusal_means_for_a_run() -> None:
    refused = Answer(403, {"error_code": "PERMISSION_DENIED", "message": "Permission denied"})
    reader, _ = rest_reader(refused)
    with pytest.raises(RegistryError) as info:
        reader.run_experiment("r1")
    assert "403" in str(info.value)
    assert "may not read this run's experiment" in str(info.value)


def test_runs_not_behind_a_server_are_not_read_over_rest() -> None:
    reader, asked = rest_reader(Answer(200, {}), tracking_uri="sqlite:///elsewhere.db")
    with pytest.raises(RegistryError, match="not read over REST"):
        reader.run_experiment("r1")
    assert asked == []
