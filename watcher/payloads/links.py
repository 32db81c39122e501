"""Where an event can be seen in the MLflow UI, and what a payload may say beside the event.

The MLflow UI is a single-page application with a hash router. Its routes (MLflow 3.x, and
2.x before it) for a registered model and for one of its versions are::

    <ui_url>/#/models/<name>
    <ui_url>/#/models/<name>/versions/<version>

with the name passed through ``encodeURIComponent`` by the UI itself; here it is quoted with no
safe characters, which the UI decodes the same way (a ``/`` or ``#`` in a name stays in the
name). With workspaces the UI adds ``?workspace=<name>`` after the route, which is how a link
opened by someone else lands in the right workspace.

No base URL configured, no links: the tracking URI is not guessed from, since it is often an
address inside a cluster that a reader of a Slack message cannot open, or carries credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from watcher.model import Event, EventType


@dataclass(frozen=True)
class PayloadContext:
    """What the config adds to every payload: ``[mlflow] ui_url`` and ``[mlflow] workspace``."""

    ui_url: str | None = None
    """The MLflow UI's base address, without a trailing ``/``; None: no links."""
    workspace: str | None = None
    """The MLflow workspace the watcher reads; None: workspaces are not in use."""


NO_CONTEXT = PayloadContext()
EXAMPLE_CONTEXT = PayloadContext(ui_url="https://mlflow.example.com", workspace="default")
"""What template validation renders the full examples with (and the sparse ones without)."""


def model_url(ui_url: str, name: str, workspace: str | None = None) -> str:
    """The UI page of a registered model."""
    return f"{ui_url}/#/models/{quote(name, safe='')}{_workspace_query(workspace)}"


def model_version_url(ui_url: str, name: str, version: str, workspace: str | None = None) -> str:
    """The UI page of one model version."""
    route = f"/#/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"
    return f"{ui_url}{route}{_workspace_query(workspace)}"


def _workspace_query(workspace: str | None) -> str:
    return "?" + urlencode({"workspace": workspace}) if workspace else ""


def event_links(event: Event, context: PayloadContext) -> dict[str, str]:
    """``model_url`` and ``model_version_url`` of an event, for what still exists after it.

    A deleted model has no page, so its event has no link; a deleted version links to its
    model. An alias event links to the version the alias points to (or pointed to). Events
    of types this module does not know get none: their pages may be elsewhere in the UI.
    """
    ui_url = context.ui_url
    if ui_url is None or event.type not in _LINKED:
        return {}
    links = {"model_url": model_url(ui_url, event.model_name, context.workspace)}
    if event.model_version is not None and event.type is not _VERSION_GONE:
        links["model_version_url"] = model_version_url(
            ui_url, event.model_name, event.model_version, context.workspace
        )
    return links


_VERSION_GONE = EventType.MODEL_VERSION_DELETED
_LINKED = frozenset(
    {
        EventType.REGISTERED_MODEL_CREATED,
        EventType.REGISTERED_MODEL_RENAMED,
        EventType.MODEL_VERSION_CREATED,
        EventType.MODEL_VERSION_TRANSITIONED_STAGE,
        EventType.MODEL_VERSION_TRANSITIONED_TO_STAGING,
        EventType.MODEL_VERSION_TRANSITIONED_TO_PRODUCTION,
        EventType.MODEL_VERSION_TRANSITIONED_TO_ARCHIVED,
        EventType.MODEL_VERSION_DELETED,
        EventType.MODEL_VERSION_TAG_SET,
        EventType.MODEL_VERSION_TAG_DELETED,
        EventType.MODEL_VERSION_ALIAS_CREATED,
        EventType.MODEL_VERSION_ALIAS_DELETED,
    }
)
"""The registered-model events whose model is still there: their pages are the ``/models``
routes (``REGISTERED_MODEL_DELETED`` has no page left)."""
