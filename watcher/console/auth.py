"""Who may use the console: a token, a user and password, or (only when configured) a header
set by a single-sign-on proxy in front; and the session cookie that keeps a sign-in.

Every secret is compared in constant time. Every route but /login and /static wants a
signed-in user: a GET without one is sent to /login, anything else is refused (401) before
it reaches a view, so nothing changes. ``Authorization: Bearer <token>`` works for GETs (a
script reading a page); forms always go through the session and its CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from typing import TYPE_CHECKING

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from watcher.config import ConsoleConfig
from watcher.signing import bearer_token, same_secret

if TYPE_CHECKING:
    from watcher.console.app import Console

blueprint = Blueprint("auth", __name__)

PUBLIC_ENDPOINTS = frozenset({"auth.login", "static"})
READS = frozenset({"GET", "HEAD"})
_SESSION_KEY_CONTEXT = b"mlflow-watcher console session key v1"


def session_key(config: ConsoleConfig) -> bytes:
    """The key that signs session cookies: the configured one; else derived (HMAC) from the
    token or password, so every replica behind one load balancer accepts the same cookie and
    changing the credential signs everybody out; else (a trusted header only) random for
    this process."""
    if config.session_key is not None:
        material = config.session_key.reveal()
    else:
        credential = config.token or config.password
        if credential is None:
            return secrets.token_bytes(32)
        material = credential.reveal()
    return hmac.new(material.encode(), _SESSION_KEY_CONTEXT, hashlib.sha256).digest()


def credentials_proof(config: ConsoleConfig, key: bytes) -> str:
    """What a session carries to show it was opened with the credentials configured now:
    changing the token or the password signs everybody out, even with a session key of its
    own. An HMAC under the session key, so the cookie (signed, not encrypted) tells nothing
    about the credentials."""
    parts = [
        config.token.reveal() if config.token else "",
        config.username or "",
        config.password.reveal() if config.password else "",
    ]
    return hmac.new(key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


def _proof() -> str:
    key = current_app.secret_key
    assert isinstance(key, bytes)
    return credentials_proof(_console().config.console, key)


def _console() -> Console:
    from watcher.console.app import console

    return console()


def signed_in_user() -> str | None:
    """Who makes this request, or None: the trusted header (when configured), the session,
    or a bearer token on a GET."""
    config = _console().config.console
    if config.trusted_header is not None:
        user = request.headers.get(config.trusted_header, "").strip()
        if user:
            return user
    in_session = session.get("user")
    if isinstance(in_session, str) and in_session and session.get("proof") == _proof():
        return in_session
    if request.method in READS and config.token is not None:
        given = bearer_token(request.headers.get("Authorization"))
        if given is not None:
            return _bearer(given, config.token.reveal())
    return None


def _bearer(given: str, token: str) -> str | None:
    """A bearer token counts as a sign-in attempt: wrong ones are throttled like the form's,
    and an address over the limit is not even compared."""
    throttle, address = _console().throttle, _address()
    if throttle.retry_after(address) is not None:
        return None
    if same_secret(given, token):
        return "token"
    throttle.failed(address)
    return None


def _address() -> str:
    return request.remote_addr or "unknown"


def _require_sign_in() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    user = signed_in_user()
    if user is not None:
        g.user = user
        return None
    if request.method in READS:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    abort(401, "Sign in first: this console wants a credential.")
    return None  # not reached: abort raises


def check_credentials(config: ConsoleConfig, form: dict[str, str]) -> str | None:
    """The user a login form signs in, or None. Both comparisons of a user/password pair run
    whatever the first says, so the time does not tell a right user name."""
    token = form.get("token", "")
    if config.token is not None and token and same_secret(token, config.token.reveal()):
        return "token"
    username, password = form.get("username", ""), form.get("password", "")
    if config.username is not None and config.password is not None and username and password:
        user_ok = same_secret(username, config.username)
        password_ok = same_secret(password, config.password.reveal())
        if user_ok and password_ok:
            return config.username
    return None


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this console, never another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("views.overview")


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | tuple[str, int, dict[str, str]] | str:
    c = _console()
    if request.method == "GET":
        return render_template("login.html", config=c.config.console, next=request.args.get("next"))
    address = _address()
    wait = c.throttle.retry_after(address)
    if wait is not None:
        c.log.warning("console.login_throttled", remote=address)
        seconds = str(max(1, math.ceil(wait)))
        flash(f"Too many failed sign-ins from this address: try again in {seconds} s.", "error")
        page = render_template("login.html", config=c.config.console, next=request.form.get("next"))
        return page, 429, {"Retry-After": seconds}
    user = check_credentials(c.config.console, request.form.to_dict())
    if user is None:
        c.throttle.failed(address)
        c.log.warning("console.login_failed", remote=address)
        flash("Wrong credentials.", "error")
        page = render_template("login.html", config=c.config.console, next=request.form.get("next"))
        return page, 401
    c.throttle.succeeded(address)
    session.clear()
    session["user"] = user
    session["proof"] = _proof()
    session.permanent = True
    c.log.info("console.login", user=user, remote=request.remote_addr)
    return redirect(_safe_next(request.form.get("next")))


@blueprint.route("/logout", methods=["POST"])
def logout() -> Response:
    _console().log.info("console.logout", user=g.get("user"))
    session.clear()
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.before_request(_require_sign_in)
    app.register_blueprint(blueprint)
