"""How a registry is read, whatever the transport: paging, filters and the read algorithms.

Both readers in :mod:`watcher.registry` (REST and ``MlflowClient``) are a :class:`ScanReader`
that supplies four primitives (a page of a registered-model search, a page of a model-version
search, a get of one model, a get of one version); everything else is here, and nothing here
imports mlflow. The unit tests build their fake registry on the same class, so the paging, the
prompt filter and the number of requests they count are the real reader's.

Facts that shape the algorithms (measured on MLflow 2.9 to 3.x):

- Search paging is by offset and unsafe under concurrent writes: a full scan orders by name
  (and version number), which inserts and updates between pages cannot reorder, and merges
  duplicates keeping the newer row (:func:`keep_newer`). A delete between pages can still hide
  a live row, so whatever seems to have gone is confirmed with a direct get by the caller.
- A server can return the same page token twice; the read is then abandoned, not looped.
- MLflow 3 stores prompts as registered models tagged ``mlflow.prompt.is_prompt``: they, and
  their versions, are read only when a webhook subscribes to prompt events
  (``ReaderSettings.prompts``); :mod:`watcher.prompts` detects their changes.
- A server that refuses an order or a filter answers 400 ``INVALID_PARAMETER_VALUE`` (or 501):
  :func:`is_refused` is the one test of it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from watcher.errors import RegistryError
from watcher.model import ModelState, VersionState
from watcher.prompts import PROMPT_TAG, is_prompt

Key = tuple[str, str]
Watches = Callable[[str], bool]

__all__ = ["PROMPT_TAG", "is_prompt"]  # re-exported: the readers' callers know them from here

MODELS_PAGE_MAX = 100
"""Registered models per search request, whatever page_size says. Each one comes with its latest
versions, which MLflow 2.x computes slowly: at 100k versions a page of 1,000 models took 8.2 s on
MLflow 2.22 (0.67 s for 100), against 1.04 s (1.13 s in ten pages of 100) on MLflow 3.17. No
single request then holds a server worker for long."""

RECENT_FIRST_PAGE = 25
"""Rows in the first page of a read of recent changes: a quiet cycle needs no second one, and
a registered model comes with its latest versions, so a page of them is not small."""

NAME_ORDER = ["name ASC"]
VERSION_ORDER = ["name ASC", "version_number ASC"]
RECENT_ORDER = ["last_updated_timestamp DESC"]
BY_NAME_ORDER = ["version_number ASC"]

PROMPTS_FILTER = f"tags.`{PROMPT_TAG}` = 'true'"
"""The filter of a search for prompts: MLflow 3's stores leave prompts (and their versions) out of
every search that does not ask for them this way (MLflow's own client relied on that)."""

NAMES_PER_REQUEST = 50
"""Model names in one ``name IN (...)`` version search: the filter travels in the URL of a GET,
which servers and proxies bound (8 KB is common)."""


def is_refused(exc: RegistryError) -> bool:
    """The server refuses this kind of read (an order_by or a filter it does not support), as
    opposed to failing it: the caller reads another way instead of failing the cycle."""
    return exc.code == "INVALID_PARAMETER_VALUE" or exc.status in (400, 501)


@dataclass(frozen=True)
class ReaderSettings:
    tracking_uri: str
    registry_uri: str
    timeout: float = 30.0
    page_size: int = 1000
    workspace: str | None = None
    """The MLflow workspace to read (``MLFLOW_WORKSPACE`` for MLflow's client); None: the
    client's own choice (the variable if set, else the server's default workspace)."""
    prompts: bool = False
    """Read MLflow 3's prompts too (a webhook subscribes to prompt events); else skip them."""


@dataclass
class ReadStats:
    """What reading has cost so far: requests, bytes received, seconds waiting for MLflow."""

    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def since(self, earlier: ReadStats) -> ReadStats:
        return ReadStats(
            self.requests - earlier.requests,
            self.bytes - earlier.bytes,
            self.seconds - earlier.seconds,
        )

    def copy(self) -> ReadStats:
        return ReadStats(self.requests, self.bytes, self.seconds)


Progress = Callable[[str, int], None]
"""Called after each page of a full scan with what is read ("models"/"versions") and the count."""


class Reader(Protocol):
    """What the read stage needs from a registry."""

    stats: ReadStats
    progress: Progress | None

    def scan_models(
        self, watches: Watches, reuse: Mapping[str, ModelState] | None = None
    ) -> dict[str, ModelState]: ...

    def scan_versions(
        self,
        watches: Watches,
        models: Iterable[str] | None = None,
        reuse: Mapping[Key, VersionState] | None = None,
    ) -> dict[Key, VersionState]: ...

    def models_updated_since(self, since_ms: int, watches: Watches) -> list[ModelState]: ...

    def versions_updated_since(self, since_ms: int, watches: Watches) -> list[VersionState]: ...

    def versions_of(self, name: str) -> dict[Key, VersionState]: ...

    def versions_of_models(self, names: Iterable[str]) -> dict[str, dict[Key, VersionState]]: ...

    def get_model(self, name: str) -> ModelState | None: ...

    def get_version(self, name: str, version: str) -> VersionState | None: ...

    def run_experiment(self, run_id: str) -> str | None: ...
    def keeps(self, model: ModelState) -> bool: ...


class ScanReader:
    """The read algorithms; subclasses supply paged searches and single gets."""

    def __init__(self, settings: ReaderSettings) -> None:
        self.settings = settings
        self.stats = ReadStats()
        self.progress: Progress | None = None
        self._prompts: set[str] = set()
        self.lists_refused = False
        """The server refused ``name IN (...)`` on versions (MLflow 2): by name since."""
        self.prompts_refused = False
        """The server refused the prompts' filter (it has no prompts): not asked again."""

    # Primitives --------------------------------------------------------------------------

    def _search_models(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str = ""
    ) -> tuple[list[ModelState], str | None]:
        raise NotImplementedError

    def _search_versions(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str
    ) -> tuple[list[VersionState], str | None]:
        raise NotImplementedError

    def get_model(self, name: str) -> ModelState | None:
        raise NotImplementedError

    def get_version(self, name: str, version: str) -> VersionState | None:
        raise NotImplementedError

    def run_experiment(self, run_id: str) -> str | None:
        """The id of the experiment a run belongs to; None when the run does not exist (any
        more); RegistryError when it cannot be read. Not a read of the registry: only a
        payload's context (watcher.experiments), so a reader without it says so this way."""
        raise RegistryError(f"{type(self).__name__} does not read runs")

    # Filters -----------------------------------------------------------------------------

    def keeps(self, model: ModelState) -> bool:
        """Whether a model read is one to watch by kind: a prompt only when prompts are read
        (the ``models`` globs are the caller's to apply)."""
        return self.settings.prompts or not is_prompt(model)

    def _keep_model(self, model: ModelState, watches: Watches) -> bool:
        if is_prompt(model):
            self._prompts.add(model.name)
        return self.keeps(model) and watches(model.name)

    def _keep_version(self, version: VersionState, watches: Watches) -> bool:
        if not self.settings.prompts and (
            version.name in self._prompts or version.tags.get(PROMPT_TAG, "").lower() == "true"
        ):
            return False
        return watches(version.name)

    def _searches(self) -> tuple[str, ...]:
        """The filter of each search a read makes: one without (the models, and on servers
        that return them unasked the prompts too), then, when prompts are read, one for them."""
        if self.settings.prompts and not self.prompts_refused:
            return ("", PROMPTS_FILTER)
        return ("",)

    def _each(self, search: Callable[[str], Iterable[list[_Row]]]) -> Iterator[list[_Row]]:
        """The pages of ``search`` with each filter of :meth:`_searches`. A server that refuses
        the prompts' filter has none: its search yields nothing, now and later."""
        for filter_string in self._searches():
            try:
                yield from search(filter_string)
            except RegistryError as exc:
                if not filter_string or not is_refused(exc):
                    raise
                self.prompts_refused = True

    # Full scans --------------------------------------------------------------------------

    def scan_models(
        self, watches: Watches, reuse: Mapping[str, ModelState] | None = None
    ) -> dict[str, ModelState]:
        """Every watched registered model (with its aliases), ordered by name.

        A row equal to the one ``reuse`` (the snapshot) holds is replaced by it as it is read,
        so a scan of an unchanged registry holds no second copy of it.
        """
        models: dict[str, ModelState] = {}
        page_size = min(self.settings.page_size, MODELS_PAGE_MAX)
        for page in self._each(
            lambda f: pages(lambda t: self._search_models(t, NAME_ORDER, page_size, f))
        ):
            for model in page:
                if self._keep_model(model, watches):
                    models[model.name] = _same(reuse, model.name, model)
                    self._report("models", len(models))
        return models

    def scan_versions(
        self,
        watches: Watches,
        models: Iterable[str] | None = None,
        reuse: Mapping[Key, VersionState] | None = None,
    ) -> dict[Key, VersionState]:
        """Every watched version, ordered by name and number (immune to updates and inserts
        between pages; a delete can still hide a row, which the caller confirms).

        A registry that refuses an unfiltered version search (Unity Catalog wants a name) is
        read model by model instead, given the models' names. Rows equal to those in ``reuse``
        are replaced by them, as for scan_models.
        """
        versions: dict[Key, VersionState] = {}
        size = self.settings.page_size
        watches = functools.cache(watches)  # a few model names over 100k rows: match each once
        try:
            for page in self._each(
                lambda f: pages(lambda t: self._search_versions(t, VERSION_ORDER, size, f))
            ):
                for version in page:
                    if self._keep_version(version, watches):
                        keep_newer(versions, _same(reuse, version.key, version))
                        self._report("versions", len(versions))
        except RegistryError as exc:
            if models is None or not is_refused(exc):
                raise
            versions = {}
            for name in models:
                versions.update(self.versions_of(name))
                self._report("versions", len(versions))
        return versions

    def _report(self, what: str, count: int) -> None:
        if self.progress is not None and count % 1000 == 0:
            self.progress(what, count)

    # Incremental reads -------------------------------------------------------------------

    def models_updated_since(self, since_ms: int, watches: Watches) -> list[ModelState]:
        """Models whose last_updated_timestamp is at or after since_ms, newest first."""
        found = self._each(
            lambda f: [
                self._recent(
                    lambda t, size: self._search_models(
                        t, RECENT_ORDER, min(size, MODELS_PAGE_MAX), f
                    ),
                    since_ms,
                )
            ]
        )
        return [m for rows in found for m in rows if self._keep_model(m, watches)]

    def versions_updated_since(self, since_ms: int, watches: Watches) -> list[VersionState]:
        """Versions whose last_updated_timestamp is at or after since_ms, newest first."""
        found = self._each(
            lambda f: [
                self._recent(lambda t, s: self._search_versions(t, RECENT_ORDER, s, f), since_ms)
            ]
        )
        return [v for rows in found for v in rows if self._keep_version(v, watches)]

    def versions_of(self, name: str) -> dict[Key, VersionState]:
        """Every version of one model (a by-name read: about one request).

        A prompt's versions need the prompts' filter: a name known as a prompt is read with it,
        and, while prompts are read, a name whose read found nothing is asked again with it
        (a prompt this reader has not seen in a search yet, after a restart)."""
        prompt = self.settings.prompts and name in self._prompts
        versions = self._by_name(name, prompt=prompt)
        if not versions and self.settings.prompts and not prompt:
            versions = self._by_name(name, prompt=True)
        return versions

    def _by_name(self, name: str, *, prompt: bool) -> dict[Key, VersionState]:
        # MLflow's filter takes either quote and no escapes (a backslash is literal): quote with
        # the one the name does not contain. A name with both cannot be filtered on; its missing
        # versions are then confirmed one by one.
        quote = '"' if "'" in name else "'"
        condition = f"name = {quote}{name}{quote}"
        if prompt:
            if self.prompts_refused:
                return {}
            condition = f"{condition} AND {PROMPTS_FILTER}"
        size = self.settings.page_size
        versions: dict[Key, VersionState] = {}
        try:
            for page in pages(lambda t: self._search_versions(t, BY_NAME_ORDER, size, condition)):
                for version in page:
                    if version.name == name and self._keep_version(version, lambda _n: True):
                        keep_newer(versions, version)
        except RegistryError as exc:
            if not prompt or not is_refused(exc):
                raise
            self.prompts_refused = True  # a server without prompts
        if prompt and versions:
            self._prompts.add(name)
        return versions

    def versions_of_models(self, names: Iterable[str]) -> dict[str, dict[Key, VersionState]]:
        """Every version of each named model: ``name IN (...)`` searches of up to
        NAMES_PER_REQUEST names where the server takes a list (MLflow 3), one by-name read per
        model where it does not (MLflow 2 takes a list for run_id only) or where a name cannot
        be written in a list (a quote or a backslash in it)."""
        found: dict[str, dict[Key, VersionState]] = {name: {} for name in names}
        prompts = self._prompts if self.settings.prompts else set()  # read by name, filtered
        alone = sorted(
            n for n in found if self.lists_refused or n in prompts or any(c in n for c in "'\"\\")
        )
        listed = sorted(found.keys() - set(alone))
        for start in range(0, len(listed), NAMES_PER_REQUEST):
            chunk = listed[start : start + NAMES_PER_REQUEST]
            try:
                rows = self._versions_in(chunk)
            except RegistryError as exc:
                if not is_refused(exc):
                    raise
                self.lists_refused = True
                alone.extend(listed[start:])
                break
            for version in rows:
                if version.name in found and self._keep_version(version, lambda _n: True):
                    keep_newer(found[version.name], version)
        for name in alone:
            found[name] = self.versions_of(name)
        if self.settings.prompts:  # a listed name without versions may be a prompt unseen yet
            for name in [n for n in listed if not found[n]]:
                found[name] = self._by_name(name, prompt=True)
        return found

    def _versions_in(self, names: list[str]) -> list[VersionState]:
        condition = "name IN (" + ", ".join(f"'{n}'" for n in names) + ")"
        size = self.settings.page_size
        rows: list[VersionState] = []
        for page in pages(lambda t: self._search_versions(t, VERSION_ORDER, size, condition)):
            rows.extend(page)
        return rows

    def _recent(
        self,
        fetch: Callable[[str | None, int], tuple[list[Any], str | None]],
        since_ms: int,
    ) -> list[Any]:
        """Page through newest-first results until past since_ms (ties merged by the caller).

        The first page is small (a quiet poll needs no other); a burst of changes is read on
        in pages of page_size.
        """
        items: list[Any] = []
        size = self.settings.page_size
        for page in pages(lambda t: fetch(t, RECENT_FIRST_PAGE if t is None else size)):
            items.extend(x for x in page if x.last_updated_timestamp >= since_ms)
            if not page or page[-1].last_updated_timestamp < since_ms:
                break
        return items


_Row = TypeVar("_Row")


def pages(
    fetch: Callable[[str | None], tuple[list[_Row], str | None]],
) -> Iterator[list[_Row]]:
    """Every page of a paged search, following its tokens: the one loop that guards against a
    server handing out the same token twice (an endless read otherwise)."""
    token: str | None = None
    seen_tokens: set[str] = set()
    while True:
        page, token = fetch(token)
        yield page
        if not token:
            return
        if token in seen_tokens:
            raise RegistryError("MLflow returned the same page token twice; the read is abandoned")
        seen_tokens.add(token)


def keep_newer(versions: dict[Key, VersionState], version: VersionState) -> None:
    """Merge one row read into a version map: a duplicate (offset paging under concurrent
    writes, or a re-read of the same row) keeps the newer state, and a row with another
    creation time (the model was deleted and created again) replaces the old one."""
    seen = versions.get(version.key)
    if (
        seen is None
        or seen.creation_timestamp != version.creation_timestamp
        or version.last_updated_timestamp >= seen.last_updated_timestamp
    ):
        versions[version.key] = version


_T = TypeVar("_T")


def _same(reuse: Mapping[Any, _T] | None, key: Any, fresh: _T) -> _T:
    """The snapshot's own object when the row read equals it (the fresh one is dropped)."""
    if reuse is not None:
        known = reuse.get(key)
        if known is not None and known == fresh:
            return known
    return fresh


def now_ms() -> int:
    return int(time.time() * 1000)
