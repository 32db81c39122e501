"""HintBox: MLflow's native webhooks verified, replays refused, model names handed over once;
and the ``[hints]`` configuration."""

from __future__ import annotations

import json
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import load_text as load
from watcher import signing
from watcher.config import effective_config, to_toml
from watcher.errors import ConfigError
from watcher.hints import HINT_EVENTS, HintBox, parse_hint

SECRET = "mlflow-hint-secret"
NOW = 1_750_000_000.0


def mlflow_body(event: str = "model_version_alias.created", **data: Any) -> bytes:
    """A body as MLflow's delivery writes it: json.dumps of entity, action, timestamp, data."""
    entity, _, action = event.partition(".")
    payload = {
        "entity": entity,
        "action": action,
        "timestamp": "2025-06-15T12:00:00+00:00",
        "data": {"name": "fraud", "alias": "champion", "version": "3", **data},
    }
    return json.dumps(payload).encode()


def signed(
    body: bytes, delivery_id: str = "d-1", at: float = NOW, secret: str = SECRET
) -> dict[str, str]:
    headers = signing.sign("mlflow", secret, delivery_id, body, timestamp=int(at))
    return {"Content-Type": "application/json", **headers}


def test_a_signed_hint_is_accepted_and_its_model_taken_once() -> None:
    box = HintBox(SECRET, 300)
    body = mlflow_body()
    verdict = box.offer(signed(body), body, NOW)
    assert (verdict.result, verdict.event, verdict.model) == (
        "accepted",
        "model_version_alias.created",
        "fraud",
    )
    assert box.arrived.is_set()
    assert box.take() == frozenset({"fraud"})
    assert box.take() == frozenset()
    stats = box.stats()
    assert stats.counts["accepted"] == 1
    assert stats.last_accepted_at == NOW


def test_names_gather_until_taken() -> None:
    box = HintBox(SECRET)
    for i, name in enumerate(["a", "b", "a"]):
        body = mlflow_body(name=name)
        assert box.offer(signed(body, f"d-{i}"), body, NOW).accepted
    assert box.stats().waiting == 2
    assert box.take() == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing signature headers"),
        ("wrong-secret", "signature mismatch"),
        ("other-body", "signature mismatch"),
    ],
)
def test_a_forged_hint_is_refused_and_keeps_nothing(headers: Any, reason: str) -> None:
    box = HintBox(SECRET)
    body = mlflow_body()
    if headers == "wrong-secret":
        headers = signed(body, secret="not-" + SECRET)
    elif headers == "other-body":
        headers = signed(mlflow_body(name="other"))
    verdict = box.offer(headers, body, NOW)
    assert (verdict.result, verdict.reason, verdict.model) == ("forged", reason, None)
    assert not box.arrived.is_set()
    assert box.take() == frozenset()
    assert box.stats().counts["forged"] == 1
    assert box.stats().last_accepted_at is None


def test_a_stale_timestamp_is_refused() -> None:
    box = HintBox(SECRET, 300)
    body = mlflow_body()
    late = box.offer(signed(body, at=NOW - 301), body, NOW)
    assert late.result == "replayed"
    assert "301 s away from this host's clock" in late.reason
    forged_late = box.offer(signed(body, at=NOW - 301, secret="x"), body, NOW)
    assert (forged_late.result, forged_late.reason) == (
        "forged",
        "timestamp outside the tolerance window",
    )
    assert box.take() == frozenset()


def test_a_replayed_delivery_is_refused_within_the_window() -> None:
    box = HintBox(SECRET, 300)
    body = mlflow_body()
    headers = signed(body, "d-1")
    assert box.offer(headers, body, NOW).accepted
    box.take()
    box.arrived.clear()
    again = box.offer(headers, body, NOW + 10)
    assert again.result == "replayed"
    assert not box.arrived.is_set()
    assert box.take() == frozenset()
    assert box.stats().counts == {"accepted": 1, "replayed": 1, "forged": 0, "invalid": 0}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "the body is not JSON"),
        (b"[1, 2]", "the body is not a JSON object"),
        (b'{"data": {"name": "m"}}', "no entity and action"),
        (
            json.dumps({"entity": "budget_policy", "action": "exceeded", "data": {}}).encode(),
            "not a registry or prompt event: budget_policy.exceeded",
        ),
        (
            json.dumps({"entity": "prompt", "action": "created", "data": {"name": ""}}).encode(),
            "prompt.created without data.name",
        ),
    ],
)
def test_a_signed_body_of_unknown_shape_is_invalid(body: bytes, reason: str) -> None:
    box = HintBox(SECRET)
    verdict = box.offer(signed(body), body, NOW)
    assert (verdict.result, verdict.reason) == ("invalid", reason)
    assert box.take() == frozenset()


@pytest.mark.parametrize("event", HINT_EVENTS)
def test_every_registry_and_prompt_event_names_its_model(event: str) -> None:
    verdict = parse_hint(mlflow_body(event, name="my-prompt"))
    assert (verdict.result, verdict.event, verdict.model) == ("accepted", event, "my-prompt")


def test_memory_is_bounded() -> None:
    box = HintBox(SECRET, 300, max_names=3, max_seen=5)
    for i in range(20):
        body = mlflow_body(name=f"m{i}")
        assert box.offer(signed(body, f"d-{i}"), body, NOW).accepted
    assert len(box._seen) == 5
    assert box.stats().waiting == 3
    assert box.stats().dropped == 17
    assert len(box.take()) == 3
    # Ids leave the replay memory with their window: the signature alone then refuses them.
    body = mlflow_body()
    assert box.offer(signed(body, "late", at=NOW + 1000), body, NOW + 1000).accepted
    assert list(box._seen) == ["late"]


def test_offers_from_many_threads_are_all_counted() -> None:
    box = HintBox(SECRET)

    def offer(start: int) -> None:
        for i in range(start, start + 50):
            body = mlflow_body(name=f"m{i}")
            box.offer(signed(body, f"d-{i}"), body, NOW)

    threads = [threading.Thread(target=offer, args=(n * 50,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert box.stats().counts["accepted"] == 200
    assert len(box.take()) == 200


def test_the_secret_never_shows() -> None:
    box = HintBox(SECRET)
    assert SECRET not in repr(box)
    with pytest.raises(ValueError, match="need a secret"):
        HintBox("")


# --------------------------------------------------------------------------- [hints]


def test_hints_are_off_unless_a_secret_is_set(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert not config.hints.enabled
    assert config.hints.secret is None
    assert effective_config(config)["hints"] == {
        "enabled": False,
        "path": "/mlflow-hints",
        "tolerance": "5m",
    }


def test_hints_with_a_secret_from_the_environment(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[server]\nlisten = "127.0.0.1:9464"\n'
        '[hints]\nsecret_env = "HINTS"\npath = "/hooks/mlflow"\ntolerance = "2m"\n',
        {"HINTS": SECRET},
    )
    hints = config.hints
    assert (hints.enabled, hints.path, hints.tolerance) == (True, "/hooks/mlflow", 120.0)
    assert hints.secret is not None
    assert hints.secret.reveal() == SECRET
    shown = to_toml(effective_config(config)) + repr(config) + repr(hints)
    assert SECRET not in shown
    assert tomllib.loads(to_toml(effective_config(config)))["hints"]["secret"] == (
        "<redacted, from env:HINTS>"
    )


def test_the_environment_turns_hints_on(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    env = {
        "WATCHER_SERVER__LISTEN": "127.0.0.1:9464",
        "WATCHER_HINTS__SECRET_FILE": str(tmp_path / "secret"),
    }
    hints = load(tmp_path, "", env).hints
    assert hints.enabled
    assert hints.secret is not None
    assert hints.secret.reveal() == SECRET


def test_hints_without_a_server_are_a_config_error_naming_the_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[hints]\nsecret_env = "HINTS"\n', {"HINTS": SECRET})
    (problem,) = info.value.problems
    assert problem.startswith("hints.secret_env: hints are served on the health server")
    assert "server.listen" in problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('secret = "in-the-file"', "hints.secret: unknown key"),
        ('secret_env = "UNSET"', "hints.secret_env: got 'UNSET'"),
        ('path = "no-slash"', "hints.path: got 'no-slash'"),
        ('path = "/metrics"', "hints.path: got '/metrics', expected a path other than"),
        ('path = "/a?b=1"', "hints.path: got '/a?b=1'"),
        ('tolerance = "2h"', "hints.tolerance: got '2h'"),
        ("enabled = true", "hints.enabled: unknown key"),
    ],
)
def test_bad_hints_keys_are_problems(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'[server]\nlisten = "127.0.0.1:9464"\n[hints]\n{text}\n')
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems
    assert "in-the-file" not in str(info.value.problems)


def test_commands_that_send_nothing_see_hints_on_without_the_secret(tmp_path: Path) -> None:
    from watcher.config import load_config

    path = tmp_path / "watcher.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:9464"\n[hints]\nsecret_env = "UNSET"\n')
    hints = load_config(path, {}, credentials=False).hints
    assert (hints.enabled, hints.secret) == (True, None)
