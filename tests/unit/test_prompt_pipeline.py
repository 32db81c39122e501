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
from watcher.errors import RegistryError
from watcher.model import ALL_EVENTS, PROMPT_EVENTS, EventType, ModelState, VersionState
from watcher.prompts import PROMPT_TAG, TEXT_TAG, is_prompt
from watcher.scan import PROMPTS_FILTER, ReaderSettings

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


def test_incremental_polls_find_prompt_changes_without_scans(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    with harness(tmp_path, fake, prompts=True) as h:
        h.cycle()
        fake.create_prompt("support")
        prompt_version(fake, "support", "How can I help?")
        h.cycle()  # the watermark searches: the prompts' one finds both
        prompt_version(fake, "support", "How may I help?")
        fake.set_alias("support", "prod", "2")  # on a prompt whose timestamp moved: read now
        h.cycle()
        fake.delete_version("support", "1")  # the by-name read of a prompt reveals it
        h.cycle()
        assert [(e.type, e.model_version) for e in h.events] == [
            (EventType.PROMPT_CREATED, None),
            (EventType.PROMPT_VERSION_CREATED, "1"),
            (EventType.PROMPT_VERSION_CREATED, "2"),
            (EventType.PROMPT_ALIAS_CREATED, "2"),
            (EventType.PROMPT_VERSION_DELETED, "1"),
        ]
        assert "scan_models" not in fake.calls
        h.assert_exact()


class PromptlessServer(FakeRegistry):
    """A server without prompts (MLflow 2): it refuses a search on the prompts' filter."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def _refuse(self, filter_string: str) -> None:
        if PROMPTS_FILTER in filter_string:
            self.refused += 1
            raise RegistryError("bad filter", code="INVALID_PARAMETER_VALUE", status=400)

    def _search_models(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str = ""
    ) -> tuple[list[ModelState], str | None]:
        self._refuse(filter_string)
        return super()._search_models(page_token, order_by, page_size, filter_string)

    def _search_versions(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str
    ) -> tuple[list[VersionState], str | None]:
        self._refuse(filter_string)
        return super()._search_versions(page_token, order_by, page_size, filter_string)


def test_a_server_that_refuses_the_prompts_filter_has_no_prompts() -> None:
    server = PromptlessServer()
    server.settings = replace(server.settings, prompts=True)
    server.create_model("fraud")
    server.create_version("fraud")
    assert set(server.scan_models(lambda _n: True)) == {"fraud"}
    assert server.prompts_refused
    assert set(server.scan_versions(lambda _n: True)) == {("fraud", "1")}
    assert set(server.versions_of("fraud")) == {("fraud", "1")}
    assert server.versions_of("no-such-model") == {}
    assert server.refused == 1  # asked once, never again


def test_prompts_are_counted_apart_from_the_models_in_status_and_metrics(
    tmp_path: Path, fake: FakeRegistry
) -> None:
    """A prompt is a registered model to MLflow, not to whoever reads `status`: the models and
    versions watched leave prompts out, and the prompts have counts of their own."""
    with harness(tmp_path, fake, prompts=False) as h:
        h.cycle()
        meta = h.store.all_meta()
        models, versions = sm.MODELS.get(meta), sm.VERSIONS.get(meta)
        assert sm.PROMPTS.get(meta) == 0
    fake.create_prompt("support")
    prompt_version(fake, "support", "How can I help?")
    prompt_version(fake, "support", "How may I help?")
    with harness(tmp_path, fake, prompts=True) as h:
        h.cycle()
        meta = h.store.all_meta()
        assert (sm.MODELS.get(meta), sm.VERSIONS.get(meta)) == (models, versions)
        # The sample registry's greeting (one version) and support (two).
        assert (sm.PROMPTS.get(meta), sm.PROMPT_VERSIONS.get(meta)) == (2, 3)
