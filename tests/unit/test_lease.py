"""The leader lease of a shared state and this replica's side of it, on a real PostgreSQL.

What is asserted is the mechanism (who holds which epoch, what the fence lets through, in what
order two transactions finish), never how long anything took.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.harness import wait_for
from tests.helpers import RecordingLog
from tests.netproxy import TcpProxy
from tests.pg import PgBouncer, PgCluster, PgDatabase
from tests.store_helpers import deliveries, deliveries_for, event, queue
from watcher.config.types import MAX_LEASE, MIN_LEASE
from watcher.leader import Leadership, LeaseTimings, Role
from watcher.store import PENDING, Attempt, LeaseLost, PgSettings, StateUnavailable, Store, Token
from watcher.store.database import Tx

NAMESPACE = "watcher_test"
LONG = 60.0
"""A lease no test outlives: it ends only when a test expires it."""


def connect(url: str, db: PgDatabase) -> Store:
    return Store.connect(PgSettings(url=url, password=db.password, namespace=NAMESPACE))


@pytest.fixture(params=["postgresql", "pgbouncer"])
def state_url(request: pytest.FixtureRequest, pg_db: PgDatabase) -> str:
    """The state straight on PostgreSQL, or through PgBouncer in transaction pooling mode:
    the lease and its fence rely on no session state."""
    if request.param == "pgbouncer":
        bouncer: PgBouncer = request.getfixturevalue("pg_bouncer")
        return bouncer.url(pg_db.name)
    return pg_db.url


@pytest.fixture
def store(state_url: str, pg_db: PgDatabase) -> Iterator[Store]:
    with connect(state_url, pg_db) as opened:
        yield opened


@pytest.fixture
def other(state_url: str, pg_db: PgDatabase) -> Iterator[Store]:
    """A second replica's store on the same state."""
    with connect(state_url, pg_db) as opened:
        yield opened


def expire(store: Store) -> None:
    """The lease runs out now, as the database's clock would have it."""
    with store.backend.transaction() as tx:
        tx.execute("UPDATE leader SET expires_at = clock_timestamp() - interval '1 second'")


def history(store: Store) -> list[tuple[int, str, str | None]]:
    rows = store.backend.query("SELECT epoch, holder, ended_how FROM leader_history ORDER BY 1")
    return [(int(r["epoch"]), str(r["holder"]), r["ended_how"]) for r in rows]


def attempt(delivery_id: str) -> Attempt:
    return Attempt(delivery_id, 1_700_000_100.0, 200, None, 5, "ok")


# ------------------------------------------------------------------ acquire, renew, release


def test_a_free_lease_is_taken_once_and_then_refused_to_others(store: Store) -> None:
    first = store.acquire("a", LONG)
    assert first == Token("a", 1)
    assert store.acquire("b", LONG) is None
    assert store.acquire("a", LONG) is None, "holding it is not taking it again"
    info = store.lease_info()
    assert (info.holder, info.epoch, info.valid) == ("a", 1, True)
    assert info.acquired_at is not None
    assert info.expires_at is not None


def test_renew_keeps_only_its_own_unexpired_lease(store: Store) -> None:
    token = store.acquire("a", LONG)
    assert token is not None
    assert store.renew(token, LONG)
    assert not store.renew(Token("b", token.epoch), LONG), "another holder"
    assert not store.renew(Token("a", token.epoch + 1), LONG), "another epoch"
    expire(store)
    assert not store.renew(token, LONG), "an expired lease is not brought back"
    assert store.lease_info().valid is False


def test_release_frees_the_lease_for_another_at_once(store: Store) -> None:
    token = store.acquire("a", LONG)
    assert token is not None
    assert store.release(token)
    assert not store.release(token), "released once"
    info = store.lease_info()
    assert info.valid is False
    assert info.expires_at is None
    assert store.acquire("b", LONG) == Token("b", 2)
    assert history(store) == [(1, "a", "released"), (2, "b", None)]


def test_the_epoch_only_grows_across_expiry_release_and_reacquisition(store: Store) -> None:
    epochs = []
    for holder in ("a", "b", "a", "a", "c"):
        token = store.acquire(holder, LONG)
        assert token is not None
        epochs.append(token.epoch)
        if holder == "a":
            store.release(token)
        else:
            expire(store)
    assert epochs == [1, 2, 3, 4, 5]
    assert [e for e, _, _ in history(store)] == epochs
    assert [how for _, _, how in history(store)] == [
        "released",
        "expired",
        "released",
        "released",
        None,
    ]


# ------------------------------------------------------------------------------ the fence


@pytest.fixture
def lost(store: Store, other: Store) -> Store:
    """``store`` led epoch 1 and lost it: ``other`` took the lease over at epoch 2. One
    pending delivery is queued (by the new leader)."""
    token = store.acquire("a", LONG)
    assert token is not None
    store.fence_token = token
    expire(store)
    taken = other.acquire("b", LONG)
    assert taken == Token("b", 2)
    other.fence_token = taken
    events = [event("m", "1")]
    queue(other, events, deliveries_for(events, "hook"))
    return store


def test_a_replica_that_lost_the_lease_writes_nothing(lost: Store, other: Store) -> None:
    before_rows = deliveries(other)
    (row,) = before_rows
    before_meta = other.all_meta()
    late = [event("m", "2")]
    with pytest.raises(LeaseLost):
        queue(lost, late, deliveries_for(late, "hook"))
    with pytest.raises(LeaseLost):
        lost.claim(row.delivery_id)
    with pytest.raises(LeaseLost):
        lost.record_attempt(attempt(row.delivery_id), status="delivered")
    with pytest.raises(LeaseLost):
        lost.set_meta({"late": "yes"})
    assert deliveries(other) == before_rows
    assert other.all_meta() == before_meta
    assert other.recent_events() == [event("m", "1")]
    assert other.backend.query("SELECT count(*) AS n FROM attempts")[0]["n"] == 0


def test_an_expired_lease_fences_its_holder_before_anyone_takes_it(store: Store) -> None:
    token = store.acquire("a", LONG)
    assert token is not None
    store.fence_token = token
    queue(store, [], [])
    expire(store)
    with pytest.raises(LeaseLost):
        store.set_meta({"late": "yes"})
    assert store.get_meta("late") is None


def test_a_standby_that_never_led_writes_nothing(store: Store) -> None:
    store.fence_token = Token("never", 0)
    with pytest.raises(LeaseLost):
        queue(store, [event("m", "1")], [])
    assert store.recent_events() == []


def test_the_new_leader_requeues_what_an_older_epoch_left_in_flight(
    store: Store, other: Store
) -> None:
    old = store.acquire("a", LONG)
    assert old is not None
    store.fence_token = old
    events = [event("m", "1"), event("m", "2"), event("n", "1")]
    queue(store, events, deliveries_for(events, "hook"))
    in_flight, settled, untouched = (r.delivery_id for r in deliveries(store))
    assert store.claim(in_flight)
    assert store.claim(settled)
    store.record_attempt(attempt(settled), status="delivered")
    assert store.requeue_in_flight() == 0, "nothing older than its own epoch"

    expire(store)
    new = other.acquire("b", LONG)
    assert new is not None
    other.fence_token = new
    assert other.requeue_in_flight() == 1
    rows = {r.delivery_id: r for r in deliveries(other)}
    assert rows[in_flight].status == PENDING
    assert rows[untouched].status == PENDING
    claimed = other.backend.query("SELECT delivery_id, claimed_epoch FROM deliveries")
    assert {r["delivery_id"]: r["claimed_epoch"] for r in claimed} == {
        in_flight: None,
        settled: old.epoch,
        untouched: None,
    }
    assert other.claim(in_flight), "the same delivery id, offered again"


def test_a_takeover_waits_until_the_fenced_transaction_has_committed(
    store: Store, other: Store, pg_cluster: PgCluster, pg_db: PgDatabase
) -> None:
    """The fence's share lock on the lease row: a replica taking over blocks until the old
    leader's write has committed, so no write of an old epoch lands after a newer one began."""
    order: list[str] = []
    with fenced_by_a_short_lease(store) as tx:
        tx.execute("INSERT INTO meta (key, value) VALUES ('old_epoch', 'wrote')")
        wait_for(lambda: not other.lease_info().valid, 60, "the short lease to run out")
        taker = threading.Thread(target=lambda: order.append(f"took {other.acquire('b', LONG)}"))
        taker.start()
        wait_until_blocked(pg_cluster, pg_db)
        order.append("old leader commits")
    taker.join(30)
    assert order == ["old leader commits", f"took {Token('b', 2)}"]
    assert other.get_meta("old_epoch") == "wrote"


@contextlib.contextmanager
def fenced_by_a_short_lease(store: Store) -> Iterator[Tx]:
    """A fenced transaction, open, of a leader whose lease will run out in a few seconds (a
    longer lease when a loaded machine let the first run out before the fence was passed)."""
    for lease in (2.0, 5.0, 15.0):
        token = store.acquire("a", lease)
        assert token is not None
        store.fence_token = token
        try:
            with store._fenced() as tx:
                yield tx
                return
        except LeaseLost:
            wait_for(lambda: not store.lease_info().valid, 60, "the lease to run out")
    raise AssertionError("the fence never passed")


def wait_until_blocked(cluster: PgCluster, db: PgDatabase) -> None:
    """Until a session of ``db`` waits on a lock."""

    def blocked() -> bool:
        rows = cluster.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            params=[db.name],
        )
        return int(rows[0][0]) > 0

    wait_for(blocked, 30, "the takeover to wait on the lease row's lock", interval=0.02)


# ------------------------------------------------------------------------------ Leadership


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


TIMINGS = LeaseTimings(lease=LONG, renew_every=20.0, standby_retry=0.5)


def test_leadership_acquires_renews_and_releases_with_its_log_lines(store: Store) -> None:
    clock, log = Clock(), RecordingLog()
    acquired: list[Token] = []
    leader = Leadership(
        store, TIMINGS, log, holder="a", monotonic=clock, on_acquired=acquired.append
    )
    assert leader.role is Role.STANDBY
    assert not leader.trusted()
    assert store.fence_token == Token("a", 0)

    wait = leader.step()
    assert leader.is_leader
    assert leader.trusted()
    assert wait == pytest.approx(TIMINGS.renew_every)
    assert acquired == [Token("a", 1)]
    assert store.fence_token == Token("a", 1)
    assert log.events("leader.acquired") == [{"epoch": 1, "holder": "a", "lease_s": LONG}]

    clock.now += TIMINGS.renew_every
    assert leader.step() == TIMINGS.renew_every
    assert leader.is_leader
    assert leader.trusted()

    leader.release()
    assert leader.role is Role.STANDBY
    assert not leader.trusted()
    assert log.events("leader.released") == [{"epoch": 1, "holder": "a"}]
    assert history(store) == [(1, "a", "released")]


def test_leadership_notices_a_lease_taken_over_and_stands_by(store: Store, other: Store) -> None:
    clock, log = Clock(), RecordingLog()
    leader = Leadership(store, TIMINGS, log, holder="a", monotonic=clock)
    leader.step()
    expire(store)
    assert other.acquire("b", LONG) == Token("b", 2)

    clock.now += TIMINGS.renew_every
    assert leader.step() == TIMINGS.standby_retry
    assert leader.role is Role.STANDBY
    assert not leader.trusted()
    (lost_line,) = log.events("leader.lost")
    assert lost_line["epoch"] == 1
    assert "another replica" in lost_line["reason"]
    with pytest.raises(LeaseLost):
        store.set_meta({"late": "yes"})
    assert leader.step() == TIMINGS.standby_retry, "a standby asks again, and is refused"
    assert log.events("leader.acquired") == [{"epoch": 1, "holder": "a", "lease_s": LONG}]


def test_a_standby_is_refused_while_another_leads(store: Store, other: Store) -> None:
    assert other.acquire("b", LONG) is not None
    leader = Leadership(store, TIMINGS, RecordingLog(), holder="a", monotonic=Clock())
    assert leader.step() == TIMINGS.standby_retry
    assert leader.role is Role.STANDBY


def test_trust_ends_by_its_own_clock_while_the_database_is_unreachable(
    pg_db: PgDatabase, pg_cluster: PgCluster, pg_proxy: TcpProxy
) -> None:
    clock, log = Clock(), RecordingLog()
    with connect(pg_cluster.url(pg_db.name, port=pg_proxy.port), pg_db) as cut_off:
        leader = Leadership(cut_off, TIMINGS, log, holder="a", monotonic=clock)
        leader.step()
        assert leader.trusted()
        pg_proxy.cut()
        try:
            clock.now += TIMINGS.lease * 0.5
            assert leader.trusted(), "within its lease, by its own clock"
            clock.now += TIMINGS.lease * 0.5
            assert not leader.trusted(), "past its lease: no database is asked"
            # The renewal due long ago is not sent: the lease is given up by the clock alone.
            leader.step()
            assert leader.role is Role.STANDBY
            assert "ran out by this replica's clock" in log.events("leader.lost")[0]["reason"]
        finally:
            pg_proxy.heal()


def test_a_failed_renewal_retries_while_the_lease_can_be_trusted(
    pg_db: PgDatabase, pg_cluster: PgCluster
) -> None:
    clock, log = Clock(), RecordingLog()
    store = connect(pg_db.url, pg_db)
    leader = Leadership(store, TIMINGS, log, holder="a", monotonic=clock)
    leader.step()
    store.close()  # every later call fails at once, as an unreachable database would
    clock.now += TIMINGS.renew_every
    assert 0 < leader.step() <= 1.0
    assert leader.is_leader
    assert leader.trusted()
    assert log.events("leader.renew_failed")[0]["epoch"] == 1


# --------------------------------------------------------------------------------- timings


@pytest.mark.parametrize("interval", [0.5, 1, 2, 5, 10, 12.5, 30, 60, 3600])
def test_derived_timings_stay_within_their_bounds(interval: float) -> None:
    timings = LeaseTimings.derive(interval)
    assert 10.0 <= timings.lease <= 25.0
    assert MIN_LEASE <= timings.lease <= MAX_LEASE
    assert timings.renew_every == pytest.approx(timings.lease / 3)
    assert 0.1 <= timings.standby_retry <= 0.5
    assert timings.lease == min(max(2 * interval, 10.0), 25.0)


def test_a_configured_lease_is_kept_and_the_rest_derived_from_it() -> None:
    timings = LeaseTimings.derive(5, lease=40)
    assert timings.lease == 40
    assert timings.renew_every == pytest.approx(40 / 3)
    assert timings.standby_retry == 0.25


def test_a_renewal_on_a_cut_connection_fails_by_the_replicas_own_bound(
    pg_db: PgDatabase, pg_cluster: PgCluster, pg_proxy: TcpProxy
) -> None:
    """The cut swallows the renewal and the server's statement timeout is never heard: the
    watchdog's bound fails the call instead of leaving the leadership thread waiting forever,
    and the connection is replaced once the line is back."""
    clock, log = Clock(), RecordingLog()
    settings = PgSettings(
        url=pg_cluster.url(pg_db.name, port=pg_proxy.port),
        password=pg_db.password,
        namespace=NAMESPACE,
        statement_timeout=1.0,
        connect_timeout=1.0,
    )
    with Store.connect(settings) as cut_off:
        leader = Leadership(cut_off, TIMINGS, log, holder="a", monotonic=clock)
        leader.step()
        pg_proxy.cut()
        try:
            clock.now += TIMINGS.renew_every
            leader.step()
            assert [r["epoch"] for r in log.events("leader.renew_failed")] == [1]
            assert leader.is_leader, "still within its lease by its own clock"
            with pytest.raises(StateUnavailable):
                cut_off.lease_info()
            clock.now += TIMINGS.lease
            leader.step()
            assert leader.role is Role.STANDBY
        finally:
            pg_proxy.heal()
        wait_for(answers(cut_off), 60, "the store to reach the database again")
        assert cut_off.lease_info().epoch == 1


def answers(store: Store) -> Callable[[], bool]:
    def answered() -> bool:
        try:
            store.lease_info()
        except StateUnavailable:
            return False
        return True

    return answered
