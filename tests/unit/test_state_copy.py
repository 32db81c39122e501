"""`state copy`: a whole state copied from a SQLite file into another store (a PostgreSQL
namespace above all), the same on both sides afterwards, and the copies it refuses."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKENDS, open_store
from tests.pg import PgDatabase
from tests.store_helpers import attempts, deliveries_for, due_deliveries, event, queue
from watcher.cli import main
from watcher.detect import snapshot_delta
from watcher.errors import LockError, StoreError
from watcher.model import ModelState, Observation, VersionState
from watcher.store import (
    DEAD,
    DELIVERED,
    PENDING,
    Attempt,
    PgSettings,
    Store,
    copy_state,
    open_sqlite_source,
)

NOW = 1_700_000_000.0
NAMESPACE = "copied"


def observation() -> Observation:
    models = {
        name: ModelState(name, 1, 5, tags={"team": name}, aliases={"champion": "2"})
        for name in ("fraud", "churn")
    }
    versions = [
        VersionState(m, str(v), v, v + 2, "Production" if v == 2 else "Archived", run_id=f"r{v}")
        for m in models
        for v in range(1, 4)
    ]
    return Observation(models=models, versions={v.key: v for v in versions}, read_at=77)


def seed(store: Store) -> None:
    """A state that ran for a while: a baseline, events queued for two webhooks over two
    models, and deliveries delivered, dead, retried and never tried."""
    store.commit_cycle(
        snapshot_delta(None, observation()),
        [],
        [],
        {"baseline_at": "2023-11-14T22:13:20Z", "snapshot_read_at": "77", "registry": "r"},
        now=NOW,
    )
    events = [event(m, str(v), "Staging", ts=v) for v in (1, 2, 3) for m in ("fraud", "churn")]
    rows = deliveries_for(events, "deploy", "audit")
    queue(store, events, rows)
    outcomes = [(DELIVERED, 200, None), (DEAD, 500, None), (PENDING, None, "connection reset")]
    for row, (status, code, error) in zip(rows[::3], outcomes * 4, strict=False):
        request = f'{{"method": "POST", "url": "http://r/{row.webhook}"}}'
        attempt = Attempt(row.delivery_id, NOW + 1, code, error, 12.5, "nope", request)
        store.record_attempt(attempt, status=status, next_attempt_at=NOW + 60)
    store.set_meta({"last_poll_result": "ok"})


def every_attempt(store: Store) -> list[Attempt]:
    return [a for row in store.list_deliveries() for a in attempts(store, row.delivery_id)]


def every_request(store: Store) -> dict[str, Any]:
    """The last request of every row (None before its first attempt)."""
    details = [store.delivery_detail(row.delivery_id) for row in store.list_deliveries()]
    return {d.row.delivery_id: d.request for d in details if d is not None}


def assert_same_state(source: Store, target: Store) -> None:
    assert target.load_snapshot() == source.load_snapshot()
    assert target.list_deliveries() == source.list_deliveries()
    assert every_attempt(target) == every_attempt(source)
    assert every_request(target) == every_request(source)
    assert target.all_meta() == source.all_meta()
    assert due_deliveries(target, NOW + 3600) == due_deliveries(source, NOW + 3600)


@pytest.fixture
def sqlite_source(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "source" / "state.db") as store:
        seed(store)
        yield store


@pytest.fixture
def pg_target(pg_db: PgDatabase) -> Iterator[Store]:
    with Store.connect(PgSettings(pg_db.url, NAMESPACE, pg_db.password)) as store:
        yield store


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_copy_holds_the_same_state(
    sqlite_source: Store, kind: str, request: pytest.FixtureRequest
) -> None:
    with open_store(kind, request, Store) as target:
        report = copy_state(sqlite_source, target, batch=4)
        assert_same_state(sqlite_source, target)
    assert report.rows["snapshot_versions"] == 6
    assert report.rows["deliveries"] == 12
    assert report.rows["attempts"] == 4
    requests = every_request(sqlite_source)
    assert sum(r is not None for r in requests.values()) == 4


def test_a_copy_from_postgresql_holds_the_same_state(
    sqlite_source: Store, pg_target: Store, tmp_path: Path
) -> None:
    copy_state(sqlite_source, pg_target)
    with Store.open(tmp_path / "back" / "state.db") as back:
        copy_state(pg_target, back)
        assert_same_state(pg_target, back)
        assert_same_state(sqlite_source, back)


def test_the_copy_goes_on_after_the_copied_rows(sqlite_source: Store, pg_target: Store) -> None:
    """New deliveries and attempts get ids after the copied ones: a lane keeps its order and
    no id is taken twice."""
    copy_state(sqlite_source, pg_target)
    later = event("fraud", "1", "Production", ts=99)
    queue(pg_target, [later], deliveries_for([later], "deploy"), now=NOW + 10)
    (new,) = [r for r in pg_target.list_deliveries() if r.event_id == later.event_id]
    pg_target.record_attempt(Attempt(new.delivery_id, NOW + 11, 200, None, 1.0), status=DELIVERED)

    assert attempts(pg_target, new.delivery_id)[0].status_code == 200
    heads = due_deliveries(pg_target, NOW + 3600)
    (fraud_deploy,) = [d for d in heads if d.event.model_name == "fraud" and d.webhook == "deploy"]
    assert fraud_deploy.event.event_id == event("fraud", "2", "Staging", ts=2).event_id


def test_a_pending_delivery_copied_is_not_claimed(sqlite_source: Store, pg_target: Store) -> None:
    """A claim belongs to the lease of the state it was made in: none is copied."""
    copy_state(sqlite_source, pg_target)
    claimed = pg_target.backend.query(
        "SELECT COUNT(*) AS n FROM deliveries WHERE claimed_epoch IS NOT NULL"
    )
    assert claimed[0]["n"] == 0


# ------------------------------------------------------------------ refusals


def test_a_target_holding_a_state_is_refused_and_left_as_it_was(
    sqlite_source: Store, pg_target: Store
) -> None:
    pg_target.set_meta({"baseline_at": "elsewhere"})
    with pytest.raises(StoreError, match=r"already holds a state .*--namespace"):
        copy_state(sqlite_source, pg_target)
    assert pg_target.all_meta() == {"baseline_at": "elsewhere"}
    assert pg_target.list_deliveries() == []


def test_a_target_a_replica_leads_is_refused(sqlite_source: Store, pg_target: Store) -> None:
    assert pg_target.acquire("replica-a", 30) is not None
    with pytest.raises(StoreError, match=r"a watcher \(replica-a\) is running"):
        copy_state(sqlite_source, pg_target)
    assert pg_target.list_deliveries() == []


def test_a_source_without_a_snapshot_is_refused(tmp_path: Path, pg_target: Store) -> None:
    with (
        Store.open(tmp_path / "new.db") as empty,
        pytest.raises(StoreError, match="no snapshot yet"),
    ):
        copy_state(empty, pg_target)


def test_a_missing_source_is_refused_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "state.db"
    with pytest.raises(StoreError, match="no state file at"):
        open_sqlite_source(path)
    assert not path.parent.exists()


def test_a_file_that_is_no_state_is_refused_and_left_alone(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, but long enough to have a header\n" * 4)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    for path in (text, other):
        with pytest.raises(StoreError, match="is not a watcher state file"):
            open_sqlite_source(path)
    assert other.read_bytes() == before


def test_a_source_a_running_watcher_holds_is_refused(sqlite_source: Store) -> None:
    path = Path(sqlite_source.location)
    with pytest.raises(LockError, match="stop it first"):
        open_sqlite_source(path)


# ------------------------------------------------------------------ the command


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    argv = sys.argv
    sys.argv = ["mlflow-watcher", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def copy_into(
    source: Path, url: str, *more: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``state copy --from source --to url`` and ``more``."""
    return run_cli("state", "copy", "--from", str(source), "--to", url, *more, capsys=capsys)


@pytest.fixture
def source_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A seeded, closed SQLite state, and a shell with no config of its own."""
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        seed(store)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WATCHER_CONFIG", raising=False)
    return path


def test_the_command_copies_and_says_what_next(
    source_file: Path,
    pg_db: PgDatabase,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PGPASSWORD", pg_db.password)
    code, out, err = copy_into(source_file, pg_db.url, "--namespace", "team_a", capsys=capsys)
    assert (code, err) == (0, "")
    assert "snapshot_versions          6" in out
    assert "deliveries                12" in out
    assert f'url = "{pg_db.url}"' in out
    assert 'namespace = "team_a"' in out
    with (
        Store.open(source_file) as source,
        Store.connect(PgSettings(pg_db.url, "team_a", pg_db.password)) as target,
    ):
        assert_same_state(source, target)


def test_the_command_never_shows_a_password(
    source_file: Path, pg_db: PgDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = copy_into(source_file, pg_db.url_with_password, capsys=capsys)
    assert code == 0
    assert "password in --to shows in the process list" in err
    assert pg_db.password not in out + err
    assert f'url = "{pg_db.url}"' in out


def test_the_command_refuses_a_second_copy_in_one_line(
    source_file: Path, pg_db: PgDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    assert copy_into(source_file, pg_db.url_with_password, capsys=capsys)[0] == 0
    code, out, err = copy_into(source_file, pg_db.url_with_password, capsys=capsys)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 2  # the password warning, then the refusal
    assert "already holds a state" in err
    assert pg_db.password not in err


def test_the_command_says_an_unreachable_target_in_one_line(
    source_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://watcher:s3cret-pw@127.0.0.1:1/nothing"
    code, out, err = copy_into(source_file, url, capsys=capsys)
    assert code == 1
    assert out == ""
    refusal = err.splitlines()[-1]
    assert refusal.startswith("mlflow-watcher: error: cannot use PostgreSQL state")
    assert "s3cret-pw" not in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "say where to copy to"),
        (("--to", "mysql://db/x"), "a postgresql:// URL"),
        (("--to", "postgresql://w@db/x", "--namespace", "Bad-Name"), "--namespace 'Bad-Name'"),
    ],
)
def test_the_command_refuses_bad_usage(
    source_file: Path, args: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli("state", "copy", "--from", str(source_file), *args, capsys=capsys)
    assert code == 2
    assert says in err


def test_the_command_refuses_a_missing_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gone.db"
    code, _, err = copy_into(missing, "postgresql://w@127.0.0.1:1/x", capsys=capsys)
    assert code == 1
    assert err.strip() == f"mlflow-watcher: error: no state file at {str(missing)!r}"
    assert not missing.exists()
