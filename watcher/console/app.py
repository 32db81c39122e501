"""The console's Flask application: its settings, the security headers on every answer, the
error pages, and the blueprints of :mod:`~watcher.console.auth`,
:mod:`~watcher.console.views` and :mod:`~watcher.console.actions`.

Everything a request needs (the config, the store, the clock, read-only or not) hangs on the
app as one :class:`Console`, so the application holds no module-level state and a test builds
one per case.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from flask import Flask, Response, current_app, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from watcher.config import Config
from watcher.console import auth, texts
from watcher.console.throttle import LoginThrottle
from watcher.errors import StoreError
from watcher.store import Store

SESSION_LIFETIME = timedelta(hours=12)
"""How long a sign-in lasts without a new one."""

SECURITY_HEADERS = {
    # No script at all, styles and images from the console itself, forms posted only to it,
    # never framed (clickjacking on the Redeliver button).
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Console:
    """What every request of one console shares."""

    config: Config
    store: Store
    read_only: bool
    clock: Callable[[], float]
    log: Any
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    """Failed sign-ins by client address (the form and bearer tokens)."""


def console() -> Console:
    """The console of the app serving the current request."""
    found: Console = current_app.extensions["watcher.console"]
    return found


class _SessionInterface(SecureCookieSessionInterface):
    """The signed session cookie, Secure whenever the browser reached the console over https
    (directly, or through a proxy that says so), so one config serves both."""

    def get_cookie_secure(self, app: Flask) -> bool:
        forwarded = request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        return request.is_secure or forwarded


def create_app(
    config: Config,
    store: Store,
    *,
    read_only: bool | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """The console on ``store``; ``read_only`` None: as ``[console] read_only`` says."""
    app = Flask(__name__, static_url_path="/static")
    app.config.update(
        SECRET_KEY=auth.session_key(config.console),
        SESSION_COOKIE_NAME="watcher_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # The CSRF token lives as long as the session that carries it.
        WTF_CSRF_TIME_LIMIT=None,
        # Forms are a few fields; anything bigger is not the console's.
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.session_interface = _SessionInterface()
    app.extensions["watcher.console"] = Console(
        config=config,
        store=store,
        read_only=config.console.read_only if read_only is None else read_only,
        clock=clock,
        log=structlog.get_logger("watcher.console"),
    )
    # Signing in is checked before the CSRF token: a stranger's POST is refused as such.
    auth.init_app(app)
    CSRFProtect(app)
    from watcher.console import actions, views

    app.register_blueprint(views.blueprint)
    app.register_blueprint(actions.blueprint)
    texts.init_app(app)
    app.after_request(_secure)
    app.register_error_handler(CSRFError, _csrf_refused)
    app.register_error_handler(HTTPException, _error_page)
    app.register_error_handler(StoreError, _state_unavailable)
    app.register_error_handler(Exception, _crashed)
    app.context_processor(_page_globals)
    return app


def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def _page_globals() -> dict[str, Any]:
    c = console()
    return {
        "read_only": c.read_only,
        "user": auth.signed_in_user(),
    }


def _csrf_refused(exc: CSRFError) -> tuple[str, int]:
    message = f"The form's security token is missing or wrong ({exc.description}); reload it."
    return render_template("error.html", status=403, message=message), 403


def _state_unavailable(exc: StoreError) -> tuple[str, int]:
    """The database went away (PostgreSQL restarting, a disk full): a page that says so, and
    the console carries on serving."""
    console().log.warning("console.state_unavailable", path=request.path, error=str(exc))
    message = f"The state cannot be read right now: {exc}"
    return render_template("error.html", status=503, message=message), 503


def _crashed(exc: Exception) -> tuple[str, int]:
    """A bug in a page: logged with its traceback, a 500 for the browser, nothing more."""
    console().log.exception("console.error", path=request.path, error=type(exc).__name__)
    message = "The console failed on this page; the watcher's log has the details."
    return render_template("error.html", status=500, message=message), 500


def _error_page(exc: HTTPException) -> BaseResponse | tuple[str, int]:
    status = exc.code or 500
    if status == 405 or exc.response is not None:
        return exc.get_response()
    return render_template("error.html", status=status, message=exc.description), status
