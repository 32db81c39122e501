"""Detection is pure: previous observation x current observation -> events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.detect import Policy, detect, snapshot_delta
from watcher.model import (
    NO_STAGE,
    Event,
    EventType,
    ModelState,
    Observation,
    SnapshotDelta,
    VersionState,
)

POLICY = Policy(registry="http://mlflow:5000")
STAGE = EventType.MODEL_VERSION_TRANSITIONED_STAGE
TO_STAGING = EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING
TO_PRODUCTION = EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION
TO_ARCHIVED = EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED
SPECIFIC = {"Staging": TO_STAGING, "Production": TO_PRODUCTION, "Archived": TO_ARCHIVED}
STAGES = (NO_STAGE, "Staging", "Production", "Archived")


def ver(
    version: str,
    stage: str = NO_STAGE,
    *,
    name: str = "fraud",
    created: int = 1_000,
    updated: int = 2_000,
    user: str = "alice",
) -> VersionState:
    return VersionState(
        name=name,
        version=version,
        creation_timestamp=created,
        last_updated_timestamp=updated,
        current_stage=stage,
        user_id=user,
        source=f"models:/{name}/{version}",
        run_id=f"run-{version}",
    )


def obs(*versions: VersionState, models: Mapping[str, ModelState] | None = None) -> Observation:
    return Observation(
        models=dict(models or {}), versions={v.key: v for v in versions}, read_at=9_999
    )


def summary(events: list[Event]) -> list[tuple[str, str | None, str | None, str | None, int]]:
    return [(e.type.value, e.model_version, e.from_stage, e.to_stage, e.timestamp) for e in events]


# --------------------------------------------------------------------------- baseline


def test_baseline_emits_nothing() -> None:
    current = obs(ver("1", "Production"), ver("2", "Staging"), ver("3"))
    assert detect(None, current, POLICY) == []


def test_emit_existing_emits_from_none_for_versions_in_a_stage() -> None:
    current = obs(ver("1", "Production", updated=10), ver("2", "Staging", updated=20), ver("3"))
    events = detect(None, current, Policy(registry="r", emit_existing=True))
    assert summary(events) == [
        ("MODEL_VERSION_TRANSITIONED_STAGE", "1", "None", "Production", 10),
        ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "1", "None", "Production", 10),
        ("MODEL_VERSION_TRANSITIONED_STAGE", "2", "None", "Staging", 20),
        ("MODEL_VERSION_TRANSITIONED_TO_STAGING", "2", "None", "Staging", 20),
    ]
    assert all(e.model_version != "3" for e in events)


def test_nothing_changed_emits_nothing() -> None:
    snapshot = obs(ver("1", "Production"), ver("2", "Staging"))
    assert detect(snapshot, snapshot, POLICY) == []


# --------------------------------------------------------------------------- stage changes


def test_stage_change_emits_generic_and_specific_event() -> None:
    previous = obs(ver("3", "Staging", updated=100))
    current = obs(ver("3", "Production", updated=1_678_886_400_000, user="bob"))
    events = detect(previous, current, POLICY)
    assert [e.type for e in events] == [STAGE, TO_PRODUCTION]
    for event in events:
        assert event.model_name == "fraud"
        assert event.model_version == "3"
        assert event.from_stage == "Staging"
        assert event.to_stage == "Production"
        assert event.timestamp == 1_678_886_400_000
        assert event.version_creation_timestamp == 1_000
        assert event.user_id == "bob"
        assert event.source == "models:/fraud/3"
        assert event.run_id == "run-3"
    assert events[0].event_id != events[1].event_id


def test_each_target_stage_has_its_specific_event() -> None:
    for stage, specific in SPECIFIC.items():
        events = detect(obs(ver("1")), obs(ver("1", stage, updated=5)), POLICY)
        assert [e.type for e in events] == [STAGE, specific], stage


def test_back_to_none_emits_only_the_generic_event() -> None:
    events = detect(obs(ver("1", "Staging")), obs(ver("1", NO_STAGE, updated=7)), POLICY)
    assert summary(events) == [("MODEL_VERSION_TRANSITIONED_STAGE", "1", "Staging", "None", 7)]


def test_other_changes_without_a_stage_change_emit_nothing() -> None:
    before = ver("1", "Staging", updated=1)
    after = VersionState(
        name="fraud",
        version="1",
        creation_timestamp=before.creation_timestamp,
        last_updated_timestamp=2,
        current_stage="Staging",
        description="changed",
        tags={"k": "v"},
    )
    assert detect(obs(before), obs(after), POLICY) == []


def test_new_version_already_in_staging_counts_from_none() -> None:
    previous = obs(ver("1", "Production"))
    current = obs(ver("1", "Production"), ver("2", "Staging", updated=300))
    assert summary(detect(previous, current, POLICY)) == [
        ("MODEL_VERSION_TRANSITIONED_STAGE", "2", "None", "Staging", 300),
        ("MODEL_VERSION_TRANSITIONED_TO_STAGING", "2", "None", "Staging", 300),
    ]


def test_new_version_in_none_emits_nothing() -> None:
    assert detect(obs(ver("1")), obs(ver("1"), ver("2")), POLICY) == []


def test_archive_existing_versions_gives_one_event_each() -> None:
    previous = obs(
        ver("1", "Production", updated=100),
        ver("2", "Production", updated=100),
        ver("3", "Staging", updated=100),
        ver("4", "Archived", updated=50),
    )
    current = obs(
        ver("1", "Archived", updated=500),
        ver("2", "Archived", updated=500),
        ver("3", "Production", updated=500),
        ver("4", "Archived", updated=50),
    )
    events = detect(previous, current, POLICY)
    assert summary(events) == [
        ("MODEL_VERSION_TRANSITIONED_STAGE", "1", "Production", "Archived", 500),
        ("MODEL_VERSION_TRANSITIONED_TO_ARCHIVED", "1", "Production", "Archived", 500),
        ("MODEL_VERSION_TRANSITIONED_STAGE", "2", "Production", "Archived", 500),
        ("MODEL_VERSION_TRANSITIONED_TO_ARCHIVED", "2", "Production", "Archived", 500),
        ("MODEL_VERSION_TRANSITIONED_STAGE", "3", "Staging", "Production", 500),
        ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "3", "Staging", "Production", 500),
    ]
    assert len({e.event_id for e in events}) == len(events)


def test_recreated_model_version_is_treated_as_new() -> None:
    previous = obs(ver("1", "Production", created=1_000, updated=1_500))
    # The model was deleted and created again: version "1" is back, but it is another version.
    recreated_in_production = obs(ver("1", "Production", created=5_000, updated=6_000))
    events = detect(previous, recreated_in_production, POLICY)
    assert summary(events) == [
        ("MODEL_VERSION_TRANSITIONED_STAGE", "1", "None", "Production", 6_000),
        ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "1", "None", "Production", 6_000),
    ]
    assert all(e.version_creation_timestamp == 5_000 for e in events)
    recreated_in_none = obs(ver("1", NO_STAGE, created=5_000, updated=6_000))
    assert detect(previous, recreated_in_none, POLICY) == []


def test_deleted_version_emits_no_stage_event() -> None:
    assert detect(obs(ver("1", "Production"), ver("2")), obs(ver("2")), POLICY) == []


# --------------------------------------------------------------------------- ids and order


def test_event_ids_are_deterministic() -> None:
    previous = obs(ver("1", "Staging"), ver("2"))
    current = obs(ver("1", "Production", updated=10), ver("2", "Staging", updated=20))
    first = detect(previous, current, POLICY)
    again = detect(obs(ver("1", "Staging"), ver("2")), obs(*current.versions.values()), POLICY)
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert first == again
    assert len({e.event_id for e in first}) == 4


def test_event_ids_differ_when_inputs_differ() -> None:
    previous = obs(ver("1", "Staging"))

    def stage_event_id(current: Observation, policy: Policy = POLICY) -> str:
        (event,) = [e for e in detect(previous, current, policy) if e.type is STAGE]
        return event.event_id

    base = stage_event_id(obs(ver("1", "Production", updated=10)))
    assert stage_event_id(obs(ver("1", "Production", updated=11))) != base
    assert stage_event_id(obs(ver("1", "Archived", updated=10))) != base
    assert stage_event_id(obs(ver("1", "Production", updated=10, name="churn"))) != base
    assert stage_event_id(obs(ver("1", "Production", updated=10)), Policy("other")) != base
    assert stage_event_id(obs(ver("1", "Production", updated=10))) == base


def test_event_ids_differ_with_the_from_stage() -> None:
    current = obs(ver("1", "Production", updated=10))
    from_staging = detect(obs(ver("1", "Staging")), current, POLICY)
    from_none = detect(obs(ver("1")), current, POLICY)
    assert {e.event_id for e in from_staging}.isdisjoint(e.event_id for e in from_none)


def test_events_are_sorted_by_timestamp() -> None:
    previous = obs(ver("1"), ver("2"), ver("10"), ver("1", name="alpha"))
    current = obs(
        ver("1", "Staging", updated=300),
        ver("2", "Staging", updated=100),
        ver("10", "Staging", updated=200),
        ver("1", "Staging", updated=200, name="alpha"),
    )
    events = detect(previous, current, POLICY)
    order = [(e.timestamp, e.model_name, e.model_version) for e in events if e.type is STAGE]
    assert order == [
        (100, "fraud", "2"),
        (200, "alpha", "1"),
        (200, "fraud", "10"),
        (300, "fraud", "1"),
    ]
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)


def test_versions_with_the_same_timestamp_sort_numerically() -> None:
    previous = obs(ver("9"), ver("10"))
    current = obs(ver("10", "Archived", updated=5), ver("9", "Archived", updated=5))
    events = detect(previous, current, POLICY)
    assert [e.model_version for e in events if e.type is STAGE] == ["9", "10"]


# --------------------------------------------------------------------------- snapshot delta


def test_snapshot_delta_from_nothing_upserts_everything() -> None:
    model = ModelState(name="fraud", creation_timestamp=1, last_updated_timestamp=2)
    current = obs(ver("1"), ver("2"), models={"fraud": model})
    delta = snapshot_delta(None, current)
    assert delta.upsert_models == (model,)
    assert {v.key: v for v in delta.upsert_versions} == current.versions
    assert delta.delete_models == ()
    assert delta.delete_versions == ()


def test_snapshot_delta_of_identical_observations_is_empty() -> None:
    model = ModelState(name="fraud", creation_timestamp=1, last_updated_timestamp=2)
    current = obs(ver("1"), models={"fraud": model})
    assert snapshot_delta(current, current).is_empty
    assert snapshot_delta(current, current) == SnapshotDelta()


def test_snapshot_delta_upserts_changes_and_deletes_what_is_gone() -> None:
    old_model = ModelState(name="old", creation_timestamp=1, last_updated_timestamp=1)
    fraud_v1 = ModelState(name="fraud", creation_timestamp=1, last_updated_timestamp=1)
    fraud_v2 = ModelState(
        name="fraud", creation_timestamp=1, last_updated_timestamp=9, aliases={"champion": "2"}
    )
    previous = obs(
        ver("1", "Staging"), ver("2"), ver("3"), models={"old": old_model, "fraud": fraud_v1}
    )
    current = obs(ver("1", "Production", updated=9), ver("2"), ver("4"), models={"fraud": fraud_v2})
    delta = snapshot_delta(previous, current)
    assert delta.upsert_models == (fraud_v2,)
    assert delta.delete_models == ("old",)
    assert {v.key: v for v in delta.upsert_versions} == {
        ("fraud", "1"): current.versions[("fraud", "1")],
        ("fraud", "4"): current.versions[("fraud", "4")],
    }
    assert delta.delete_versions == (("fraud", "3"),)
    assert not delta.is_empty


# --------------------------------------------------------------------------- properties


def apply_delta(previous: Observation, delta: SnapshotDelta) -> Observation:
    models = {n: m for n, m in previous.models.items() if n not in delta.delete_models}
    models.update({m.name: m for m in delta.upsert_models})
    versions = {k: v for k, v in previous.versions.items() if k not in delta.delete_versions}
    versions.update({v.key: v for v in delta.upsert_versions})
    return Observation(models=models, versions=versions, read_at=previous.read_at)


_NAMES = st.sampled_from(["alpha", "fraud"])
_VERSIONS = st.sampled_from(["1", "2", "3", "10"])
_TIMES = st.integers(min_value=0, max_value=20)


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    keys = draw(st.sets(st.tuples(_NAMES, _VERSIONS), max_size=8))
    versions = {
        (name, version): VersionState(
            name=name,
            version=version,
            creation_timestamp=draw(st.sampled_from([1, 2])),
            last_updated_timestamp=draw(_TIMES),
            current_stage=draw(st.sampled_from(STAGES)),
            tags=draw(st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["x", "y"]))),
        )
        for name, version in sorted(keys)
    }
    models = {
        name: ModelState(
            name=name,
            creation_timestamp=draw(st.sampled_from([1, 2])),
            last_updated_timestamp=draw(_TIMES),
            aliases=draw(st.dictionaries(st.sampled_from(["champion"]), _VERSIONS)),
        )
        for name in sorted(draw(st.sets(_NAMES)))
    }
    return Observation(models=models, versions=versions, read_at=draw(_TIMES))


def expected_transitions(previous: Observation, current: Observation) -> dict[tuple[str, str], str]:
    """key -> from_stage, for every version whose stage differs from the one it had before."""
    expected = {}
    for key, after in current.versions.items():
        before = previous.versions.get(key)
        if before is not None and before.creation_timestamp != after.creation_timestamp:
            before = None
        from_stage = before.current_stage if before is not None else NO_STAGE
        if from_stage != after.current_stage:
            expected[key] = from_stage
    return expected


@settings(max_examples=300, deadline=None)
@given(previous=observations(), current=observations())
def test_one_stage_event_per_changed_version(previous: Observation, current: Observation) -> None:
    events = detect(previous, current, POLICY)
    expected = expected_transitions(previous, current)

    generic = [e for e in events if e.type is STAGE]
    keys = [(e.model_name, e.model_version) for e in generic]
    assert Counter(keys) == Counter(expected.keys())
    for event in generic:
        key = (event.model_name, str(event.model_version))
        after = current.versions[key]
        assert event.from_stage == expected[key]
        assert event.to_stage == after.current_stage
        assert event.timestamp == after.last_updated_timestamp
        assert event.version_creation_timestamp == after.creation_timestamp

    specific = Counter((e.type, e.model_name, e.model_version) for e in events if e.type != STAGE)
    assert specific == Counter(
        (SPECIFIC[current.versions[k].current_stage], *k)
        for k in expected
        if current.versions[k].current_stage in SPECIFIC
    )
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert len({e.event_id for e in events}) == len(events)
    assert detect(previous, current, POLICY) == events


@settings(max_examples=300, deadline=None)
@given(previous=observations(), current=observations())
def test_applying_snapshot_delta_yields_the_current_observation(
    previous: Observation, current: Observation
) -> None:
    delta = snapshot_delta(previous, current)
    applied = apply_delta(previous, delta)
    assert dict(applied.models) == dict(current.models)
    assert dict(applied.versions) == dict(current.versions)
    assert delta.is_empty == (
        dict(previous.models) == dict(current.models)
        and dict(previous.versions) == dict(current.versions)
    )


@settings(max_examples=100, deadline=None)
@given(current=observations())
def test_baseline_emits_nothing_and_emit_existing_matches_an_empty_previous(
    current: Observation,
) -> None:
    assert detect(None, current, POLICY) == []
    empty = Observation(models={}, versions={}, read_at=0)
    existing = Policy(registry=POLICY.registry, emit_existing=True)
    assert detect(None, current, existing) == detect(empty, current, POLICY)
    assert all(e.from_stage == NO_STAGE for e in detect(None, current, existing))
