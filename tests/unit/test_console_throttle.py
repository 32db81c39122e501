"""Failed sign-ins throttled per client address: the counting (with a fake clock), and the
console refusing an address over the limit, even with the right token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console_helpers import TOKEN, Setup, app_for, csrf_of, populate
from watcher.console import throttle as throttle_module
from watcher.console.throttle import LoginThrottle
from watcher.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_held_back_after_the_limit_until_its_oldest_failure_expires() -> None:
    clock = Clock()
    throttle = LoginThrottle(limit=3, window=60.0, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1")
        clock.now += 10
    assert throttle.retry_after("10.0.0.1") is None
    throttle.failed("10.0.0.1")  # the third, at 1020
    assert throttle.retry_after("10.0.0.1") == pytest.approx(40.0)  # the first goes at 1060
    assert throttle.retry_after("10.0.0.2") is None  # another address is not held back
    clock.now = 1060.0
    assert throttle.retry_after("10.0.0.1") is None


def test_a_success_clears_the_address_and_memory_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    throttle = LoginThrottle(limit=2, window=60.0, clock=Clock())
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.retry_after("a") is not None
    throttle.succeeded("a")
    assert throttle.retry_after("a") is None
    monkeypatch.setattr(throttle_module, "MAX_ADDRESSES", 3)
    for address in ("b", "c", "d", "e"):
        throttle.failed(address)
        throttle.failed(address)
    assert throttle.retry_after("b") is None  # the oldest address was forgotten
    assert throttle.retry_after("e") is not None


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with Store.open(tmp_path / "state.db") as store:
        yield populate(store)


def test_the_console_refuses_an_address_after_ten_failed_sign_ins(setup: Setup) -> None:
    client = app_for(setup).test_client()
    for _ in range(throttle_module.LIMIT):
        answer = client.post("/login", data={"token": "guess", "csrf_token": csrf_of(client)})
        assert answer.status_code == 401
    answer = client.post("/login", data={"token": TOKEN, "csrf_token": csrf_of(client)})
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in answer.get_data(as_text=True)
    assert client.get("/").status_code == 302  # nobody signed in
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/", headers=bearer).status_code == 302  # nor by bearer token


def test_wrong_bearer_tokens_count_as_failed_sign_ins(setup: Setup) -> None:
    client = app_for(setup).test_client()
    for _ in range(throttle_module.LIMIT):
        assert client.get("/", headers={"Authorization": "Bearer guess"}).status_code == 302
    answer = client.post("/login", data={"token": TOKEN, "csrf_token": csrf_of(client)})
    assert answer.status_code == 429
