"""Detection is pure: previous observation x current observation -> events.

The rules under test are the ones in the module docstring of ``watcher.detect``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.helpers import (
    ALIAS_CREATED,
    ALIAS_DELETED,
    M_CREATED,
    M_DELETED,
    M_RENAMED,
    STAGE,
    TAG_DELETED,
    TAG_SET,
    TO_ARCHIVED,
    TO_PRODUCTION,
    TO_STAGING,
    V_CREATED,
    V_DELETED,
)
from tests.helpers import (
    model_state as model,
)
from tests.helpers import (
    version_state as ver,
)
from watcher.detect import CREATION_SKEW_MS, Policy, detect, snapshot_delta
from watcher.model import (
    NO_STAGE,
    Event,
    EventType,
    ModelState,
    Observation,
    SnapshotDelta,
    VersionState,
)

REGISTRY = "http://mlflow:5000"
POLICY = Policy(registry=REGISTRY)
EXISTING = Policy(registry=REGISTRY, emit_existing=True)
READ_AT = 9_999

SPECIFIC = {"Staging": TO_STAGING, "Production": TO_PRODUCTION, "Archived": TO_ARCHIVED}
STAGES = (NO_STAGE, "Staging", "Production", "Archived")


# --------------------------------------------------------------------------- helpers


def obs(*items: ModelState | VersionState, read_at: int = READ_AT) -> Observation:
    """An observation of the given models and versions; a version's model defaults to model()."""
    models = {i.name: i for i in items if isinstance(i, ModelState)}
    versions = {i.key: i for i in items if isinstance(i, VersionState)}
    for name, _ in versions:
        models.setdefault(name, model(name))
    return Observation(models=models, versions=versions, read_at=read_at)


def shape(event: Event) -> dict[str, Any]:
    """Every field of an event but its id."""
    fields = event.to_dict()
    del fields["event_id"]
    return fields


def expect(event_type: EventType, model_name: str = "fraud", **fields: Any) -> dict[str, Any]:
    """The exact shape of an event: every field not given must be its default (None or "")."""
    return shape(Event(event_id="", type=event_type, model_name=model_name, **fields))


def of_version(v: VersionState) -> dict[str, Any]:
    """The fields every event about a version copies from it."""
    return {
        "model_version": v.version,
        "version_creation_timestamp": v.creation_timestamp,
        "user_id": v.user_id,
        "source": v.source,
        "run_id": v.run_id,
    }


def kinds(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.type.value, e.model_version) for e in events]


def summary(events: list[Event]) -> list[tuple[str, str | None, str | None, str | None, int]]:
    return [(e.type.value, e.model_version, e.from_stage, e.to_stage, e.timestamp) for e in events]


# --------------------------------------------------------------------------- baseline


def a_full_registry() -> Observation:
    return obs(
        model(aliases={"champion": "1"}, tags={"team": "risk"}, description="fraud scores"),
        ver("1", "Production", tags={"owner": "bob"}),
        ver("2", "Staging"),
        ver("3"),
        ver("1", "Archived", name="churn"),
    )


def test_baseline_emits_nothing() -> None:
    assert detect(None, a_full_registry(), POLICY) == []
    assert detect(None, a_full_registry(), Policy(REGISTRY, baseline_ms=10**12)) == []


def test_emit_existing_emits_for_everything_that_exists() -> None:
    fraud = model(
        created=100,
        aliases={"champion": "1", "stale": "7"},  # version 7 does not exist: no event
        tags={"team": "risk"},
        description="fraud scores",
    )
    v1 = ver("1", "Production", created=1_000, updated=1_500, tags={"owner": "bob"}, user="u1")
    v2 = ver("2", created=1_100, updated=1_100, description="second")
    events = detect(None, obs(fraud, v1, v2), EXISTING)
    assert [shape(e) for e in events] == [
        expect(
            M_CREATED,
            timestamp=100,
            user_id="owner",
            description="fraud scores",
            tags={"team": "risk"},
        ),
        expect(V_CREATED, timestamp=1_000, description="", tags={"owner": "bob"}, **of_version(v1)),
        expect(V_CREATED, timestamp=1_100, description="second", tags={}, **of_version(v2)),
        expect(STAGE, timestamp=1_500, from_stage="None", to_stage="Production", **of_version(v1)),
        expect(
            TO_PRODUCTION,
            timestamp=1_500,
            from_stage="None",
            to_stage="Production",
            **of_version(v1),
        ),
        expect(TAG_SET, timestamp=READ_AT, tag_key="owner", tag_value="bob", **of_version(v1)),
        expect(
            ALIAS_CREATED,
            timestamp=READ_AT,
            alias="champion",
            **of_version(v1),
        ),
    ]
    assert len({e.event_id for e in events}) == len(events)


def test_emit_existing_covers_every_model_version_stage_tag_and_alias() -> None:
    events = detect(None, a_full_registry(), EXISTING)
    counts = Counter(e.type for e in events)
    assert counts == {
        M_CREATED: 2,
        V_CREATED: 4,
        STAGE: 3,
        TO_PRODUCTION: 1,
        TO_STAGING: 1,
        TO_ARCHIVED: 1,
        TAG_SET: 1,
        ALIAS_CREATED: 1,
    }
    assert all(e.from_stage == NO_STAGE for e in events if e.type is STAGE)


def test_nothing_changed_emits_nothing() -> None:
    snapshot = a_full_registry()
    assert detect(snapshot, snapshot, POLICY) == []
    assert detect(snapshot, replace(snapshot, read_at=READ_AT + 60_000), POLICY) == []


# --------------------------------------------------------------------------- models


def test_registered_model_created() -> None:
    created = model(
        "churn", created=5_000, updated=5_000, description="d", tags={"k": "v"}, user="carol"
    )
    events = detect(obs(ver("1")), obs(ver("1"), created), POLICY)
    assert [shape(e) for e in events] == [
        expect(
            M_CREATED,
            "churn",
            timestamp=5_000,
            user_id="carol",
            description="d",
            tags={"k": "v"},
        )
    ]


def test_registered_model_deleted_once_and_nothing_for_its_versions_or_aliases() -> None:
    previous = obs(
        model(aliases={"champion": "1"}, user="dave"),
        ver("1", "Production", tags={"a": "x"}),
        ver("2", "Staging"),
        ver("1", name="churn"),
    )
    current = obs(ver("1", name="churn"), read_at=20_000)
    events = detect(previous, current, POLICY)
    assert [shape(e) for e in events] == [expect(M_DELETED, timestamp=20_000, user_id="dave")]


def test_model_deleted_and_created_again_under_the_same_name() -> None:
    previous = obs(
        model(created=100, aliases={"champion": "1"}),
        ver("1", "Production", created=1_000, tags={"a": "x"}),
        ver("2", created=1_100),
    )
    new_v1 = ver("1", "Staging", created=5_100, updated=5_200)
    current = obs(model(created=5_000, updated=5_200, aliases={"champion": "1"}), new_v1)
    events = detect(previous, current, POLICY)
    assert Counter(e.type for e in events) == {
        M_DELETED: 1,
        M_CREATED: 1,
        V_CREATED: 1,
        STAGE: 1,
        TO_STAGING: 1,
        ALIAS_CREATED: 1,
    }
    (deleted,) = (e for e in events if e.type is M_DELETED)
    (created,) = (e for e in events if e.type is M_CREATED)
    # Deleted just before it was created again, so receivers replaying in order end right.
    assert (deleted.timestamp, created.timestamp) == (4_999, 5_000)
    assert events.index(deleted) < events.index(created)
    (version,) = (e for e in events if e.type is V_CREATED)
    assert version.model_version == "1"
    assert version.version_creation_timestamp == 5_100
    (stage,) = (e for e in events if e.type is STAGE)
    assert (stage.from_stage, stage.to_stage) == (NO_STAGE, "Staging")  # not Production -> ...
    (alias,) = (e for e in events if e.type is ALIAS_CREATED)
    assert (alias.previous_version, alias.version_creation_timestamp) == (None, 5_100)


# --------------------------------------------------------------------------- versions


def test_model_version_created_with_its_stage_and_tags() -> None:
    new = ver(
        "2",
        "Staging",
        created=3_000,
        updated=3_500,
        tags={"b": "y", "a": "x"},
        description="candidate",
    )
    events = detect(obs(ver("1")), obs(ver("1"), new), POLICY)
    assert [shape(e) for e in events] == [
        expect(
            V_CREATED,
            timestamp=3_000,
            description="candidate",
            tags={"a": "x", "b": "y"},
            **of_version(new),
        ),
        expect(STAGE, timestamp=3_500, from_stage="None", to_stage="Staging", **of_version(new)),
        expect(
            TO_STAGING, timestamp=3_500, from_stage="None", to_stage="Staging", **of_version(new)
        ),
        expect(TAG_SET, timestamp=READ_AT, tag_key="a", tag_value="x", **of_version(new)),
        expect(TAG_SET, timestamp=READ_AT, tag_key="b", tag_value="y", **of_version(new)),
    ]


def test_new_version_in_no_stage_without_tags_emits_only_created() -> None:
    events = detect(obs(ver("1")), obs(ver("1"), ver("2", created=3_000)), POLICY)
    assert kinds(events) == [("MODEL_VERSION_CREATED", "2")]


def test_stage_change_emits_generic_and_specific_event() -> None:
    previous = obs(ver("3", "Staging", updated=100))
    after = ver("3", "Production", updated=1_678_886_400_000, user="bob")
    events = detect(previous, obs(after), POLICY)
    fields: dict[str, Any] = {
        "timestamp": 1_678_886_400_000,
        "from_stage": "Staging",
        "to_stage": "Production",
    }
    assert [shape(e) for e in events] == [
        expect(STAGE, **fields, **of_version(after)),
        expect(TO_PRODUCTION, **fields, **of_version(after)),
    ]
    assert events[0].event_id != events[1].event_id


@pytest.mark.parametrize(("stage", "specific"), SPECIFIC.items())
def test_each_target_stage_has_its_specific_event(stage: str, specific: EventType) -> None:
    events = detect(obs(ver("1")), obs(ver("1", stage, updated=5)), POLICY)
    assert [e.type for e in events] == [STAGE, specific]


def test_back_to_no_stage_emits_only_the_generic_event() -> None:
    events = detect(obs(ver("1", "Staging")), obs(ver("1", NO_STAGE, updated=7)), POLICY)
    assert summary(events) == [("MODEL_VERSION_TRANSITIONED_STAGE", "1", "Staging", "None", 7)]


def test_a_stage_that_changes_only_in_case_is_no_transition() -> None:
    assert detect(obs(ver("1", "staging")), obs(ver("1", "Staging", updated=9)), POLICY) == []


def test_other_version_changes_emit_nothing() -> None:
    before = ver("1", "Staging", updated=1)
    after = replace(before, last_updated_timestamp=2, description="changed", status="FAILED")
    assert detect(obs(before), obs(after), POLICY) == []


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


def test_version_deleted_at_the_models_bumped_update_time() -> None:
    gone = ver("2", "Production", tags={"a": "x"}, description="old", user="erin")
    previous = obs(model(updated=3_000), ver("1"), gone)
    current = obs(model(updated=4_000), ver("1"), read_at=20_000)
    events = detect(previous, current, POLICY)
    assert [shape(e) for e in events] == [
        expect(V_DELETED, timestamp=4_000, description="old", **of_version(gone))
    ]


def test_version_deleted_at_read_time_when_the_model_did_not_move() -> None:
    previous = obs(model(updated=3_000), ver("1"), ver("2"))
    for current in (
        obs(model(updated=3_000), ver("1"), read_at=20_000),
        obs(model(updated=2_000), ver("1"), read_at=20_000),
    ):
        (event,) = detect(previous, current, POLICY)
        assert (event.type, event.model_version, event.timestamp) == (V_DELETED, "2", 20_000)
        assert event.description is None  # an empty description is no description


def test_version_gone_without_its_model_is_deleted_at_read_time() -> None:
    previous = Observation(models={}, versions={("fraud", "1"): ver("1")}, read_at=1)
    current = Observation(models={}, versions={}, read_at=20_000)
    assert summary(detect(previous, current, POLICY)) == [
        ("MODEL_VERSION_DELETED", "1", None, None, 20_000)
    ]


# --------------------------------------------------------------------------- tags


def test_tag_set_changed_and_deleted() -> None:
    before = ver("1", tags={"changed": "old", "deleted": "gone", "same": "s"})
    after = ver("1", tags={"changed": "new", "added": "a", "same": "s"})
    events = detect(obs(before), obs(after), POLICY)
    common = {"timestamp": READ_AT, **of_version(after)}
    assert [shape(e) for e in events] == [
        expect(TAG_SET, tag_key="added", tag_value="a", previous_value=None, **common),
        expect(TAG_SET, tag_key="changed", tag_value="new", previous_value="old", **common),
        expect(TAG_DELETED, tag_key="deleted", previous_value="gone", **common),
    ]


def test_a_tag_set_deleted_and_set_again_gives_three_distinct_events() -> None:
    cycles = [
        obs(ver("1"), read_at=10_000),
        obs(ver("1", tags={"k": "v"}), read_at=20_000),
        obs(ver("1"), read_at=30_000),
        obs(ver("1", tags={"k": "v"}), read_at=40_000),
    ]
    events = [e for p, c in itertools.pairwise(cycles) for e in detect(p, c, POLICY)]
    assert [(e.type, e.tag_key, e.timestamp) for e in events] == [
        (TAG_SET, "k", 20_000),
        (TAG_DELETED, "k", 30_000),
        (TAG_SET, "k", 40_000),
    ]
    assert len({e.event_id for e in events}) == 3


# --------------------------------------------------------------------------- aliases


def test_alias_created_moved_and_deleted() -> None:
    v1, v2, v3 = ver("1", user="u1"), ver("2", user="u2"), ver("3", user="u3")
    before = model(aliases={"moved": "1", "deleted": "2", "kept": "3"}, user="owner")
    after = model(aliases={"moved": "3", "added": "2", "kept": "3"}, user="owner")
    events = detect(obs(before, v1, v2, v3), obs(after, v1, v2, v3), POLICY)
    # MLflow does not record who moved an alias: like every version event, it carries the
    # user the registry reports for the version.
    common = {"timestamp": READ_AT}
    assert [shape(e) for e in events] == [
        expect(ALIAS_DELETED, alias="deleted", **{**of_version(v2), **common}),
        expect(ALIAS_CREATED, alias="added", **{**of_version(v2), **common}),
        expect(ALIAS_CREATED, alias="moved", previous_version="1", **{**of_version(v3), **common}),
    ]


def test_an_alias_counts_only_while_its_version_exists() -> None:
    dangling = obs(model(aliases={"champion": "2"}), ver("1"))
    assert detect(obs(ver("1")), dangling, POLICY) == []
    appeared = obs(model(aliases={"champion": "2"}), ver("1"), ver("2", created=3_000))
    events = detect(dangling, appeared, POLICY)
    assert kinds(events) == [("MODEL_VERSION_CREATED", "2"), ("MODEL_VERSION_ALIAS_CREATED", "2")]


def test_version_deleted_under_an_alias_mlflow_2_and_3_give_one_alias_deleted() -> None:
    previous = obs(model(aliases={"champion": "2"}), ver("1"), ver("2"), read_at=10_000)
    mlflow2 = obs(model(aliases={"champion": "2"}), ver("1"), read_at=20_000)  # alias dangles
    mlflow3 = obs(model(), ver("1"), read_at=20_000)  # alias removed with the version
    events2 = detect(previous, mlflow2, POLICY)
    events3 = detect(previous, mlflow3, POLICY)
    expected = [("MODEL_VERSION_ALIAS_DELETED", "2"), ("MODEL_VERSION_DELETED", "2")]
    assert kinds(events2) == expected
    assert kinds(events3) == expected
    assert events2 == events3  # the same event ids: receivers see one story either way
    (alias,) = (e for e in events2 if e.type is ALIAS_DELETED)
    assert (alias.alias, alias.version_creation_timestamp) == ("champion", 1_000)
    # The next cycles, the dangling alias is still there: nothing more.
    assert detect(mlflow2, replace(mlflow2, read_at=30_000), POLICY) == []
    assert detect(mlflow3, replace(mlflow3, read_at=30_000), POLICY) == []


# --------------------------------------------------------------------------- adoption

BASELINE = 1_700_000_000_000
ADOPTING = Policy(registry=REGISTRY, baseline_ms=BASELINE)
BEFORE_CUTOFF = BASELINE - CREATION_SKEW_MS - 1
AFTER_CUTOFF = BASELINE - CREATION_SKEW_MS + 1
NOW = BASELINE + 3_600_000


def test_a_model_created_long_before_the_baseline_is_adopted_silently() -> None:
    old = model("legacy", created=BEFORE_CUTOFF - 10, aliases={"champion": "1"}, tags={"team": "x"})
    v1 = ver("1", "Production", name="legacy", created=BEFORE_CUTOFF, tags={"a": "b"})
    previous = obs(ver("1"), read_at=NOW - 60_000)
    current = obs(ver("1"), old, v1, read_at=NOW)
    assert detect(previous, current, ADOPTING) == []
    # Once adopted, its changes are events like any other.
    later = obs(ver("1"), old, replace(v1, current_stage="Archived", tags={}), read_at=NOW + 1)
    assert [(e.type, e.model_name) for e in detect(current, later, ADOPTING)] == [
        (STAGE, "legacy"),
        (TO_ARCHIVED, "legacy"),
        (TAG_DELETED, "legacy"),
    ]


def test_versions_of_an_adopted_model_are_adopted_with_it() -> None:
    old = model("legacy", created=BEFORE_CUTOFF)
    recent = ver("7", "Staging", name="legacy", created=AFTER_CUTOFF, tags={"a": "b"})
    assert detect(obs(read_at=NOW - 1), obs(old, recent, read_at=NOW), ADOPTING) == []


def test_a_model_created_within_the_skew_of_the_baseline_is_created() -> None:
    for created in (BASELINE - CREATION_SKEW_MS, AFTER_CUTOFF, NOW - 5):
        new = model("churn", created=created, aliases={"champion": "1"})
        v1 = ver("1", "Staging", name="churn", created=created, updated=created)
        events = detect(obs(read_at=NOW - 1), obs(new, v1, read_at=NOW), ADOPTING)
        assert [e.type for e in events] == [
            M_CREATED,
            V_CREATED,
            STAGE,
            TO_STAGING,
            ALIAS_CREATED,
        ], created


def test_a_version_first_seen_is_adopted_or_created_by_its_creation_time() -> None:
    previous = obs(ver("2", created=AFTER_CUTOFF), read_at=NOW - 1)
    old = ver("1", "Production", created=BEFORE_CUTOFF, tags={"a": "b"})
    new = ver("3", "Production", created=AFTER_CUTOFF, updated=NOW - 9, tags={"a": "b"})
    events = detect(previous, obs(old, ver("2", created=AFTER_CUTOFF), new, read_at=NOW), ADOPTING)
    assert {e.model_version for e in events} == {"3"}
    assert [e.type for e in events] == [V_CREATED, STAGE, TO_PRODUCTION, TAG_SET]


# --------------------------------------------------------------------------- ids and order


def test_event_ids_are_deterministic() -> None:
    def cycle() -> list[Event]:
        previous = obs(model(aliases={"a": "1"}), ver("1", "Staging", tags={"k": "1"}), ver("2"))
        current = obs(
            model(aliases={"a": "2"}),
            ver("1", "Production", updated=10, tags={"k": "2"}),
            ver("2", "Staging", updated=20),
            ver("3", created=30),
        )
        return detect(previous, current, POLICY)

    first, again = cycle(), cycle()
    assert first == again
    assert len(first) == 7
    assert len({e.event_id for e in first}) == len(first)


def test_event_ids_differ_when_inputs_differ() -> None:
    previous = obs(ver("1", "Staging"))

    def stage_event_id(current: Observation, policy: Policy = POLICY) -> str:
        (event,) = [e for e in detect(previous, current, policy) if e.type is STAGE]
        return event.event_id

    base = stage_event_id(obs(ver("1", "Production", updated=10)))
    assert stage_event_id(obs(ver("1", "Production", updated=11))) != base
    assert stage_event_id(obs(ver("1", "Archived", updated=10))) != base
    assert stage_event_id(obs(ver("1", "Production", updated=10, created=999))) != base
    assert stage_event_id(obs(ver("1", "Production", updated=10)), Policy("other")) != base
    assert stage_event_id(obs(ver("1", "Production", updated=10))) == base


def test_event_ids_differ_with_the_from_stage() -> None:
    current = obs(ver("1", "Production", updated=10))
    from_staging = detect(obs(ver("1", "Staging")), current, POLICY)
    from_none = detect(obs(ver("1")), current, POLICY)
    assert {e.event_id for e in from_staging}.isdisjoint(e.event_id for e in from_none)


def test_within_one_timestamp_a_model_comes_before_its_version_and_its_transitions() -> None:
    new = obs(model(created=500), ver("1", "Production", created=500, updated=500))
    events = detect(obs(read_at=1), new, POLICY)
    assert [e.type for e in events] == [M_CREATED, V_CREATED, STAGE, TO_PRODUCTION]
    assert {e.timestamp for e in events} == {500}


def test_events_are_sorted_by_timestamp() -> None:
    previous = obs(ver("1"), ver("2"), ver("10"), ver("1", name="alpha"))
    current = obs(
        ver("1", "Staging", updated=300),
        ver("2", "Staging", updated=100),
        ver("10", "Staging", updated=200),
        ver("1", "Staging", updated=200, name="alpha"),
        ver("11", created=150),
    )
    events = detect(previous, current, POLICY)
    assert [
        (e.timestamp, e.model_name, e.model_version) for e in events if e.type != TO_STAGING
    ] == [
        (100, "fraud", "2"),
        (150, "fraud", "11"),
        (200, "alpha", "1"),
        (200, "fraud", "10"),
        (300, "fraud", "1"),
    ]


def test_versions_with_the_same_timestamp_sort_numerically() -> None:
    previous = obs(ver("9"), ver("10"))
    current = obs(ver("10", "Archived", updated=5), ver("9", "Archived", updated=5))
    events = detect(previous, current, POLICY)
    assert [e.model_version for e in events if e.type is STAGE] == ["9", "10"]


# --------------------------------------------------------------------------- snapshot delta


def test_snapshot_delta_from_nothing_upserts_everything() -> None:
    current = obs(ver("1"), ver("2"))
    delta = snapshot_delta(None, current)
    assert delta.upsert_models == (current.models["fraud"],)
    assert {v.key: v for v in delta.upsert_versions} == current.versions
    assert delta.delete_models == ()
    assert delta.delete_versions == ()


def test_snapshot_delta_of_identical_observations_is_empty() -> None:
    current = obs(ver("1"))
    assert snapshot_delta(current, current).is_empty
    assert snapshot_delta(current, current) == SnapshotDelta()


def test_snapshot_delta_upserts_changes_and_deletes_what_is_gone() -> None:
    fraud_v1 = model(updated=1)
    fraud_v2 = model(updated=9, aliases={"champion": "2"})
    previous = obs(fraud_v1, model("old"), ver("1", "Staging"), ver("2"), ver("3"))
    current = obs(fraud_v2, ver("1", "Production", updated=9), ver("2"), ver("4"))
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

_MODEL_NAMES = st.sampled_from(["alpha", "fraud"])
_NUMBERS = st.sampled_from(["1", "2", "3", "10"])
_STAGES = st.sampled_from([*STAGES, "staging"])  # MLflow compares stages case-insensitively
_CREATED = st.sampled_from([1, 2])
_TIMES = st.integers(min_value=0, max_value=20)
_TAGS = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"]))
_ALIASES = st.dictionaries(st.sampled_from(["champion", "challenger"]), _NUMBERS)


@st.composite
def observations(draw: st.DrawFn) -> Observation:
    """A small consistent registry: every version belongs to a listed model; aliases may dangle."""
    models: dict[str, ModelState] = {}
    versions: dict[tuple[str, str], VersionState] = {}
    for name in sorted(draw(st.sets(_MODEL_NAMES))):
        models[name] = ModelState(
            name=name,
            creation_timestamp=draw(_CREATED),
            last_updated_timestamp=draw(_TIMES),
            aliases=draw(_ALIASES),
        )
        for number in sorted(draw(st.sets(_NUMBERS, max_size=3))):
            versions[(name, number)] = VersionState(
                name=name,
                version=number,
                creation_timestamp=draw(_CREATED),
                last_updated_timestamp=draw(_TIMES),
                current_stage=draw(_STAGES),
                tags=draw(_TAGS),
            )
    return Observation(models=models, versions=versions, read_at=draw(_TIMES) + 100)


def persisting(previous: Observation, current: Observation) -> list[tuple[str, str]]:
    """The versions in both observations that are the same version (same creation time)."""
    return [
        key
        for key, after in current.versions.items()
        if key in previous.versions
        and previous.versions[key].creation_timestamp == after.creation_timestamp
    ]


def each_persisting_version(
    previous: Observation, current: Observation
) -> Iterator[tuple[tuple[str, str], VersionState, VersionState, list[Event]]]:
    """What detect() says going from ``previous`` to ``current``, beside each persisting
    version: (key, the version before, after, every event detected)."""
    events = detect(previous, current, POLICY)
    for key in persisting(previous, current):
        yield key, previous.versions[key], current.versions[key], events


def live_aliases(observation: Observation, name: str) -> dict[str, str]:
    return {
        alias: number
        for alias, number in observation.models[name].aliases.items()
        if (name, number) in observation.versions
    }


def about(events: list[Event], types: set[EventType], key: tuple[str, str]) -> list[Event]:
    return [e for e in events if e.type in types and (e.model_name, e.model_version) == key]


@given(previous=observations(), current=observations())
def test_one_transition_per_persisting_version_whose_stage_differs(
    previous: Observation, current: Observation
) -> None:
    for key, before, after, events in each_persisting_version(previous, current):
        generic = about(events, {STAGE}, key)
        changed = before.current_stage.lower() != after.current_stage.lower()
        assert len(generic) == int(changed)
        for event in generic:
            assert (event.from_stage, event.to_stage) == (before.current_stage, after.current_stage)
            assert event.timestamp == after.last_updated_timestamp
        specific = {e.type for e in about(events, {TO_STAGING, TO_PRODUCTION, TO_ARCHIVED}, key)}
        wanted = SPECIFIC.get(after.current_stage.capitalize()) if changed else None
        assert specific == ({wanted} if wanted else set())


@given(previous=observations(), current=observations())
def test_one_tag_event_per_tag_that_differs_on_a_persisting_version(
    previous: Observation, current: Observation
) -> None:
    for key, version_before, version_after, events in each_persisting_version(previous, current):
        before, after = version_before.tags, version_after.tags
        differing = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        tag_events = about(events, {TAG_SET, TAG_DELETED}, key)
        assert len(tag_events) == len(differing)
        assert {e.tag_key for e in tag_events} == differing
        for event in tag_events:
            assert event.previous_value == before.get(str(event.tag_key))
            assert event.tag_value == after.get(str(event.tag_key))
            assert event.type is (TAG_SET if event.tag_key in after else TAG_DELETED)


@given(previous=observations(), current=observations())
def test_one_alias_event_per_live_alias_that_differs_on_a_persisting_model(
    previous: Observation, current: Observation
) -> None:
    events = detect(previous, current, POLICY)
    for name, after in current.models.items():
        before = previous.models.get(name)
        if before is None or before.creation_timestamp != after.creation_timestamp:
            continue
        old, new = live_aliases(previous, name), live_aliases(current, name)
        differing = {a for a in old.keys() | new.keys() if old.get(a) != new.get(a)}
        alias_events = [
            e for e in events if e.model_name == name and e.type in {ALIAS_CREATED, ALIAS_DELETED}
        ]
        assert sorted(str(e.alias) for e in alias_events) == sorted(differing)
        for event in alias_events:
            alias = str(event.alias)
            if event.type is ALIAS_CREATED:
                assert (event.model_version, event.previous_version) == (new[alias], old.get(alias))
            else:
                assert alias not in new
                assert event.model_version == old[alias]


@given(previous=observations(), current=observations())
def test_general_properties_of_every_detection(previous: Observation, current: Observation) -> None:
    events = detect(previous, current, POLICY)
    # No event about a model in neither observation; a model gone says so once, and only that:
    # deleted, or renamed (said under its new name, which was not there before).
    assert {e.model_name for e in events} <= previous.models.keys() | current.models.keys()
    renames = {str(e.previous_name): e.model_name for e in events if e.type is M_RENAMED}
    assert len(renames) == len([e for e in events if e.type is M_RENAMED])
    assert len(set(renames.values())) == len(renames)
    for name in previous.models.keys() - current.models.keys():
        deleted = [e.type for e in events if e.model_name == name] == [M_DELETED]
        assert deleted != (name in renames)
        assert name not in renames or not [e for e in events if e.model_name == name]

    def same_model(name: str) -> bool:
        before, after = previous.models.get(name), current.models.get(name)
        return bool(before and after and before.creation_timestamp == after.creation_timestamp)

    for old, new in renames.items():
        assert not same_model(old)  # gone, or deleted and created again
        assert not same_model(new)
        assert previous.models[old].creation_timestamp == current.models[new].creation_timestamp
        assert not [e for e in events if e.model_name == new and e.type in {M_CREATED, V_CREATED}]
    # Sorted, unique, deterministic.
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    assert len({e.event_id for e in events}) == len(events)
    assert detect(previous, current, POLICY) == events


@given(observation=observations(), read_at=_TIMES)
def test_nothing_changed_nothing_detected(observation: Observation, read_at: int) -> None:
    assert detect(observation, observation, POLICY) == []
    assert detect(observation, replace(observation, read_at=read_at), POLICY) == []


def apply_delta(previous: Observation, delta: SnapshotDelta) -> Observation:
    models = {n: m for n, m in previous.models.items() if n not in delta.delete_models}
    models.update({m.name: m for m in delta.upsert_models})
    versions = {k: v for k, v in previous.versions.items() if k not in delta.delete_versions}
    versions.update({v.key: v for v in delta.upsert_versions})
    return Observation(models=models, versions=versions, read_at=previous.read_at)


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


@given(current=observations())
def test_baseline_emits_nothing_and_emit_existing_matches_an_empty_previous(
    current: Observation,
) -> None:
    assert detect(None, current, POLICY) == []
    empty = Observation(models={}, versions={}, read_at=0)
    existing = detect(None, current, EXISTING)
    assert existing == detect(empty, current, POLICY)
    assert Counter(e.type for e in existing)[M_CREATED] == len(current.models)
    assert Counter(e.type for e in existing)[V_CREATED] == len(current.versions)
    assert all(e.from_stage == NO_STAGE for e in existing if e.type is STAGE)


def test_an_alias_on_an_adopted_version_is_adopted_with_it() -> None:
    baseline = 10 * CREATION_SKEW_MS
    policy = Policy(registry=REGISTRY, baseline_ms=baseline)
    before = obs(model(created=baseline), ver("2", created=baseline + 1))
    after = obs(
        model(created=baseline, aliases={"champion": "1"}),
        ver("1", created=1_000),  # long before the baseline: it was missed, not created now
        ver("2", created=baseline + 1),
    )
    assert detect(before, after, policy) == []


# --------------------------------------------------------------------------- renames


def registry_of(name: str, *, updated: int = 2_000, **model_fields: Any) -> list[Any]:
    """A model and its versions as MLflow keeps them through a rename: the same sources and run
    ids, creation times and numbers, under any name."""
    return [
        model(name, created=100, updated=updated, **model_fields),
        ver("1", "Production", name=name, updated=updated, source="s3://m/1", run_id="r1"),
        ver(
            "2",
            name=name,
            created=1_500,
            updated=updated,
            source="s3://m/2",
            run_id="",
            tags={"gate": "passed"},
        ),
    ]


def test_a_rename_is_one_event_with_both_names() -> None:
    previous = obs(*registry_of("fraud", aliases={"champion": "1"}), ver("1", name="churn"))
    current = obs(
        *registry_of("fraud-v2", updated=7_000, aliases={"champion": "1"}, user="erin"),
        ver("1", name="churn"),
    )
    events = detect(previous, current, POLICY)
    assert [shape(e) for e in events] == [
        expect(M_RENAMED, "fraud-v2", timestamp=7_000, user_id="erin", previous_name="fraud")
    ]


def test_a_rename_is_one_event_whenever_the_model_was_created() -> None:
    """Before the baseline (once adopted silently) or after (once created anew)."""
    previous = obs(*registry_of("fraud"), read_at=NOW - 1)
    current = obs(*registry_of("fraud-v2", updated=NOW - 10), read_at=NOW)
    for policy in (POLICY, ADOPTING):
        assert kinds(detect(previous, current, policy)) == [(M_RENAMED.value, None)]


def test_what_else_changed_in_the_renamed_model_is_reported_under_its_new_name() -> None:
    previous = obs(*registry_of("fraud", aliases={"champion": "1", "old": "2"}))
    m, v1, v2 = registry_of("fraud-v2", updated=7_000, aliases={"champion": "2"})
    current = obs(m, replace(v1, current_stage="Archived"), replace(v2, tags={"gate": "failed"}))
    events = detect(previous, current, POLICY)
    assert {e.model_name for e in events} == {"fraud-v2"}
    assert sorted((e.type.value, e.model_version) for e in events) == sorted(
        [
            (M_RENAMED.value, None),
            (STAGE.value, "1"),
            (TO_ARCHIVED.value, "1"),
            (TAG_SET.value, "2"),
            (ALIAS_CREATED.value, "2"),
            (ALIAS_DELETED.value, "2"),
        ]
    )
    assert events[0].type is M_RENAMED  # before what happened to the model under its new name
    (stage,) = (e for e in events if e.type is STAGE)
    assert (stage.from_stage, stage.to_stage) == ("Production", "Archived")
    (tag,) = (e for e in events if e.type is TAG_SET)
    assert (tag.tag_key, tag.tag_value, tag.previous_value) == ("gate", "failed", "passed")
    (moved,) = (e for e in events if e.type is ALIAS_CREATED)
    (deleted,) = (e for e in events if e.type is ALIAS_DELETED)
    assert (moved.alias, moved.previous_version) == ("champion", "1")
    assert (deleted.alias, deleted.version_creation_timestamp) == ("old", 1_500)


def test_a_rename_comes_first_even_when_a_change_under_the_new_name_is_older() -> None:
    """The rename's time is the model's last update, which a later change moves: a stage
    change made after the rename (so under the new name) still follows the rename, and the
    rename takes the stage change's earlier time, so the events stay in time order."""
    previous = obs(*registry_of("fraud"))
    m, v1, v2 = registry_of("fraud-v2", updated=7_000)
    current = obs(m, replace(v1, current_stage="Archived", last_updated_timestamp=5_000), v2)
    events = detect(previous, current, POLICY)
    assert [e.type for e in events][:2] == [M_RENAMED, STAGE]
    assert [e.timestamp for e in events[:2]] == [5_000, 5_000]


def test_a_model_deleted_under_the_new_name_is_said_before_the_rename() -> None:
    previous = obs(*registry_of("fraud"), model("fraud-v2", created=50))
    current = obs(*registry_of("fraud-v2", updated=7_000))
    events = detect(previous, current, POLICY)
    assert [(e.type, e.model_name) for e in events] == [
        (M_DELETED, "fraud-v2"),
        (M_RENAMED, "fraud-v2"),
    ]


def test_a_different_creation_time_makes_it_no_rename() -> None:
    previous = obs(*registry_of("fraud"))
    m, v1, v2 = registry_of("fraud-v2", updated=7_000)
    events = detect(previous, obs(replace(m, creation_timestamp=101), v1, v2), POLICY)
    assert M_RENAMED not in {e.type for e in events}


def test_a_model_without_versions_is_paired_by_its_creation_time() -> None:
    previous = obs(model("draft", created=300), model("other", created=400))
    current = obs(model("draft-2", created=300, updated=900), model("other", created=400))
    events = detect(previous, current, POLICY)
    assert [(e.type, e.model_name, e.previous_name) for e in events] == [
        (M_RENAMED, "draft-2", "draft")
    ]


def test_ambiguous_pairs_fall_back_to_deletion_and_creation() -> None:
    # Two models without versions created in the same millisecond: either may be the new name.
    previous = obs(model("a", created=300), model("b", created=300))
    current = obs(model("c", created=300, updated=900), read_at=20_000)
    events = detect(previous, current, POLICY)
    assert sorted((e.type.value, e.model_name) for e in events) == [
        (M_CREATED.value, "c"),
        (M_DELETED.value, "a"),
        (M_DELETED.value, "b"),
    ]
    # One gone, two alike appeared.
    events = detect(current, previous, POLICY)
    assert sorted((e.type.value, e.model_name) for e in events) == [
        (M_CREATED.value, "a"),
        (M_CREATED.value, "b"),
        (M_DELETED.value, "c"),
    ]


@pytest.mark.parametrize(
    "differs",
    [
        {"created": 1_501},
        {"source": "s3://m/2-copy"},
        {"run_id": "r2"},
    ],
)
def test_a_version_that_differs_makes_it_no_rename(differs: dict[str, Any]) -> None:
    previous = obs(*registry_of("fraud"))
    m, v1, v2 = registry_of("fraud-v2", updated=7_000)
    v2 = ver(
        "2", name="fraud-v2", **{"created": 1_500, "source": "s3://m/2", "run_id": "", **differs}
    )
    events = detect(previous, obs(m, v1, v2), POLICY)
    assert M_RENAMED not in {e.type for e in events}
    assert (M_DELETED, "fraud") in {(e.type, e.model_name) for e in events}


def test_a_version_deleted_in_the_same_read_makes_it_no_rename() -> None:
    previous = obs(*registry_of("fraud"))
    m, v1, _ = registry_of("fraud-v2", updated=7_000)
    events = detect(previous, obs(m, v1), POLICY)
    assert {(e.type, e.model_name) for e in events} >= {
        (M_DELETED, "fraud"),
        (M_CREATED, "fraud-v2"),
    }
    assert M_RENAMED not in {e.type for e in events}


def test_renamed_and_its_old_name_created_again_in_the_same_read() -> None:
    previous = obs(*registry_of("fraud"))
    new_fraud = model("fraud", created=6_000, updated=6_000)
    current = obs(*registry_of("fraud-v2", updated=5_000), new_fraud, read_at=20_000)
    events = detect(previous, current, POLICY)
    assert [(e.type, e.model_name, e.previous_name) for e in events] == [
        (M_RENAMED, "fraud-v2", "fraud"),
        (M_CREATED, "fraud", None),
    ]


def test_renamed_back_and_forth_gives_distinct_events() -> None:
    first = obs(*registry_of("fraud"))
    second = obs(*registry_of("fraud-v2", updated=5_000))
    third = obs(*registry_of("fraud", updated=6_000))
    there, back = detect(first, second, POLICY), detect(second, third, POLICY)
    assert [(e.model_name, e.previous_name) for e in there + back] == [
        ("fraud-v2", "fraud"),
        ("fraud", "fraud-v2"),
    ]
    assert there[0].event_id != back[0].event_id
    assert detect(first, second, POLICY) == there  # deterministic


def test_a_rename_only_changes_keys_in_the_snapshot() -> None:
    previous = obs(*registry_of("fraud"))
    current = obs(*registry_of("fraud-v2", updated=5_000))
    delta = snapshot_delta(previous, current)
    assert delta.delete_models == ("fraud",)
    assert sorted(delta.delete_versions) == [("fraud", "1"), ("fraud", "2")]
    assert sorted(v.key for v in delta.upsert_versions) == [("fraud-v2", "1"), ("fraud-v2", "2")]


def renamed(observation: Observation, old: str, new: str, at: int) -> Observation:
    """``observation`` after MLflow renamed ``old`` to ``new`` at ``at``: the model and its
    versions change name and update time, and nothing else."""
    models = {n: m for n, m in observation.models.items() if n != old}
    models[new] = replace(observation.models[old], name=new, last_updated_timestamp=at)
    versions = {k: v for k, v in observation.versions.items() if k[0] != old}
    for (name, number), version in observation.versions.items():
        if name == old:
            versions[(new, number)] = replace(version, name=new, last_updated_timestamp=at)
    return Observation(models=models, versions=versions, read_at=observation.read_at + 1)


@given(observation=observations(), data=st.data())
def test_renaming_any_model_gives_exactly_one_event_each_way(
    observation: Observation, data: st.DataObject
) -> None:
    assume(observation.models)
    old = data.draw(st.sampled_from(sorted(observation.models)))
    after = renamed(observation, old, "renamed", at=50)
    there = detect(observation, after, POLICY)
    assert [(e.type, e.model_name, e.previous_name) for e in there] == [(M_RENAMED, "renamed", old)]
    back = detect(after, renamed(after, "renamed", old, at=60), POLICY)
    assert [(e.type, e.model_name, e.previous_name) for e in back] == [(M_RENAMED, old, "renamed")]
