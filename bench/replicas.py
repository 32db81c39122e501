"""(i): failover, handover and restart, timed with real daemons.

On PostgreSQL, two replicas share one state: the leader is killed with SIGKILL and a stage
transition is made right after; the figure is the time from the kill to its delivery by the
new leader (bound: under 60 s at the default 30 s interval, under 20 s at 5 s). A third
replica then stands by and the new leader gets SIGTERM: the handover is the time from the
signal to the standby's leader.acquired line (target: under 1 s). On every backend, a single
daemon is stopped, a transition made, and the daemon started again. Each transition made
during a restart or a takeover must arrive within one interval plus 3 s of the new process's
start or of the takeover, and the new leader's first poll must be incremental (the full
scans it owes run in the background)."""

from __future__ import annotations

import time
from typing import Any

from bench.common import first_poll_after, logged_at, other_stage, say, watcher_toml
from bench.daemon import Expected, _match_arrivals
from bench.seed import model_name
from bench.states import States
from tests.e2e.harness import Daemon, MlflowServer, Receiver, wait_for
from tests.e2e.replicas import Replica, wait_leader

FAILOVER_BOUNDS = {30.0: 60.0, 5.0: 20.0}
"""Interval -> the bound on kill -9 -> first delivery by the new leader."""
RESTART_INTERVAL = 5.0
RESUME_MARGIN = 3.0
"""A transition made during a restart or takeover arrives within interval + this."""
HANDOVER_TARGET = 1.0
MODELS_FROM = 950
"""The models (i) moves, one per transition, away from those of (c)."""
BASELINE_TIMEOUT = 900.0


class Scene:
    """A receiver, a config at ``interval`` on state ``tag``, and the daemons started on it."""

    def __init__(self, server: MlflowServer, states: States, tag: str, interval: float) -> None:
        self.server, self.states, self.tag, self.interval = server, states, tag, interval
        self.client = server.client()
        self.receiver = Receiver()
        self.receiver.start()
        self.config = watcher_toml(
            states.workdir / f"{tag}-{states.name}.toml",
            server.url,
            states.path(tag),
            self.receiver.url,
            watch=f'interval = "{interval:g}s"',
        )
        self.daemons: list[Daemon] = []
        self.moves = 0

    def replica(self, name: str) -> Replica:
        replica = Replica(self.config, self.states.env(self.tag), name)
        self.daemons.append(replica)
        replica.start()
        return replica

    def prepare(self) -> tuple[str, str, str]:
        """A model, its version 1, and the stage to move it to: read before the event that
        the transition must follow, so that nothing but the transition itself comes after."""
        name = model_name(MODELS_FROM + self.moves)
        self.moves += 1
        current = self.client.get_model_version(name, "1").current_stage
        return name, "1", other_stage(current, "Staging")

    def transition(self, move: tuple[str, str, str]) -> Expected:
        name, version, stage = move
        t0 = time.monotonic()
        self.client.transition_model_version_stage(name, version, stage)
        match = {"model_name": name, "model_version": version, "to_stage": stage}
        return Expected("stage transition", "MODEL_VERSION_TRANSITIONED_STAGE", match, t0)

    def arrival(self, expected: Expected, timeout: float) -> float:
        def arrived() -> bool:
            _match_arrivals(self.receiver, [expected])
            return expected.arrived is not None

        wait_for(arrived, timeout, f"the delivery of {expected.match}", interval=0.1)
        assert expected.arrived is not None
        return expected.arrived

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.ensure_stopped()
        self.receiver.stop()


def failover(server: MlflowServer, states: States, interval: float) -> dict[str, Any]:
    """kill -9 of the leader, a transition right after; then SIGTERM of the new leader with
    a third replica standing by, and a transition right after that."""
    scene = Scene(server, states, f"failover_{interval:g}", interval)
    try:
        first = scene.replica("a")
        first.wait_logged("poll.baseline", timeout=BASELINE_TIMEOUT)
        scene.replica("b").wait_started()
        first.wait_polls(1, timeout=2 * interval + 60)
        epoch = max(first.epochs())
        move = scene.prepare()
        killed = time.monotonic()
        first.kill9()
        expected = scene.transition(move)
        bound = FAILOVER_BOUNDS.get(interval, 2 * interval + 10)
        arrived = scene.arrival(expected, bound + 120)
        leader = wait_leader(scene.daemons, after=epoch)  # type: ignore[arg-type]
        result = {
            "interval_s": interval,
            "bound_s": bound,
            "lease_s": _lease(leader),
            **_takeover(leader, epoch, arrived, since=killed),
        }
        result["kill_to_delivery_s"] = round(arrived - killed, 3)
        say(f"(i) failover at {interval:g}s: {result['kill_to_delivery_s']}s to the delivery")
        result["handover"] = handover(scene, leader)
        return result
    finally:
        scene.close()


def handover(scene: Scene, leader: Replica) -> dict[str, Any]:
    """SIGTERM of ``leader`` with a fresh standby: the signal -> leader.acquired."""
    standby = scene.replica("c")
    standby.wait_started()
    leader.wait_polls(1, timeout=2 * scene.interval + 60)
    epoch = max(leader.epochs())
    move = scene.prepare()
    signalled = time.monotonic()
    assert leader.proc is not None
    leader.proc.terminate()
    expected = scene.transition(move)
    arrived = scene.arrival(expected, scene.interval + 120)
    leader.proc.wait(timeout=60)
    new = wait_leader([standby], after=epoch)
    result = _takeover(new, epoch, arrived, since=signalled)
    result["handover_s"] = result.pop("to_takeover_s")
    result["released"] = bool(leader.logged("leader.released"))
    result["target_s"] = HANDOVER_TARGET
    say(f"(i) handover at {scene.interval:g}s: {result['handover_s']}s")
    return result


def _takeover(leader: Replica, epoch: int, arrived: float, *, since: float) -> dict[str, Any]:
    """When ``leader`` acquired an epoch above ``epoch``, its first poll after, and the
    transition's delivery counted from the takeover."""
    line = next(r for r in leader.logged("leader.acquired") if int(r.get("epoch", 0)) > epoch)
    acquired = logged_at(line)
    poll = first_poll_after(leader, acquired)
    return {
        "epoch": int(line["epoch"]),
        "to_takeover_s": round(acquired - since, 3),
        "takeover_to_delivery_s": round(arrived - acquired, 3),
        "first_poll_read": None if poll is None else poll.get("read"),
        "first_poll_ms": None if poll is None else poll.get("duration_ms"),
    }


def _lease(replica: Replica) -> float | None:
    lines = replica.logged("leader.acquired")
    return float(lines[-1]["lease_s"]) if lines and "lease_s" in lines[-1] else None


def restart(server: MlflowServer, states: States) -> dict[str, Any]:
    """One daemon: SIGTERM, a transition while none runs, a start; the transition's delivery
    counted from the new process's start, and the kind of its first poll."""
    scene = Scene(server, states, "restart", RESTART_INTERVAL)
    try:
        daemon = Daemon(scene.config, states.env(scene.tag))
        scene.daemons.append(daemon)
        daemon.start()
        daemon.wait_logged("poll.baseline", timeout=BASELINE_TIMEOUT)
        daemon.wait_polls(1, timeout=2 * RESTART_INTERVAL + 60)
        move = scene.prepare()
        daemon.terminate()
        expected = scene.transition(move)
        started = time.monotonic()
        daemon.start()
        arrived = scene.arrival(expected, RESTART_INTERVAL + 300)
        poll = first_poll_after(daemon, started)
        result = {
            "interval_s": RESTART_INTERVAL,
            "bound_s": RESTART_INTERVAL + RESUME_MARGIN,
            "start_to_delivery_s": round(arrived - started, 3),
            "first_poll_read": None if poll is None else poll.get("read"),
            "first_poll_ms": None if poll is None else poll.get("duration_ms"),
        }
        say(f"(i) restart, {states.name}: {result['start_to_delivery_s']}s to the delivery")
        return result
    finally:
        scene.close()


def replicas(server: MlflowServer, states: States) -> dict[str, Any]:
    """Every (i) measure on one backend: restart everywhere, failover where replicas can
    share the state (PostgreSQL)."""
    result: dict[str, Any] = {"restart": restart(server, states)}
    if states.name == "postgresql":
        result["failover"] = [failover(server, states, i) for i in FAILOVER_BOUNDS]
    return result
