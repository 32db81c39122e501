"""mlflow-registry-watcher: MLflow model registry changes as signed, reliable webhooks."""

__version__ = "0.1.0"
