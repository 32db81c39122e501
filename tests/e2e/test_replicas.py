"""Replicas on one PostgreSQL state, against a real MLflow server, a real receiver and a real
PostgreSQL cluster: one leader at a time, failover, handover."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol, cast

import psycopg
import pytest

from tests.e2e.conftest import ConfigFor, create_versions
from tests.e2e.harness import Delivery, Receiver, ReceiverBehaviour, wait_for
from tests.e2e.replicas import (
    DELIVERY_ID,
    NAMESPACE,
    Replica,
    attempt_log,
    delivery_status,
    lease_history,
    replica_env,
    start_pair,
    wait_leader,
)
from tests.pg import PgDatabase


def transition(client: Any, model_name: str, version: str, stage: str) -> None:
    client.transition_model_version_stage(model_name, version, stage)


def test_a_standby_takes_over_from_a_killed_leader_with_a_higher_epoch(
    replicas: list[Replica],
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
) -> None:
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
    leader, second = start_pair(replicas)
    transition(client, model_name, "1", "Staging")
    # Recorded, not only received: a kill before the record would make it a (legitimate)
    # repeat, which the in-flight test below covers.
    wait_all_delivered(pg_db, 1)

    leader.kill9()
    epoch = max(leader.epochs())
    transition(client, model_name, "1", "Production")
    new_leader = wait_leader(replicas, after=epoch)
    receiver.wait_for_count(2)

    assert new_leader is second
    assert min(new_leader.epochs()) > epoch
    stages = [d.json["to_stage"] for d in receiver.deliveries()]
    assert stages == ["Staging", "Production"]
    ids = [d.header(DELIVERY_ID) for d in receiver.deliveries()]
    assert len(set(ids)) == 2, "nothing was in flight at the kill: nothing repeats"
    terms = lease_history(pg_db)
    assert [t.epoch for t in terms] == sorted({t.epoch for t in terms})
    assert terms[-1].holder != terms[0].holder


def test_sigterm_hands_the_lease_over_at_once(
    replicas: list[Replica], client: Any, model_name: str, receiver: Receiver, pg_db: PgDatabase
) -> None:
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/{model_name}/1")
    leader, second = start_pair(replicas)
    epoch = max(leader.epochs())

    assert leader.terminate() == 0
    new_leader = wait_leader(replicas, after=epoch, timeout=10)
    released = [r for r in leader.leader_lines() if r["event"] == "leader.released"]
    assert released, "the leader says it gave the lease up"
    assert released[-1]["epoch"] == epoch
    assert new_leader is second
    assert [t.ended_how for t in lease_history(pg_db)][:-1] == ["released"]
    transition(client, model_name, "1", "Staging")
    receiver.wait_for_count(1)
    assert receiver.deliveries()[0].json["to_stage"] == "Staging"


# ------------------------------------------------------------------ failover under load
#
# The tests below run on a short lease (a takeover within seconds) and a long webhook timeout,
# so that a request the receiver holds stays in flight, unanswered and not retried, for as long
# as a test needs: which requests are in flight at a kill or a pause is then a fact the test
# arranges, not a race it hopes to win.

LEASE = "5s"
"""The shortest lease the tests use: a standby takes over within seconds of a kill."""


class MakeReplicas(Protocol):
    def __call__(self, models: str, **options: Any) -> list[Replica]: ...


@pytest.fixture
def make_replicas(config_for: ConfigFor, pg_db: PgDatabase) -> Iterator[MakeReplicas]:
    """Replicas "a" and "b" (not started) watching ``models`` on the short lease; each tags its
    database sessions with its name (``e2e.replica``), so ``WriteAudit`` knows who wrote what."""
    made: list[Replica] = []

    def make(models: str, **options: Any) -> list[Replica]:
        config = config_for(models, webhook_timeout="60s", **options)
        for name in ("a", "b"):
            extra = {"WATCHER_STATE__LEASE": LEASE, "PGOPTIONS": f"-c e2e.replica={name}"}
            made.append(Replica(config, replica_env(pg_db, extra=extra), name=name))
        return made[-2:]

    yield make
    for replica in made:
        replica.ensure_stopped()


@pytest.fixture
def hold(receiver: Receiver) -> Iterator[threading.Event]:
    """An event the receiver's held requests wait on; set at the end whatever happened, so no
    handler thread outlives the test waiting for it."""
    event = threading.Event()
    yield event
    event.set()


def acquired(replica: Replica) -> dict[str, Any]:
    """The replica's last leader.acquired line."""
    return [r for r in replica.leader_lines() if r["event"] == "leader.acquired"][-1]


def ids_of(deliveries: list[Delivery]) -> list[str]:
    return [str(d.header(DELIVERY_ID)) for d in deliveries]


def wait_all_delivered(db: PgDatabase, count: int, timeout: float = 60) -> dict[str, str]:
    """Until the outbox holds ``count`` rows, every one delivered; the outbox."""
    wait_for(
        lambda: (
            len(status := delivery_status(db)) == count and set(status.values()) == {"delivered"}
        ),
        timeout,
        f"{count} deliveries, all delivered",
    )
    return delivery_status(db)


def test_a_killed_leaders_in_flight_delivery_is_the_only_one_repeated(
    make_replicas: MakeReplicas,
    client: Any,
    model_name: str,
    receiver: Receiver,
    hold: threading.Event,
    pg_db: PgDatabase,
) -> None:
    create_versions(client, model_name, 2)
    old, standby = start_pair(make_replicas(model_name))
    transition(client, model_name, "1", "Staging")
    old.wait_logged("delivery.succeeded")  # answered, and recorded: not in flight any more
    receiver.behaviour = ReceiverBehaviour(hold=hold)
    transition(client, model_name, "2", "Staging")
    receiver.wait_for_count(2)  # the old leader's request, held unanswered
    in_flight = ids_of(receiver.deliveries())[1]

    old.kill9()
    epoch = max(old.epochs())
    receiver.behaviour = ReceiverBehaviour()  # the new leader is answered at once
    hold.set()
    transition(client, model_name, "1", "Production")
    new = wait_leader([old, standby], after=epoch)
    outbox = wait_all_delivered(pg_db, 3)

    assert new is standby
    new_epoch = acquired(new)["epoch"]
    assert new_epoch > epoch
    assert acquired(new).get("requeued_in_flight") == 1
    ids = ids_of(receiver.deliveries())
    assert sorted(set(ids)) == sorted(outbox), "every event delivered"
    repeated = {i for i, n in Counter(ids).items() if n > 1}
    assert repeated == {in_flight}, "only the delivery in flight at the kill repeats"
    assert Counter(ids)[in_flight] == 2
    stages = [(d.json["model_version"], d.json["to_stage"]) for d in receiver.deliveries()]
    assert stages == [("1", "Staging"), ("2", "Staging"), ("2", "Staging"), ("1", "Production")]
    attempts = attempt_log(pg_db)
    assert all(a.status_code == 200 for a in attempts)
    by_id = {i: [a.epoch for a in attempts if a.delivery_id == i] for i in outbox}
    assert by_id[ids[0]] == [epoch], "delivered before the kill: recorded under the old epoch"
    assert by_id[in_flight] == [new_epoch], "its result is recorded only by the new leader"
    assert by_id[ids[-1]] == [new_epoch]


class WriteAudit:
    """Who wrote which row of the watcher's tables, and when on the database's clock.

    A trigger on every table of the namespace logs each row written, with the ``e2e.replica``
    setting of the writing session (each replica sets its own through PGOPTIONS), into a schema
    of its own. A transaction that rolls back (a fenced write refused) leaves no trace; one that
    committed does, whatever its process logged or failed to log before a pause.
    """

    TABLES = (
        "meta",
        "snapshot_models",
        "snapshot_versions",
        "events",
        "deliveries",
        "attempts",
        "leader",
        "leader_history",
    )

    def __init__(self, db: PgDatabase, namespace: str = NAMESPACE) -> None:
        self.db = db
        statements = [
            "CREATE SCHEMA e2e_audit",
            "CREATE TABLE e2e_audit.writes (id BIGSERIAL PRIMARY KEY, replica TEXT,"
            " tbl TEXT NOT NULL, op TEXT NOT NULL, at TIMESTAMPTZ NOT NULL)",
            "CREATE FUNCTION e2e_audit.log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO e2e_audit.writes (replica, tbl, op, at) VALUES"
            " (current_setting('e2e.replica', true), TG_TABLE_NAME, TG_OP, clock_timestamp());"
            " RETURN NULL; END $$",
            *(
                f'CREATE TRIGGER e2e_audit AFTER INSERT OR UPDATE OR DELETE ON "{namespace}".{t}'
                " FOR EACH ROW EXECUTE FUNCTION e2e_audit.log()"
                for t in self.TABLES
            ),
        ]
        with self._connect() as conn:
            for sql in statements:
                conn.execute(sql)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.db.url, password=self.db.password, autocommit=True)

    def now(self) -> datetime:
        """The database's clock."""
        with self._connect() as conn:
            row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return cast(datetime, row[0])

    def writes(self, replica: str) -> list[tuple[str, str, datetime]]:
        """(table, operation, when) of every row ``replica`` wrote, in order."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT tbl, op, at FROM e2e_audit.writes WHERE replica = %s ORDER BY id",
                (replica,),
            ).fetchall()
        return [(str(t), str(o), a) for t, o, a in rows]

    def stall_claims(self, replica: str, seconds: float) -> None:
        """Every delivery ``replica`` claims from now on takes ``seconds`` inside its fenced
        transaction: a window in which to pause it there, lock held."""
        with self._connect() as conn:
            conn.execute(
                "CREATE FUNCTION e2e_audit.stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF current_setting('e2e.replica', true) = '{replica}'"
                f" THEN PERFORM pg_sleep({seconds}); END IF; RETURN NULL; END $$"
            )
            conn.execute(
                "CREATE TRIGGER e2e_stall AFTER UPDATE OF claimed_epoch"
                f' ON "{NAMESPACE}".deliveries'
                " FOR EACH ROW EXECUTE FUNCTION e2e_audit.stall()"
            )

    def claiming(self) -> bool:
        """Whether a claim is running in some session right now."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE 'UPDATE deliveries SET claimed_epoch%%'"
            ).fetchall()
        return bool(rows)


def acquired_at(db: PgDatabase, epoch: int) -> datetime:
    with psycopg.connect(db.url, password=db.password, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT acquired_at FROM "{NAMESPACE}".leader_history WHERE epoch = %s',  # noqa: S608 - a fixed schema name
            (epoch,),
        ).fetchone()
    assert row is not None
    return cast(datetime, row[0])


def test_a_leader_paused_past_its_lease_writes_and_sends_nothing_once_resumed(
    make_replicas: MakeReplicas,
    client: Any,
    model_name: str,
    receiver: Receiver,
    hold: threading.Event,
    pg_db: PgDatabase,
) -> None:
    create_versions(client, model_name, 2)
    old, standby = start_pair(make_replicas(model_name))
    audit = WriteAudit(pg_db)
    receiver.behaviour = ReceiverBehaviour(hold=hold)
    transition(client, model_name, "1", "Staging")
    receiver.wait_for_count(1)  # the leader's request, held: in flight while it is paused
    in_flight = ids_of(receiver.deliveries())[0]
    epoch = max(old.epochs())

    old.pause()
    new = wait_leader([old, standby], after=epoch)
    new_epoch = acquired(new)["epoch"]
    # The new leader sends the row the paused one left in flight again, and its request is
    # held too: while it is, the new leader starts nothing else on that lane, so any other
    # request of that model from here on could only come from the old leader.
    receiver.wait_for_count(2)
    transition(client, model_name, "2", "Staging")  # queued by the new leader, behind it
    new.wait_polls(1)
    resumed_at = audit.now()
    old.resume()
    old.wait_logged("leader.lost")
    new.wait_polls(3)  # the old leader has had time to act on what it knew before its pause
    assert ids_of(receiver.deliveries()) == [in_flight, in_flight]

    hold.set()  # both held requests are answered: only the new leader may record its answer
    outbox = wait_all_delivered(pg_db, 2)
    wait_for(lambda: old.logged("delivery.unrecorded"), 30, "the old leader's unrecorded answer")
    new.wait_polls(2)

    assert new is standby
    assert new_epoch > epoch
    lost = old.logged("leader.lost")
    assert [line["epoch"] for line in lost] == [epoch]
    assert old.epochs() == [epoch], "the old replica never led again"
    unrecorded = old.logged("delivery.unrecorded")
    assert [line["delivery_id"] for line in unrecorded] == [in_flight]
    ids = ids_of(receiver.deliveries())
    (queued_later,) = set(outbox) - {in_flight}
    assert ids == [in_flight, in_flight, queued_later], "nothing from the old leader"
    assert [(t.epoch, t.ended_how) for t in lease_history(pg_db)] == [
        (epoch, "expired"),
        (new_epoch, None),
    ]
    assert {a.epoch for a in attempt_log(pg_db)} == {new_epoch}, (
        "the answer to the old leader's request is recorded only under the new epoch"
    )
    before = audit.writes("a")
    assert ("deliveries", "UPDATE") in {(t, o) for t, o, _ in before}, (
        "the audit sees the old leader's writes (its claim of the held delivery)"
    )
    took_over = acquired_at(pg_db, new_epoch)
    assert [w for w in before if w[2] >= took_over] == [], "no write after the new epoch began"
    assert [w for w in before if w[2] >= resumed_at] == []
    standby_writes = [(t, o) for t, o, at in audit.writes("b") if at < took_over]
    assert standby_writes == [("leader", "UPDATE"), ("leader_history", "UPDATE")], (
        "a standby writes nothing but the takeover itself (history's row is stamped last)"
    )


def test_a_leader_paused_inside_a_transaction_neither_holds_the_takeover_nor_commits_it(
    make_replicas: MakeReplicas,
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
) -> None:
    """Paused mid-claim, the leader holds a share lock on the lease row that the takeover
    waits for: the database ends its idle transaction, and that claim never lands."""
    create_versions(client, model_name, 1)
    old, standby = start_pair(make_replicas(model_name))
    audit = WriteAudit(pg_db)
    audit.stall_claims("a", 5)
    transition(client, model_name, "1", "Staging")
    wait_for(audit.claiming, 30, "the leader's claim of the delivery")
    old.pause()
    epoch = max(old.epochs())
    new = wait_leader([old, standby], after=epoch)  # while the old one is still paused
    new_epoch = acquired(new)["epoch"]
    receiver.wait_for_count(1)
    resumed_at = audit.now()
    old.resume()
    old.wait_logged("leader.lost")
    outbox = wait_all_delivered(pg_db, 1)
    new.wait_polls(3)

    assert new is standby
    assert new_epoch > epoch
    assert acquired(new).get("requeued_in_flight") is None, "the stalled claim never committed"
    assert ids_of(receiver.deliveries()) == list(outbox), "sent once, by the new leader"
    assert {a.epoch for a in attempt_log(pg_db)} == {new_epoch}
    assert old.epochs() == [epoch]
    writes = audit.writes("a")
    assert ("events", "INSERT") in {(t, o) for t, o, _ in writes}, "it committed the change"
    assert ("deliveries", "UPDATE") not in {(t, o) for t, o, _ in writes}, "never its claim"
    took_over = acquired_at(pg_db, new_epoch)
    assert [w for w in writes if w[2] >= min(took_over, resumed_at)] == []


def test_the_new_leaders_first_polls_queue_nothing_already_committed(
    make_replicas: MakeReplicas,
    client: Any,
    model_name: str,
    receiver: Receiver,
    pg_db: PgDatabase,
) -> None:
    create_versions(client, model_name, 1)
    old, standby = start_pair(make_replicas(model_name))
    transition(client, model_name, "1", "Staging")
    transition(client, model_name, "1", "Production")
    wait_for(
        lambda: [d.json["to_stage"] for d in receiver.deliveries()][-1:] == ["Production"],
        30,
        "the last transition delivered",
    )
    committed = wait_all_delivered(pg_db, len(receiver.deliveries()))

    old.kill9()
    new = wait_leader([old, standby], after=max(old.epochs()))
    new.wait_polls(3)  # from the snapshot the old leader committed; the first one at once

    finished = new.logged("poll.finished")  # a standby never polls: these are all its polls
    assert len(finished) >= 3
    assert [(p["events"], p["queued"]) for p in finished] == [(0, 0)] * len(finished)
    assert not new.logged("poll.baseline"), "it resumed from the snapshot, not a new baseline"
    assert delivery_status(pg_db) == committed
    assert acquired(new).get("requeued_in_flight") is None
    events = [d.json["event_id"] for d in receiver.deliveries()]
    assert len(events) == len(set(events)) == len(committed)

    transition(client, model_name, "1", "Archived")  # its polls do see what is new
    receiver.wait_for_count(len(committed) + 1)
    assert receiver.deliveries()[-1].json["to_stage"] == "Archived"
    assert len(wait_all_delivered(pg_db, len(committed) + 1)) == len(committed) + 1


STAGES = ("Staging", "Production")


def test_each_models_events_are_acknowledged_in_detection_order_across_a_takeover(
    make_replicas: MakeReplicas,
    client: Any,
    model_name: str,
    receiver: Receiver,
    hold: threading.Event,
    pg_db: PgDatabase,
) -> None:
    models = [f"{model_name}-{n}" for n in ("x", "y")]
    for name in models:
        create_versions(client, name, 1)
    old, standby = start_pair(make_replicas(f"{model_name}-*"))
    made: dict[str, list[str]] = {name: [] for name in models}

    def move(count: int, each: Replica | None = None, final: str | None = None) -> None:
        """``count`` transitions of every model, alternating between two stages (and
        ``final`` last); between them a poll of ``each``, or none (quick succession)."""
        for i in range(count):
            for name in models:
                stage = final if final and i == count - 1 else STAGES[len(made[name]) % 2]
                transition(client, name, "1", stage)
                made[name].append(stage)
            if each is not None:
                each.wait_polls(1)

    move(1, old)
    receiver.wait_for_count(2)  # one answered delivery per model before anything goes wrong
    receiver.behaviour = ReceiverBehaviour(hold=hold)
    move(3, old)  # the first held in flight on each lane, the others queued behind it
    receiver.wait_for_count(4)
    in_flight = set(ids_of(receiver.deliveries()[2:]))

    old.kill9()
    receiver.behaviour = ReceiverBehaviour(delay=0.1)
    hold.set()
    move(2)  # while no one leads
    new = wait_leader([old, standby], after=max(old.epochs()))
    move(2, new, final="Archived")
    wait_for(
        lambda: (
            {(d.json["model_name"], d.json["to_stage"]) for d in receiver.deliveries()}
            >= {(name, "Archived") for name in models}
        ),
        60,
        "the final transition of each model delivered",
    )
    outbox = wait_all_delivered(pg_db, len(set(ids_of(receiver.deliveries()))))

    assert acquired(new).get("requeued_in_flight") == len(in_flight) == 2
    ids = Counter(ids_of(receiver.deliveries()))
    assert {i for i, n in ids.items() if n > 1} == in_flight, "only those in flight repeat"
    assert set(ids) == set(outbox)
    detected = lane_order(pg_db)
    for name in models:
        got = [d for d in receiver.deliveries() if d.json["model_name"] == name]
        assert all(d.answered == 200 for d in got)
        assert collapse(ids_of(got)) == detected[name], "in detection order, repeats adjacent"
        body = {str(d.header(DELIVERY_ID)): d.json for d in got}
        stages = [body[i]["to_stage"] for i in detected[name]]
        froms = [body[i]["from_stage"] for i in detected[name]]
        assert froms == ["None", *stages[:-1]], "each from where the one before left it"
        assert is_subsequence(stages, made[name]), "each change as it was made, in order"
        assert stages[-1] == "Archived"


def lane_order(db: PgDatabase) -> dict[str, list[str]]:
    """{model: its delivery ids in the order they were queued}: the order of detection."""
    with psycopg.connect(db.url, password=db.password, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT model_name, delivery_id FROM "{NAMESPACE}".deliveries ORDER BY id'  # noqa: S608 - a fixed schema name
        ).fetchall()
    order: dict[str, list[str]] = {}
    for model, delivery_id in rows:
        order.setdefault(str(model), []).append(str(delivery_id))
    return order


def collapse(items: list[str]) -> list[str]:
    """Runs of one item as one: a repeat right after itself is a resend, not a reorder."""
    return [x for k, x in enumerate(items) if k == 0 or x != items[k - 1]]


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    rest = iter(whole)
    return all(any(x == y for y in rest) for x in part)
