"""The hot set: models with recent activity are read with each poll, within a share of max_duty.

Planning (which models are hot, which a poll reads, what is left for the scans) is tested as
pure logic; reading and merging through the real Pipeline on the fake registry of
tests/unit/test_incremental.py, whose clock moves the way MLflow's timestamps do.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
    ALIAS_CREATED,
    ALIAS_DELETED,
    M_DELETED,
    M_RENAMED,
    TAG_SET,
    model_state,
    version_state,
)
from tests.unit.test_hints import mlflow_body, signed
from tests.unit.test_incremental import (
    NEVER,
    POLL,
    SCRATCH,
    FakeRegistry,
    Harness,
    Identity,
    _identity,
    check_events,
    ops,
    play,
    sample_registry,
    starting_registry,
    types,
    watch_config,
)
from watcher import state_meta as sm
from watcher.errors import RegistryError
from watcher.hints import HintBox
from watcher.hotset import HINTED_MIN_S, HINTED_WINDOW_S, HOT_SHARE, HintedSpend, HotSet
from watcher.incremental import WATERMARK_OVERLAP_MS
from watcher.model import EventType, Observation, SnapshotDelta
from watcher.scan import RECENT_FIRST_PAGE

DAY_MS = 86_400_000
TAG_DELETED = EventType.MODEL_VERSION_TAG_DELETED

# --------------------------------------------------------------------------- planning


def _snapshot(now: int) -> Observation:
    """old: nothing for two days; fresh: a version made an hour ago; described: only a
    version's description moved, today."""
    hour = 3_600_000
    models = {
        "old": model_state("old", created=now - 3 * DAY_MS, updated=now - 2 * DAY_MS),
        "fresh": model_state("fresh", created=now - 3 * DAY_MS, updated=now - hour),
        "described": model_state("described", created=now - 3 * DAY_MS, updated=now - 2 * DAY_MS),
    }
    versions = {
        ("old", "1"): version_state("1", name="old", created=now - 3 * DAY_MS),
        ("fresh", "1"): version_state("1", name="fresh", created=now - 3 * DAY_MS),
        ("described", "1"): version_state(
            "1", name="described", created=now - 3 * DAY_MS, updated=now - hour
        ),
    }
    return Observation(models=models, versions=versions, read_at=now)


def test_hot_models_are_those_with_activity_in_the_window() -> None:
    now = 1_800_000_000_000
    hot = HotSet(DAY_MS, 0.1, 2.0)
    snapshot = _snapshot(now)
    hot.rebuild(snapshot)
    assert hot.members(snapshot, now) == ["described", "fresh"]
    # A new version of the old model makes it hot; a deleted model leaves the set.
    hot.update(
        SnapshotDelta(
            upsert_models=(model_state("old", created=now - 3 * DAY_MS, updated=now),),
            upsert_versions=(version_state("2", name="old", created=now, updated=now),),
            delete_models=("fresh",),
        )
    )
    assert hot.members(snapshot, now) == ["described", "old"]


def test_no_hot_set_when_off_or_when_the_snapshot_has_no_read_time() -> None:
    now = 1_800_000_000_000
    snapshot = _snapshot(now)
    off = HotSet(0, 0.1, 2.0)
    off.rebuild(snapshot)
    assert off.members(snapshot, now) == []
    on = HotSet(DAY_MS, 0.1, 2.0)
    on.rebuild(snapshot)
    assert on.members(snapshot, 0) == []


def test_every_hot_model_is_read_while_the_budget_allows() -> None:
    hot = HotSet(DAY_MS, 0.1, 2.0)
    names = [f"m{i}" for i in range(10)]
    assert hot.choose(names) == names  # cost not measured yet: all
    hot.spent(10, 0.01)  # 1 ms a model: 10 fit in 60 ms easily
    assert hot.choose(names) == names
    assert not hot.rotating
    assert hot.round_s() == 2.0


def test_a_hot_set_over_its_budget_is_read_in_rotation() -> None:
    hot = HotSet(DAY_MS, 0.1, 2.0)
    budget = 0.1 * HOT_SHARE * 2.0
    names = [f"m{i}" for i in range(10)]
    hot.spent(10, 10 * budget / 4)  # four models fit in a poll's share
    seen: list[str] = []
    for _ in range(3):
        chosen = hot.choose(names)
        assert len(chosen) == 4
        seen.extend(chosen)
    assert hot.rotating
    assert set(seen) == set(names), "every hot model is read within a round"
    assert hot.round_s() == 3 * 2.0


def test_the_scans_get_what_the_hot_set_leaves_of_max_duty() -> None:
    hot = HotSet(DAY_MS, 0.1, 2.0)
    assert hot.scan_duty() == pytest.approx(0.1)
    hot.spent(5, 0.05)  # 2.5% of the wall time, smoothed in: 1.25%
    assert hot.scan_duty() == pytest.approx(0.1 - 0.0125)
    for _ in range(20):
        hot.spent(5, 10.0)  # far over its share: the scans keep the rest
    assert hot.scan_duty() == pytest.approx(0.1 * (1 - HOT_SHARE))


def test_the_polls_hints_start_come_out_of_the_scans_share_for_ten_minutes() -> None:
    """Hints go where changes happen: what the polls they start read is taken from the scans'
    share of max_duty (with the hot set's, at most HOT_SHARE of it), over the last window, or
    since the start when that is shorter (from a minute on)."""
    spend = HintedSpend(started=0.0)
    assert spend.duty(1000.0) == 0.0
    spend.add(1000.0, 6.0)
    spend.add(1100.0, 12.0)
    assert spend.duty(1100.0) == pytest.approx(18.0 / HINTED_WINDOW_S)
    assert spend.duty(1000.0 + HINTED_WINDOW_S + 1) == pytest.approx(12.0 / HINTED_WINDOW_S)
    assert spend.duty(1100.0 + HINTED_WINDOW_S + 1) == 0.0, "a burst slows the scans a while"
    young = HintedSpend(started=1000.0)
    young.add(1010.0, 3.0)
    assert young.duty(1010.0) == pytest.approx(3.0 / HINTED_MIN_S)
    young.add(1200.0, 3.0)
    assert young.duty(1200.0) == pytest.approx(6.0 / 200.0), "spread over the time since start"
    hot = HotSet(DAY_MS, 0.1, 2.0)
    assert hot.scan_duty(0.03) == pytest.approx(0.07)
    assert hot.scan_duty(1.0) == pytest.approx(0.1 * (1 - HOT_SHARE)), "the scans keep 40%"


# --------------------------------------------------------------------------- reading


@pytest.fixture
def hot(tmp_path: Path) -> Iterator[Harness]:
    """fraud had a version made today, outside the overlap; churn nothing for two days."""
    fake = sample_registry()
    with Harness(tmp_path, fake, watch_config(hot_window=DAY_MS / 1000)) as h:
        assert h.cycle().baseline
        fake.now += 2 * DAY_MS  # two quiet days
        h.cycle()
        fake.create_version("fraud")  # fraud: active today
        h.cycle()
        h.cycle()  # the new version is outside the overlap now
        yield h


def test_an_alias_on_a_hot_model_arrives_with_the_next_poll(hot: Harness) -> None:
    hot.fake.set_alias("fraud", "champion", "1")
    report = hot.cycle()
    assert report.kind == "incremental+hot"
    assert types(report.events) == [(ALIAS_CREATED, "fraud", "1")]
    hot.fake.set_alias("fraud", "champion", "2")
    moved = hot.cycle()
    assert types(moved.events) == [(ALIAS_CREATED, "fraud", "2")]
    assert moved.events[0].previous_version == "1"
    hot.fake.delete_alias("fraud", "champion")
    assert types(hot.cycle().events) == [(ALIAS_DELETED, "fraud", "2")]
    assert hot.cycle().events == [], "each once"
    hot.assert_exact()


def test_a_version_tag_on_an_old_version_of_a_hot_model_arrives_with_the_next_poll(
    hot: Harness,
) -> None:
    hot.fake.set_tag("fraud", "1", "validation_status", "approved")
    report = hot.cycle()
    assert types(report.events) == [(TAG_SET, "fraud", "1")]
    assert "versions_in" in hot.fake.calls, "one batched read of the hot models' versions"
    hot.fake.delete_tag("fraud", "1", "validation_status")
    assert types(hot.cycle().events) == [(TAG_DELETED, "fraud", "1")]
    assert hot.cycle().events == []


def test_a_deleted_hot_model_is_one_event_with_the_next_poll(hot: Harness) -> None:
    hot.fake.delete_model("fraud")
    report = hot.cycle()
    assert types(report.events) == [(M_DELETED, "fraud", None)]
    assert "get_model" in hot.fake.calls, "confirmed before it is believed"
    assert hot.cycle().events == []
    hot.assert_exact()


def test_a_hot_model_missing_from_a_page_but_alive_is_not_deleted(hot: Harness) -> None:
    answer = hot.fake.models_updated_since

    def lossy(since_ms: int, watches: object, **kwargs: int) -> list[object]:
        found = answer(since_ms, watches, **kwargs)  # type: ignore[arg-type]
        return [m for m in found if m.name != "fraud"]

    hot.fake.models_updated_since = lossy  # type: ignore[assignment,method-assign]
    report = hot.cycle()
    assert report.events == []
    assert "fraud" in hot.observed.models


def test_records_over_budget_still_bring_a_hot_alias_within_their_period(hot: Harness) -> None:
    """The search from the window's edge costs 2.5 polls' share: it runs every third poll,
    the polls between search from the watermark alone, and the alias still arrives once."""
    search = hot.fake.models_updated_since
    plan = hot.pipeline.incremental.hot
    firsts: list[int] = []

    def dear(since_ms: int, watches: object, *, first_page: int = RECENT_FIRST_PAGE) -> object:
        firsts.append(first_page)
        if first_page > RECENT_FIRST_PAGE:  # the hot records' search
            hot.advance(2.5 * plan.budget_s)
        return search(since_ms, watches, first_page=first_page)  # type: ignore[arg-type]

    hot.fake.models_updated_since = dear  # type: ignore[assignment,method-assign]
    for _ in range(8):  # the median of the last searches' cost comes up to it
        hot.cycle()
        if plan.records_every == 3:
            break
    assert plan.records_every == 3
    firsts.clear()
    hot.fake.set_alias("fraud", "champion", "1")
    arrived = [e for _ in range(plan.records_every) for e in types(hot.cycle().events)]
    assert arrived == [(ALIAS_CREATED, "fraud", "1")]
    assert firsts[:2] == [RECENT_FIRST_PAGE] * 2, "the polls between: the watermark's search"
    assert firsts[2] > RECENT_FIRST_PAGE, "every third: the records"
    assert plan.members(hot.observed, hot.observed.read_at) == ["fraud"], "the set keeps it"
    hot.assert_exact()


def test_a_model_with_no_recent_activity_still_waits_for_its_scan(hot: Harness) -> None:
    hot.fake.set_alias("churn", "champion", "1")
    hot.fake.set_tag("churn", "1", "team", "x")
    report = hot.cycle()
    assert report.events == []
    assert "versions_in" not in [c for c in hot.fake.calls if "churn" in c]
    scanned = hot.cycle(scan_models=True, scan_versions=True)
    assert sorted(types(scanned.events)) == sorted(
        [(ALIAS_CREATED, "churn", "1"), (TAG_SET, "churn", "1")]
    )


def test_mlflow_2_refuses_a_list_and_is_read_model_by_model(tmp_path: Path) -> None:
    fake = FakeRegistry(step=WATERMARK_OVERLAP_MS + 1000, mlflow3=False)
    for name in ("a", "b"):
        fake.create_model(name)
        fake.create_version(name)
    with Harness(tmp_path, fake, watch_config(hot_window=DAY_MS / 1000)) as h:
        h.cycle()
        h.cycle()
        fake.set_tag("a", "1", "k", "v")
        fake.set_alias("b", "champion", "1")
        first = h.cycle()
        assert sorted(types(first.events)) == [(ALIAS_CREATED, "b", "1"), (TAG_SET, "a", "1")]
        h.cycle()
        assert "versions_in" not in h.fake.calls, "refused once, then by name"
        assert h.fake.calls.count("versions_of") == 2


def test_a_hot_set_over_budget_reads_each_model_within_a_round(tmp_path: Path) -> None:
    fake = FakeRegistry(step=WATERMARK_OVERLAP_MS + 1000)
    names = [f"m{i}" for i in range(6)]
    for name in names:
        fake.create_model(name)
        fake.create_version(name)
    with Harness(tmp_path, fake, watch_config(hot_window=DAY_MS / 1000)) as h:
        h.cycle()
        # Each batched version read takes three polls' share of the budget.
        share = 0.1 * HOT_SHARE * POLL
        h.fake.after_request = lambda kind: h.advance(3 * share) if kind == "versions_in" else None
        h.cycle()
        for name in names:
            fake.set_tag(name, "1", "k", "v")
        arrived: list[str] = []
        for _ in range(len(names) + 2):
            arrived.extend(e.model_name for e in h.cycle().events)
        assert sorted(arrived) == names, "each once, in rotation"
        assert h.log.named("poll.hot")
        assert h.pipeline.incremental.scan_meta()["hot_models"] == str(len(names))


def test_a_background_scan_read_before_a_hot_deletion_does_not_bring_the_model_back(
    tmp_path: Path,
) -> None:
    fake = FakeRegistry(step=WATERMARK_OVERLAP_MS + 1000)
    for name in ("a", "b"):
        fake.create_model(name)
        fake.create_version(name)
    watch = watch_config(hot_window=DAY_MS / 1000)
    with Harness(tmp_path, fake, watch, background=True) as h:
        h.fake.after_request = lambda kind: h.advance(10.0) if kind.startswith("scan") else None
        h.cycle()
        h.cycle(scan_models=True, scan_versions=True)
        h.runner.run()  # the scan reads "a" as it is...
        fake.delete_model("a")  # ...then it goes
        deleted = h.cycle()
        assert "(background)" in deleted.kind
        assert types(deleted.events) == [(M_DELETED, "a", None)]
        assert [e for _ in range(2) for e in h.cycle().events] == []
        h.assert_exact()


@settings(max_examples=60, deadline=None)
@given(
    initial=ops,
    rounds=st.lists(ops, min_size=1, max_size=5),
    step=st.sampled_from([1, 7000, 3 * WATERMARK_OVERLAP_MS]),
    mlflow3=st.booleans(),
)
def test_with_every_model_hot_each_poll_is_exact(
    initial: list[tuple[str, int, int, bool]],
    rounds: list[list[tuple[str, int, int, bool]]],
    step: int,
    mlflow3: bool,
) -> None:
    """Every model of a fresh registry is hot: with no scan at all, each poll observes the
    registry exactly (aliases, tags, deletions included), and no event comes twice."""
    fake = starting_registry(initial, step, mlflow3)
    watch = watch_config(NEVER, NEVER, hot_window=DAY_MS / 1000)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as root, Harness(Path(root), fake, watch) as h:
        h.cycle()
        observed = h.observed
        chain: dict[Identity, str] = {
            _identity(v): v.current_stage for v in observed.versions.values()
        }
        seen_ids: set[str] = set()
        for writes in rounds:
            previous = observed
            report, observed, models, versions = play(h, writes)
            h.assert_exact()
            # A rename and a transition of the renamed model's version seen in one read come
            # out as the transition (under the new name) before the rename: the chain follows
            # the rename first. (The same order on main's own property test with a models scan
            # in that read: detect's ordering, left to the renames' owner.)
            renames_first = sorted(report.events, key=lambda e: e.type != M_RENAMED)
            check_events(renames_first, chain, previous, models, versions, seen_ids)
        assert h.cycle().events == []


# --------------------------------------------------------------------------- status


def test_status_shows_the_hot_set_and_its_round(tmp_path: Path) -> None:
    from watcher.cli.status import _status_lines
    from watcher.config import Config
    from watcher.status import status_report
    from watcher.store import Store

    with Store.open(tmp_path / "state.db") as store:
        store.set_meta({"hot_models": "140", "hot_round_s": "8.0"})
        status = status_report(Config(), store, 0.0)
    assert status["hot"] == {"models": 140, "round_s": 8.0}
    assert "hot set:        140 models active lately, each read every 8s" in _status_lines(status)


def test_records_over_budget_are_read_every_few_polls_and_the_set_keeps_its_window() -> None:
    hot = HotSet(DAY_MS, 0.1, 2.0)
    now = 1_800_000_000_000
    hot.activity = {"busy": now - 60_000, "quiet": now - 20 * 3_600_000}
    snapshot = Observation(
        models={n: model_state(n) for n in hot.activity}, versions={}, read_at=now
    )
    assert hot.records_due(), "read with each poll until measured"
    assert hot.searched(0.1, hot=False) == 0.0, "a plain search is the poll's own"
    extra = hot.searched(0.1 + 2.5 * hot.budget_s, hot=True)
    assert extra == pytest.approx(2.5 * hot.budget_s), "only what the edge costs beyond it"
    assert hot.records_every == 3
    assert [hot.records_due() for _ in range(6)] == [False, False, True] * 2
    assert hot.members(snapshot, now) == ["busy", "quiet"], "no model leaves the set"
    news = hot.news()
    assert news is not None
    assert news["records_every_s"] == 6.0
    assert news["window_s"] == DAY_MS / 1000
    for _ in range(10):
        hot.searched(0.1, hot=True)
    assert hot.records_every == 1, "with each poll again once they are cheap"
    assert hot.records_due()
    for _ in range(4):
        hot.searched(0.1 + 0.8 * hot.budget_s, hot=True)
    assert hot.records_every == 1
    hot.searched(100.0, hot=True)  # one search that waited behind a scan: 3 x the median
    assert hot.records_every == 2, "the mean of the last five, the spike bounded"


def test_the_versions_get_what_the_records_leave_of_the_budget() -> None:
    hot = HotSet(DAY_MS, 0.1, 2.0)
    names = [f"m{i}" for i in range(20)]
    hot.spent(10, 10 * hot.budget_s / 10)  # ten models' versions fill a poll's share
    assert len(hot.choose(names)) == 10
    hot.searched(hot.budget_s / 2, hot=True)  # the records take half of it
    assert len(hot.choose(names)) == 5
    for _ in range(10):
        hot.searched(4 * hot.budget_s, hot=True)  # more than all of it, every few polls
    assert len(hot.choose(names)) == 1, "the rotation still goes on"
    assert hot.rotating


# --------------------------------------------------------------------------- hints


def test_a_hinted_model_is_read_at_once_even_when_it_is_not_hot(hot: Harness) -> None:
    """A verified hint from MLflow's native webhooks names churn (quiet for days, so not hot):
    the next poll reads its record and versions, so its alias and tag need no scan. A hint
    naming a model that did not change reads it and says nothing."""
    box = HintBox("hint-secret", 300)
    hot.pipeline.hinted = box
    now = hot.fake.now / 1000

    def hint(delivery_id: str, **data: str) -> str:
        body = mlflow_body(name="churn", **data)
        return box.offer(signed(body, delivery_id, now, "hint-secret"), body, now).result

    hot.fake.set_alias("churn", "champion", "1")
    hot.fake.set_tag("churn", "1", "validation_status", "approved")
    assert hot.cycle().events == [], "not hot: without a hint it waits for a scan"
    assert hint("d-1") == "accepted"
    report = hot.cycle()
    assert "hinted" in report.kind
    assert sorted(types(report.events)) == sorted(
        [(ALIAS_CREATED, "churn", "1"), (TAG_SET, "churn", "1")]
    )
    assert hot.cycle().events == [], "each once; the hint was taken"
    assert hint("d-2", alias="other") == "accepted"
    assert hot.cycle().events == [], "a hint is no content: nothing changed, nothing said"
    hot.assert_exact()


def test_a_hint_taken_by_a_poll_that_scans_the_versions_still_reads_the_models_record(
    hot: Harness,
) -> None:
    """The poll that takes a hint may be one whose versions scan is due: the scan brings the
    versions, not the model's record, so the hinted model's aliases are read all the same
    (before, they waited for the models scan)."""
    box = HintBox("hint-secret", 300)
    hot.pipeline.hinted = box
    body = mlflow_body(name="churn")
    now = hot.fake.now / 1000
    hot.fake.set_alias("churn", "champion", "1")
    assert box.offer(signed(body, "d-1", now, "hint-secret"), body, now).result == "accepted"
    report = hot.cycle(scan_versions=True)
    assert report.kind == "incremental+hot+versions+hinted"
    assert types(report.events) == [(ALIAS_CREATED, "churn", "1")]
    hot.assert_exact()


def test_only_the_polls_that_take_hints_count_as_hinted_reading(hot: Harness) -> None:
    """A poll that took a hint is counted (what it read beyond scans and the hot set); a
    plain poll is not. The seconds are the clock's: only how many polls count is checked."""
    spent = hot.pipeline.incremental.hinted._spent
    box = HintBox("hint-secret", 300)
    hot.pipeline.hinted = box
    hot.cycle()
    assert len(spent) == 0
    body = mlflow_body(name="churn")
    now = hot.fake.now / 1000
    assert box.offer(signed(body, "d-1", now, "hint-secret"), body, now).result == "accepted"
    assert "hinted" in hot.cycle().kind
    assert len(spent) == 1
    hot.cycle()
    assert len(spent) == 1


def test_the_hint_counts_ride_in_the_poll_s_commit(hot: Harness) -> None:
    """The counts `status` shows are written with the poll that read the hinted model, in the
    same transaction: the service is left nothing to write after it. A refused hint starts no
    poll; the next commit, here a failed read's, takes it along."""
    box = HintBox("hint-secret", 300)
    hot.pipeline.hinted = box
    now = hot.fake.now / 1000
    body = mlflow_body(name="churn")
    assert box.offer(signed(body, "d-1", now, "hint-secret"), body, now).accepted
    assert box.unrecorded() != {}
    hot.cycle()
    meta = hot.store.all_meta()
    assert sm.HINTS_COUNT["accepted"].get(meta) == 1
    assert sm.LAST_HINT_AT.get(meta) is not None
    assert box.unrecorded() == {}, "nothing left for a transaction of its own"
    assert box.offer(signed(body, "d-2", now, "not-the-secret"), body, now).result == "forged"
    hot.fake.failures["models_updated_since"] = RegistryError("connection reset")
    hot.mono += POLL
    assert not hot.pipeline.run_cycle().ok
    assert sm.HINTS_COUNT["forged"].get(hot.store.all_meta()) == 1
    assert box.unrecorded() == {}
