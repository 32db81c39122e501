"""One small error hierarchy and the exit statuses; the CLI turns each error into one clear
line and its class's exit status."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status of `mlflow-watcher`, defined once: the errors below carry theirs, the
    commands exit with these, and `--help` lists them from here."""

    OK = 0
    FAILED = 1
    USAGE = 2
    DELIVERY = 3
    LOCKED = 4
    INTERRUPTED = 130

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "done",
    ExitCode.FAILED: "the registry could not be read (or another runtime error)",
    ExitCode.USAGE: "bad configuration or usage",
    ExitCode.DELIVERY: "some deliveries failed; they are queued for retry, or dead",
    ExitCode.LOCKED: "another watcher holds the lock on the state file (or leads the shared state)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def first_line(text: str, limit: int = 300) -> str:
    """The first line of an error from elsewhere (MLflow, a driver), cut to ``limit``
    characters: what a one-line error or log field quotes of it."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


class WatcherError(Exception):
    """Base of every error the watcher raises on purpose."""

    exit_code = ExitCode.FAILED


class ConfigError(WatcherError):
    """The configuration is invalid. Carries every problem found, one per line."""

    exit_code = ExitCode.USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RegistryError(WatcherError):
    """The registry could not be read completely; the cycle is abandoned."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        """MLflow's error_code, when it answered with one (e.g. INVALID_PARAMETER_VALUE)."""
        self.status = status


class StoreError(WatcherError):
    """The state database is unusable."""


class LockError(StoreError):
    """Another watcher holds the state lock (or, for ``run --once`` on a shared state, the
    leader lease)."""

    exit_code = ExitCode.LOCKED
