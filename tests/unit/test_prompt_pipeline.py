"""Prompts through the real pipeline and store, read from the fake registry: off unless a
webhook subscribes to prompt events, adopted (not announced) when a subscription starts on an
existing state, dropped from the snapshot when it ends."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.test_incremental import FakeRegistry, Harness, sample_registry
from watcher import state_meta as sm
from watcher.config import Config
from watcher.config.types import WebhookConfig
from watcher.model import ALL_EVENTS, PROMPT_EVENTS, EventType
from watcher.prompts import PROMPT_TAG, TEXT_TAG, is_prompt
from watcher.scan import ReaderSettings

PROMPT_HOOK = WebhookConfig(
    name="prompts", url="https://ci.example/hook", events=ALL_EVENTS | PROMPT_EVENTS
)
MODELS_HOOK = WebhookConfig(name="models", url="https://ci.example/hook")


@pytest.fixture(params=[True, False], ids=["mlflow-3-search", "prompts-unasked"])
def fake(request: pytest.FixtureRequest) -> FakeRegistry:
    """The sample registry, its searches leaving prompts out unless asked (MLflow 3's stores)
    or returning them with the models (servers that did)."""
    registry = sample_registry()
    registry.excludes_prompts = request.param
    return registry


def harness(root: Path, fake: FakeRegistry, *, prompts: bool) -> Harness:
    """A harness (a restart, on the same state) with or without a prompt subscription; the
    fake reads as the pipeline's reader_settings would have it."""
    fake.settings = replace(fake.settings, prompts=prompts)
    h = Harness(root, fake)
    hook = PROMPT_HOOK if prompts else MODELS_HOOK
    h.config = Config(mlflow=h.config.mlflow, watch=h.config.watch, webhooks=(hook,))
    return h


def prompt_version(fake: FakeRegistry, name: str, text: str) -> str:
    return fake.create_version(name, tags={PROMPT_TAG: "true", TEXT_TAG: text})


def held_prompts(h: Harness) -> set[str]:
    return {n for n, m in h.observed.models.items() if is_prompt(m)}


def test_reader_settings_follow_the_subscriptions() -> None:
    from watcher.pipeline import reader_settings

    config = Config(webhooks=(MODELS_HOOK,))
    assert not config.watches_prompts
    assert not reader_settings(config).prompts
    with_prompts = Config(webhooks=(MODELS_HOOK, PROMPT_HOOK))
    assert with_prompts.watches_prompts
    assert reader_settings(with_prompts).prompts
    assert isinstance(reader_settings(with_prompts), ReaderSettings)


def test_prompts_unsubscribed_are_neither_read_nor_reported(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    with harness(tmp_path, fake, prompts=False) as h:
        h.cycle()
        prompt_version(fake, "greeting", "Hi {{name}}")
        fake.set_alias("greeting", "prod", "1")
        h.cycle(scan_models=True, scan_versions=True)
        assert h.events == []
        assert held_prompts(h) == set()
        assert not sm.PROMPTS_SINCE.get(h.store.all_meta())


def test_a_subscription_on_an_existing_state_adopts_then_reports_each_change_once(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    with harness(tmp_path, fake, prompts=False) as h:
        h.cycle()
    prompt_version(fake, "greeting", "Hi {{name}}")  # made while nobody watched prompts
    with harness(tmp_path, fake, prompts=True) as h:
        h.cycle()
        assert h.events == []  # existing prompts are adopted, not created
        assert held_prompts(h) == {"greeting"}
        assert sm.PROMPTS_SINCE.get(h.store.all_meta())
        fake.create_prompt("support")
        number = prompt_version(fake, "support", "How can I help, {{name}}?")
        fake.set_alias("support", "prod", number)
        fake.set_model_tag("greeting", "team", "cx")
        fake.set_tag("greeting", "2", "review", "ok")
        fake.delete_version("greeting", "1")
        for _ in range(3):  # the scans included: nothing is reported twice
            h.cycle(scan_models=True, scan_versions=True)
        assert sorted((e.type, e.model_name, e.model_version) for e in h.events) == [
            (EventType.PROMPT_ALIAS_CREATED, "support", "1"),
            (EventType.PROMPT_CREATED, "support", None),
            (EventType.PROMPT_TAG_SET, "greeting", None),
            (EventType.PROMPT_VERSION_CREATED, "support", "1"),
            (EventType.PROMPT_VERSION_DELETED, "greeting", "1"),
            (EventType.PROMPT_VERSION_TAG_SET, "greeting", "2"),
        ]
        created = next(e for e in h.events if e.type is EventType.PROMPT_VERSION_CREATED)
        assert created.template == "How can I help, {{name}}?"
        assert len(h.store.recent_events(limit=20)) == len(h.events)


def test_a_subscription_ended_drops_the_prompts_silently(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    with harness(tmp_path, fake, prompts=True) as h:
        h.cycle()
        assert held_prompts(h) == {"greeting"}
    with harness(tmp_path, fake, prompts=False) as h:
        h.cycle()
        fake.set_alias("greeting", "prod", "1")
        h.cycle(scan_models=True, scan_versions=True)
        assert h.events == []
        assert held_prompts(h) == set()
        assert all(name != "greeting" for name, _ in h.observed.versions)
        assert sm.PROMPTS_SINCE.get(h.store.all_meta()) == 0
        h.assert_exact()
