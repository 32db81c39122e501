"""The configuration's types: one frozen dataclass per section, each field with its default.

A field's default is the key's default: the key tables (:mod:`watcher.config.keys`) say how a
value is read and shown, never what it defaults to.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from watcher.model import (
    ALIAS_EVENTS,
    ALL_EVENTS,
    PROMPT_EVENTS,
    STAGE_EVENTS,
    Event,
    EventType,
)
from watcher.payloads.links import PayloadContext

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class Secret:
    """A secret value that never shows itself in ``repr``, ``str``, logs or errors."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<redacted>, from {self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str = DEFAULT_TRACKING_URI
    registry_uri: str = ""
    timeout: float = 30.0
    """Seconds one request to MLflow may take before the read is abandoned."""
    page_size: int = 1000
    ui_url: str | None = None
    """The MLflow UI's address: payloads link the model version there; None: no links."""
    workspace: str | None = None
    """The MLflow workspace read (``$MLFLOW_WORKSPACE`` when unset): the readers select it, and
    payloads name it; None: the server's default, and payloads name none."""

    @property
    def effective_registry_uri(self) -> str:
        return self.registry_uri or self.tracking_uri

    @property
    def payload_context(self) -> PayloadContext:
        """What these keys add to every payload: the UI links, the workspace."""
        return PayloadContext(ui_url=self.ui_url, workspace=self.workspace)

    def __repr__(self) -> str:
        return _shown(
            self,
            tracking_uri=redact_uri(self.tracking_uri),
            registry_uri=redact_uri(self.registry_uri),
            timeout=self.timeout,
            page_size=self.page_size,
            ui_url=self.ui_url,
            workspace=self.workspace,
        )


@dataclass(frozen=True)
class WatchConfig:
    interval: float = 30.0
    models: tuple[str, ...] = ("*",)
    exclude_models: tuple[str, ...] = ()
    models_scan_interval: float | None = None
    """Seconds between scans of all the registered models (aliases, model deletions);
    None: auto, spaced by their measured cost to keep reading within max_duty."""
    versions_scan_interval: float | None = None
    """Seconds between scans of all the versions (version tags, safety net); None: auto."""
    max_duty: float = 0.1
    """With auto cadences: the share of wall time the watcher may spend reading MLflow."""
    hot_window: float = 0.0
    """Seconds: models with activity this recent (the hot set) have their aliases, tags and
    versions read with every poll, within max_duty; 0 (the default) turns the hot set off.
    Off by default: at 100k versions its records search took most of its budget (the window
    shrank to seconds) and left the scans less of max_duty (README, "How it reads MLflow")."""

    def watches(self, model_name: str) -> bool:
        return any(fnmatch.fnmatchcase(model_name, p) for p in self.models) and not any(
            fnmatch.fnmatchcase(model_name, p) for p in self.exclude_models
        )


DEFAULT_NAMESPACE = "mlflow_watcher"
MIN_LEASE = 5.0
MAX_LEASE = 120.0
"""The bounds of ``[state] lease`` (seconds): a lease shorter than a few renewals' round trips
would lapse under a busy database; a longer one makes a failover wait for minutes."""


@dataclass(frozen=True)
class StateConfig:
    path: Path = Path(".watcher/state.db")
    url: str | None = None
    """A ``postgresql://`` URL: the state in PostgreSQL, shared by replicas (``path`` unused)."""
    namespace: str = DEFAULT_NAMESPACE
    """The PostgreSQL schema holding this watcher's tables and lease."""
    password: Secret | None = None
    """From ``password_env``/``password_file``; None leaves it to libpq (PGPASSWORD,
    PGPASSFILE)."""
    lease: float | None = None
    """Seconds a leader's lease lasts; None: derived from watch.interval."""
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0

    @property
    def shared(self) -> bool:
        """Whether the state is a PostgreSQL database shared by replicas."""
        return self.url is not None

    @property
    def display(self) -> str:
        """Where the state is, safe to show."""
        if self.url is None:
            return str(self.path)
        return f"{redact_uri(self.url)} (namespace {self.namespace})"

    def __repr__(self) -> str:
        return _shown(self, where=self.display, password=self.password, lease=self.lease)


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class ServerConfig:
    """The health and metrics HTTP server; off unless ``listen`` is set."""

    listen: tuple[str, int] | None = None
    """(host, port) to bind, or None: no server."""
    metrics_token: Secret | None = None
    """When set, /metrics wants ``Authorization: Bearer <token>``; the probes never do."""

    @property
    def display_listen(self) -> str:
        return format_listen(self.listen)


def format_listen(listen: tuple[str, int] | None) -> str:
    """(host, port) as ``HOST:PORT`` (an IPv6 host in brackets); None as ""."""
    if listen is None:
        return ""
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


DEFAULT_HINTS_PATH = "/mlflow-hints"
MIN_HINT_TOLERANCE = 1.0
MAX_HINT_TOLERANCE = 3600.0
"""The bounds of ``[hints] tolerance`` (seconds): the replay window, which is also how far
MLflow's clock may be from this host's."""


@dataclass(frozen=True)
class HintsConfig:
    """MLflow's native webhooks as wake-up calls ("hints"), served at ``path`` on the
    ``[server] listen`` address; off unless ``secret_env`` or ``secret_file`` is set.

    A hint only asks for an early read of the model it names: it never carries content."""

    enabled: bool = False
    """A secret is configured (``secret_env``/``secret_file``): hints are on."""
    secret: Secret | None = None
    """The secret MLflow signs its webhooks with; None where credentials were not loaded
    (``status``), even when ``enabled``."""
    secret_source: str | None = None
    """Where the secret comes from: ``env:VAR`` or ``file:PATH`` (as configured), for the
    command ``hints register --print`` prints."""
    path: str = DEFAULT_HINTS_PATH
    tolerance: float = 300.0
    """Seconds a hint's signed timestamp may be from this host's clock (the replay window)."""

    def __repr__(self) -> str:
        return _shown(
            self, enabled=self.enabled, secret=self.secret, path=self.path, tolerance=self.tolerance
        )


CONSOLE_NEEDS_CREDENTIAL = (
    "the console needs a credential: set console.token_env or console.token_file, "
    "console.username with console.password_env or console.password_file, or "
    "console.trusted_header (behind a single-sign-on proxy)"
)


@dataclass(frozen=True)
class ConsoleConfig:
    """The web console; off unless ``listen`` is set. Its own address, apart from [server]:
    the probes and /metrics keep theirs, and the console can stay on a private network.

    Nobody reaches it without a credential: a token, a user and password (each from the
    environment or a file), or, behind a single-sign-on proxy that says who the user is, a
    trusted header (only when it is configured)."""

    listen: tuple[str, int] | None = None
    token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    trusted_header: str | None = None
    """A header the proxy in front sets to the signed-in user (X-Forwarded-User); trusted
    only when set here: the proxy must strip it from what clients send."""
    read_only: bool = False
    """Show everything, offer and accept no action."""
    session_key: Secret | None = None
    """Signs the session cookie; None: derived from the token or password, so that every
    replica behind one load balancer accepts the same cookie."""

    @property
    def has_way_in(self) -> bool:
        """A credential or a trusted header is configured: somebody can sign in."""
        return (
            self.token is not None
            or (self.username is not None and self.password is not None)
            or self.trusted_header is not None
        )

    @property
    def display_listen(self) -> str:
        return format_listen(self.listen)

    def __repr__(self) -> str:
        return _shown(
            self,
            listen=self.display_listen,
            token=self.token,
            username=self.username,
            password=self.password,
            trusted_header=self.trusted_header,
            read_only=self.read_only,
            session_key=self.session_key,
        )


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed delivery is tried again, and when it is given up as dead."""

    initial_delay: float = 2.0
    """Seconds before the first retry (the base of the exponential backoff)."""
    max_delay: float = 3600.0
    """Cap of one backoff step (and of an honoured Retry-After), in seconds."""
    max_age: float = 86400.0
    """Seconds after detection when a delivery that keeps failing is declared dead."""
    max_attempts: int = 30
    dead_on: frozenset[int] | None = None
    """HTTP statuses that are dead at once; None: every 4xx but 408, 425 and 429."""


@dataclass(frozen=True)
class DeliveryConfig:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """The retry policy of every webhook that does not set its own (the TOML keys
    initial_delay, max_delay, max_age, max_attempts and dead_on of [delivery])."""
    workers: int = 4
    """Deliveries in flight at once per webhook (each model's events stay in order)."""
    shutdown_grace: float = 10.0
    """On SIGTERM, how long in-flight requests may take to finish; the rest stays queued."""
    connect_timeout: float = 5.0
    allowed_hosts: tuple[str, ...] = ("*",)
    """Globs of host names webhooks may point at; a URL outside them is a config error."""
    deny_private_addresses: bool = False
    """Refuse to deliver to loopback, private, link-local and reserved addresses, checked on
    the connected socket (so a DNS name cannot smuggle one in)."""
    retention: float = 7 * 86400.0
    """Delivered rows (and their attempts) are pruned after this long; dead rows never are."""


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    url: str
    events: frozenset[EventType] = ALL_EVENTS
    secret: Secret | None = None
    signature: str = "none"
    timeout: float = 10.0
    format: str = "watcher"
    models: tuple[str, ...] = ("*",)
    to_stages: frozenset[str] | None = None
    """Lower-case stage names; None: every stage. Applies to stage-transition events only."""
    aliases: tuple[str, ...] | None = None
    """Alias globs; None: every alias. Applies to alias events only."""
    event_type: str | None = None
    ref: str = "main"
    template: str | None = None
    content_type: str | None = None
    headers: tuple[tuple[str, Secret], ...] = ()
    previous_secrets: tuple[Secret, ...] = ()
    username: str | None = None
    password: Secret | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 5.0
    ca_bundle: str | None = None
    """A CA bundle file to verify the receiver's TLS certificate with (default: the system's)."""
    deny_private_addresses: bool = False
    url_is_secret: bool = False
    """The URL came from ${VAR} (a Slack webhook URL is a secret): never shown whole."""

    @property
    def display_url(self) -> str:
        if self.url_is_secret:
            parts = urlsplit(self.url)
            return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/<redacted>"
        return redact_uri(self.url)

    def wants(self, event: Event) -> bool:
        """Whether this webhook subscribes to the event (type, model, stage and alias filters)."""
        if event.type not in self.events:
            return False
        # A rename is for the webhooks of either name: it ends the old name's story too.
        names = [event.model_name, *([event.previous_name] if event.previous_name else [])]
        if not any(fnmatch.fnmatchcase(n, p) for n in names for p in self.models):
            return False
        if (
            self.to_stages is not None
            and event.type in STAGE_EVENTS
            and (event.to_stage or "").lower() not in self.to_stages
        ):
            return False
        return not (
            self.aliases is not None
            and event.type in ALIAS_EVENTS
            and not any(fnmatch.fnmatchcase(event.alias or "", p) for p in self.aliases)
        )

    def __repr__(self) -> str:
        return _shown(
            self,
            name=self.name,
            url=self.display_url,
            events=sorted(e.value for e in self.events),
            format=self.format,
            secret=self.secret,
            signature=self.signature,
            timeout=self.timeout,
        )


@dataclass(frozen=True)
class Config:
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    state: StateConfig = field(default_factory=StateConfig)
    log: LogConfig = field(default_factory=LogConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    webhooks: tuple[WebhookConfig, ...] = ()
    server: ServerConfig = field(default_factory=ServerConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    hints: HintsConfig = field(default_factory=HintsConfig)
    source: str = "embedded defaults"

    def webhook(self, name: str) -> WebhookConfig | None:
        return next((w for w in self.webhooks if w.name == name), None)

    @property
    def watches_prompts(self) -> bool:
        """Whether any webhook subscribes to a prompt event: only then are prompts read (and
        kept in the snapshot); otherwise the watcher skips them, as it always did."""
        return any(w.events & PROMPT_EVENTS for w in self.webhooks)


def _shown(config: object, **fields: object) -> str:
    """A repr of only the fields given, as the caller shows them: a URI redacted, a secret
    as its own redacted repr. A config's repr lands in logs and tracebacks, so no field is
    shown unless a class lists it."""
    listed = ", ".join(f"{key}={value!r}" for key, value in fields.items())
    return f"{type(config).__name__}({listed})"


def redact_uri(uri: str) -> str:
    """Hide a URI's password and query values (tokens live there), so it can be shown."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if parts.password is None and not parts.query:
        return uri
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username}:***@{host}")
    if parts.query:
        hidden = "&".join(f"{p.partition('=')[0]}=***" for p in parts.query.split("&"))
        parts = parts._replace(query=hidden)
    return urlunsplit(parts)
