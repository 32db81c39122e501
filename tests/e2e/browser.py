"""A real headless Chromium for the console's tests, driven by Playwright.

The browser is Debian's ``chromium`` package (``.ci/run`` installs it when it is missing);
Playwright's Python package (a `dev` dependency) drives it through its own driver, so nothing is
downloaded at test time. ``WATCHER_CHROMIUM`` points at another Chromium binary. Without one the
browser tests are skipped with the reason, except under CI, where they fail: CI must run them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

# Chromium's background services (component updates, sync, safe browsing) try to reach Google at
# every start; this machine's network refuses them, many at a time. None is needed to render.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
)


def chromium_path() -> str | None:
    """The Chromium binary to drive: WATCHER_CHROMIUM, or Debian's on PATH."""
    given = os.environ.get("WATCHER_CHROMIUM")
    if given:
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    path = chromium_path()
    if path is None:
        reason = "no Chromium: install Debian's chromium package (or set WATCHER_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run the browser tests")
        pytest.skip(reason)
    return path


@contextmanager
def launched() -> Iterator[Browser]:
    """A headless Chromium with a fresh profile, closed at the end."""
    path = require_chromium()
    with sync_playwright() as playwright:
        browser = _launch(playwright, path)
        try:
            yield browser
        finally:
            browser.close()


def _launch(playwright: Playwright, path: str) -> Browser:
    return playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)


@dataclass
class Visit:
    """What the browser saw of one page: the answer's status and headers, and the page."""

    status: int
    headers: dict[str, str]
    page: Page


class Console:
    """The console at ``base`` in one browser context (one session, its own cookies).

    Every page the test opens is kept with the script errors and dialogs it raised, so a test
    can assert that none ran (an injected ``alert`` would open a dialog)."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base.rstrip("/")
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.html: list[str] = []

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open(self, path: str) -> Visit:
        response = self.page.goto(self.base + path)
        assert response is not None, f"no answer for {path}"
        self.html.append(self.page.content())
        return Visit(response.status, response.headers, self.page)

    def login_with_token(self, token: str) -> Visit:
        self.open("/login")
        self.page.fill("form#login input[name=token]", token)
        with self.page.expect_navigation():
            self.page.click("form#login button[type=submit]")
        self.html.append(self.page.content())
        return Visit(200, {}, self.page)

    def submit(self, form: str) -> None:
        """Press the submit button of ``form`` (a selector) and wait for the next page."""
        with self.page.expect_navigation():
            self.page.click(f"{form} button[type=submit]")
        self.html.append(self.page.content())

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector).strip()

    def close(self) -> None:
        self.context.close()
