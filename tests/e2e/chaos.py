"""A randomised run of replicas under failure (issue #12, case 9), and what it must prove.

Three watchers (by default) share one PostgreSQL state, each through a TCP proxy of its own,
and watch ten models of a real MLflow server. A workload makes stage transitions, round robin
over the models; meanwhile, every few seconds, the current leader is killed (``kill -9``, then
started again), paused past its lease (SIGSTOP, then SIGCONT) or cut off from the database
(its proxy drops every byte, then lets traffic through again). When the workload is done,
everything is healed and the run waits, within a bound, for every detected event to be
delivered. Then it checks, from the receiver's log, the database and the replicas' own logs:

- every event detected was delivered, and received with a 200, at least once;
- per model, the first acknowledgements came in detection order;
- every delivery id received more than once straddles a takeover (it was in flight when the
  lease changed hands), and a repeat always carries the same id;
- the epochs strictly increase, one holder each;
- no attempt of an epoch was recorded after a later epoch's first attempt (nothing written by a
  replica after it lost its epoch).

Run it as a user would (``make chaos``; ``python -m tests.e2e.chaos --help``), or through the
test in tests/e2e/test_chaos.py, which uses the same code with the suite's fixtures.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.e2e.harness import MlflowServer, Receiver, ReceiverBehaviour, write_config
from tests.e2e.replicas import (
    DELIVERY_ID,
    NAMESPACE,
    Replica,
    attempt_log,
    leader_of,
    lease_history,
    query_rows,
    replica_env,
)
from tests.netproxy import TcpProxy
from tests.pg import PgCluster, PgDatabase

STAGES = ("Staging", "Production", "Archived", "None")
ACTIONS = ("kill", "pause", "cut")


@dataclass(frozen=True)
class Settings:
    replicas: int = 3
    models: int = 10
    transitions: int = 100
    lease: float = 5.0
    interval: float = 1.0
    gap: tuple[float, float] = (0.1, 0.4)
    """Seconds between two transitions (drawn uniformly)."""
    every: tuple[float, float] = (2.0, 4.0)
    """Seconds between the end of one failure and the next (drawn uniformly)."""
    settle_timeout: float = 180.0
    """Once the workload is done: how long every event has to be delivered."""
    seed: int | None = None


@dataclass
class Action:
    kind: str
    replica: str
    epoch: int
    at: float


@dataclass
class Report:
    """What a run did and what its checks found; ``problems`` is empty when it passed."""

    seed: int
    transitions: int = 0
    events: int = 0
    delivered: int = 0
    received: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        kinds = {k: sum(a.kind == k for a in self.actions) for k in ACTIONS}
        lines = [
            f"chaos run (seed {self.seed}), {self.seconds:.0f} s: {self.transitions} transitions, "
            f"{self.events} events detected, {self.delivered} delivered, "
            f"{self.received} requests received (transitions made while no replica led fold "
            "into one change)",
            f"failures injected: {kinds['kill']} kills, {kinds['pause']} pauses, "
            f"{kinds['cut']} cuts from the database; epochs {self.epochs[:1]}..{self.epochs[-1:]}"
            f" ({len(self.epochs)} terms)",
            f"duplicates: {len(self.duplicates)} delivery ids received more than once "
            f"({sum(self.duplicates.values()) - len(self.duplicates)} extra requests), each "
            "in flight at a takeover" + ("" if self.ok else " (see problems)"),
        ]
        lines += [f"PROBLEM: {p}" for p in self.problems] or ["all checks passed"]
        return "\n".join(lines)


class Chaos:
    """One run on a server, a receiver and a database the caller provides."""

    def __init__(
        self,
        server: MlflowServer,
        cluster: PgCluster,
        db: PgDatabase,
        workdir: Path,
        settings: Settings,
    ) -> None:
        self.server = server
        self.cluster = cluster
        self.db = db
        self.workdir = workdir
        self.settings = settings
        seed = settings.seed if settings.seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(seed)
        self.report = Report(seed=seed)
        self.prefix = f"chaos-{uuid.uuid4().hex[:6]}"
        self.receiver = Receiver()
        # A short delay at the receiver: failures land while requests are in flight.
        self.receiver.behaviour = ReceiverBehaviour(delay=0.2)
        self.proxies: list[TcpProxy] = []
        self.replicas: list[Replica] = []
        self._workload_done = threading.Event()
        self.final: dict[str, str] = {}
        """Each model's stage when the workload ended."""
        self._wall0 = time.time() - time.monotonic()

    def run(self) -> Report:
        started = time.monotonic()
        with ExitStack() as stack:
            self.receiver.start()
            stack.callback(self.receiver.stop)
            self._start_replicas(stack)
            client = self.server.client()
            names = self._create_models(client)
            self._wait(lambda: leader_of(self.replicas) is not None, 60, "a first leader")
            leader = leader_of(self.replicas)
            assert leader is not None
            leader.wait_polls(2, timeout=60)
            chaos = threading.Thread(target=self._inject, daemon=True)
            chaos.start()
            self._workload(client, names)
            self._workload_done.set()
            chaos.join(timeout=60)
            self._heal_all()
            self._settle()
        self.report.seconds = time.monotonic() - started
        self._check()
        return self.report

    # ----------------------------------------------------------------- setting up

    def _start_replicas(self, stack: ExitStack) -> None:
        s = self.settings
        config = write_config(
            self.workdir / "watcher.toml",
            tracking_uri=self.server.url,
            webhook_url=self.receiver.url,
            state=self.workdir / "unused.db",
            interval=f"{s.interval:g}s",
            models=f"{self.prefix}-*",
        )
        for i in range(s.replicas):
            proxy = TcpProxy(self.cluster.port)
            stack.callback(proxy.close)
            self.proxies.append(proxy)
            url = self.cluster.url(self.db.name, port=proxy.port)
            env = replica_env(self.db, url=url, extra={"WATCHER_STATE__LEASE": f"{s.lease:g}s"})
            replica = Replica(config, env, name=f"r{i}")
            stack.callback(replica.ensure_stopped)
            self.replicas.append(replica)
            replica.start()

    def _create_models(self, client: Any) -> list[str]:
        names = [f"{self.prefix}-{i}" for i in range(self.settings.models)]
        for name in names:
            client.create_registered_model(name)
            client.create_model_version(name, f"s3://bucket/{name}/1")
        return names

    # ----------------------------------------------------------------- the run

    def _workload(self, client: Any, names: Sequence[str]) -> None:
        """Round robin over the models: each model's transitions are models x gap apart,
        more than a poll interval, so each is seen as a change of its own while a leader runs
        (during a failover several may fold into one: a poller sees states, not steps)."""
        stage = dict.fromkeys(names, -1)
        for k in range(self.settings.transitions):
            name = names[k % len(names)]
            stage[name] = (stage[name] + 1) % len(STAGES)
            client.transition_model_version_stage(name, "1", STAGES[stage[name]])
            self.final[name] = STAGES[stage[name]]
            self.report.transitions += 1
            time.sleep(self.rng.uniform(*self.settings.gap))

    def _inject(self) -> None:
        """Failures of the current leader, one at a time, until the workload is done."""
        s = self.settings
        while not self._workload_done.wait(self.rng.uniform(*s.every)):
            leader = leader_of(self.replicas)
            if leader is None:
                continue
            kind = self.rng.choice(ACTIONS)
            epoch = max(leader.epochs(), default=0)
            self.report.actions.append(Action(kind, leader.name, epoch, time.time()))
            index = self.replicas.index(leader)
            if kind == "kill":
                leader.kill9()
                time.sleep(self.rng.uniform(0.5, 2.0))
                leader.start()
            elif kind == "pause":
                leader.pause()
                time.sleep(s.lease + self.rng.uniform(0.5, 2.0))
                leader.resume()
            else:
                self.proxies[index].cut()
                time.sleep(s.lease + self.rng.uniform(0.5, 2.0))
                self.proxies[index].heal()
            self._wait(
                lambda: leader_of(self.replicas) is not None,
                s.lease * 4 + 30,
                "a leader after a failure",
            )

    def _heal_all(self) -> None:
        for proxy in self.proxies:
            proxy.heal()
        for replica in self.replicas:
            if replica.alive():
                replica.resume()
            else:
                replica.start()

    def _settle(self) -> None:
        """Until every detected event is delivered and received, and each model's last stage
        has reached the receiver, or the bound runs out."""
        deadline = time.monotonic() + self.settings.settle_timeout
        while time.monotonic() < deadline:
            outbox = self._outbox()
            if outbox and all(status == "delivered" for _, _, status in outbox):
                answered = self._answered()
                ids = {d.header(DELIVERY_ID) for d in answered}
                if {i for i, _, _ in outbox} <= ids and self._last_heard(answered) == self.final:
                    return
            time.sleep(0.5)

    @staticmethod
    def _last_heard(answered: list[Any]) -> dict[str, str]:
        """Each model's stage as the receiver last heard of it."""
        last: dict[str, str] = {}
        for delivery in sorted(answered, key=lambda d: d.at):
            body = delivery.json
            last[body["model_name"]] = body["to_stage"]
        return last

    # ----------------------------------------------------------------- the checks

    def _outbox(self) -> list[tuple[str, str, str]]:
        """(delivery_id, model, status) in outbox order (the order of detection)."""
        rows = query_rows(
            self.db,
            NAMESPACE,
            "SELECT delivery_id, model_name, status FROM deliveries ORDER BY id",
        )
        return [(str(d), str(m), str(s)) for d, m, s in rows]

    def _answered(self) -> list[Any]:
        return [d for d in self.receiver.deliveries() if d.answered == 200]

    def _check(self) -> None:
        r = self.report
        outbox = self._outbox()
        r.events = len(outbox)
        r.delivered = sum(status == "delivered" for _, _, status in outbox)
        received = self.receiver.deliveries()
        r.received = len(received)
        answered = self._answered()
        ids_answered = {d.header(DELIVERY_ID) for d in answered}
        missing = [i for i, _, status in outbox if status != "delivered" or i not in ids_answered]
        if missing:
            r.problems.append(f"{len(missing)} events not delivered: {missing[:5]}")
        if r.events < self.settings.models:
            r.problems.append(f"only {r.events} events were detected")
        self._check_order(outbox, answered)
        self._check_converged(answered)
        self._check_duplicates(received)
        self._check_epochs()

    def _check_order(self, outbox: list[tuple[str, str, str]], answered: list[Any]) -> None:
        position = {i: n for n, (i, _, _) in enumerate(outbox)}
        model_of = {i: m for i, m, _ in outbox}
        first_acks: dict[str, list[int]] = {}
        seen: set[str] = set()
        for delivery in sorted(answered, key=lambda d: d.at):
            ident = delivery.header(DELIVERY_ID)
            if ident in seen or ident not in position:
                continue
            seen.add(ident)
            first_acks.setdefault(model_of[ident], []).append(position[ident])
        for model, order in first_acks.items():
            if order != sorted(order):
                self.report.problems.append(f"{model}: acknowledged out of detection order")

    def _check_converged(self, answered: list[Any]) -> None:
        """Transitions made while no leader ran fold into one change (a poller sees states,
        not steps), but the last stage each receiver heard of is each model's real stage."""
        last = self._last_heard(answered)
        for name, stage in self.final.items():
            if last.get(name) != stage:
                self.report.problems.append(
                    f"{name}: the receiver last heard {last.get(name)}, the model is in {stage}"
                )

    def _check_duplicates(self, received: list[Any]) -> None:
        arrivals: dict[str, list[float]] = {}
        for delivery in received:
            arrivals.setdefault(str(delivery.header(DELIVERY_ID)), []).append(
                delivery.at + self._wall0
            )
        takeovers = sorted(
            _epoch_seconds(line["timestamp"])
            for replica in self.replicas
            for line in replica.leader_lines()
            if line["event"] == "leader.acquired"
        )
        for ident, times in arrivals.items():
            if len(times) < 2:
                continue
            self.report.duplicates[ident] = len(times)
            first, last = min(times), max(times)
            if not any(first - 1.0 <= t <= last + 1.0 for t in takeovers):
                self.report.problems.append(
                    f"delivery {ident} was received {len(times)} times with no takeover between"
                )

    def _check_epochs(self) -> None:
        terms = lease_history(self.db)
        epochs = [t.epoch for t in terms]
        self.report.epochs = epochs
        if epochs != sorted(set(epochs)):
            self.report.problems.append(f"epochs do not strictly increase: {epochs}")
        logged = [e for replica in self.replicas for e in replica.epochs()]
        if len(logged) != len(set(logged)):
            self.report.problems.append(f"an epoch was acquired twice: {sorted(logged)}")
        first_of: dict[int, int] = {}
        last_of: dict[int, int] = {}
        for n, attempt in enumerate(attempt_log(self.db)):
            if attempt.epoch is None:
                continue
            first_of.setdefault(attempt.epoch, n)
            last_of[attempt.epoch] = n
        for epoch, last in last_of.items():
            later = [first for e, first in first_of.items() if e > epoch]
            if later and last > min(later):
                self.report.problems.append(
                    f"epoch {epoch} recorded an attempt after a later epoch had begun"
                )

    @staticmethod
    def _wait(condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {what}")
            time.sleep(0.2)


def _epoch_seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@contextmanager
def _standalone(workdir: Path) -> Iterator[tuple[MlflowServer, PgCluster, PgDatabase]]:
    """What the suite's fixtures give the test: an MLflow server and a PostgreSQL cluster."""
    with PgCluster() as cluster:
        server = MlflowServer(workdir / "mlflow")
        server.start()
        try:
            yield server, cluster, cluster.create_database()
        finally:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.e2e.chaos",
        description="Replicas on one PostgreSQL state under kills, pauses and cuts: checks "
        "that nothing is lost, nothing reordered, and every duplicate is accounted for.",
    )
    defaults = Settings()
    parser.add_argument("--replicas", type=int, default=defaults.replicas)
    parser.add_argument("--models", type=int, default=defaults.models)
    parser.add_argument("--transitions", type=int, default=defaults.transitions)
    parser.add_argument("--lease", type=float, default=defaults.lease, help="seconds (5-120)")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run's failures")
    args = parser.parse_args(argv)
    settings = Settings(
        replicas=args.replicas,
        models=args.models,
        transitions=args.transitions,
        lease=args.lease,
        seed=args.seed,
    )
    warnings.filterwarnings("ignore")
    workdir = Path(tempfile.mkdtemp(prefix="watcher-chaos-"))
    try:
        with _standalone(workdir) as (server, cluster, db):
            report = Chaos(server, cluster, db, workdir, settings).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
