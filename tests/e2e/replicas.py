"""Replicas of the watcher on one PostgreSQL state: real daemons, the lease as the database
records it, and the attempts each epoch made.

A ``Replica`` is a ``Daemon`` whose config points ``[state]`` at a test database (its password
in ``PGPASSWORD``, as libpq reads it); its role is read from its own ``leader.*`` log lines.
What the database says (``lease_history``, ``attempt_log``) is read with psycopg, beside the
watcher, never through it.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from tests.e2e.harness import Daemon, wait_for, watcher_env
from tests.pg import PgDatabase

NAMESPACE = "watcher_e2e"
DELIVERY_ID = "X-MLflow-Delivery-Id"


def replica_env(
    db: PgDatabase,
    *,
    url: str | None = None,
    namespace: str = NAMESPACE,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a replica on ``db`` (or on ``url``: a proxy or PgBouncer in front
    of it): the URL without its password, the password as libpq's PGPASSWORD."""
    return watcher_env(
        {
            "WATCHER_STATE__URL": url or db.url,
            "WATCHER_STATE__NAMESPACE": namespace,
            "PGPASSWORD": db.password,
            **(extra or {}),
        }
    )


class Replica(Daemon):
    """One watcher process of a replicated deployment."""

    def __init__(self, config: Path, env: Mapping[str, str], name: str = "") -> None:
        super().__init__(config, env)
        self.name = name
        self._first_line = 0

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"Replica({self.name or '?'}, pid={pid}, role={self.role()})"

    def leader_lines(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.lines if str(r.get("event", "")).startswith("leader.")]

    def start(self) -> None:
        with self._lock:
            self._first_line = len(self.lines)
        super().start()

    def current_lines(self) -> list[dict[str, Any]]:
        """The log lines of the running process (a restarted replica's old ones left out)."""
        with self._lock:
            return self.lines[self._first_line :]

    def role(self) -> str:
        """``leader`` after its last leader.acquired, ``standby`` otherwise (never led, lost,
        released), ``dead`` once its process has ended."""
        if not self.alive():
            return "dead"
        changes = [
            r["event"]
            for r in self.current_lines()
            if r["event"] in ("leader.acquired", "leader.lost", "leader.released")
        ]
        return "leader" if changes and changes[-1] == "leader.acquired" else "standby"

    def epochs(self) -> list[int]:
        """Every epoch this replica acquired, in order."""
        return [int(r["epoch"]) for r in self.leader_lines() if r["event"] == "leader.acquired"]

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


R = TypeVar("R", bound=Replica)


def start_pair(replicas: Sequence[R]) -> tuple[R, R]:
    """Start the first (it leads), then the second (a standby); return them once the first
    has committed its baseline."""
    first, second = replicas
    first.start()
    assert wait_leader(replicas) is first
    second.start()
    second.wait_started()
    first.wait_polls(1)
    return first, second


def leader_of(replicas: Sequence[Replica]) -> Replica | None:
    leaders = [r for r in replicas if r.role() == "leader"]
    return leaders[-1] if leaders else None


def wait_leader(replicas: Sequence[Replica], *, after: int = 0, timeout: float = 60) -> Replica:
    """Until one of ``replicas`` leads with an epoch above ``after``; that replica."""
    found: list[Replica] = []

    def led() -> bool:
        for replica in replicas:
            if replica.role() == "leader" and max(replica.epochs(), default=0) > after:
                found[:] = [replica]
                return True
        return False

    wait_for(led, timeout, f"a leader with an epoch above {after}")
    return found[0]


@dataclass(frozen=True)
class Term:
    """One row of leader_history: an epoch, who held it, and how it ended."""

    epoch: int
    holder: str
    ended_how: str | None


@dataclass(frozen=True)
class AttemptRow:
    delivery_id: str
    epoch: int | None
    status_code: int | None
    attempted_at: float


def query_rows(db: PgDatabase, namespace: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db.url, password=db.password, autocommit=True) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (f'"{namespace}"',))
        return list(conn.execute(sql).fetchall())


def lease_history(db: PgDatabase, namespace: str = NAMESPACE) -> list[Term]:
    """Every epoch ever acquired, oldest first."""
    rows = query_rows(
        db, namespace, "SELECT epoch, holder, ended_how FROM leader_history ORDER BY 1"
    )
    return [Term(int(e), str(h), how) for e, h, how in rows]


def attempt_log(db: PgDatabase, namespace: str = NAMESPACE) -> list[AttemptRow]:
    """Every recorded attempt, in the order they were recorded."""
    rows = query_rows(
        db,
        namespace,
        "SELECT delivery_id, epoch, status_code, attempted_at FROM attempts ORDER BY id",
    )
    return [AttemptRow(str(d), e, s, float(t)) for d, e, s, t in rows]


def delivery_status(db: PgDatabase, namespace: str = NAMESPACE) -> dict[str, str]:
    """{delivery_id: status} over the whole outbox."""
    rows = query_rows(db, namespace, "SELECT delivery_id, status FROM deliveries")
    return {str(d): str(s) for d, s in rows}
