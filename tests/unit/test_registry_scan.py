"""The reader's algorithms (watcher.scan) over fake paged searches (the REST and client
adapters are tested against real servers in tests/e2e)."""

from __future__ import annotations

import threading
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
    pages,
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
        self, page_token: str | None, order_by: list[str], page_size: int
    ) -> tuple[list[ModelState], str | None]:
        self.calls.append(("models", tuple(order_by), ""))
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
        self, page_token: str | None, order_by: list[str], page_size: int
    ) -> tuple[list[ModelState], str | None]:
        page, _ = super()._search_models(None, order_by, page_size)
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


# Prefetching paging ------------------------------------------------------------------------


class PagedServer:
    """A paged search answering pages "p0", "p1", ... with the next token, recording the tokens
    asked for and how many requests were ever in flight at once."""

    def __init__(self, count: int, fail_at: str | None = None, repeat_at: str | None = None):
        self.count = count
        self.fail_at = fail_at
        self.repeat_at = repeat_at
        self.asked: list[str | None] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        self.gate: dict[str | None, threading.Event] = {}  # a request waits for its event
        self.sent: dict[str | None, threading.Event] = {}  # set when a request is received

    def __call__(self, token: str | None) -> tuple[str, str | None]:
        with self.lock:
            self.asked.append(token)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.sent.setdefault(token, threading.Event()).set()
        try:
            if token in self.gate:
                assert self.gate[token].wait(10), "the caller never let the request finish"
            if token is not None and token == self.fail_at:
                raise RegistryError(f"page {token} failed")
            index = 0 if token is None else int(token)
            if token is not None and token == self.repeat_at:
                return f"p{index}", token
            following = str(index + 1) if index + 1 < self.count else None
            return f"p{index}", following
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.mark.parametrize("prefetch", [False, True])
def test_paging_yields_every_page_in_order(prefetch: bool) -> None:
    server = PagedServer(4)
    assert list(pages(server, prefetch)) == ["p0", "p1", "p2", "p3"]
    assert server.asked == [None, "1", "2", "3"]
    assert server.most_in_flight == 1


def test_prefetch_asks_for_the_next_page_while_the_caller_holds_the_current_one() -> None:
    server = PagedServer(3)
    read = pages(server, prefetch=True)
    assert next(read) == "p0"
    # The caller has not asked for page 1 yet, and the request for it is already sent.
    assert server.sent.setdefault("1", threading.Event()).wait(10)
    assert list(read) == ["p1", "p2"]
    assert server.most_in_flight == 1


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize(
    ("server", "error", "asked"),
    [
        # A failed request raises when the caller asks for its page; nothing is asked after it.
        (lambda: PagedServer(5, fail_at="2"), "page 2 failed", [None, "1", "2"]),
        # A repeated token is never sent again; the read is abandoned after the page giving it.
        (lambda: PagedServer(5, repeat_at="1"), "same page token twice", [None, "1"]),
    ],
    ids=["failed-page", "repeated-token"],
)
def test_a_read_fails_at_the_page_it_failed_on(
    prefetch: bool, server: Any, error: str, asked: list[str | None]
) -> None:
    search = server()
    got: list[str] = []
    with pytest.raises(RegistryError, match=error):
        got.extend(pages(search, prefetch))  # keeps the pages read before the error
    assert got == ["p0", "p1"]
    assert search.asked == asked


def test_leaving_a_prefetching_read_early_waits_for_the_request_in_flight() -> None:
    server = PagedServer(5)
    server.gate["1"] = threading.Event()
    read = pages(server, prefetch=True)
    assert next(read) == "p0"
    assert server.sent.setdefault("1", threading.Event()).wait(10)
    server.gate["1"].set()
    read.close()  # as a caller breaking out of its loop does
    assert server.in_flight == 0
    assert server.asked == [None, "1"]  # its answer dropped, nothing asked for after it


class PrefetchingReader(FakeReader):
    prefetch = True


def test_a_prefetching_reader_reads_what_a_plain_one_does() -> None:
    versions = [version("a", str(i)) for i in range(1, 6)] + [version("b", "1")]
    models = [model("a"), model("b"), model("c")]
    plain = FakeReader(models, versions, duplicate_page=True)
    prefetching = PrefetchingReader(models, versions, duplicate_page=True)
    assert read_all(prefetching, lambda _n: True) == read_all(plain, lambda _n: True)
    assert prefetching.versions_of("a") == plain.versions_of("a")
    assert prefetching.calls == plain.calls
