"""One small error hierarchy; the CLI turns each into one clear line and an exit status."""

from __future__ import annotations


class WatcherError(Exception):
    """Base of every error the watcher raises on purpose."""

    exit_code = 1


class ConfigError(WatcherError):
    """The configuration is invalid. Carries every problem found, one per line."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RegistryError(WatcherError):
    """The registry could not be read completely; the cycle is abandoned."""

    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        """MLflow's error_code, when it answered with one (e.g. INVALID_PARAMETER_VALUE)."""
        self.status = status


class StoreError(WatcherError):
    """The state database is unusable."""

    exit_code = 1


class LockError(StoreError):
    """Another watcher holds the state lock."""

    exit_code = 4
