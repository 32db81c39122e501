"""mlflow-registry-watcher: MLflow model registry changes as signed, reliable webhooks."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml is the one place the version is written; an install records it.
    __version__ = version("mlflow-registry-watcher")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
