"""The actions, each a POST behind the session and its CSRF token, each one line in the log
(``console.action``: what, by whom, on what, how many rows; never a secret).

An action is a write to the state, as the ``redeliver`` command's is: on a SQLite state the
daemon's deliverer (or the next ``run --once``) sends what it queued; on a shared PostgreSQL
state, the leader does, whichever replica served the page. A read-only console refuses every
action (403) before it reaches the store.
"""

from __future__ import annotations

import dataclasses
import uuid

from flask import Blueprint, abort, flash, g, redirect, request, url_for
from werkzeug.wrappers import Response

from watcher.config import event_by_name
from watcher.console.app import console
from watcher.errors import StoreError
from watcher.model import make_delivery_id
from watcher.payloads import example_event

blueprint = Blueprint("actions", __name__)


@blueprint.before_request
def _writable() -> None:
    if console().read_only:
        abort(403, "This console is read-only: it takes no actions.")


def _logged(action: str, target: str, count: int) -> None:
    console().log.info(
        "console.action", action=action, user=g.get("user"), target=target, count=count
    )


@blueprint.route("/deliveries/<delivery_id>/redeliver", methods=["POST"])
def redeliver(delivery_id: str) -> Response:
    """Queue the delivery again under its own id, due now (as ``redeliver ID`` does)."""
    c = console()
    try:
        count = c.store.redeliver([delivery_id], now=c.clock())
    except StoreError:
        abort(404, f"No delivery with id {delivery_id}.")
    _logged("redeliver", delivery_id, count)
    flash("Queued again: it goes out with the next delivery round.", "ok")
    return redirect(url_for("views.delivery", delivery_id=delivery_id))


def _known_webhook(name: str) -> None:
    if console().config.webhook(name) is None:
        abort(404, f"No webhook named {name} in the configuration.")


@blueprint.route("/webhooks/<name>/redeliver-dead", methods=["POST"])
def redeliver_dead(name: str) -> Response:
    """Queue every dead delivery of the webhook again (as ``redeliver --dead --webhook``)."""
    c = console()
    _known_webhook(name)
    count = c.store.redeliver(dead=True, webhook=name, now=c.clock())
    _logged("redeliver-dead", name, count)
    flash(f"{count} dead deliveries of {name} queued again.", "ok")
    return redirect(url_for("views.deliveries", webhook=name, status="pending"))


@blueprint.route("/webhooks/<name>/test", methods=["POST"])
def test_event(name: str) -> Response:
    """Queue an example event for the webhook (the one ``test-webhook`` sends), under an
    event id of its own so every press is a delivery of its own in the log."""
    c = console()
    _known_webhook(name)
    webhook = c.config.webhook(name)
    assert webhook is not None
    wanted = request.form.get("event", "").strip()
    event_type = event_by_name(wanted) if wanted else min(webhook.events)
    if event_type is None:
        abort(
            400, f"event: got {wanted[:80]!r}, expected an event type such as MODEL_VERSION_CREATED"
        )
    now = c.clock()
    # 32 hex digits, the shape of a detected event's id, fresh for every press.
    event = dataclasses.replace(example_event(event_type), event_id=uuid.uuid4().hex)
    delivery_id = make_delivery_id(event.event_id, name)
    c.store.queue_test_delivery(event, name, delivery_id, now)
    _logged("test-event", name, 1)
    flash(f"A test {event_type.value} event is queued for {name}.", "ok")
    return redirect(url_for("views.delivery", delivery_id=delivery_id))
