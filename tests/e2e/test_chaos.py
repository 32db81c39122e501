"""Issue #12, case 9: a randomised run of three replicas under kills, pauses and cuts (the
code is tests/e2e/chaos.py; `make chaos` runs the same thing on its own)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.chaos import Chaos, Settings
from tests.e2e.harness import MlflowServer
from tests.pg import PgCluster, PgDatabase


def test_replicas_under_kills_pauses_and_cuts_lose_nothing_and_reorder_nothing(
    mlflow_server: MlflowServer, pg_cluster: PgCluster, pg_db: PgDatabase, tmp_path: Path
) -> None:
    report = Chaos(mlflow_server, pg_cluster, pg_db, tmp_path, Settings()).run()
    print(report.summary())
    assert report.transitions >= 100
    assert report.actions, "failures were injected"
    assert len(report.epochs) > 1, "the lease changed hands"
    assert report.problems == []
