"""`test-webhook` and `render` as a user runs them, against a real HTTP receiver.

Only the `--from-log` test needs the MLflow server: it re-sends an event a real run recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus

from tests.e2e.conftest import watch_model
from tests.e2e.harness import (
    SECRET,
    Delivery,
    MlflowServer,
    Receiver,
    run_watcher,
    watcher_env,
)

TOKEN = "tok-3a9f/with+specials=="


def verifies_with_mlflows_recipe(
    headers: dict[str, str], body: bytes, secret: str = SECRET
) -> bool:
    """MLflow's receiver recipe, written out independently of watcher.signing."""
    lowered = {k.lower(): v for k, v in headers.items()}
    delivery_id = lowered.get("x-mlflow-delivery-id")
    timestamp = lowered.get("x-mlflow-timestamp")
    signature = lowered.get("x-mlflow-signature", "")
    if not delivery_id or not timestamp or not signature.startswith("v1,"):
        return False
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    return hmac.compare_digest(expected.decode(), signature.removeprefix("v1,"))


def write_hook(tmp_path: Path, url: str, extra: str = "", name: str = "deploy") -> Path:
    path = tmp_path / "watcher.toml"
    path.write_text(
        f'[state]\npath = "{tmp_path / "state.db"}"\n\n'
        f'[[webhooks]]\nname = "{name}"\nurl = "{url}"\ntimeout = "5s"\n{extra}'
    )
    return path


def watcher(*args: str, config: Path, env: dict[str, str] | None = None) -> Any:
    return run_watcher(*args, "-c", str(config), env=env, cwd=config.parent, timeout=60)


def parse_render(stdout: str) -> tuple[str, dict[str, str], str]:
    """(request line, headers, body) of `render` output: headers, a blank line, the body."""
    head, blank, body = stdout.partition("\n\n")
    assert blank, stdout
    request, *header_lines = head.splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert body.endswith("\n")
    return request, headers, body.removesuffix("\n")


def header(delivery: Delivery, name: str) -> str:
    value = delivery.header(name)
    assert value is not None, f"no {name} header in {delivery.headers}"
    return value


# --------------------------------------------------------------------------- test-webhook


def test_test_webhook_posts_one_signed_example_of_the_first_event(
    receiver: Receiver, tmp_path: Path
) -> None:
    config = write_hook(
        tmp_path,
        receiver.url,
        'secret_env = "E2E_SECRET"\n'
        'events = ["MODEL_VERSION_TRANSITIONED_STAGE", "MODEL_VERSION_CREATED"]\n',
    )
    result = watcher("test-webhook", "deploy", config=config)
    assert result.returncode == 0, result.stderr
    assert "status: 200" in result.stdout
    assert "MODEL_VERSION_CREATED -> deploy" in result.stdout
    assert SECRET not in result.stdout + result.stderr

    [delivery] = receiver.deliveries()
    body = delivery.json
    assert body["event"] == "MODEL_VERSION_CREATED"
    assert body["webhook_id"] == "deploy"
    assert body["model_name"]
    assert header(delivery, "Content-Type") == "application/json"
    assert header(delivery, "X-MLflow-Delivery-Id")
    assert verifies_with_mlflows_recipe(delivery.headers, delivery.body)
    assert not verifies_with_mlflows_recipe(delivery.headers, delivery.body, "another-secret")
    assert not (tmp_path / "state.db").exists(), "test-webhook does not touch the outbox"


def test_test_webhook_sends_the_event_asked_for(receiver: Receiver, tmp_path: Path) -> None:
    config = write_hook(tmp_path, receiver.url, 'secret_env = "E2E_SECRET"\n')
    result = watcher(
        "test-webhook", "deploy", "--event", "model_version_alias.created", config=config
    )
    assert result.returncode == 0, result.stderr
    assert "status: 200" in result.stdout
    [delivery] = receiver.deliveries()
    assert delivery.json["event"] == "MODEL_VERSION_ALIAS_CREATED"
    assert delivery.json["alias"]
    assert verifies_with_mlflows_recipe(delivery.headers, delivery.body)


def test_test_webhook_exits_3_on_an_error_answer(receiver: Receiver, tmp_path: Path) -> None:
    receiver.behaviour.status = 500
    config = write_hook(tmp_path, receiver.url, 'secret_env = "E2E_SECRET"\n')
    result = watcher("test-webhook", "deploy", config=config)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "status: 500" in result.stdout
    assert "Traceback" not in result.stderr
    assert len(receiver.deliveries()) == 1, "one attempt, no retries"


def test_test_webhook_exits_3_when_nobody_listens(tmp_path: Path) -> None:
    receiver = Receiver()  # a free port, never started: connection refused
    config = write_hook(tmp_path, receiver.url)
    result = watcher("test-webhook", "deploy", config=config)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "error: connection failed" in result.stdout
    assert "Traceback" not in result.stderr


def test_unknown_webhook_name_is_a_usage_error(receiver: Receiver, tmp_path: Path) -> None:
    config = write_hook(tmp_path, receiver.url)
    for command in ("test-webhook", "render"):
        result = watcher(command, "deplyo", config=config)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "'deplyo'" in lines[0]
        assert "deploy" in lines[0], "the known names are listed"
        assert result.stdout == ""
    assert receiver.deliveries() == []


def test_unknown_event_is_a_usage_error(receiver: Receiver, tmp_path: Path) -> None:
    config = write_hook(tmp_path, receiver.url)
    for command in ("test-webhook", "render"):
        result = watcher(command, "deploy", "--event", "MODEL_EXPLODED", config=config)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "--event" in lines[0]
        assert "MODEL_EXPLODED" in lines[0]
        assert result.stdout == ""
    assert receiver.deliveries() == []


# --------------------------------------------------------------------------- render


def test_render_prints_the_headers_and_the_exact_body(receiver: Receiver, tmp_path: Path) -> None:
    config = write_hook(tmp_path, receiver.url, 'secret_env = "E2E_SECRET"\n')
    result = watcher("render", "deploy", "--event", "MODEL_VERSION_TAG_SET", config=config)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    request, headers, body = parse_render(result.stdout)
    assert request == f"POST {receiver.url}"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-MLflow-Delivery-Id"]
    assert verifies_with_mlflows_recipe(headers, body.encode())
    assert "\n" not in body
    parsed = json.loads(body)
    assert parsed["event"] == "MODEL_VERSION_TAG_SET"
    assert parsed["tag_key"]
    assert receiver.deliveries() == [], "render sends nothing"

    # The body shown is byte for byte the body test-webhook sends for the same event.
    sent = watcher("test-webhook", "deploy", "--event", "MODEL_VERSION_TAG_SET", config=config)
    assert sent.returncode == 0, sent.stderr
    [delivery] = receiver.deliveries()
    assert delivery.body == body.encode()
    assert header(delivery, "X-MLflow-Delivery-Id") == headers["X-MLflow-Delivery-Id"]


def test_render_redacts_header_values_unless_asked(receiver: Receiver, tmp_path: Path) -> None:
    config = write_hook(tmp_path, receiver.url, 'headers = { Authorization = "Bearer ${TOKEN}" }\n')
    env = watcher_env({"TOKEN": TOKEN})

    hidden = watcher("render", "deploy", config=config, env=env)
    assert hidden.returncode == 0, hidden.stderr
    assert TOKEN not in hidden.stdout + hidden.stderr
    _, headers, _ = parse_render(hidden.stdout)
    assert headers["Authorization"] == "<redacted>"

    shown = watcher("render", "deploy", "--reveal-secrets", config=config, env=env)
    assert shown.returncode == 0, shown.stderr
    _, headers, _ = parse_render(shown.stdout)
    assert headers["Authorization"] == f"Bearer {TOKEN}"

    # test-webhook sends the real value.
    sent = watcher("test-webhook", "deploy", config=config, env=env)
    assert sent.returncode == 0, sent.stderr
    assert TOKEN not in sent.stdout + sent.stderr
    [delivery] = receiver.deliveries()
    assert header(delivery, "Authorization") == f"Bearer {TOKEN}"


def test_render_redacts_a_gitlab_trigger_token_in_the_body(
    receiver: Receiver, tmp_path: Path
) -> None:
    config = write_hook(
        tmp_path, receiver.url, 'format = "gitlab"\nsecret_env = "TOKEN"\nref = "release"\n'
    )
    env = watcher_env({"TOKEN": TOKEN})

    hidden = watcher("render", "deploy", config=config, env=env)
    assert hidden.returncode == 0, hidden.stderr
    output = hidden.stdout + hidden.stderr
    assert TOKEN not in output
    assert quote_plus(TOKEN) not in output
    _, headers, body = parse_render(hidden.stdout)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "X-MLflow-Signature" not in headers, "a trigger token is not a signing key"
    assert body.startswith("token=<redacted>&ref=release&")

    shown = watcher("render", "deploy", "--reveal-secrets", config=config, env=env)
    assert shown.returncode == 0, shown.stderr
    _, _, body = parse_render(shown.stdout)
    form = parse_qs(body)
    assert form["token"] == [TOKEN]
    assert form["ref"] == ["release"]

    sent = watcher("test-webhook", "deploy", config=config, env=env)
    assert sent.returncode == 0, sent.stderr
    assert TOKEN not in sent.stdout + sent.stderr
    [delivery] = receiver.deliveries()
    assert delivery.body == body.encode()


# --------------------------------------------------------------------------- --from-log


def test_from_log_without_a_state_file_says_so(receiver: Receiver, tmp_path: Path) -> None:
    config = write_hook(tmp_path, receiver.url)
    result = watcher("test-webhook", "deploy", "--from-log", config=config)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no state file" in lines[0]
    assert receiver.deliveries() == []


def test_from_log_resends_a_real_recorded_event(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> None:
    config, _ = watch_model(client, mlflow_server, receiver, model_name, tmp_path, versions=1)
    baseline = watcher("run", "--once", config=config)
    assert baseline.returncode == 0, baseline.stderr
    assert receiver.deliveries() == []

    client.transition_model_version_stage(model_name, "1", "Staging")
    once = watcher("run", "--once", config=config)
    assert once.returncode == 0, once.stderr
    [real] = receiver.deliveries()
    assert real.json["model_name"] == model_name
    assert real.json["to_stage"] == "Staging"

    again = watcher("test-webhook", "deploy", "--from-log", config=config)
    assert again.returncode == 0, again.stderr
    assert "status: 200" in again.stdout
    first, resent = receiver.deliveries()
    assert resent.json["event_id"] == first.json["event_id"]
    assert resent.body == first.body, "the same event renders to the same bytes"
    assert header(resent, "X-MLflow-Delivery-Id") == header(first, "X-MLflow-Delivery-Id")
    assert verifies_with_mlflows_recipe(resent.headers, resent.body)

    # render --from-log shows that same body.
    shown = watcher("render", "deploy", "--from-log", config=config)
    assert shown.returncode == 0, shown.stderr
    assert parse_render(shown.stdout)[2].encode() == first.body
