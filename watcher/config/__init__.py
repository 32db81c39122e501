"""The typed configuration: TOML file, environment overrides, embedded defaults.

Precedence, highest first: command-line flags (applied by the CLI), ``WATCHER_SECTION__KEY``
environment variables, the file, the defaults.

The package is split by what a reader looks for: :mod:`~watcher.config.types` (the dataclasses,
each field with its default), :mod:`~watcher.config.parsers` (one parser per kind of value),
:mod:`~watcher.config.keys` (the key tables: each key's parser and display, once),
:mod:`~watcher.config.load` and :mod:`~watcher.config.webhooks` (turning a file into a
:class:`Config`, every problem collected) and :mod:`~watcher.config.display` (check-config).
"""

from watcher.config.display import effective_config, to_toml
from watcher.config.keys import LOG_FORMATS, LOG_LEVELS
from watcher.config.load import DEFAULT_CONFIG_NAME, ENV_PREFIX, load_config, resolve_config_path
from watcher.config.parsers import (
    STAGES,
    event_by_name,
    format_duration,
    parse_duration,
    parse_listen,
)
from watcher.config.types import (
    DEFAULT_TRACKING_URI,
    Config,
    ConsoleConfig,
    DeliveryConfig,
    HintsConfig,
    LogConfig,
    MlflowConfig,
    RetryPolicy,
    Secret,
    ServerConfig,
    StateConfig,
    WatchConfig,
    WebhookConfig,
    redact_uri,
)
from watcher.payloads.formats import FORMATS, TOKEN_FORMATS
from watcher.signing import SCHEMES as SIGNATURE_SCHEMES

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_TRACKING_URI",
    "ENV_PREFIX",
    "FORMATS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SIGNATURE_SCHEMES",
    "STAGES",
    "TOKEN_FORMATS",
    "Config",
    "ConsoleConfig",
    "DeliveryConfig",
    "HintsConfig",
    "LogConfig",
    "MlflowConfig",
    "RetryPolicy",
    "Secret",
    "ServerConfig",
    "StateConfig",
    "WatchConfig",
    "WebhookConfig",
    "effective_config",
    "event_by_name",
    "format_duration",
    "load_config",
    "parse_duration",
    "parse_listen",
    "redact_uri",
    "resolve_config_path",
    "to_toml",
]
