"""Building each ``[[webhooks]]`` table: its secrets, URL, signature, retry policy and template.

The plain keys go straight into :class:`WebhookConfig` (its fields hold the defaults); the keys
marked ``builds`` in :data:`WEBHOOK_KEYS` are turned into fields here, each by one function.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from watcher.config.keys import RETRY_KEYS, WEBHOOK_KEYS, parse_table
from watcher.config.parsers import (
    ENV_REF,
    HEADER_BREAK,
    Invalid,
    Problems,
    format_duration,
    parse_webhook_url,
)
from watcher.config.types import DeliveryConfig, RetryPolicy, Secret, WebhookConfig, redact_uri
from watcher.payloads.formats import TOKEN_FORMATS
from watcher.payloads.template import TemplateError, compile_template, validate_template
from watcher.signing import check_secret


def parse_webhooks(
    raw: object,
    env: Mapping[str, str],
    problems: Problems,
    base_dir: Path,
    delivery: DeliveryConfig,
) -> tuple[WebhookConfig, ...]:
    if not isinstance(raw, list) or not all(isinstance(w, dict) for w in raw):
        problems.add("webhooks", raw, "a list of tables ([[webhooks]] in TOML)")
        return ()
    webhooks: list[WebhookConfig] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(raw):
        path = f"webhooks[{index}]"
        values = parse_table(table, WEBHOOK_KEYS, path, problems)
        for required in ("name", "url"):
            if required not in table:
                problems.note(f"{path}.{required}", "missing; every webhook needs a name and a url")
        name = values.get("name")
        if name is not None:
            if name in seen:
                problems.add(f"{path}.name", name, f"a unique name (webhooks[{seen[name]}] has it)")
            seen.setdefault(name, index)
        webhook = _Builder(values, env, path, problems).build(base_dir, delivery)
        if webhook is not None:
            webhooks.append(webhook)
    return tuple(webhooks)


class _Builder:
    """One webhook's parsed values -> a WebhookConfig, every problem added on the way."""

    def __init__(
        self, values: dict[str, Any], env: Mapping[str, str], path: str, problems: Problems
    ) -> None:
        self.values, self.env, self.path, self.problems = values, env, path, problems

    def build(self, base_dir: Path, delivery: DeliveryConfig) -> WebhookConfig | None:
        values, path, problems = self.values, self.path, self.problems
        secret = read_secret(values, self.env, path, problems, "secret")
        password = read_secret(values, self.env, path, problems, "password")
        previous = self.previous_secrets()
        signature = self.signature(secret)
        self.check_previous(previous, signature)
        if ("password_env" in values or "password_file" in values) != ("username" in values):
            problems.note(f"{path}.username", "username and password_env/password_file go together")
        headers = self.headers()
        template = template_source(values, path, problems, base_dir)
        retry = self.retry(delivery.retry)
        url, url_is_secret = self.url(delivery.allowed_hosts)
        if values.get("ca_bundle") is not None and not Path(values["ca_bundle"]).is_file():
            problems.add(f"{path}.ca_bundle", values["ca_bundle"], "a readable CA bundle file")
        if "name" not in values or url is None:
            return None
        plain = {key: v for key, v in values.items() if not WEBHOOK_KEYS[key].builds}
        webhook = WebhookConfig(
            **{"connect_timeout": delivery.connect_timeout, **plain},
            url=url,
            url_is_secret=url_is_secret,
            secret=secret,
            signature=signature,
            template=template,
            headers=headers,
            previous_secrets=previous,
            password=password,
            retry=retry,
            deny_private_addresses=delivery.deny_private_addresses,
        )
        if template is not None:
            check_template(webhook, template, f"{path}.template", problems)
        return webhook

    def signature(self, secret: Secret | None) -> str:
        """The scheme, by default ``mlflow`` with a secret; checked against the secret."""
        values, path = self.values, self.path
        fmt = values.get("format", "watcher")
        # A gitlab or jenkins secret is the trigger token in the body: nothing to sign with.
        default = "mlflow" if secret is not None and fmt not in TOKEN_FORMATS else "none"
        signature: str = values.get("signature", default)
        has_source = bool(values.get("secret_env") or values.get("secret_file"))
        if signature != "none" and secret is None and not has_source:
            self.problems.add(
                f"{path}.signature", signature, "secret_env or secret_file to sign with"
            )
        if secret is not None and signature != "none":
            expected = check_secret(signature, secret.reveal())
            if expected is not None:
                self.problems.note(
                    f"{path}.secret", f"does not suit signature {signature!r}: {expected}"
                )
        return signature

    def previous_secrets(self) -> tuple[Secret, ...]:
        """Keys being rotated out: signed with too, and only by the ``standard`` scheme."""
        path, problems = self.path, self.problems
        return tuple(
            s
            for i, var in enumerate(self.values.get("previous_secrets_env", ()))
            if (s := env_secret(var, self.env, f"{path}.previous_secrets_env[{i}]", problems))
        )

    def check_previous(self, previous: tuple[Secret, ...], signature: str) -> None:
        path, problems = self.path, self.problems
        for i, old in enumerate(previous):
            expected = check_secret("standard", old.reveal()) if signature == "standard" else None
            if expected is not None:
                problems.note(
                    f"{path}.previous_secrets_env[{i}]", f"is not a usable key: {expected}"
                )
        if previous and signature != "standard":
            problems.note(
                f"{path}.previous_secrets_env", 'is only used with signature = "standard"'
            )

    def headers(self) -> tuple[tuple[str, Secret], ...]:
        """Extra headers, ``${VAR}`` expanded; held as secrets (they often carry a token)."""
        headers: list[tuple[str, Secret]] = []
        for key, raw in self.values.get("headers", {}).items():
            path = f"{self.path}.headers.{key}"
            expanded = expand_env(raw, self.env, path, self.problems)
            if expanded is not None and HEADER_BREAK.search(expanded):
                self.problems.note(path, "expands to a value with a line break")
            elif expanded is not None:
                headers.append((key, Secret(expanded, f"header {key}")))
        return tuple(headers)

    def retry(self, default: RetryPolicy) -> RetryPolicy:
        """``[delivery]``'s policy with the keys of the webhook's ``retry`` table replaced."""
        path = f"{self.path}.retry"
        changes = parse_table(self.values.get("retry", {}), RETRY_KEYS, path, self.problems)
        retry = replace(default, **changes)
        if retry.max_delay < retry.initial_delay:
            self.problems.add(
                f"{path}.max_delay", format_duration(retry.max_delay), "at least initial_delay"
            )
        return retry

    def url(self, allowed_hosts: tuple[str, ...]) -> tuple[str | None, bool]:
        """The URL (``${VAR}`` parts expanded), checked against the allowed hosts, and whether
        it is a secret (it came from the environment: a Slack webhook URL is one)."""
        given: str | None = self.values.get("url")
        url = given
        url_is_secret = given is not None and bool(ENV_REF.search(given))
        path = f"{self.path}.url"
        if given is not None and url_is_secret:
            expanded = expand_env(given, self.env, path, self.problems)
            try:
                url = None if expanded is None else parse_webhook_url(expanded)
            except Invalid:
                self.problems.note(path, f"{given} does not expand to an http(s) URL")
                url = None
        if url is not None:
            host = urlsplit(url).hostname or ""
            if not any(fnmatch.fnmatchcase(host, p) for p in allowed_hosts):
                expected = f"a host allowed by delivery.allowed_hosts ({', '.join(allowed_hosts)})"
                self.problems.add(path, redact_uri(url), expected)
        if url is None and url_is_secret and not self.problems.credentials:
            url = given  # unexpanded: nothing is sent to it, and it is never shown
        return url, url_is_secret


def check_template(webhook: WebhookConfig, source: str, path: str, problems: Problems) -> None:
    """Compile the template and render it against an example of every subscribed event."""
    try:
        compiled = compile_template(source)
    except TemplateError as exc:
        problems.note(path, f"webhook {webhook.name!r}: {exc}")
        return
    for problem in validate_template(
        compiled, sorted(webhook.events), webhook.name, content_type=webhook.content_type
    ):
        problems.note(path, f"webhook {webhook.name!r}: {problem}")


def template_source(
    values: Mapping[str, Any], path: str, problems: Problems, base_dir: Path
) -> str | None:
    """The template's text, inline or from a file beside the config; only with format=template."""
    fmt = values.get("format", "watcher")
    inline, file = values.get("template"), values.get("template_file")
    if (inline or file) and fmt != "template":
        problems.note(f"{path}.format", 'must be "template" when a template is given')
        return None
    if fmt != "template":
        return None
    if inline and file:
        problems.note(f"{path}.template_file", "set only one of template and template_file")
        return None
    if file:
        target = Path(base_dir, str(file))
        try:
            return target.read_text(encoding="utf-8")
        except OSError as exc:
            problems.add(f"{path}.template_file", file, f"a readable file ({exc.strerror})")
            return None
    if not inline:
        problems.note(
            f"{path}.template", 'missing; format = "template" needs template or template_file'
        )
        return None
    return str(inline)


def env_secret(var: str, env: Mapping[str, str], path: str, problems: Problems) -> Secret | None:
    if not env.get(var):
        problems.credential(path, var, "the name of a set, non-empty environment variable")
        return None
    return Secret(env[var], f"env:{var}")


def read_secret(
    values: Mapping[str, Any], env: Mapping[str, str], path: str, problems: Problems, kind: str
) -> Secret | None:
    """``{kind}_env`` or ``{kind}_file``: a secret from the environment or a file."""
    var, file = values.get(f"{kind}_env"), values.get(f"{kind}_file")
    if var and file:
        problems.note(f"{path}.{kind}_file", f"set only one of {kind}_env and {kind}_file")
        return None
    if var:
        return env_secret(var, env, f"{path}.{kind}_env", problems)
    if not file:
        return None
    expanded = expand_env(file, env, f"{path}.{kind}_file", problems)
    if expanded is None:
        return None
    try:
        text = Path(expanded).read_text(encoding="utf-8")
    except OSError as exc:
        problems.credential(f"{path}.{kind}_file", file, f"a readable file ({exc.strerror})")
        return None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        problems.credential(f"{path}.{kind}_file", file, "a file holding a non-empty secret")
        return None
    return Secret(text, f"file:{expanded}")


def expand_env(text: str, env: Mapping[str, str], path: str, problems: Problems) -> str | None:
    missing = [m for m in ENV_REF.findall(text) if m not in env]
    if missing:
        problems.credential(
            path, text, f"set environment variables (missing: {', '.join(missing)})"
        )
        return None
    return ENV_REF.sub(lambda m: env[m.group(1)], text)
