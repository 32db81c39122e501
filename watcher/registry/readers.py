"""The readers: the REST and client readers of the registry, and the database checks.

A reader returns complete reads or raises :class:`RegistryError`; a read that fails part-way is
thrown away whole, so nothing is ever diffed against a partial read.

Two readers share one algorithm (:class:`watcher.scan.ScanReader`: paging, prompt filter,
newest-first reads, and the facts about MLflow that shape them); each supplies only the four
primitives, a page of each search and a get of each kind:

- :class:`RestReader` for ``http(s)://`` tracking servers. It calls the REST endpoints through
  MLflow's own host-credential plumbing (so ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``,
  TLS settings and auth plugins keep working) but without the MLflow 3 client's prompt filter on
  ``search_registered_models``, which makes an MLflow 2.9 server return no models at all.
- :class:`ClientReader` for everything else the client understands (``sqlite:///``, ``file:``,
  ``databricks``...), through ``MlflowClient``. It refuses to create or migrate a database it
  should only read.

docs/architecture.md ("How the registry is read") follows a read through these modules.
"""

from __future__ import annotations

import functools
import gc
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from watcher.errors import RegistryError, first_line
from watcher.model import NO_STAGE, ModelState, VersionState
from watcher.scan import (
    PROMPT_TAG,
    Progress,
    Reader,
    ReaderSettings,
    ReadStats,
    ScanReader,
    is_prompt,
)

__all__ = [
    "PROMPT_TAG",
    "ClientReader",
    "Progress",
    "ReadStats",
    "Reader",
    "ReaderSettings",
    "RestReader",
    "is_prompt",
    "open_reader",
    "registry_identity",
]

_DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
_SEARCH_MODELS = "/api/2.0/mlflow/registered-models/search"
_SEARCH_VERSIONS = "/api/2.0/mlflow/model-versions/search"
_GET_MODEL = "/api/2.0/mlflow/registered-models/get"
_GET_VERSION = "/api/2.0/mlflow/model-versions/get"
_GET_RUN = "/api/2.0/mlflow/runs/get"


def _bound_client_retries(timeout: float) -> None:
    """The client retries a failing request for minutes by default; a cycle must fail fast.

    Only defaults are set: an operator's own MLFLOW_HTTP_REQUEST_* variables win.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout))))


def _select_workspace(workspace: str | None) -> None:
    """``[mlflow] workspace``: MLflow's client sends ``MLFLOW_WORKSPACE`` with every request
    (the ``X-MLFLOW-WORKSPACE`` header), on every thread, the background scans' included. The
    config refuses a key that contradicts the variable, so this only ever fills it in."""
    if workspace:
        os.environ["MLFLOW_WORKSPACE"] = workspace


@functools.cache
def _settle_imports() -> None:
    """Once MLflow is imported, move what is alive to the collector's permanent generation.

    Importing MLflow leaves a large heap that lives as long as the process (its modules,
    pydantic models, pandas); every full collection while 100k versions are loaded and read
    walked all of it again: a sixth of a `run --once`'s CPU time at 100k. Objects frozen are
    still freed by reference counting; only a cycle among them would outlive its use. Once
    per process: later readers (the daemon's background scans) import nothing new.
    """
    gc.freeze()


def open_reader(settings: ReaderSettings) -> Reader:
    uri = settings.registry_uri
    if uri.startswith(("http://", "https://")):
        return RestReader(settings)
    return ClientReader(settings)


def registry_identity(uri: str) -> str:
    """The registry URI without credentials: part of every event id."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


# --------------------------------------------------------------------------- conversion


def _tags(raw: Any) -> dict[str, str]:
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(t["key"]): str(t.get("value", "")) for t in raw or ()}


def _version_from_json(data: Mapping[str, Any]) -> VersionState:
    return VersionState(
        name=str(data["name"]),
        version=str(data["version"]),
        creation_timestamp=int(data.get("creation_timestamp") or 0),
        last_updated_timestamp=int(data.get("last_updated_timestamp") or 0),
        current_stage=str(data.get("current_stage") or NO_STAGE),
        status=str(data.get("status") or "READY"),
        source=str(data.get("source") or ""),
        run_id=str(data.get("run_id") or ""),
        user_id=str(data.get("user_id") or ""),
        description=str(data.get("description") or ""),
        tags=_tags(data.get("tags")),
    )


def _model_from_json(data: Mapping[str, Any]) -> ModelState:
    return ModelState(
        name=str(data["name"]),
        creation_timestamp=int(data.get("creation_timestamp") or 0),
        last_updated_timestamp=int(data.get("last_updated_timestamp") or 0),
        description=str(data.get("description") or ""),
        user_id=str(data.get("user_id") or ""),
        tags=_tags(data.get("tags")),
        aliases={str(a["alias"]): str(a["version"]) for a in data.get("aliases") or ()},
    )


def _version_from_entity(mv: Any) -> VersionState:
    return VersionState(
        name=str(mv.name),
        version=str(mv.version),
        creation_timestamp=int(mv.creation_timestamp or 0),
        last_updated_timestamp=int(mv.last_updated_timestamp or 0),
        current_stage=str(mv.current_stage or NO_STAGE),
        status=str(mv.status or "READY"),
        source=str(mv.source or ""),
        run_id=str(mv.run_id or ""),
        user_id=str(mv.user_id or ""),
        description=str(mv.description or ""),
        tags=_tags(mv.tags),
    )


def _model_from_entity(rm: Any) -> ModelState:
    # MLflow 3's entity hides mlflow.prompt.is_prompt from `tags`; `_tags` has every tag.
    raw_tags = getattr(rm, "_tags", None)
    return ModelState(
        name=str(rm.name),
        creation_timestamp=int(rm.creation_timestamp or 0),
        last_updated_timestamp=int(rm.last_updated_timestamp or 0),
        description=str(rm.description or ""),
        user_id=str(getattr(rm, "user_id", "") or ""),
        tags=_tags(raw_tags if isinstance(raw_tags, Mapping) else rm.tags),
        aliases={str(k): str(v) for k, v in (rm.aliases or {}).items()},
    )


# --------------------------------------------------------------------------- REST


class RestReader(ScanReader):
    """Reads a tracking server's REST API with MLflow's own credentials plumbing."""

    def __init__(self, settings: ReaderSettings) -> None:
        super().__init__(settings)
        _bound_client_retries(settings.timeout)
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        _select_workspace(settings.workspace)
        _settle_imports()
        self._creds = get_default_host_creds(settings.registry_uri)
        # Runs live in the tracking server, which is the registry's but for a registry_uri.
        tracking = settings.tracking_uri
        over_rest = tracking.startswith(("http://", "https://"))
        self._run_creds = get_default_host_creds(tracking) if over_rest else None
        self._http_request = http_request
        self._where = registry_identity(settings.registry_uri)

    def _get(
        self, endpoint: str, params: list[tuple[str, Any]], creds: Any = None
    ) -> dict[str, Any] | None:
        """GET one endpoint. None for 404 RESOURCE_DOES_NOT_EXIST; RegistryError otherwise."""
        started = time.monotonic()
        self.stats.requests += 1
        try:
            response = self._http_request(
                creds or self._creds,
                endpoint,
                "GET",
                params=params,
                max_retries=1,
                backoff_factor=1,
                timeout=self.settings.timeout,
            )
        except Exception as exc:  # MlflowException wraps every transport error
            cause = exc.__context__ or exc
            raise RegistryError(
                f"cannot reach MLflow at {self._where}: {type(cause).__name__}: "
                f"{first_line(str(cause))}"
            ) from None
        finally:
            self.stats.seconds += time.monotonic() - started
        self.stats.bytes += len(response.content)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict):
            return body
        error_code = body.get("error_code") if isinstance(body, dict) else None
        if response.status_code == 404 and error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        message = body.get("message") if isinstance(body, dict) else response.text
        readable = "this run's experiment" if endpoint == _GET_RUN else "the model registry"
        hint = {
            401: " (401 Unauthorized: check MLFLOW_TRACKING_USERNAME/PASSWORD or TOKEN)",
            403: f" (403 Forbidden: the credentials may not read {readable})",
        }.get(response.status_code, "")
        raise RegistryError(
            f"MLflow at {self._where} answered {response.status_code} to GET {endpoint}{hint}: "
            f"{error_code or ''} {first_line(str(message or ''))}".rstrip(),
            code=error_code,
            status=response.status_code,
        )

    def _search_models(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str = ""
    ) -> tuple[list[ModelState], str | None]:
        params: list[tuple[str, Any]] = [("max_results", page_size)]
        params.extend(("order_by", o) for o in order_by)
        if filter_string:
            params.append(("filter", filter_string))
        if page_token:
            params.append(("page_token", page_token))
        body = self._get(_SEARCH_MODELS, params) or {}
        models = [_model_from_json(m) for m in body.get("registered_models", [])]
        return models, body.get("next_page_token")

    def _search_versions(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str
    ) -> tuple[list[VersionState], str | None]:
        params: list[tuple[str, Any]] = [("max_results", page_size)]
        params.extend(("order_by", o) for o in order_by)
        if filter_string:
            params.append(("filter", filter_string))
        if page_token:
            params.append(("page_token", page_token))
        body = self._get(_SEARCH_VERSIONS, params) or {}
        versions = [_version_from_json(v) for v in body.get("model_versions", [])]
        return versions, body.get("next_page_token")

    def get_model(self, name: str) -> ModelState | None:
        body = self._get(_GET_MODEL, [("name", name)])
        return _model_from_json(body["registered_model"]) if body else None

    def get_version(self, name: str, version: str) -> VersionState | None:
        body = self._get(_GET_VERSION, [("name", name), ("version", version)])
        return _version_from_json(body["model_version"]) if body else None

    def run_experiment(self, run_id: str) -> str | None:
        if self._run_creds is None:
            raise RegistryError(
                f"runs are in {registry_identity(self.settings.tracking_uri)}, not read over REST"
            )
        body = self._get(_GET_RUN, [("run_id", run_id)], self._run_creds)
        return str(body["run"]["info"]["experiment_id"]) if body else None


# --------------------------------------------------------------------------- MlflowClient


class ClientReader(ScanReader):
    """Reads through MlflowClient: local stores (sqlite, file) and URIs that need plugins."""

    def __init__(self, settings: ReaderSettings) -> None:
        super().__init__(settings)
        _bound_client_retries(settings.timeout)
        _select_workspace(settings.workspace)
        self._where = registry_identity(settings.registry_uri)
        self._tracking_checked = settings.tracking_uri == settings.registry_uri
        """The tracking store is the registry's, or was checked as it is (never created)."""
        scheme = urlsplit(settings.registry_uri).scheme.partition("+")[0]
        if scheme in ("file", ""):
            # MLflow 3 refuses the file store unless asked; pointing the watcher at one is asking.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            # Its file store builds a default MlflowClient() for versions that have a model_id;
            # without this that client would create a stray ./mlflow.db.
            os.environ.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri)
        try:
            if scheme in _DATABASE_SCHEMES:
                import sqlalchemy  # noqa: F401 - only the full mlflow package brings it
            from mlflow import MlflowClient
        except ImportError:
            raise RegistryError(
                f"reading {self._where} directly needs the full MLflow package: "
                "pip install 'mlflow-registry-watcher[sql]', or point tracking_uri at the "
                "MLflow server's http:// URL"
            ) from None
        _settle_imports()
        _check_sqlite_store(settings.registry_uri)
        try:
            self._client = MlflowClient(
                tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri
            )
            # MlflowClient refuses to get a prompt or a prompt version by name; its registry
            # client (what it calls underneath) does not: with prompts, get through that.
            self._lookup = self._client._get_registry_client() if settings.prompts else self._client
        except Exception as exc:
            raise RegistryError(f"cannot open MLflow registry {self._where}: {exc}") from None

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        self.stats.requests += 1
        try:
            return fn()
        except Exception as exc:
            raise RegistryError(
                f"cannot read MLflow registry {self._where} ({what}): "
                f"{type(exc).__name__}: {first_line(str(exc))}",
                code=getattr(exc, "error_code", None),
            ) from None
        finally:
            self.stats.seconds += time.monotonic() - started

    def _search_models(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str = ""
    ) -> tuple[list[ModelState], str | None]:
        # Without a filter, MlflowClient leaves prompts out; with the prompts' it keeps them.
        page = self._call(
            "search_registered_models",
            lambda: self._client.search_registered_models(
                filter_string=filter_string or None,
                max_results=page_size,
                order_by=order_by,
                page_token=page_token,
            ),
        )
        return [_model_from_entity(m) for m in page], page.token

    def _search_versions(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str
    ) -> tuple[list[VersionState], str | None]:
        page = self._call(
            "search_model_versions",
            lambda: self._client.search_model_versions(
                filter_string=filter_string or None,
                max_results=page_size,
                order_by=order_by,
                page_token=page_token,
            ),
        )
        return [_version_from_entity(v) for v in page], page.token

    def get_model(self, name: str) -> ModelState | None:
        found = self._get_or_none(
            "get_registered_model", lambda: self._lookup.get_registered_model(name)
        )
        return None if found is None else _model_from_entity(found)

    def get_version(self, name: str, version: str) -> VersionState | None:
        found = self._get_or_none(
            "get_model_version", lambda: self._lookup.get_model_version(name, version)
        )
        return None if found is None else _version_from_entity(found)

    def run_experiment(self, run_id: str) -> str | None:
        if not self._tracking_checked:
            _check_sqlite_store(self.settings.tracking_uri)  # read, never created
            self._tracking_checked = True
        try:
            run = self._call("get_run", lambda: self._client.get_run(run_id))
        except RegistryError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return str(run.info.experiment_id)

    def _get_or_none(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryError(
                f"cannot read MLflow registry {self._where} ({what}): "
                f"{type(exc).__name__}: {first_line(str(exc))}"
            ) from None


def _check_sqlite_store(uri: str) -> None:
    """Refuse to let the client create or migrate a database it should only read.

    MLflow's SQLAlchemy store creates a missing database and can migrate an old one; a watcher
    must never write to the registry it watches.
    """
    scheme = urlsplit(uri).scheme.partition("+")[0]
    if scheme in _DATABASE_SCHEMES - {"sqlite"}:
        _check_server_database(uri)
        return
    if not uri.startswith("sqlite:///"):
        return
    # sqlite:///mlflow.db is relative to the working directory, sqlite:////srv/m.db absolute.
    path = Path(unquote(urlsplit(uri).path)[1:])
    if not path.is_file():
        raise RegistryError(
            f"no MLflow database at {str(path)!r} (from {uri}); it is created by MLflow when the "
            "first model is registered, or by `mlflow db upgrade " + uri + "`"
        )
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise RegistryError(f"{str(path)!r} is not an MLflow database: {exc}") from None
    if row is None:
        raise RegistryError(f"{str(path)!r} is not an MLflow database: no schema revision")
    _check_revision(str(path), str(row[0]))


def _check_revision(where: str, found: str) -> None:
    expected = _client_schema_revision()
    if expected is not None and found != expected:
        raise RegistryError(
            f"MLflow database {where!r} has schema revision {found}, but this watcher's MLflow "
            f"client expects {expected}; it will not migrate a database it only reads. Point "
            "tracking_uri at the MLflow server's http:// URL instead"
        )


def _check_server_database(uri: str) -> None:
    """PostgreSQL, MySQL, SQL Server: read the schema revision with one SELECT, nothing else."""
    where = registry_identity(uri)
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    sqlalchemy.text("SELECT version_num FROM alembic_version")
                ).scalar()
        finally:
            engine.dispose()
    except Exception as exc:
        raise RegistryError(
            f"cannot read the schema revision of {where}: {type(exc).__name__}: "
            f"{first_line(str(exc))}"
        ) from None
    if found is None:
        raise RegistryError(f"{where} is not an MLflow database: no schema revision")
    _check_revision(where, str(found))


def _client_schema_revision() -> str | None:
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision
    except ImportError:
        return None
    try:
        return str(_get_latest_schema_revision())
    except Exception:
        return None
