"""Makes registry changes for the tests with the MLflow client of the interpreter running it.

Run as ``<venv>/bin/python agent.py`` with ``MLFLOW_TRACKING_URI`` set: the tests drive each
MLflow version's registry with that version's own client (an MLflow 3 client against an MLflow
2.9 server hits the very prompt-filter trap the watcher must avoid, and some APIs differ).
Standard library and mlflow only: this file runs under MLflow 2.9 as well as 3.x.

Protocol: the first line out is ``{"ok": true, "result": "<mlflow version>"}``; then one JSON
request per line in, ``{"call": "set_registered_model_alias", "args": [...], "kwargs": {...}}``,
answered by one JSON line out, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def _plain(value: Any) -> Any:
    """Entities as small JSON values: what the tests look at, nothing more."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "current_stage"):  # ModelVersion
        return {
            "name": value.name,
            "version": str(value.version),
            "current_stage": value.current_stage,
            "tags": dict(value.tags or {}),
            "aliases": list(getattr(value, "aliases", None) or []),
        }
    if hasattr(value, "latest_versions"):  # RegisteredModel
        return {
            "name": value.name,
            "tags": dict(value.tags or {}),
            "aliases": dict(getattr(value, "aliases", None) or {}),
        }
    if hasattr(value, "__iter__"):  # PagedList
        return [_plain(v) for v in value]
    return repr(value)


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever MLflow prints goes to stderr, never into the answers

    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    answers.write(json.dumps({"ok": True, "result": mlflow.__version__}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            method = getattr(client, request["call"])
            result = method(*request.get("args", ()), **request.get("kwargs", {}))
            answer = {"ok": True, "result": _plain(result)}
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
