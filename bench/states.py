"""The state backends the benchmark measures side by side (`BENCH_STATES`, default both): the
SQLite file, and PostgreSQL in a private cluster the benchmark starts itself (the test suite's
``PgCluster``), one database per size and one namespace per state a part needs."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.harness import watcher_env
from tests.e2e.replicas import replica_env
from tests.pg import PgCluster, PgDatabase
from watcher.store import PgSettings, Store

NAMES = ("sqlite", "postgresql")


class States:
    """Where one backend keeps the states of one size: ``tag`` names one of them (a file, or a
    namespace), fresh the first time it is opened."""

    name = "sqlite"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def path(self, tag: str) -> Path:
        """The state file a config names (unused on PostgreSQL, where the URL wins)."""
        return self.workdir / f"{self.name}-{tag}.db"

    def store(self, tag: str) -> Store:
        return Store.open(self.path(tag))

    def env(self, tag: str) -> dict[str, str]:
        """The environment of a daemon on state ``tag``."""
        return watcher_env()


class PgStates(States):
    name = "postgresql"

    def __init__(self, workdir: Path, db: PgDatabase) -> None:
        super().__init__(workdir)
        self.db = db

    @staticmethod
    def namespace(tag: str) -> str:
        return "bench_" + re.sub(r"\W", "_", tag)

    def store(self, tag: str) -> Store:
        settings = PgSettings(
            url=self.db.url, password=self.db.password, namespace=self.namespace(tag)
        )
        return Store.connect(settings)

    def env(self, tag: str) -> dict[str, str]:
        """As a replica's: the URL from WATCHER_STATE__URL, the password from PGPASSWORD."""
        return replica_env(self.db, namespace=self.namespace(tag))


class Backends:
    """The backends `BENCH_STATES` names; PostgreSQL's cluster lives as long as this."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.cluster: PgCluster | None = None
        if "postgresql" in names:
            self.cluster = PgCluster()
            self.cluster.start()

    def for_size(self, name: str, workdir: Path) -> States:
        if name == "sqlite":
            return States(workdir)
        assert self.cluster is not None
        return PgStates(workdir, self.cluster.create_database())

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()


def parse_states(text: str) -> list[str]:
    """`BENCH_STATES="sqlite postgresql"`: known names in the order given, each once."""
    names: list[str] = []
    for word in text.replace(",", " ").lower().split():
        name = {"pg": "postgresql", "postgres": "postgresql"}.get(word, word)
        if name in NAMES and name not in names:
            names.append(name)
    return names
