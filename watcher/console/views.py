"""The pages: the overview, the deliveries (filtered, paginated), one delivery, the events.

Each view asks the store, then hands plain values to its template; the templates escape
everything they print (model names, tags and receivers' answers are user data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint, abort, render_template, request

from watcher import state_meta as sm
from watcher.config import Config
from watcher.console import params
from watcher.console.app import console
from watcher.console.chart import chart_svg
from watcher.model import ALL_EVENTS, PROMPT_EVENTS
from watcher.status import status_report
from watcher.store import PENDING, DeliveryFilter

blueprint = Blueprint("views", __name__)

PAGE_SIZE = 50
EVENTS_PAGE = 100
RECENT = 10
"""Deliveries the overview lists, newest first."""


@blueprint.route("/")
def overview() -> str:
    c = console()
    now = c.clock()
    report = status_report(c.config, c.store, now)
    last_ok = sm.LAST_POLL_OK_AT.get(c.store.all_meta())
    stats = {s.webhook: s for s in c.store.webhook_stats(now)}
    names = sorted({*report["deliveries"], *stats})
    webhooks = [
        {
            "name": name,
            "counts": report["deliveries"].get(name, {}),
            "stats": stats.get(name),
            "configured": c.config.webhook(name) is not None,
        }
        for name in names
    ]
    recent, _ = c.store.delivery_page(DeliveryFilter(), limit=RECENT)
    return render_template(
        "overview.html",
        report=report,
        rows=recent,
        poll_lag=None if last_ok is None else max(0.0, now - last_ok),
        webhooks=webhooks,
        chart=chart_svg(c.store.delivery_chart(now)),
        events=_event_names(c.config),
    )


@blueprint.route("/deliveries")
def deliveries() -> str:
    c = console()
    args = request.args.to_dict()
    filters = params.delivery_filters(args, c.clock())
    before = params.cursor(args, "before")
    rows, next_before = c.store.delivery_page(filters, before=before, limit=PAGE_SIZE)
    next_args = {k: v for k, v in args.items() if v and k != "before"}
    return render_template(
        "deliveries.html",
        rows=rows,
        args=args,
        next_args=None if next_before is None else {**next_args, "before": next_before},
        webhooks=sorted(w.name for w in c.config.webhooks),
        events=_event_names(c.config),
        statuses=params.STATUSES,
    )


@blueprint.route("/deliveries/<delivery_id>")
def delivery(delivery_id: str) -> str:
    c = console()
    detail = c.store.delivery_detail(delivery_id)
    if detail is None:
        abort(404, f"No delivery with id {delivery_id}.")
    event = detail.event
    timeline = c.store.version_timeline(event.model_name, event.model_version)
    request_sent: dict[str, Any] | None = detail.request
    return render_template(
        "delivery.html",
        d=detail,
        row=detail.row,
        event=event,
        timeline=timeline,
        sent=request_sent,
        next_retry=detail.row.next_attempt_at if detail.row.status == PENDING else None,
        webhook_configured=c.config.webhook(detail.row.webhook) is not None,
    )


@blueprint.route("/events")
def events() -> str:
    c = console()
    args = request.args.to_dict()
    model = params.text(args, "model")
    since = params.moment(args, "since", c.clock())
    before = params.stamp(args, "before")
    rows, next_before = _events_page(
        c.store.model_events(model, since=since, before=before, limit=EVENTS_PAGE + 1)
    )
    next_args = None
    if next_before is not None:
        next_args = {k: v for k, v in args.items() if v and k != "before"}
        next_args["before"] = repr(next_before)
    return render_template(
        "events.html",
        rows=rows,
        args=args,
        next_args=next_args,
        models=c.store.model_names(),
    )


def _events_page(rows: Sequence[Any]) -> tuple[Sequence[Any], float | None]:
    """One page of the newest-first event log (asked for one row more than a page) and the
    ``before`` of the next. The events of one poll share their detection time, so a page
    ends before the poll it would cut in two, which the next page then shows whole (unless
    one poll fills the page alone)."""
    if len(rows) <= EVENTS_PAGE:
        return rows, None
    first_unshown = rows[EVENTS_PAGE].detected_at
    page = [r for r in rows[:EVENTS_PAGE] if r.detected_at > first_unshown]
    if not page:
        page = list(rows[:EVENTS_PAGE])
    return page, page[-1].detected_at


def _event_names(config: Config) -> list[str]:
    """The event types a form offers: the model registry's, and the prompts' once watched."""
    prompts = PROMPT_EVENTS if config.watches_prompts else frozenset()
    return sorted(e.value for e in ALL_EVENTS | prompts)
