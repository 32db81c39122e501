"""The `mlflow` format against MLflow's own webhooks: for every registry and prompt event MLflow
3 sends natively, the watcher's ``data`` is exactly MLflow's for the same change, with and
without the optional fields (description, tags, run id).

One change at a time: MLflow's native webhook of the same server and the watcher (`run --once`)
each deliver it, to receivers of their own, and the two are compared. Where the watcher sends
more than MLflow (a MODEL_VERSION_TAG_SET per tag a new version was created with: a poll cannot
tell a tag given at creation from one set right after; the same for prompts and prompt versions;
deletions, which MLflow does not send), the extra deliveries are checked too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.e2e.conftest import ConfigFor
from tests.e2e.harness import MlflowServer, Receiver, Steps, wait_for
from tests.e2e.native import PROMPT_NATIVE_EVENTS, REGISTRY_EVENTS, NativeHook, native_webhook

Sent = tuple[str, str, tuple[str, ...], str]
"""(entity, action, the keys of data in the order sent, data as canonical JSON). The order of
the keys inside ``tags`` is not compared: MLflow sends the request's, the watcher what it read,
sorted (JSON objects are unordered; no receiver can depend on it)."""


def sent(envelope: dict[str, Any]) -> Sent:
    data = envelope["data"]
    return (envelope["entity"], envelope["action"], tuple(data), json.dumps(data, sort_keys=True))


def tag_set(name: str, version: str, key: str, value: str) -> Sent:
    return sent(
        {
            "entity": "model_version_tag",
            "action": "set",
            "data": {"name": name, "version": version, "key": key, "value": value},
        }
    )


def watcher_only(entity: str, action: str, **data: str) -> Sent:
    return sent({"entity": entity, "action": action, "data": data})


class Compare:
    """One change, then what MLflow and the watcher each sent for it."""

    def __init__(self, steps: Steps, hook: NativeHook, prefix: str) -> None:
        self.steps = steps
        self.hook = hook
        self.prefix = prefix
        self.native_seen = 0

    def _native(self) -> list[dict[str, Any]]:
        return [e for e in self.hook.envelopes() if e["data"]["name"].startswith(self.prefix)]

    def change(
        self, make: Callable[[], object], native_count: int = 1
    ) -> tuple[list[Sent], list[Sent]]:
        """(MLflow's deliveries, the watcher's), each sorted."""
        make()
        watcher = [sent(e) for e in self.steps.run()]
        wait_for(
            lambda: len(self._native()) >= self.native_seen + native_count,
            30,
            f"{native_count} native deliveries",
        )
        native = [sent(e) for e in self._native()[self.native_seen :]]
        self.native_seen += len(native)
        return sorted(native), sorted(watcher)

    def same(self, make: Callable[[], object], *extra: Sent) -> None:
        """The change gives MLflow's deliveries, equal to the watcher's but for ``extra``."""
        native, watcher = self.change(make)
        assert native, "MLflow sent nothing"
        assert watcher == sorted(native + list(extra))


def test_mlflow_format_data_equals_what_mlflow_sends(
    client: Any,
    mlflow_server: MlflowServer,
    receiver: Receiver,
    config_for: ConfigFor,
    model_name: str,
) -> None:
    plain, full = f"{model_name}-plain", f"{model_name}-full"
    config = config_for(
        f"{model_name}-*",
        events=[*REGISTRY_EVENTS, "REGISTERED_MODEL_RENAMED"],
        webhook_extra='format = "mlflow"\n',
    )
    steps = Steps(config, receiver)
    assert steps.run() == []  # the baseline
    run = client.create_run("0")
    # MLflow's own deliveries go to a receiver of their own, the watcher's to `receiver`.
    with native_webhook(mlflow_server) as hook:
        compare = Compare(steps, hook, model_name)

        def same(make: Callable[[], object]) -> None:
            native, watcher = compare.change(make)
            assert native, "MLflow sent nothing"
            assert watcher == native

        # A model without description or tags, and one with both.
        same(lambda: client.create_registered_model(plain))
        same(
            lambda: client.create_registered_model(
                full, tags={"team": "risk"}, description='Flags "card not present".\nRisk team.'
            )
        )
        # A version without description, tags or run id.
        same(lambda: client.create_model_version(plain, f"s3://bucket/{plain}/1"))
        # A version with all three: the watcher also sends a tag set per tag it came with.
        native, watcher = compare.change(
            lambda: client.create_model_version(
                plain,
                f"s3://bucket/{plain}/2",
                run_id=run.info.run_id,
                tags={"validation_status": "pending", "owner": "alice"},
                description='Gradient-boosted "v2".\nAUC 0.94.',
            )
        )
        extra = [
            tag_set(plain, "2", "owner", "alice"),
            tag_set(plain, "2", "validation_status", "pending"),
        ]
        assert watcher == sorted(native + extra)
        # Version tags: set, changed, deleted.
        same(lambda: client.set_model_version_tag(plain, "1", "gate", "approved"))
        same(lambda: client.set_model_version_tag(plain, "1", "gate", "rejected"))
        same(lambda: client.delete_model_version_tag(plain, "1", "gate"))
        # Aliases: set, moved, deleted.
        same(lambda: client.set_registered_model_alias(plain, "champion", "1"))
        same(lambda: client.set_registered_model_alias(plain, "champion", "2"))
        same(lambda: client.delete_registered_model_alias(plain, "champion"))
        # MLflow sends nothing for a rename; the watcher sends its own registered_model/renamed.
        renamed = f"{model_name}-renamed"
        native, watcher = compare.change(
            lambda: client.rename_registered_model(full, renamed), native_count=0
        )
        assert watcher == [
            sent(
                {
                    "entity": "registered_model",
                    "action": "renamed",
                    "data": {"name": renamed, "previous_name": full},
                }
            )
        ]
        # Anything MLflow had sent for the rename would come before this change's delivery.
        same(lambda: client.create_model_version(renamed, f"s3://bucket/{renamed}/1"))


def test_mlflow_format_prompt_data_equals_what_mlflow_sends(
    client: Any,
    mlflow_server: MlflowServer,
    receiver: Receiver,
    config_for: ConfigFor,
    model_name: str,
) -> None:
    plain, full = f"{model_name}-plain", f"{model_name}-full"
    config = config_for(f"{model_name}-*", events=["PROMPT_*"], webhook_extra='format = "mlflow"\n')
    steps = Steps(config, receiver)
    assert steps.run() == []  # the baseline
    with native_webhook(mlflow_server, events=PROMPT_NATIVE_EVENTS) as hook:
        compare = Compare(steps, hook, model_name)
        same = more = compare.same

        # A prompt without description or tags, and one with both (and its tag's own event).
        same(lambda: client.create_prompt(plain))
        more(
            lambda: client.create_prompt(
                full, description='Greets "warmly".\nSupport team.', tags={"team": "support"}
            ),
            watcher_only("prompt_tag", "set", name=full, key="team", value="support"),
        )
        # A text version without description or tags; a chat version with both, a response
        # format and a model configuration (tags MLflow keeps in its payload's tags).
        same(lambda: client.create_prompt_version(plain, "Hello {{name}}!"))
        response_format = {"type": "object", "properties": {"answer": {"type": "string"}}}
        model_config = {"model_name": "gpt-4o-mini", "temperature": 0.2}
        native, watcher = compare.change(
            lambda: client.create_prompt_version(
                plain,
                [
                    {"role": "system", "content": 'Be "brief".'},
                    {"role": "user", "content": "{{q}}"},
                ],
                description='Chat "v2".\nShorter.',
                tags={"author": "alice"},
                response_format=response_format,
                model_config=model_config,
            )
        )
        ((_, _, _, created),) = native
        tags = json.loads(created)["tags"]
        assert set(tags) == {
            "author",
            "_mlflow_prompt_response_format",
            "_mlflow_prompt_model_config",
        }
        version_tags = [
            watcher_only("prompt_version_tag", "set", name=plain, version="2", key=k, value=v)
            for k, v in tags.items()
        ]
        assert watcher == sorted(native + version_tags)
        # Prompt tags and prompt version tags: set, changed, deleted.
        same(lambda: client.set_prompt_tag(plain, "lang", "en"))
        same(lambda: client.set_prompt_tag(plain, "lang", "fr"))
        same(lambda: client.delete_prompt_tag(plain, "lang"))
        same(lambda: client.set_prompt_version_tag(plain, "1", "review", "approved"))
        same(lambda: client.set_prompt_version_tag(plain, "1", "review", "rejected"))
        same(lambda: client.delete_prompt_version_tag(plain, "1", "review"))
        # Aliases: set, moved, deleted.
        same(lambda: client.set_prompt_alias(plain, "production", 1))
        same(lambda: client.set_prompt_alias(plain, "production", 2))
        same(lambda: client.delete_prompt_alias(plain, "production"))
        # MLflow sends nothing for deletions; the watcher sends its own.
        native, watcher = compare.change(
            lambda: client.delete_prompt_version(plain, "1"), native_count=0
        )
        assert (native, watcher) == (
            [],
            [watcher_only("prompt_version", "deleted", name=plain, version="1")],
        )
        native, watcher = compare.change(lambda: client.delete_prompt(full), native_count=0)
        assert (native, watcher) == ([], [watcher_only("prompt", "deleted", name=full)])
        # Anything MLflow had sent for the deletions would come before this change's delivery.
        same(lambda: client.set_prompt_tag(plain, "lang", "de"))
