"""Prompt detection (watcher.prompts, through watcher.detect): the rules in the module
docstring of ``watcher.prompts``, and that prompts never give model events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import model_state, version_state
from watcher.detect import CREATION_SKEW_MS, Policy, detect
from watcher.model import Event, EventType, ModelState, Observation, VersionState
from watcher.prompts import PROMPT_TAG, TEXT_TAG, TYPE_TAG, user_tags

REGISTRY = "http://mlflow:5000"
PROMPTS = Policy(registry=REGISTRY, prompts=True)
READ_AT = 9_999

P = EventType


def prompt(name: str = "greeting", **kwargs: Any) -> ModelState:
    """A prompt as MLflow 3 answers it: a registered model with the prompt tag."""
    tags = {PROMPT_TAG: "true", **kwargs.pop("tags", {})}
    return model_state(name, tags=tags, **kwargs)


def pversion(
    version: str, template: str = "Hello {{name}}!", *, name: str = "greeting", **kwargs: Any
) -> VersionState:
    """A prompt version: its template and kind are tags, as MLflow stores them."""
    tags = {PROMPT_TAG: "true", TEXT_TAG: template, TYPE_TAG: "text", **kwargs.pop("tags", {})}
    return version_state(version, name=name, source="", run_id="", tags=tags, **kwargs)


def obs(*items: ModelState | VersionState, read_at: int = READ_AT) -> Observation:
    models = {i.name: i for i in items if isinstance(i, ModelState)}
    versions = {i.key: i for i in items if isinstance(i, VersionState)}
    return Observation(models=models, versions=versions, read_at=read_at)


def kinds(events: list[Event]) -> list[tuple[EventType, str | None]]:
    return [(e.type, e.model_version) for e in events]


BASE = obs(prompt(), pversion("1"))


# --------------------------------------------------------------------------- created


def test_a_new_prompt_with_a_version_and_tags() -> None:
    now = obs(
        prompt(created=500, tags={"team": "support"}, description="Greets"),
        pversion("1", created=600, tags={"author": "alice"}, description="first"),
    )
    events = detect(obs(), now, PROMPTS)
    # Each at its time: creations at theirs, the tags they came with at the read's.
    assert kinds(events) == [
        (P.PROMPT_CREATED, None),
        (P.PROMPT_VERSION_CREATED, "1"),
        (P.PROMPT_TAG_SET, None),
        (P.PROMPT_VERSION_TAG_SET, "1"),
    ]
    created, version, tag, version_tag = events
    # MLflow's tags: without the ones it keeps for itself; the template apart.
    assert (created.tags, created.description, created.timestamp) == (
        {"team": "support"},
        "Greets",
        500,
    )
    assert (tag.tag_key, tag.tag_value, tag.previous_value) == ("team", "support", None)
    assert version.template == "Hello {{name}}!"
    assert version.tags == {"author": "alice"}
    assert (version.description, version.source, version.run_id) == ("first", None, None)
    assert (version_tag.tag_key, version_tag.tag_value) == ("author", "alice")


def test_prompts_give_no_model_events_and_none_at_all_unless_asked() -> None:
    now = obs(prompt(created=500), pversion("1", created=600))
    assert detect(obs(), now, Policy(registry=REGISTRY)) == []
    assert all(e.type.value.startswith("PROMPT_") for e in detect(obs(), now, PROMPTS))


def test_a_chat_template_is_sent_as_mlflow_stores_it() -> None:
    chat = '[{"role": "user", "content": "Hi {{name}}"}]'
    now = obs(prompt(), pversion("1"), pversion("2", chat, created=3_000, tags={TYPE_TAG: "chat"}))
    (created,) = [e for e in detect(BASE, now, PROMPTS) if e.type is P.PROMPT_VERSION_CREATED]
    assert created.template == chat
    assert created.tags == {}


def test_mlflow_settings_tags_other_than_the_creation_ones_are_the_users() -> None:
    tags = {"_mlflow_prompt_response_format": "{}", PROMPT_TAG: "true", TEXT_TAG: "x"}
    assert user_tags(tags) == {"_mlflow_prompt_response_format": "{}"}


# --------------------------------------------------------------------------- adoption


def test_what_predates_the_baseline_is_adopted() -> None:
    policy = Policy(registry=REGISTRY, prompts=True, baseline_ms=10 * CREATION_SKEW_MS)
    old = obs(prompt(created=100, aliases={"prod": "1"}), pversion("1", created=200))
    assert detect(obs(), old, policy) == []


def test_the_first_poll_reports_prompts_only_with_emit_existing() -> None:
    now = obs(prompt(), pversion("1"))
    assert detect(None, now, PROMPTS) == []
    existing = Policy(registry=REGISTRY, prompts=True, emit_existing=True)
    assert kinds(detect(None, now, existing)) == [
        (P.PROMPT_CREATED, None),
        (P.PROMPT_VERSION_CREATED, "1"),
    ]


# --------------------------------------------------------------------------- changes


def test_tags_of_a_prompt_set_changed_and_deleted() -> None:
    before = obs(prompt(tags={"a": "1", "b": "2"}), pversion("1"))
    after = obs(prompt(tags={"a": "9", "c": "3"}), pversion("1"))
    events = detect(before, after, PROMPTS)
    assert sorted((e.type, e.tag_key, e.tag_value, e.previous_value) for e in events) == [
        (P.PROMPT_TAG_DELETED, "b", None, "2"),
        (P.PROMPT_TAG_SET, "a", "9", "1"),
        (P.PROMPT_TAG_SET, "c", "3", None),
    ]
    assert all(e.model_version is None and e.timestamp == READ_AT for e in events)


def test_tags_of_a_prompt_version_set_and_deleted() -> None:
    before = obs(prompt(), pversion("1", tags={"review": "pending"}))
    after = obs(prompt(), pversion("1", tags={"review": "approved", "lang": "en"}))
    events = detect(before, after, PROMPTS)
    assert sorted((e.type, e.model_version, e.tag_key, e.previous_value) for e in events) == [
        (P.PROMPT_VERSION_TAG_SET, "1", "lang", None),
        (P.PROMPT_VERSION_TAG_SET, "1", "review", "pending"),
    ]
    gone = detect(after, obs(prompt(), pversion("1")), PROMPTS)
    assert sorted((e.type, e.tag_key) for e in gone) == [
        (P.PROMPT_VERSION_TAG_DELETED, "lang"),
        (P.PROMPT_VERSION_TAG_DELETED, "review"),
    ]


def test_an_alias_set_moved_and_deleted() -> None:
    two = [pversion("1"), pversion("2", created=3_000)]
    unset = obs(prompt(), *two)
    set_ = obs(prompt(aliases={"prod": "1"}), *two)
    moved = obs(prompt(aliases={"prod": "2"}), *two)
    (created,) = detect(unset, set_, PROMPTS)
    assert (created.type, created.alias, created.model_version, created.previous_version) == (
        P.PROMPT_ALIAS_CREATED,
        "prod",
        "1",
        None,
    )
    (move,) = detect(set_, moved, PROMPTS)
    assert (move.type, move.model_version, move.previous_version) == (
        P.PROMPT_ALIAS_CREATED,
        "2",
        "1",
    )
    (deleted,) = detect(moved, unset, PROMPTS)
    assert (deleted.type, deleted.alias, deleted.model_version) == (
        P.PROMPT_ALIAS_DELETED,
        "prod",
        "2",
    )


def test_a_new_version_and_an_alias_on_it_in_one_poll() -> None:
    after = obs(prompt(aliases={"prod": "2"}), pversion("1"), pversion("2", created=3_000))
    assert kinds(detect(BASE, after, PROMPTS)) == [
        (P.PROMPT_VERSION_CREATED, "2"),
        (P.PROMPT_ALIAS_CREATED, "2"),
    ]


# --------------------------------------------------------------------------- deletions


def test_a_deleted_version_takes_its_alias_with_it() -> None:
    before = obs(prompt(aliases={"prod": "2"}), pversion("1"), pversion("2", created=3_000))
    after = obs(prompt(updated=8_000), pversion("1"))
    events = detect(before, after, PROMPTS)
    # The deletion at the time MLflow moved the prompt's timestamp, the alias at the read's.
    assert kinds(events) == [(P.PROMPT_VERSION_DELETED, "2"), (P.PROMPT_ALIAS_DELETED, "2")]
    assert events[0].timestamp == 8_000


def test_a_deleted_prompt_is_one_event() -> None:
    before = obs(prompt(aliases={"prod": "1"}, tags={"a": "1"}), pversion("1"))
    (deleted,) = detect(before, obs(), PROMPTS)
    assert (deleted.type, deleted.model_name, deleted.timestamp) == (
        P.PROMPT_DELETED,
        "greeting",
        READ_AT,
    )


def test_a_prompt_deleted_and_registered_again() -> None:
    before = obs(prompt(created=100), pversion("1", created=200))
    after = obs(prompt(created=5_000), pversion("1", created=5_100))
    assert kinds(detect(before, after, PROMPTS)) == [
        (P.PROMPT_DELETED, None),
        (P.PROMPT_CREATED, None),
        (P.PROMPT_VERSION_CREATED, "1"),
    ]


def test_a_prompt_replaced_by_a_model_of_the_same_name() -> None:
    before = obs(prompt(created=100), pversion("1", created=200))
    after = obs(
        model_state("greeting", created=5_000), version_state("1", name="greeting", created=5_100)
    )
    assert kinds(detect(before, after, PROMPTS)) == [
        (P.PROMPT_DELETED, None),
        (P.REGISTERED_MODEL_CREATED, None),
        (P.MODEL_VERSION_CREATED, "1"),
    ]


# --------------------------------------------------------------------------- identity


def test_the_same_change_detected_twice_has_the_same_id() -> None:
    after = obs(prompt(aliases={"prod": "1"}, tags={"a": "1"}), pversion("1", tags={"b": "2"}))
    first = detect(BASE, after, PROMPTS)
    assert first == detect(BASE, after, PROMPTS)
    assert len({e.event_id for e in first}) == len(first) == 3


@pytest.mark.parametrize("changed", [None, set()])
def test_only_the_changed_versions_are_compared(changed: set[tuple[str, str]] | None) -> None:
    after = obs(prompt(), pversion("1", tags={"b": "2"}))
    found = detect(BASE, after, PROMPTS, changed)
    assert kinds(found) == ([] if changed == set() else [(P.PROMPT_VERSION_TAG_SET, "1")])


# --------------------------------------------------------------------------- property

_TAGS = st.dictionaries(st.sampled_from("abc"), st.sampled_from(["1", "2"]), max_size=3)
_STATE = st.tuples(
    _TAGS,
    st.dictionaries(st.sampled_from(["1", "2", "3"]), _TAGS, max_size=3),
    st.dictionaries(st.sampled_from(["prod", "dev"]), st.sampled_from(["1", "2", "3"])),
)
State = tuple[dict[str, str], dict[str, dict[str, str]], dict[str, str]]


def _observed(state: State, read_at: int) -> Observation:
    tags, versions, aliases = state
    return obs(
        prompt(tags=tags, aliases=aliases),
        *(pversion(n, created=int(n) * 1_000, tags=t) for n, t in versions.items()),
        read_at=read_at,
    )


def _replayed(before: State, events: list[Event]) -> State:
    """The state the events say the prompt went to, from ``before``."""
    tags, versions = dict(before[0]), {n: dict(t) for n, t in before[1].items()}
    aliases = {a: v for a, v in before[2].items() if v in versions}
    for e in events:
        version = e.model_version or ""
        if e.type is P.PROMPT_TAG_SET:
            tags[e.tag_key or ""] = e.tag_value or ""
        elif e.type is P.PROMPT_TAG_DELETED:
            del tags[e.tag_key or ""]
        elif e.type is P.PROMPT_VERSION_CREATED:
            versions[version] = {}
        elif e.type is P.PROMPT_VERSION_DELETED:
            del versions[version]
        elif e.type is P.PROMPT_VERSION_TAG_SET:
            versions[version][e.tag_key or ""] = e.tag_value or ""
        elif e.type is P.PROMPT_VERSION_TAG_DELETED:
            del versions[version][e.tag_key or ""]
        elif e.type is P.PROMPT_ALIAS_CREATED:
            aliases[e.alias or ""] = version
        elif e.type is P.PROMPT_ALIAS_DELETED:
            del aliases[e.alias or ""]
    return tags, versions, aliases


@given(_STATE, _STATE)
def test_the_events_take_the_prompt_from_one_read_to_the_next(before: State, after: State) -> None:
    events = detect(_observed(before, 8_000), _observed(after, READ_AT), PROMPTS)
    tags, versions, aliases = after
    live = {a: v for a, v in aliases.items() if v in versions}
    assert _replayed(before, events) == (tags, versions, live)
    assert len({e.event_id for e in events}) == len(events)
    # What the tag events say of a prompt version's tags, the created event's tags say too.
    for created in (e for e in events if e.type is P.PROMPT_VERSION_CREATED):
        assert created.tags == versions[created.model_version or ""]
