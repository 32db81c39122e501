"""A real PostgreSQL for the tests: a private cluster and PgBouncer in transaction pooling mode
(tests/netproxy.py has the loopback proxy that cuts the line to it).

Nothing here touches a system cluster or service: every cluster is made by Debian's `initdb` in
a temporary directory, listens on a Unix socket there and on 127.0.0.1 at a free port, and is
removed at the end. `initdb`, `postgres` and `pgbouncer` refuse to run as root, so when the tests
run as root (as CI does) they run as the `postgres` system user that Debian's package creates,
in a directory that user owns; otherwise as the current user.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from tests.e2e.harness import wait_for
from tests.helpers import free_port

PG_BINARIES = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
ROLE = "watcher"
"""The login role the tests' watchers use: a password over TCP, trusted on the socket."""

# Durability buys nothing in a throwaway cluster; 200 connections leave room for twenty
# replicas with their pools and the tests' own connections.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "password_encryption": "'scram-sha-256'",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}


def server_bindir() -> Path:
    """The newest PostgreSQL server's bin directory from Debian's packages; the test fails
    (never skips: a suite that quietly skips its database tests proves nothing) when none is
    installed."""
    found = [d / "bin" for d in PG_BINARIES.glob("*") if (d / "bin" / "initdb").exists()]
    if not found:
        pytest.fail(
            f"no PostgreSQL server under {PG_BINARIES}/*/bin: install Debian's `postgresql` "
            "package (apt-get install postgresql); the tests start their own cluster"
        )
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


class Runner:
    """Runs the database's programs as the `postgres` system user when the tests run as root,
    as the current user otherwise, in a clean environment (no PG* variable of the caller leaks
    into the server)."""

    def __init__(self) -> None:
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam(SUPERUSER)
            except KeyError:
                pytest.fail(
                    "running as root, but there is no `postgres` system user to run PostgreSQL "
                    "as: install Debian's `postgresql` package, which creates it"
                )

    def own(self, path: Path) -> None:
        """Hands ``path`` (a file or a directory we made) to the user that runs the server."""
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def mkdir(self, path: Path) -> Path:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.own(path)
        return path

    def popen(self, argv: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=str(cwd), LC_ALL="C.UTF-8")
        ids: dict[str, Any] = {}
        if self.user is not None:
            ids = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        with log.open("ab") as out:
            return subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **ids,
            )

    def run(self, argv: list[str], cwd: Path, log: Path) -> None:
        proc = self.popen(argv, cwd, log)
        if proc.wait(timeout=120) != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"{Path(argv[0]).name} exited with {proc.returncode}:\n{tail}")


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float = 30) -> None:
    """``sig``, then SIGKILL if the process is still there after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Managed:
    """``with X(...) as x:`` starts x and closes it on the way out, whatever happened (a start
    that failed half-way included)."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PgDatabase:
    """One test's database, and the ways to reach it as the `watcher` role."""

    name: str
    url: str
    """Over TCP, without the password: it comes from ``password`` (PGPASSWORD, a file...)."""
    password: str
    url_with_password: str
    """Over TCP, the password percent-encoded in the URL."""
    socket_url: str
    """Over the Unix socket, which trusts every role: no password."""

    @property
    def env(self) -> dict[str, str]:
        """The libpq environment that supplies the password to ``url``."""
        return {"PGPASSWORD": self.password}

    def write_passfile(self, path: Path) -> Path:
        """A libpq password file (for PGPASSFILE or ``passfile=``) with this database's line,
        ``:`` and ``\\`` escaped as libpq reads them, readable by its owner only."""
        secret = self.password.replace("\\", "\\\\").replace(":", "\\:")
        path.write_text(f"127.0.0.1:*:{self.name}:{ROLE}:{secret}\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    def __repr__(self) -> str:
        return f"PgDatabase(name={self.name!r}, url={self.url!r})"


class PgCluster(Managed):
    """A private PostgreSQL cluster in a temporary directory (``initdb`` on the first
    ``start()``), with the login role ``watcher`` and its generated password.

    The password carries characters a URL must escape (``@:/%``), so a test also proves that
    the code under test passes it along intact."""

    def __init__(self, port: int | None = None) -> None:
        self.bindir = server_bindir()
        self.runner = Runner()
        # Under the system's temporary directory, not pytest's: the `postgres` user must be
        # able to reach it, and a Unix socket's path has to stay under ~100 characters.
        self.base = Path(tempfile.mkdtemp(prefix="watcher-pg-"))
        self.runner.own(self.base)
        self.datadir = self.base / "data"
        self.socket_dir = self.base
        self.log = self.base / "postgres.log"
        self.port = port or free_port()
        self.password = f"{secrets.token_urlsafe(12)}@:/%"
        self.proc: subprocess.Popen[bytes] | None = None
        # A script that forgets close(), or dies of an exception, leaves no server behind.
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"PgCluster(port={self.port}, base={str(self.base)!r})"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Starts the server (making the cluster first if there is none yet) and waits until it
        answers on its socket."""
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        self.proc = self.runner.popen(
            [str(self.bindir / "postgres"), "-D", str(self.datadir)], self.base, self.log
        )
        wait_for(self._ready, timeout, "PostgreSQL to accept connections", interval=0.05)
        if not self.psql("SELECT 1 FROM pg_roles WHERE rolname = %s", params=[ROLE]):
            self.psql(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(self.password)
                )
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, connections are closed."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT)
            self.proc = None

    def restart(self) -> None:
        """A fast shutdown and a start on the same data directory and port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the server and removes its directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _initdb(self) -> None:
        self.runner.mkdir(self.datadir)
        argv = [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER]
        argv += ["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        self.runner.run(argv, self.base, self.base / "initdb.log")
        settings = {**SETTINGS, "port": str(self.port)}
        settings["unix_socket_directories"] = f"'{self.socket_dir}'"
        with (self.datadir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# the tests' settings\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n", encoding="utf-8"
        )

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"postgres exited with {self.proc.returncode}:\n{tail}")
        try:
            self.admin().close()
        except psycopg.OperationalError:
            return False
        return True

    # -- addresses --------------------------------------------------------------------------

    def url(
        self,
        dbname: str = "postgres",
        via: Literal["tcp", "socket"] = "tcp",
        password: bool = False,
        user: str = ROLE,
        port: int | None = None,
    ) -> str:
        """A libpq URL for ``user`` (the password, when asked, percent-encoded in it); over TCP
        to another ``port`` on 127.0.0.1 when given (a TcpProxy's, PgBouncer's)."""
        if via == "socket":
            return f"postgresql://{user}@/{dbname}?host={self.socket_dir}&port={self.port}"
        secret = f":{quote(self.password, safe='')}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{port or self.port}/{dbname}"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        """A superuser connection over the socket, in autocommit."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER,
            dbname=dbname,
            autocommit=True,
            connect_timeout=2,
        )

    # -- statements -------------------------------------------------------------------------

    def psql(
        self, statement: str | sql.Composable, db: str = "postgres", params: Any = None
    ) -> list[tuple[Any, ...]]:
        """Runs one statement as the superuser in ``db``; its rows (none for a command)."""
        with self.admin(db) as conn, conn.cursor() as cur:
            cur.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def psql_cli(self, statement: str, db: str = "postgres") -> str:
        """Runs ``statement`` with the `psql` program (unaligned, tuples only): for what
        psycopg cannot do, such as psql's backslash commands."""
        argv = [str(self.bindir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", db]
        done = subprocess.run(
            [*argv, "-c", statement], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def create_database(self, name: str | None = None) -> PgDatabase:
        """A new empty database owned by ``watcher`` (a copy of template0: a fraction of a
        second)."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.psql(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                sql.Identifier(name), sql.Identifier(ROLE)
            )
        )
        return PgDatabase(
            name=name,
            url=self.url(name),
            password=self.password,
            url_with_password=self.url(name, password=True),
            socket_url=self.url(name, via="socket"),
        )

    def drop_database(self, name: str) -> None:
        """Drops ``name``, terminating whatever is still connected to it."""
        self.psql(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def terminate_backends(
        self,
        role: str | None = None,
        *,
        application_name: str | None = None,
        dbname: str | None = None,
    ) -> int:
        """pg_terminate_backend() on every client connection that matches (all of them when
        nothing is given) except the caller's own; how many it terminated."""
        rows = self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            " AND (%(role)s::text IS NULL OR usename = %(role)s)"
            " AND (%(app)s::text IS NULL OR application_name = %(app)s)"
            " AND (%(db)s::text IS NULL OR datname = %(db)s)",
            params={"role": role, "app": application_name, "db": dbname},
        )
        return int(rows[0][0])


class PgBouncer(Managed):
    """Debian's `pgbouncer` in front of a cluster, on a free 127.0.0.1 port, in transaction
    pooling mode by default. Clients log in as ``watcher`` with the cluster's password (SCRAM,
    from a userlist file); PgBouncer reaches the server over its trusted socket."""

    def __init__(self, cluster: PgCluster, pool_mode: str = "transaction") -> None:
        found = shutil.which("pgbouncer") or next(
            (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).exists()), None
        )
        if found is None:
            pytest.fail("no `pgbouncer` program: install Debian's `pgbouncer` package")
        self.binary = found
        self.cluster = cluster
        self.pool_mode = pool_mode
        self.port = free_port()
        self.dir = cluster.runner.mkdir(cluster.base / f"pgbouncer-{self.port}")
        self.log = self.dir / "pgbouncer.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        userlist = self.dir / "userlist.txt"
        secret = self.cluster.password.replace('"', '""')
        userlist.write_text(f'"{ROLE}" "{secret}"\n', encoding="utf-8")
        config = self.dir / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={self.cluster.socket_dir} port={self.cluster.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {userlist}\n"
            f"pool_mode = {self.pool_mode}\n"
            "max_client_conn = 500\ndefault_pool_size = 40\n"
            "ignore_startup_parameters = extra_float_digits,options\n",
            encoding="utf-8",
        )
        for path in (userlist, config):
            path.chmod(0o600)
            self.cluster.runner.own(path)
        return config

    def start(self, timeout: float = 30) -> None:
        config = self._write_config()
        self.proc = self.cluster.runner.popen([self.binary, str(config)], self.dir, self.log)

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise AssertionError(f"pgbouncer exited with {self.proc.returncode}:\n{tail}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(answers, timeout, "pgbouncer to listen", interval=0.05)

    def stop(self) -> None:
        """Immediate shutdown (SIGTERM): clients are disconnected."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM)
            self.proc = None

    close = stop

    def url(self, dbname: str, password: bool = False) -> str:
        """A libpq URL to ``dbname`` through PgBouncer, as ``watcher``."""
        return self.cluster.url(dbname, password=password, port=self.port)
