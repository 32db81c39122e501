"""The reader's algorithms (watcher.scan) over fake paged searches (the REST and client
adapters are tested against real servers in tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import offset_page
from watcher.errors import RegistryError
from watcher.model import ModelState, VersionState
from watcher.scan import (
    PROMPT_TAG,
    RECENT_FIRST_PAGE,
    ReaderSettings,
    ScanReader,
    Watches,
    is_refused,
)


def model(name: str, updated: int = 1, **tags: str) -> ModelState:
    return ModelState(name=name, creation_timestamp=1, last_updated_timestamp=updated, tags=tags)


def version(name: str, number: str, updated: int = 1) -> VersionState:
    return VersionState(
        name=name, version=number, creation_timestamp=1, last_updated_timestamp=updated
    )


class FakeReader(ScanReader):
    def __init__(
        self,
        models: list[ModelState],
        versions: list[VersionState],
        *,
        refuse_unfiltered: bool = False,
        duplicate_page: bool = False,
        page_size: int = 2,
    ) -> None:
        super().__init__(ReaderSettings("http://x", "http://x", page_size=page_size))
        self.models = models
        self.versions = versions
        self.refuse_unfiltered = refuse_unfiltered
        self.duplicate_page = duplicate_page
        self.calls: list[tuple[str, tuple[str, ...], str]] = []

    _page = staticmethod(offset_page)  # an attribute, so a test can watch the page sizes

    def _search_models(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str = ""
    ) -> tuple[list[ModelState], str | None]:
        self.calls.append(("models", tuple(order_by), filter_string))
        rows = sorted(self.models, key=lambda m: m.name)
        if order_by == ["last_updated_timestamp DESC"]:
            rows = sorted(self.models, key=lambda m: -m.last_updated_timestamp)
        return self._page(rows, page_token, page_size)

    def _search_versions(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str
    ) -> tuple[list[VersionState], str | None]:
        self.calls.append(("versions", tuple(order_by), filter_string))
        if not filter_string and self.refuse_unfiltered:
            raise RegistryError("a name is required", code="INVALID_PARAMETER_VALUE", status=400)
        rows = sorted(self.versions, key=lambda v: (v.name, int(v.version)))
        if filter_string:
            wanted = filter_string.split("'")[1]
            rows = [v for v in rows if v.name == wanted]
        if order_by == ["last_updated_timestamp DESC"]:
            rows = sorted(self.versions, key=lambda v: -v.last_updated_timestamp)
        page, token = self._page(rows, page_token, page_size)
        if self.duplicate_page and page_token == "2":
            page = [*rows[1:2], *page]  # offset paging under a concurrent insert
        return page, token


def read_all(
    reader: ScanReader, watches: Watches
) -> tuple[dict[str, ModelState], dict[tuple[str, str], VersionState]]:
    """A complete read: every watched model, then every watched version."""
    models = reader.scan_models(watches)
    return models, reader.scan_versions(watches, models)


def test_full_read_pages_through_everything_and_merges_duplicates() -> None:
    versions = [version("a", str(i)) for i in range(1, 6)]
    reader = FakeReader([model("a")], versions, duplicate_page=True)
    _, read = read_all(reader, lambda _name: True)
    assert sorted(read) == [("a", str(i)) for i in range(1, 6)]
    assert reader.stats.requests == 0  # counted by the adapters, not the algorithm


def test_prompts_are_not_models_to_watch() -> None:
    reader = FakeReader(
        [model("a"), model("p", 1, **{PROMPT_TAG: "true"})], [version("a", "1"), version("p", "1")]
    )
    models, versions = read_all(reader, lambda _name: True)
    assert list(models) == ["a"]
    assert list(versions) == [("a", "1")]


def test_globs_filter_models_and_versions() -> None:
    reader = FakeReader(
        [model("fraud"), model("churn")], [version("fraud", "1"), version("churn", "1")]
    )
    models, versions = read_all(reader, lambda name: name.startswith("fraud"))
    assert list(models) == ["fraud"]
    assert list(versions) == [("fraud", "1")]


def test_recent_reads_stop_past_the_watermark() -> None:
    versions = [version("a", str(i), updated=i * 10) for i in range(1, 200)]
    reader = FakeReader([model("a")], versions, page_size=50)
    recent = reader.versions_updated_since(1_950, lambda _name: True)
    assert [v.last_updated_timestamp for v in recent] == [1_990, 1_980, 1_970, 1_960, 1_950]
    assert len(reader.calls) == 1, "one small page answers a quiet poll"


def test_a_burst_of_changes_is_read_in_full() -> None:
    versions = [version("a", str(i), updated=1_000 + i) for i in range(1, 301)]
    reader = FakeReader([model("a")], versions, page_size=100)
    recent = reader.versions_updated_since(1_001, lambda _name: True)
    assert len(recent) == 300


def test_a_refused_unfiltered_scan_is_read_model_by_model() -> None:
    versions = [version("a", "1"), version("a", "2"), version("b", "1")]
    reader = FakeReader([model("a"), model("b")], versions, refuse_unfiltered=True)
    _, read = read_all(reader, lambda _name: True)
    assert sorted(read) == [("a", "1"), ("a", "2"), ("b", "1")]
    assert ("versions", ("version_number ASC",), "name = 'b'") in reader.calls


def test_a_refused_scan_without_model_names_still_fails() -> None:
    reader = FakeReader([model("a")], [version("a", "1")], refuse_unfiltered=True)
    with pytest.raises(RegistryError):
        reader.scan_versions(lambda _name: True)


def test_a_name_with_a_quote_is_quoted_with_the_other_quote() -> None:
    # MLflow's filter has no escapes (measured on 2.9.2, 2.22.5 and 3.17.2).
    reader = FakeReader([], [])
    reader.versions_of("it's")
    assert reader.calls[-1][2] == 'name = "it\'s"'
    reader.versions_of("back\\slash")
    assert reader.calls[-1][2] == "name = 'back\\slash'"


@pytest.mark.parametrize(
    ("code", "status", "refused"),
    [
        ("INVALID_PARAMETER_VALUE", 400, True),
        ("INVALID_PARAMETER_VALUE", None, True),
        (None, 400, True),
        (None, 501, True),
        (None, 503, False),
        ("RESOURCE_DOES_NOT_EXIST", 404, False),
        (None, None, False),
    ],
)
def test_one_predicate_tells_a_refused_read_from_a_failed_one(
    code: str | None, status: int | None, refused: bool
) -> None:
    assert is_refused(RegistryError("x", code=code, status=status)) is refused


class LoopingReader(FakeReader):
    """A server that hands out the same page token again."""

    def _search_models(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str = ""
    ) -> tuple[list[ModelState], str | None]:
        page, _ = super()._search_models(None, order_by, page_size, filter_string)
        return page, "again"

    def _search_versions(
        self, page_token: str | None, order_by: list[str], page_size: int, filter_string: str
    ) -> tuple[list[VersionState], str | None]:
        page, _ = super()._search_versions(None, order_by, page_size, filter_string)
        return page, "again"


@pytest.mark.parametrize(
    "read",
    [
        lambda r: r.scan_models(lambda _n: True),
        lambda r: r.scan_versions(lambda _n: True),
        lambda r: r.versions_updated_since(0, lambda _n: True),
        lambda r: r.models_updated_since(0, lambda _n: True),
        lambda r: r.versions_of("a"),
    ],
    ids=["models-scan", "versions-scan", "recent-versions", "recent-models", "by-name"],
)
def test_a_page_token_handed_out_twice_abandons_the_read(read: Any) -> None:
    reader = LoopingReader([model("a", updated=5)], [version("a", "1", updated=5)])
    with pytest.raises(RegistryError, match="same page token twice"):
        read(reader)
    assert len(reader.calls) == 2


def test_a_recent_read_starts_with_a_small_page_then_reads_on_in_big_ones() -> None:
    versions = [version("a", str(i), updated=1_000 + i) for i in range(1, 301)]
    reader = FakeReader([model("a")], versions, page_size=100)
    sizes = []
    original = FakeReader._page

    def record(rows: list[Any], token: str | None, size: int) -> tuple[list[Any], str | None]:
        sizes.append(size)
        return original(rows, token, size)

    reader._page = record
    reader.versions_updated_since(1_001, lambda _name: True)
    assert sizes[0] == RECENT_FIRST_PAGE
    assert set(sizes[1:]) == {100}
