"""Incremental reading against an in-memory registry that moves timestamps the way MLflow does.

The fake registry below moves timestamps as MLflow's stores do (measured on MLflow 2.9 to 3.x;
docs/architecture.md, "How the registry is read"): creating a version moves its model's
``last_updated_timestamp``; any stage transition moves the version's and the model's
(``archive_existing_versions`` bumps every archived sibling with the same timestamp); a version
description moves the version's only; a model description the model's; deleting a version moves
the model's; a rename moves the model's and every version's; tags and aliases move nothing;
deleting a model leaves nothing behind. The watcher's real Pipeline, IncrementalReader, detector
and Store are driven through it.
"""

from __future__ import annotations

import ast
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.helpers import (
    ALIAS_CREATED,
    ALIAS_DELETED,
    M_CREATED,
    M_DELETED,
    M_RENAMED,
    STAGE,
    TAG_SET,
    TO_PRODUCTION,
    TO_STAGING,
    V_CREATED,
    V_DELETED,
    RecordingLog,
    model_state,
    offset_page,
    version_state,
)
from watcher.config import Config, MlflowConfig, WatchConfig
from watcher.detect import detect
from watcher.errors import RegistryError
from watcher.incremental import (
    MODELS_SCAN_SHARE,
    VERSIONS_SCAN_SHARE,
    WATERMARK_OVERLAP_MS,
    Cadence,
    IncrementalReader,
    TrackedVersions,
)
from watcher.merge import Draft, Plan
from watcher.model import NO_STAGE, Event, EventType, ModelState, Observation, VersionState
from watcher.pipeline import CycleReport, Pipeline, PipelineOptions
from watcher.scan import PROMPT_TAG, PROMPTS_FILTER, RECENT_ORDER, ReaderSettings, ScanReader
from watcher.store import Store

Key = tuple[str, str]
Watches = Callable[[str], bool]

STAGES = (NO_STAGE, "Staging", "Production", "Archived")
POLL = 30.0
NEVER = 1e12
"""A fixed cadence so long that no scan is due after the first full read."""
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
"""Where the property test keeps its many state databases: tmpfs spares a fsync per cycle."""
TRACKING_URI = "http://mlflow.test:5000"


# --------------------------------------------------------------------------- the fake registry


@dataclass
class _Model:
    name: str
    created: int
    updated: int
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    next_version: int = 1

    def state(self) -> ModelState:
        return model_state(
            self.name,
            created=self.created,
            updated=self.updated,
            description=self.description,
            tags=self.tags,
            aliases=self.aliases,
        )


@dataclass
class _Version:
    name: str
    version: str
    created: int
    updated: int
    stage: str = NO_STAGE
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def state(self) -> VersionState:
        return version_state(
            self.version,
            self.stage,
            name=self.name,
            created=self.created,
            updated=self.updated,
            source=f"runs:/run-{self.created}/model",
            run_id=f"run-{self.created}",
            description=self.description,
            tags=self.tags,
        )


class FakeRegistry(ScanReader):
    """An MLflow model registry in memory, read by the watcher's own reader.

    It supplies only what a transport supplies (a page of each search, a get of each kind);
    the paging, the prompt filter and the read algorithms are the real reader's, so the
    requests counted (one per page or get, in ``stats`` and ``calls``) are what the watcher
    would send. ``now`` is a logical clock in epoch milliseconds that advances ``step`` on
    every write (and on every ``tick``); only the rows the facts name get the new timestamp.
    """

    def __init__(
        self,
        *,
        step: int = 1000,
        page_size: int = 1000,
        mlflow3: bool = True,
        excludes_prompts: bool = False,
    ) -> None:
        super().__init__(ReaderSettings(TRACKING_URI, TRACKING_URI, page_size=page_size))
        self.excludes_prompts = excludes_prompts
        """As MLflow 3's stores do: prompts only in a search that asks for them."""
        self.now = int(time.time() * 1000)
        self.step = step
        self.mlflow3 = mlflow3
        self.models: dict[str, _Model] = {}
        self.versions: dict[Key, _Version] = {}
        self.calls: list[str] = []
        self.failures: dict[str, RegistryError] = {}
        """Request kind -> the error every such request raises."""
        self.after_request: Callable[[str], None] | None = None
        """Called after each request is answered: concurrent writes, a slow server."""
        self.hide_versions_once: set[Key] = set()
        """Live versions the next version scan leaves out (offset paging under deletes)."""
        self.hide_models_once: set[str] = set()

    # ----------------------------------------------------------------- clock

    def tick(self) -> int:
        self.now += self.step
        return self.now

    # ----------------------------------------------------------------- writes

    def create_model(
        self, name: str, *, description: str = "", tags: dict[str, str] | None = None
    ) -> None:
        assert name not in self.models
        ts = self.tick()
        self.models[name] = _Model(name, ts, ts, description, dict(tags or {}))

    def create_prompt(self, name: str) -> None:
        self.create_model(name, tags={PROMPT_TAG: "true"})

    def create_version(
        self, name: str, *, tags: dict[str, str] | None = None, description: str = ""
    ) -> str:
        model = self.models[name]
        ts = self.tick()
        number = str(model.next_version)
        model.next_version += 1
        model.updated = ts
        self.versions[(name, number)] = _Version(
            name, number, ts, ts, description=description, tags=dict(tags or {})
        )
        return number

    def transition(
        self, name: str, version: str, stage: str, *, archive_existing: bool = False
    ) -> None:
        ts = self.tick()
        target = self.versions[(name, version)]
        target.stage = stage
        target.updated = ts
        self.models[name].updated = ts
        if archive_existing and stage in ("Staging", "Production"):
            for sibling in self._versions_of(name):
                if sibling is not target and sibling.stage == stage:
                    sibling.stage = "Archived"
                    sibling.updated = ts

    def set_version_description(self, name: str, version: str, text: str) -> None:
        self.versions[(name, version)].description = text
        self.versions[(name, version)].updated = self.tick()

    def set_model_description(self, name: str, text: str) -> None:
        self.models[name].description = text
        self.models[name].updated = self.tick()

    def delete_version(self, name: str, version: str) -> None:
        del self.versions[(name, version)]
        model = self.models[name]
        model.updated = self.tick()
        if self.mlflow3:  # MLflow 3 removes the aliases of a deleted version; 2.x leaves them
            model.aliases = {a: v for a, v in model.aliases.items() if v != version}

    def delete_model(self, name: str) -> None:
        self.tick()
        del self.models[name]
        for key in [k for k in self.versions if k[0] == name]:
            del self.versions[key]

    def rename_model(self, old: str, new: str) -> None:
        assert new not in self.models
        ts = self.tick()
        model = self.models.pop(old)
        model.name = new
        model.updated = ts
        self.models[new] = model
        for version in self._versions_of(old):
            del self.versions[(old, version.version)]
            version.name = new
            version.updated = ts
            self.versions[(new, version.version)] = version

    def set_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tick()  # time passes; no row is touched
        self.versions[(name, version)].tags[key] = value

    def delete_tag(self, name: str, version: str, key: str) -> None:
        self.tick()
        self.versions[(name, version)].tags.pop(key, None)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.tick()
        self.models[name].tags[key] = value

    def delete_model_tag(self, name: str, key: str) -> None:
        self.tick()
        self.models[name].tags.pop(key, None)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        assert (name, version) in self.versions
        self.tick()
        self.models[name].aliases[alias] = version

    def delete_alias(self, name: str, alias: str) -> None:
        self.tick()
        self.models[name].aliases.pop(alias, None)

    # ----------------------------------------------------------------- the truth

    def _versions_of(self, name: str) -> list[_Version]:
        found = [v for (n, _), v in self.versions.items() if n == name]
        return sorted(found, key=lambda v: int(v.version))

    def _is_prompt(self, name: str) -> bool:
        model = self.models.get(name)
        return model is not None and model.tags.get(PROMPT_TAG, "").lower() == "true"

    def _model_visible(self, model: _Model, watches: Watches) -> bool:
        return (self.settings.prompts or not self._is_prompt(model.name)) and watches(model.name)

    def _version_visible(self, version: _Version, watches: Watches) -> bool:
        prompts = self.settings.prompts  # prompts are watched only when the reader reads them
        return (prompts or not self._is_prompt(version.name)) and watches(version.name)

    def truth(self, watches: Watches) -> tuple[dict[str, ModelState], dict[Key, VersionState]]:
        """What a perfect watcher would have observed now."""
        models = {n: m.state() for n, m in self.models.items() if self._model_visible(m, watches)}
        versions = {
            k: v.state() for k, v in self.versions.items() if self._version_visible(v, watches)
        }
        return models, versions

    # ----------------------------------------------------------------- the raw requests

    def _request(self, kind: str) -> None:
        """One request of a kind the tests name (what the reader's read is for): counted,
        and failed when the test says so."""
        self.stats.requests += 1
        self.calls.append(kind)
        if kind in self.failures:
            raise self.failures[kind]

    def _answered(self, kind: str) -> None:
        if self.after_request is not None:
            self.after_request(kind)

    def _search_models(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str = ""
    ) -> tuple[list[ModelState], str | None]:
        scan = order_by != RECENT_ORDER
        kind = "scan_models" if scan else "models_updated_since"
        self._request(kind)
        found = [m for m in self.models.values() if self._searched(m.name, filter_string)]
        if scan:
            rows = sorted(found, key=lambda m: m.name)
            rows = [m for m in rows if m.name not in self.hide_models_once]
        else:
            rows = sorted(found, key=lambda m: -m.updated)
        page, token = offset_page([m.state() for m in rows], page_token, page_size)
        if scan and token is None:
            self.hide_models_once.clear()
        self._answered(kind)
        return page, token

    def _search_versions(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str
    ) -> tuple[list[VersionState], str | None]:
        rows = [v for v in self.versions.values() if self._searched(v.name, filter_string)]
        filter_string = filter_string.replace(PROMPTS_FILTER, "").removesuffix(" AND ")
        if filter_string.startswith("name IN "):  # the hot set's batched read (MLflow 3 only)
            kind = "versions_in"
            self._request(kind)
            if not self.mlflow3:
                raise RegistryError(
                    "Only the 'run_id' attribute supports comparison with a list",
                    code="INVALID_PARAMETER_VALUE",
                    status=400,
                )
            listed = ast.literal_eval(filter_string[len("name IN ") :])
            names = set(listed) if isinstance(listed, tuple) else {listed}
            rows = sorted(
                (v for v in rows if v.name in names), key=lambda v: (v.name, int(v.version))
            )
            page, token = offset_page([v.state() for v in rows], page_token, page_size)
            self._answered(kind)
            return page, token
        if filter_string:  # name = 'x' or name = "x": the reader's by-name read
            kind = "versions_of"
            name = filter_string.split(" = ", 1)[1][1:-1]
            rows = sorted((v for v in rows if v.name == name), key=lambda v: int(v.version))
        elif order_by == RECENT_ORDER:
            kind = "versions_updated_since"
            rows.sort(key=lambda v: -v.updated)
        else:
            kind = "scan_versions"
            rows.sort(key=lambda v: (v.name, int(v.version)))
            rows = [v for v in rows if (v.name, v.version) not in self.hide_versions_once]
        self._request(kind)
        page, token = offset_page([v.state() for v in rows], page_token, page_size)
        if kind == "scan_versions" and token is None:
            self.hide_versions_once.clear()
        self._answered(kind)
        return page, token

    def _searched(self, name: str, filter_string: str) -> bool:
        """Whether a search with this filter returns the rows of this model or prompt."""
        if PROMPTS_FILTER in filter_string:
            return self._is_prompt(name)
        return not (self.excludes_prompts and self._is_prompt(name))

    def get_model(self, name: str) -> ModelState | None:
        self._request("get_model")
        model = self.models.get(name)
        self._answered("get_model")
        return None if model is None else model.state()

    def get_version(self, name: str, version: str) -> VersionState | None:
        self._request("get_version")
        found = self.versions.get((name, version))
        self._answered("get_version")
        return None if found is None else found.state()


# --------------------------------------------------------------------------- the harness


def watch_config(
    models_interval: float | None = NEVER,
    full_scan_interval: float | None = NEVER,
    max_duty: float = 0.1,
    hot_window: float = 0.0,
) -> WatchConfig:
    """The tests here read without a hot set (every model of the fake is recent): what the
    polls and scans alone see. tests/unit/test_hotset.py turns it on."""
    return WatchConfig(
        interval=POLL,
        exclude_models=("skip*",),
        models_scan_interval=models_interval,
        versions_scan_interval=full_scan_interval,
        max_duty=max_duty,
        hot_window=hot_window,
    )


class ManualRunner:
    """Background scans, run when the test says (between polls, or with writes during)."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def __call__(self, job: Callable[[], None]) -> None:
        self.pending.append(job)

    def run(self) -> None:
        jobs, self.pending = self.pending, []
        for job in jobs:
            job()


class Harness:
    """The real Pipeline on a real Store, reading the fake; a fake monotonic clock that moves
    one poll interval per cycle decides which scans are due."""

    def __init__(
        self,
        root: Path,
        fake: FakeRegistry,
        watch: WatchConfig | None = None,
        *,
        background: bool = False,
    ) -> None:
        self.root = root
        self.background = background
        self.runner = ManualRunner()
        self.fake = fake
        self.config = Config(
            mlflow=MlflowConfig(tracking_uri=TRACKING_URI),
            watch=watch or watch_config(),
        )
        self.mono = 10_000.0
        self.log = RecordingLog()
        self.events: list[Event] = []
        self._stack = ExitStack()

    def __enter__(self) -> Harness:
        self.store = self._stack.enter_context(Store.open(self.root / "state.db"))
        self.pipeline = Pipeline(
            self.config,
            self.store,
            self.log,
            PipelineOptions(scan_runner=self.runner if self.background else None),
            reader_factory=lambda _settings: self.fake,
        )
        # The same reader, on the test's clocks: monotonic time moves when the test says, and
        # observations are stamped by the registry's logical clock.
        watch = self.config.watch
        self.pipeline.incremental = IncrementalReader(
            watch.watches,
            watch.interval,
            watch.models_scan_interval,
            watch.versions_scan_interval,
            watch.max_duty,
            self.log,
            scan_reader=(lambda: self.fake) if self.background else None,
            runner=self.runner if self.background else None,
            clock=lambda: self.mono,
            wall_ms=self.fake.tick,
            hot_window=watch.hot_window,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def watches(self, name: str) -> bool:
        return self.config.watch.watches(name)

    def advance(self, seconds: float) -> None:
        self.mono += seconds

    def cycle(self, *, scan_models: bool = False, scan_versions: bool = False) -> CycleReport:
        """One poll, one interval after the last; the named scans are made due."""
        self.mono += POLL
        due = [k for k, wanted in (("models", scan_models), ("versions", scan_versions)) if wanted]
        self.pipeline.incremental.scan_next(*due)
        self.fake.calls.clear()
        report = self.pipeline.run_cycle()
        assert report.ok, report.error
        self.events.extend(report.events)
        return report

    @property
    def observed(self) -> Observation:
        snapshot = self.store.load_snapshot()
        assert snapshot is not None
        return snapshot

    def assert_exact(self) -> None:
        models, versions = self.fake.truth(self.watches)
        assert dict(self.observed.models) == models
        assert dict(self.observed.versions) == versions


@pytest.fixture
def fake() -> FakeRegistry:
    return sample_registry()


def sample_registry() -> FakeRegistry:
    """fraud with three versions, churn with one, an excluded model and a prompt."""
    # Writes further apart than the watermark overlap: a steady cycle re-reads only the newest
    # rows, so what only a scan can see (tags, aliases) is not picked up early by chance.
    registry = FakeRegistry(step=WATERMARK_OVERLAP_MS + 1000)
    registry.create_model("fraud")
    for _ in range(3):
        registry.create_version("fraud")
    registry.create_model("churn")
    registry.create_version("churn")
    registry.create_model("skip-me")  # excluded by the watch config
    registry.create_version("skip-me")
    registry.create_prompt("greeting")  # an MLflow 3 prompt: never a model to watch
    registry.create_version("greeting")
    return registry


@pytest.fixture
def harness(tmp_path: Path, fake: FakeRegistry) -> Iterator[Harness]:
    with Harness(tmp_path, fake) as h:
        baseline = h.cycle()
        assert baseline.baseline
        assert baseline.kind == "full"
        assert baseline.events == []
        h.assert_exact()
        yield h


def types(events: list[Event]) -> list[tuple[EventType, str, str | None]]:
    return [(e.type, e.model_name, e.model_version) for e in events]


# --------------------------------------------------------------------------- 1. cost


def test_a_quiet_steady_cycle_costs_two_requests(harness: Harness) -> None:
    for _ in range(3):
        report = harness.cycle()
        assert report.kind == "incremental"
        assert report.requests == 2
        assert harness.fake.calls == ["models_updated_since", "versions_updated_since"]
        assert report.events == []
    harness.assert_exact()


def test_one_transition_costs_one_more_request_and_is_reported_once(harness: Harness) -> None:
    harness.fake.transition("fraud", "2", "Staging")
    report = harness.cycle()
    assert report.kind == "incremental"
    assert report.requests == 3
    assert harness.fake.calls == [
        "models_updated_since",
        "versions_updated_since",
        "versions_of",
    ]
    assert types(report.events) == [(STAGE, "fraud", "2"), (TO_STAGING, "fraud", "2")]
    assert report.events[0].from_stage == NO_STAGE
    assert report.events[0].to_stage == "Staging"
    harness.assert_exact()

    # The overlap reads the same change again: nothing new, and the model is not re-read.
    again = harness.cycle()
    assert again.requests == 2
    assert again.events == []


def test_a_version_description_is_read_without_rereading_its_model(harness: Harness) -> None:
    harness.fake.set_version_description("fraud", "1", "better")
    report = harness.cycle()
    assert report.requests == 2
    assert report.events == []
    assert harness.observed.versions[("fraud", "1")].description == "better"


def test_archive_existing_versions_moves_every_sibling(harness: Harness) -> None:
    harness.fake.transition("fraud", "1", "Production")
    harness.fake.transition("fraud", "2", "Production")
    harness.cycle()
    harness.fake.transition("fraud", "3", "Production", archive_existing=True)
    report = harness.cycle()
    moves = {(e.model_version, e.from_stage, e.to_stage) for e in report.events if e.type == STAGE}
    assert moves == {
        ("1", "Production", "Archived"),
        ("2", "Production", "Archived"),
        ("3", NO_STAGE, "Production"),
    }
    harness.assert_exact()


def test_a_new_model_is_the_only_one_reread(tmp_path: Path) -> None:
    registry = FakeRegistry(step=WATERMARK_OVERLAP_MS)  # every write one overlap after the last
    registry.create_model("m")
    registry.create_version("m")
    with Harness(tmp_path, registry) as h:
        h.cycle()
        registry.transition("m", "1", "Staging")
        assert h.cycle().requests == 3
        registry.create_model("n")
        report = h.cycle()
        # only the new model is re-read: the overlap no longer reaches m's transition
        assert h.fake.calls.count("versions_of") == 1
        assert types(report.events) == [(M_CREATED, "n", None)]


@pytest.mark.parametrize(
    ("behind_ms", "seen_at_once"),
    [(WATERMARK_OVERLAP_MS // 2, True), (3 * WATERMARK_OVERLAP_MS, False)],
    ids=["within-overlap", "beyond-overlap"],
)
def test_a_write_stamped_behind_the_watermark(
    harness: Harness, behind_ms: int, seen_at_once: bool
) -> None:
    """A late commit or a server clock stepped back: the overlap catches what it covers, the
    versions scan the rest."""
    harness.fake.transition("churn", "1", "Staging")
    harness.cycle()
    mark = harness.fake.versions[("churn", "1")].updated
    harness.fake.now = mark - behind_ms - harness.fake.step
    harness.fake.set_version_description("fraud", "2", "late")
    assert harness.fake.versions[("fraud", "2")].updated == mark - behind_ms
    harness.cycle()
    assert (harness.observed.versions[("fraud", "2")].description == "late") is seen_at_once
    harness.cycle(scan_versions=True)
    harness.assert_exact()


# --------------------------------------------------------------------------- 3. what each read sees


def test_a_deleted_version_is_seen_by_the_next_steady_cycle(harness: Harness) -> None:
    harness.fake.set_alias("fraud", "champion", "2")
    harness.cycle(scan_models=True)
    harness.fake.delete_version("fraud", "2")  # MLflow 3 drops its alias too
    report = harness.cycle()
    assert report.kind == "incremental"
    assert types(report.events) == [
        (V_DELETED, "fraud", "2"),  # at the model's bump
        (ALIAS_DELETED, "fraud", "2"),  # at the read
    ]
    deleted = report.events[0]
    assert deleted.timestamp == harness.fake.models["fraud"].updated  # the model's bump
    harness.assert_exact()


def test_a_deleted_model_is_seen_only_at_the_models_scan(harness: Harness) -> None:
    harness.fake.delete_model("churn")
    for _ in range(2):
        report = harness.cycle()
        assert report.kind == "incremental"
        assert report.events == []
        assert "churn" in harness.observed.models  # no timestamp says it went
    report = harness.cycle(scan_models=True)
    assert report.kind == "incremental+models"
    assert types(report.events) == [(M_DELETED, "churn", None)]  # and nothing per version
    harness.assert_exact()


def test_a_deleted_model_seen_first_by_a_versions_scan_gives_one_event(harness: Harness) -> None:
    harness.fake.delete_model("fraud")
    first = harness.cycle(scan_versions=True)
    assert first.kind == "incremental+versions"
    second = harness.cycle(scan_models=True)
    # detect.py's rule: "A deleted model emits REGISTERED_MODEL_DELETED once, and nothing for
    # its versions" -- whichever scan notices first.
    assert types(first.events + second.events) == [(M_DELETED, "fraud", None)]


def test_an_alias_is_seen_at_the_models_scan(harness: Harness) -> None:
    harness.fake.set_alias("fraud", "champion", "3")
    assert harness.cycle().events == []
    assert harness.cycle(scan_versions=True).events == []  # versions carry no aliases
    report = harness.cycle(scan_models=True)
    assert types(report.events) == [(ALIAS_CREATED, "fraud", "3")]
    assert report.events[0].alias == "champion"
    harness.fake.set_alias("fraud", "champion", "1")
    report = harness.cycle(scan_models=True)
    assert [(e.type, e.model_version, e.previous_version) for e in report.events] == [
        (ALIAS_CREATED, "1", "3")
    ]
    harness.assert_exact()


def test_a_version_tag_is_seen_at_the_versions_scan(harness: Harness) -> None:
    harness.fake.set_tag("fraud", "1", "validated", "yes")
    assert harness.cycle().events == []
    assert harness.cycle(scan_models=True).events == []
    report = harness.cycle(scan_versions=True)
    assert report.kind == "incremental+versions"
    assert [(e.type, e.model_version, e.tag_key, e.tag_value) for e in report.events] == [
        (TAG_SET, "1", "validated", "yes")
    ]
    harness.assert_exact()


def gone_at_the_models_scan(harness: Harness, name: str) -> None:
    """``name`` was renamed away: a steady poll cannot see a model go, so it announces
    nothing; the models scan announces the deletion, and the observation is exact after."""
    assert harness.cycle().events == []
    report = harness.cycle(scan_models=True)
    assert types(report.events) == [(M_DELETED, name, None)]
    harness.assert_exact()


def test_a_rename_seen_by_a_steady_poll_is_one_event_for_one_get(harness: Harness) -> None:
    """The new name comes with the poll (its timestamp moved); the snapshot's model created
    at the same time is asked for by its old name, found gone, and the two are one rename."""
    harness.fake.transition("churn", "1", "Production")
    harness.cycle()
    harness.fake.rename_model("churn", "retention")
    report = harness.cycle()
    assert report.kind == "incremental"
    assert [(e.type, e.model_name, e.previous_name) for e in report.events] == [
        (M_RENAMED, "retention", "churn")
    ]
    assert harness.fake.calls.count("get_model") == 1
    harness.assert_exact()
    assert harness.cycle(scan_models=True).events == []


def test_a_name_freed_by_a_rename_and_taken_by_another_is_two_renames(harness: Harness) -> None:
    """churn becomes retention and fraud takes the name churn: the name churn now holds
    another model (another creation time), so its twin, fraud, is asked for too."""
    harness.fake.rename_model("churn", "retention")
    harness.fake.rename_model("fraud", "churn")
    report = harness.cycle()
    assert sorted((e.type, e.model_name, e.previous_name) for e in report.events) == [
        (M_RENAMED, "churn", "fraud"),
        (M_RENAMED, "retention", "churn"),
    ]
    assert harness.fake.calls.count("get_model") == 1  # fraud; retention's twin is not held
    harness.assert_exact()


def test_a_model_created_now_costs_no_get(harness: Harness) -> None:
    harness.fake.create_model("fresh")
    report = harness.cycle()
    assert types(report.events) == [(M_CREATED, "fresh", None)]
    assert "get_model" not in harness.fake.calls  # no model of the snapshot was created now


def test_a_rename_whose_check_fails_is_new_at_once_and_the_old_name_goes_at_the_models_scan(
    harness: Harness,
) -> None:
    """The get that would find the old name gone fails: the poll goes on without it, the
    old model stays as it was, and the models scan settles it."""
    harness.fake.transition("churn", "1", "Production")
    harness.cycle()
    harness.fake.rename_model("churn", "retention")
    harness.fake.failures["get_model"] = RegistryError("connection reset")
    report = harness.cycle()
    assert types(report.events) == [
        (M_CREATED, "retention", None),
        (V_CREATED, "retention", "1"),
        (STAGE, "retention", "1"),
        (TO_PRODUCTION, "retention", "1"),
    ]
    assert "churn" in harness.observed.models
    [(level, _, fields)] = harness.log.named("poll.rename_check_failed")
    assert (level, fields["model"]) == ("warning", "churn")
    del harness.fake.failures["get_model"]
    gone_at_the_models_scan(harness, "churn")


def test_a_model_created_in_the_same_millisecond_as_a_live_one_is_only_created(
    harness: Harness,
) -> None:
    """A new name whose creation time a snapshot model shares is not a rename when a get
    still finds that model: both stay, and nothing is said of the old one."""
    harness.fake.create_model("first")
    harness.cycle()
    harness.fake.transition("fraud", "1", "Staging")  # the polls' overlap leaves "first" behind
    harness.cycle()
    harness.fake.create_model("twin")
    harness.fake.models["twin"].created = harness.fake.models["first"].created
    report = harness.cycle()
    assert types(report.events) == [(M_CREATED, "twin", None)]
    assert harness.fake.calls.count("get_model") == 1
    assert {"first", "twin"} <= harness.observed.models.keys()
    harness.assert_exact()


def test_a_rename_between_the_poll_s_reads_is_one_event(harness: Harness) -> None:
    """Renamed after the models were read: the new name's versions bring its model (a
    latecomer), and the old name is asked for then."""

    def race(kind: str) -> None:
        if kind == "models_updated_since":
            harness.fake.after_request = None
            harness.fake.rename_model("churn", "retention")

    harness.fake.after_request = race
    report = harness.cycle()
    assert [(e.type, e.model_name, e.previous_name) for e in report.events] == [
        (M_RENAMED, "retention", "churn")
    ]
    harness.assert_exact()


def test_a_model_renamed_away_and_back_is_announced_each_time(harness: Harness) -> None:
    harness.fake.rename_model("churn", "retention")
    first = harness.cycle(scan_models=True)
    harness.fake.rename_model("retention", "churn")
    harness.cycle(scan_models=True)
    harness.fake.rename_model("churn", "retention")
    second = harness.cycle(scan_models=True)
    assert types(first.events) == types(second.events)
    # Seen in one read (the models scan), the old name gone and the new one appeared are one
    # rename, announced each time under its own id.
    assert [(e.type, e.model_name, e.previous_name) for e in second.events] == [
        (M_RENAMED, "retention", "churn")
    ]
    stored = [e for e in harness.store.recent_events(1000) if e.model_name == "retention"]
    assert [e.type for e in stored] == [M_RENAMED, M_RENAMED]
    assert len({e.event_id for e in stored}) == 2


def test_a_model_renamed_out_of_the_watch_goes_at_the_models_scan(harness: Harness) -> None:
    harness.fake.rename_model("churn", "skip-churn")
    gone_at_the_models_scan(harness, "churn")


def test_a_model_description_moves_the_model_and_is_read_at_once(harness: Harness) -> None:
    harness.fake.set_model_description("churn", "who leaves")
    report = harness.cycle()
    assert report.events == []
    assert harness.fake.calls.count("versions_of") == 1
    assert harness.observed.models["churn"].description == "who leaves"


def test_a_model_deleted_and_created_again_is_seen_by_a_steady_cycle(harness: Harness) -> None:
    harness.fake.delete_model("fraud")
    harness.fake.create_model("fraud")
    harness.fake.create_version("fraud")
    report = harness.cycle()
    assert types(report.events) == [
        (M_DELETED, "fraud", None),
        (M_CREATED, "fraud", None),
        (V_CREATED, "fraud", "1"),
    ]
    harness.assert_exact()


def test_prompts_and_unwatched_models_never_appear(harness: Harness) -> None:
    harness.fake.transition("greeting", "1", "Production")
    harness.fake.create_version("greeting")
    harness.fake.transition("skip-me", "1", "Production")
    assert harness.cycle().events == []
    assert harness.cycle(scan_models=True, scan_versions=True).events == []
    assert {n for n, _ in harness.observed.versions} == {"fraud", "churn"}


def create_a_model_after_the_models_are_read(harness: Harness, scan_models: bool) -> None:
    """Model "late" and its first version appear just after the cycle's first read of models."""
    first_read = "scan_models" if scan_models else "models_updated_since"

    def race(kind: str) -> None:
        if kind == first_read:
            harness.fake.after_request = None
            harness.fake.create_model("late")
            harness.fake.create_version("late")

    harness.fake.after_request = race


@pytest.mark.parametrize(
    ("scan_models", "scan_versions"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["steady", "models-scan", "versions-scan", "full"],
)
def test_a_model_created_between_the_reads_is_not_seen_version_first(
    harness: Harness, scan_models: bool, scan_versions: bool
) -> None:
    """Without a version scan the late model is fetched by name, and the observation is then
    exact; a version scan reads it with its versions."""
    create_a_model_after_the_models_are_read(harness, scan_models)
    report = harness.cycle(scan_models=scan_models, scan_versions=scan_versions)
    assert types(report.events) == [(M_CREATED, "late", None), (V_CREATED, "late", "1")]
    if not scan_versions:
        assert "get_model" in harness.fake.calls
        harness.assert_exact()


# --------------------------------------------------------------------------- 4. scan gaps


@pytest.mark.parametrize(
    ("scan_models", "scan_versions", "kind"),
    [(True, True, "full"), (False, True, "incremental+versions")],
)
def test_a_scan_that_drops_a_live_version_deletes_nothing(
    harness: Harness, scan_models: bool, scan_versions: bool, kind: str
) -> None:
    # Offset paging: a version deleted between two pages hides an unrelated live one.
    harness.fake.delete_version("fraud", "1")
    harness.fake.hide_versions_once.add(("fraud", "3"))
    report = harness.cycle(scan_models=scan_models, scan_versions=scan_versions)
    assert report.kind == kind
    assert types(report.events) == [(V_DELETED, "fraud", "1")]
    assert ("fraud", "3") in harness.observed.versions
    assert "get_version" in harness.fake.calls
    assert len(harness.log.named("poll.scan_gap")) == 1
    harness.assert_exact()
    assert harness.cycle().events == []


def test_a_models_scan_that_drops_a_live_model_deletes_nothing(harness: Harness) -> None:
    # fraud's rows are older than the watermark overlap: nothing else would bring it back.
    harness.fake.hide_models_once.add("fraud")
    report = harness.cycle(scan_models=True)
    assert report.kind == "incremental+models"
    assert report.events == []
    assert harness.fake.calls.count("get_model") == 1
    harness.fake.hide_models_once.add("fraud")
    assert harness.cycle(scan_models=True, scan_versions=True).events == []
    harness.assert_exact()


# --------------------------------------------------------------------------- 5. fallback


def test_a_registry_refusing_incremental_reads_falls_back_to_full_reads(harness: Harness) -> None:
    refusal = RegistryError(
        "order_by last_updated_timestamp", code="INVALID_PARAMETER_VALUE", status=400
    )
    harness.fake.failures["models_updated_since"] = refusal
    harness.fake.transition("fraud", "1", "Staging")
    report = harness.cycle()
    assert report.ok
    assert report.kind == "full"
    assert types(report.events) == [(STAGE, "fraud", "1"), (TO_STAGING, "fraud", "1")]
    harness.assert_exact()

    harness.fake.set_alias("churn", "live", "1")
    harness.fake.delete_model("fraud")
    report = harness.cycle()
    assert report.kind == "full"
    assert "models_updated_since" not in harness.fake.calls
    assert types(report.events) == [(ALIAS_CREATED, "churn", "1"), (M_DELETED, "fraud", None)]
    harness.fake.create_model("fraud")
    harness.fake.create_version("fraud")
    report = harness.cycle()
    assert types(report.events) == [(M_CREATED, "fraud", None), (V_CREATED, "fraud", "1")]
    assert len(harness.log.named("poll.incremental_unsupported")) == 1
    harness.assert_exact()


def test_any_other_registry_error_fails_the_cycle_and_keeps_incremental(
    harness: Harness,
) -> None:
    harness.fake.failures["versions_updated_since"] = RegistryError("boom", status=503)
    harness.mono += POLL
    report = harness.pipeline.run_cycle()
    assert not report.ok
    del harness.fake.failures["versions_updated_since"]
    harness.fake.transition("fraud", "1", "Staging")
    report = harness.cycle()
    assert report.kind == "incremental"
    assert types(report.events) == [(STAGE, "fraud", "1"), (TO_STAGING, "fraud", "1")]
    assert harness.log.named("poll.incremental_unsupported") == []


# --------------------------------------------------------------------------- 6. cadences


def test_a_fixed_cadence_is_its_interval() -> None:
    cadence = Cadence(fixed=300.0, share=MODELS_SCAN_SHARE, last_seconds=1e6)
    assert cadence.interval(POLL, 0.1) == 300.0
    cadence.done(at=1000.0, seconds=1e6)
    assert not cadence.due(1000.0 + 300.0 - POLL / 2 - 0.001, POLL, 0.1)
    assert cadence.due(1000.0 + 300.0 - POLL / 2, POLL, 0.1)


def test_an_auto_cadence_spaces_scans_by_their_cost() -> None:
    cadence = Cadence(fixed=None, share=VERSIONS_SCAN_SHARE)
    assert cadence.due(0.0, POLL, 0.1)  # never scanned
    cadence.done(at=100.0, seconds=18.0)
    expected = 18.0 / (0.1 * VERSIONS_SCAN_SHARE)
    assert cadence.interval(POLL, 0.1) == pytest.approx(expected)
    assert not cadence.due(100.0 + expected - POLL / 2 - 0.001, POLL, 0.1)
    assert cadence.due(100.0 + expected - POLL / 2, POLL, 0.1)


@pytest.mark.parametrize("seconds", [0.0, 0.001, 0.5])
def test_an_auto_cadence_is_never_below_the_poll_interval(seconds: float) -> None:
    cadence = Cadence(fixed=None, share=MODELS_SCAN_SHARE)
    cadence.done(at=0.0, seconds=seconds)
    assert cadence.interval(POLL, 0.1) == POLL
    assert cadence.due(POLL, POLL, 0.1)  # a fast scan is due every cycle


def test_cadences_report_the_auto_intervals() -> None:
    reader = IncrementalReader(lambda _n: True, POLL, None, 600.0, 0.2, RecordingLog())
    reader.models_scan.done(at=0.0, seconds=6.0)
    assert reader.cadences() == {
        "models_scan_every_s": round(6.0 / (0.2 * MODELS_SCAN_SHARE), 3),
        "versions_scan_every_s": 600.0,
    }


def test_a_fast_registry_is_scanned_in_full_every_cycle(tmp_path: Path, fake: FakeRegistry) -> None:
    with Harness(tmp_path, fake, watch_config(None, None)) as h:
        kinds = [h.cycle().kind for _ in range(5)]
    assert kinds == ["full"] * 5


def test_a_slow_versions_scan_is_spaced_to_keep_within_max_duty(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    with Harness(tmp_path, fake, watch_config(None, None, max_duty=0.1)) as h:

        def slow(kind: str) -> None:
            if kind == "scan_versions":
                h.advance(18.0)  # 18 s of 30 s polls at max_duty 0.1: every 300 s

        fake.after_request = slow
        kinds = [h.cycle().kind for _ in range(12)]
    assert kinds == ["full"] + ["incremental+models"] * 9 + ["full"] + ["incremental+models"]


# --------------------------------------------------------------------------- 2. the property


MODEL_NAMES = ("a", "b", "c", "skip1")
RENAME_TO = ("a", "b", "d", "skip2")
OPS = (
    "create_model",
    "create_version",
    "create_version",
    "transition",
    "transition",
    "transition",
    "version_description",
    "model_description",
    "delete_version",
    "delete_model",
    "rename",
    "set_tag",
    "delete_tag",
    "model_tag",
    "set_alias",
    "delete_alias",
)

Op = tuple[str, int, int, bool]
ops = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 7), st.integers(0, 7), st.booleans()),
    max_size=6,
)


def apply(fake: FakeRegistry, op: Op) -> None:
    """Apply one generated write, resolving its indices against the registry as it is now."""
    kind, i, j, flag = op
    names = sorted(n for n in fake.models if not fake._is_prompt(n))
    keys = sorted(k for k in fake.versions if not fake._is_prompt(k[0]))
    name = names[i % len(names)] if names else None
    key = keys[i % len(keys)] if keys else None
    if kind == "create_model":
        if MODEL_NAMES[i % len(MODEL_NAMES)] not in fake.models:
            fake.create_model(MODEL_NAMES[i % len(MODEL_NAMES)], description=f"m{j}")
    elif name is not None and kind == "create_version":
        fake.create_version(name, tags={"k0": "v"} if flag else None, description=f"d{j}")
    elif name is not None and kind == "model_description":
        fake.set_model_description(name, f"m{j}")
    elif name is not None and kind == "delete_model":
        fake.delete_model(name)
    elif name is not None and kind == "rename":
        if RENAME_TO[j % len(RENAME_TO)] not in fake.models:
            fake.rename_model(name, RENAME_TO[j % len(RENAME_TO)])
    elif name is not None and kind == "model_tag":
        if flag:
            fake.set_model_tag(name, "team", f"t{j}")
        else:
            fake.delete_model_tag(name, "team")
    elif name is not None and kind == "set_alias":
        own = [k for k in keys if k[0] == name]
        if own:
            fake.set_alias(name, f"al{j % 2}", own[j % len(own)][1])
    elif name is not None and kind == "delete_alias":
        fake.delete_alias(name, f"al{j % 2}")
    elif key is not None and kind == "transition":
        fake.transition(*key, STAGES[j % len(STAGES)], archive_existing=flag)
    elif key is not None and kind == "version_description":
        fake.set_version_description(*key, f"d{j}")
    elif key is not None and kind == "delete_version":
        fake.delete_version(*key)
    elif key is not None and kind == "set_tag":
        fake.set_tag(*key, f"k{j % 2}", f"v{int(flag)}")
    elif key is not None and kind == "delete_tag":
        fake.delete_tag(*key, f"k{j % 2}")


Identity = tuple[str, str | None, int | None]


def _identity(v: VersionState) -> Identity:
    return (v.name, v.version, v.creation_timestamp)


def _event_identity(e: Event) -> Identity:
    return (e.model_name, e.model_version, e.version_creation_timestamp)


def _without_tags(v: VersionState) -> VersionState:
    return replace(v, tags={})


def check_against_truth(
    observed: Observation,
    models: dict[str, ModelState],
    versions: dict[Key, VersionState],
    kind: str,
) -> None:
    """What each kind of read must have got right; see the module docstring for the facts."""
    if kind == "full":
        assert dict(observed.models) == models
        assert dict(observed.versions) == versions
        return
    models_scanned = "models" in kind.split("+")
    versions_scanned = "versions" in kind.split("+")
    if models_scanned:
        assert dict(observed.models) == models
        assert observed.versions.keys() == versions.keys()
    if versions_scanned:
        assert dict(observed.versions) == versions
    for name, model in models.items():
        # Every timestamped change is seen; model tags and aliases wait for the models scan,
        # a model's disappearance too (so extra, ghost models are allowed here).
        seen = observed.models.get(name)
        assert seen is not None, f"model {name} not observed"
        assert (seen.creation_timestamp, seen.last_updated_timestamp, seen.description) == (
            model.creation_timestamp,
            model.last_updated_timestamp,
            model.description,
        )
        true_keys = {k for k in versions if k[0] == name}
        assert {k for k in observed.versions if k[0] == name} == true_keys
        for k in true_keys:  # version tags wait for the versions scan
            assert _without_tags(observed.versions[k]) == _without_tags(versions[k])


def assert_same_as_a_full_comparison(
    h: Harness, previous: Observation, observed: Observation, report: CycleReport
) -> None:
    """The cycle compared only the keys its read touched; comparing every row of the two
    snapshots (as stored: no object is shared) finds the very same events."""
    baseline_ms = int(h.store.get_meta("baseline_read_at") or 0)
    policy = replace(h.pipeline.policy, baseline_ms=baseline_ms)
    assert detect(previous, observed, policy) == report.events


def check_events(
    events: list[Event],
    chain: dict[Identity, str],
    previous: Observation,
    models: dict[str, ModelState],
    versions: dict[Key, VersionState],
    seen_ids: set[str],
) -> None:
    """Stage events chain from the last known stage; deletions are real; nothing twice."""
    live = {_identity(v) for v in versions.values()}
    for e in events:
        assert e.event_id not in seen_ids, f"emitted twice: {e}"
        seen_ids.add(e.event_id)
        ident = _event_identity(e)
        if e.type == M_CREATED:
            before = previous.models.get(e.model_name)
            assert before is None or before.creation_timestamp != e.timestamp
        elif e.type == V_CREATED:
            assert ident not in chain
            chain[ident] = NO_STAGE
        elif e.type == STAGE:
            assert chain.get(ident) == e.from_stage, f"{e} does not follow {chain.get(ident)}"
            chain[ident] = e.to_stage or ""
        elif e.type == V_DELETED:
            assert ident in chain
            assert ident not in live, f"false deletion: {e}"
            del chain[ident]
        elif e.type == M_RENAMED:  # the same versions, under the new name from now on
            old = str(e.previous_name)
            assert old in previous.models
            assert e.model_name in models
            # Its versions as the previous read had them: a model that took the old name in
            # the same poll (created, or renamed from elsewhere) keeps its own.
            had = {_identity(v) for k, v in previous.versions.items() if k[0] == old}
            for name, number, created in [i for i in chain if i in had]:
                chain[(e.model_name, number, created)] = chain.pop((name, number, created))
        elif e.type == M_DELETED:
            before = previous.models[e.model_name]
            now = models.get(e.model_name)
            assert now is None or now.creation_timestamp != before.creation_timestamp
            for gone in [i for i in chain if i[0] == e.model_name]:
                del chain[gone]


def play(
    h: Harness, writes: list[Op]
) -> tuple[CycleReport, Observation, dict[str, ModelState], dict[Key, VersionState]]:
    """One round of generated writes, then a poll: its report, the snapshot it committed and
    what a perfect watcher would have observed."""
    for op in writes:
        apply(h.fake, op)
    report = h.cycle()
    models, versions = h.fake.truth(h.watches)
    return report, h.observed, models, versions


def starting_registry(initial: list[Op], step: int, mlflow3: bool) -> FakeRegistry:
    """A model with a version, a prompt with one (never watched), then the generated writes."""
    fake = FakeRegistry(step=step, mlflow3=mlflow3)
    fake.create_model("a")
    fake.create_version("a")
    fake.create_prompt("p")
    fake.create_version("p")
    for op in initial:
        apply(fake, op)
    return fake


@given(
    initial=ops,
    rounds=st.lists(ops, min_size=1, max_size=6),
    models_every=st.sampled_from([1, 2, 3, 1000]),
    full_every=st.sampled_from([2, 3, 4, 1000]),
    step=st.sampled_from([1, 1000, 7000, 3 * WATERMARK_OVERLAP_MS]),
    mlflow3=st.booleans(),
)
def test_incremental_observation_tracks_the_registry(
    initial: list[Op],
    rounds: list[list[Op]],
    models_every: int,
    full_every: int,
    step: int,
    mlflow3: bool,
) -> None:
    fake = starting_registry(initial, step, mlflow3)
    watch = watch_config(models_every * POLL, full_every * POLL)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as root, Harness(Path(root), fake, watch) as h:
        h.cycle()
        observed = h.observed
        h.assert_exact()
        chain = {_identity(v): v.current_stage for v in observed.versions.values()}
        seen_ids: set[str] = set()
        for number, writes in enumerate(rounds, start=1):
            previous = observed
            report, observed, models, versions = play(h, writes)
            expected_kind = (
                "full"
                if number % models_every == 0 and number % full_every == 0
                else "+".join(
                    ["incremental"]
                    + ["models"] * (number % models_every == 0)
                    + ["versions"] * (number % full_every == 0)
                )
            )
            assert report.kind == expected_kind
            event(f"read {report.kind}")
            for kind in {e.type.value for e in report.events}:
                event(kind)
            check_against_truth(observed, models, versions, report.kind)
            check_events(report.events, chain, previous, models, versions, seen_ids)
            assert_same_as_a_full_comparison(h, previous, observed, report)
            # The events tell the whole story of the snapshot: no transition lost.
            assert chain == {_identity(v): v.current_stage for v in observed.versions.values()}
        # Both scans, then quiet cycles: exact, and the overlap's re-reads find nothing new.
        h.cycle(scan_models=True, scan_versions=True)
        h.assert_exact()
        for _ in range(2):
            quiet = h.cycle()
            assert quiet.events == [], quiet.kind


# --------------------------------------------------------------------------- 3. background scans

TAG_DELETED = EventType.MODEL_VERSION_TAG_DELETED
SCAN_SECONDS = 10.0
"""What the fake's scans take in the background tests: over a quarter of the 30 s poll, so
every scan after the baseline runs in the background."""
MERGED = "incremental+models(background)+versions(background)"


def slow_scans(h: Harness) -> None:
    h.fake.after_request = lambda kind: h.advance(SCAN_SECONDS) if kind.startswith("scan") else None


@pytest.fixture
def bg(tmp_path: Path, fake: FakeRegistry) -> Iterator[Harness]:
    with Harness(tmp_path, fake, background=True) as h:
        slow_scans(h)
        baseline = h.cycle()
        assert baseline.kind == "full"  # the first read is always in the poll
        yield h


def test_a_slow_scan_runs_beside_the_polls(bg: Harness) -> None:
    bg.fake.set_tag("fraud", "1", "team", "x")  # only a versions scan can see it
    started = bg.cycle(scan_versions=True)
    assert (started.kind, started.events) == ("incremental", [])
    assert bg.fake.calls == ["models_updated_since", "versions_updated_since"]
    assert len(bg.runner.pending) == 1

    # The scan is out; a transition is not held up by it.
    bg.fake.transition("churn", "1", "Staging")
    during = bg.cycle()
    assert during.kind == "incremental"
    assert types(during.events) == [(STAGE, "churn", "1"), (TO_STAGING, "churn", "1")]
    assert bg.runner.pending, "no second scan starts while one is out"

    bg.runner.run()
    merged = bg.cycle()
    assert merged.kind == MERGED
    assert types(merged.events) == [(TAG_SET, "fraud", "1")]
    assert merged.requests == 2, "merging costs no request when the scan lacks nothing"
    assert bg.log.named("scan.merged")
    bg.assert_exact()
    after = bg.cycle()
    assert (after.kind, after.events) == ("incremental", [])
    assert bg.runner.pending == [], "the cadence restarts from the merged scan"


def test_a_scan_read_before_a_change_does_not_undo_it(bg: Harness) -> None:
    bg.cycle(scan_models=True, scan_versions=True)
    bg.runner.run()  # the scan reads the registry as it is now...
    bg.fake.transition("fraud", "1", "Production")  # ...and these land after it
    bg.fake.set_tag("fraud", "1", "team", "y")
    bg.fake.delete_version("fraud", "3")
    bg.fake.create_model("late")
    merged = bg.cycle()
    assert merged.kind == MERGED
    assert sorted(types(merged.events)) == sorted(
        [
            (M_CREATED, "late", None),
            (STAGE, "fraud", "1"),
            (TO_PRODUCTION, "fraud", "1"),
            (TAG_SET, "fraud", "1"),
            (V_DELETED, "fraud", "3"),
        ]
    )
    bg.assert_exact()
    assert bg.cycle().events == []


def test_a_rename_after_a_background_scan_read_is_one_event(bg: Harness) -> None:
    """The scan read the old name; the poll that merges it reads the new one, finds the old
    one gone, and the scan's older rows do not bring it back."""
    bg.cycle(scan_models=True, scan_versions=True)
    bg.runner.run()
    bg.fake.rename_model("churn", "retention")
    merged = bg.cycle()
    assert merged.kind == MERGED
    assert [(e.type, e.model_name, e.previous_name) for e in merged.events] == [
        (M_RENAMED, "retention", "churn")
    ]
    bg.assert_exact()
    assert bg.cycle().events == []


def test_writes_during_a_scan_are_each_reported_once(bg: Harness) -> None:
    def during(kind: str) -> None:
        bg.advance(SCAN_SECONDS)
        if kind == "scan_models":  # between the models scan and the versions scan
            bg.fake.delete_model("churn")
            bg.fake.set_alias("fraud", "champion", "2")
            bg.fake.set_tag("fraud", "2", "team", "z")

    bg.cycle(scan_versions=True)
    bg.fake.after_request = during
    bg.runner.run()
    slow_scans(bg)
    merged = bg.cycle()
    # The versions scan saw churn gone and the tag; the models scan saw neither change.
    assert sorted(types(merged.events)) == sorted(
        [(M_DELETED, "churn", None), (TAG_SET, "fraud", "2")]
    )
    bg.cycle(scan_models=True)
    bg.runner.run()
    assert types(bg.cycle().events) == [(ALIAS_CREATED, "fraud", "2")]
    bg.assert_exact()


def test_a_background_scan_that_drops_a_live_version_deletes_nothing(bg: Harness) -> None:
    bg.cycle(scan_versions=True)
    bg.fake.hide_versions_once = {("fraud", "2")}
    bg.runner.run()
    merged = bg.cycle()
    assert merged.kind == MERGED
    assert merged.events == []
    assert "get_version" in bg.fake.calls
    bg.assert_exact()


def test_a_full_read_in_the_poll_drops_a_scan_that_is_out(bg: Harness) -> None:
    bg.cycle(scan_versions=True)
    bg.fake.set_tag("fraud", "1", "team", "old")
    full = bg.pipeline.run_cycle(full=True)
    assert full.kind == "full"
    assert types(full.events) == [(TAG_SET, "fraud", "1")]
    bg.fake.delete_tag("fraud", "1", "team")
    bg.runner.run()  # reads "team" gone; the full read in the poll is what counts now
    report = bg.cycle()
    assert report.kind == "incremental"
    assert report.events == []


def test_a_failed_background_scan_is_logged_and_tried_again(bg: Harness) -> None:
    bg.fake.failures["scan_versions"] = RegistryError("MLflow answered 503")
    bg.fake.set_tag("fraud", "1", "team", "x")
    bg.cycle(scan_versions=True)
    bg.runner.run()
    report = bg.cycle()
    assert report.ok
    assert report.kind == "incremental"
    [(level, _, fields)] = bg.log.named("scan.failed")
    assert level == "warning"
    assert "503" in fields["error"]
    del bg.fake.failures["scan_versions"]
    bg.cycle()
    assert len(bg.runner.pending) == 1, "the scan is still due: the next poll starts it again"
    bg.runner.run()
    assert types(bg.cycle().events) == [(TAG_SET, "fraud", "1")]


def test_a_fast_scan_stays_in_the_poll(tmp_path: Path, fake: FakeRegistry) -> None:
    with Harness(tmp_path, fake, background=True) as h:
        h.cycle()
        report = h.cycle(scan_versions=True)
        assert report.kind == "incremental+versions"
        assert h.runner.pending == []


Round = tuple[list[Op], list[Op], list[Op], bool, bool]


def writes_between(h: Harness, writes: list[Op]) -> Callable[[str], None]:
    """A slow scan during which the writes land, after its models and before its versions."""

    def after_request(kind: str) -> None:
        h.advance(SCAN_SECONDS)
        if kind == "scan_models":
            while writes:
                apply(h.fake, writes.pop(0))

    return after_request


@given(
    initial=ops,
    rounds=st.lists(st.tuples(ops, ops, ops, st.booleans(), st.booleans()), min_size=1, max_size=5),
    step=st.sampled_from([1, 1000, 3 * WATERMARK_OVERLAP_MS]),
    mlflow3=st.booleans(),
)
def test_background_scans_merge_into_an_observation_that_tracks_the_registry(
    initial: list[Op], rounds: list[Round], step: int, mlflow3: bool
) -> None:
    """Writes land before a scan starts, between its models and versions pages, and after it
    finished but before the merge; polls run in between. Whatever the order, the events chain,
    no deletion is false, nothing is reported twice, and a last quiet scan is exact."""
    fake = starting_registry(initial, step, mlflow3)
    with (
        tempfile.TemporaryDirectory(dir=SCRATCH) as root,
        Harness(Path(root), fake, background=True) as h,
    ):
        slow_scans(h)
        h.cycle()
        observed = h.observed
        chain = {_identity(v): v.current_stage for v in observed.versions.values()}
        seen_ids: set[str] = set()

        def step_cycle(**due: bool) -> None:
            nonlocal observed
            previous = observed
            report = h.cycle(**due)
            observed = h.observed
            models, versions = fake.truth(h.watches)
            event(f"read {report.kind}")
            check_against_truth(observed, models, versions, report.kind)
            check_events(report.events, chain, previous, models, versions, seen_ids)
            assert_same_as_a_full_comparison(h, previous, observed, report)
            assert chain == {_identity(v): v.current_stage for v in observed.versions.values()}

        for before, during, after, scan_models, scan_versions in rounds:
            for op in before:
                apply(fake, op)
            step_cycle(scan_models=scan_models, scan_versions=scan_versions)
            if h.runner.pending:
                fake.after_request = writes_between(h, list(during))
                h.runner.run()
                slow_scans(h)
            else:
                for op in during:
                    apply(fake, op)
            for op in after:
                apply(fake, op)
            step_cycle()
        # A scan with nothing written around it, merged: exact; then nothing more to say.
        step_cycle(scan_models=True, scan_versions=True)
        h.runner.run()
        step_cycle()
        h.assert_exact()
        step_cycle()
        assert h.runner.pending == []


def test_tracked_versions_record_every_write_and_refuse_untracked_ones() -> None:
    base = {("m", str(n)): VersionState("m", str(n), n, n) for n in range(1, 5)}
    tracked = TrackedVersions(base)
    assert tracked == base
    assert tracked.touched == set()
    tracked[("m", "1")] = VersionState("m", "1", 1, 9)
    del tracked[("m", "2")]
    tracked.pop(("m", "3"), None)
    tracked.pop(("m", "7"), None)
    tracked.update({("n", "1"): VersionState("n", "1", 1, 1)})
    assert tracked.touched == {("m", "1"), ("m", "2"), ("m", "3"), ("m", "7"), ("n", "1")}
    assert set(tracked) == {("m", "1"), ("m", "4"), ("n", "1")}
    for untracked in (tracked.setdefault, tracked.popitem, tracked.clear):
        with pytest.raises(TypeError):
            untracked()


# --------------------------------------------------------------------------- 4. what is gone


def test_a_model_found_gone_by_a_versions_scan_goes_with_every_version_it_had() -> None:
    """The versions scan read one of m's versions, then m was deleted: one get finds m gone,
    and the version the scan still holds goes with it (no second get, no orphan version)."""
    registry = FakeRegistry()
    registry.create_model("keep")
    registry.create_version("keep")
    m = ModelState("m", 1, 1)
    v1, v2 = VersionState("m", "1", 1, 1), VersionState("m", "2", 1, 1)
    kept = registry.versions[("keep", "1")].state()
    previous = Observation(
        models={"m": m, "keep": registry.models["keep"].state()},
        versions={("m", "1"): v1, ("m", "2"): v2, ("keep", "1"): kept},
        read_at=0,
    )
    draft = Draft(registry, lambda _n: True, previous, {}, Plan(), RecordingLog())
    draft.versions_scanned({("m", "1"): v1, ("keep", "1"): kept})
    assert registry.calls == ["get_model"]
    observed = draft.observation(read_at=1)
    assert set(observed.models) == {"keep"}
    assert set(observed.versions) == {("keep", "1")}


def test_a_version_a_read_missed_but_a_get_finds_is_kept_and_logged(harness: Harness) -> None:
    harness.fake.hide_versions_once.add(("fraud", "2"))
    report = harness.cycle(scan_versions=True)
    assert report.events == []
    assert harness.fake.calls.count("get_model") == 1  # fraud is asked for once, and is there
    assert harness.fake.calls.count("get_version") == 1
    [(_, _, fields)] = harness.log.named("poll.scan_gap")
    assert (fields["models"], fields["versions"]) == (0, 1)
    harness.assert_exact()
