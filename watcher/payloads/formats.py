"""The names of the body formats, apart from their renderers (the config checks them)."""

FORMATS = ("watcher", "databricks", "mlflow", "github", "gitlab", "jenkins", "slack", "template")

TOKEN_FORMATS = ("gitlab", "jenkins")
"""Formats whose secret is a trigger token sent in the body, not a signing key."""
