"""Headless Chromium (Debian's) driven by Playwright against a real `onemap dashboard` process.

The dashboard runs as a child process on a free port, reading the session's real Redis
(``redis_url`` from tests/conftest.py). Chromium missing is a failure, not a skip: CI installs
it (``apt-get install chromium fonts-noto-cjk``), and a wall test that silently does not run
proves nothing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from onemap.embedded import free_port, onemap_command, spawn, stop, wait_until
from onemap.sinks.dashboard.auth import token_sha256

CHROMIUM = os.environ.get("ONEMAP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
TOKEN = "wall-test-token-7f3a"
#: An operator (may act) and a named viewer, in the operators file every test dashboard gets.
OPERATOR_TOKEN = "wall-test-operator-token-51c9e2"
OPERATOR_NAME = "值班员甲"
NAMED_VIEWER_TOKEN = "wall-test-named-viewer-8d04"
#: Records CSP violations before any page script runs (injected by Playwright, not inline).
CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@dataclasses.dataclass
class RunningDashboard:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path
    redis_url: str
    operator_token: str = OPERATOR_TOKEN

    def get(self, path: str, *, token: bool = True,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """GET without following redirects; with the bearer token unless ``token=False``."""
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, headers=hdrs)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: the wall-display tests need Debian's "
                    "chromium (apt-get install -y chromium fonts-noto-cjk) or "
                    "ONEMAP_TEST_CHROMIUM=/path/to/chromium", pytrace=False)
    return CHROMIUM


# package scope: Playwright's sync API keeps an event loop running while it is open, which
# would break every later test that calls asyncio.run()
@pytest.fixture(scope="package")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the wall-display tests need Python Playwright: pip install playwright "
                    "(its bundled driver is enough; no `playwright install`)", pytrace=False)
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS,
                                      headless=True)
        yield launched
        launched.close()


def write_operators(path: Path) -> Path:
    """The operators file: names, roles and the SHA-256 of each token (never the token)."""
    path.write_text(
        "version: 1\noperators:\n"
        f"  - {{name: {OPERATOR_NAME}, role: operator, "
        f"token_sha256: {token_sha256(OPERATOR_TOKEN)}}}\n"
        f"  - {{name: 值班观察员, role: viewer, "
        f"token_sha256: {token_sha256(NAMED_VIEWER_TOKEN)}}}\n",
        encoding="utf-8")
    return path


def start_dashboard(redis_url: str, tmp: Path, token: str = TOKEN) -> RunningDashboard:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ONEMAP_")},
           "ONEMAP_REDIS": redis_url, "ONEMAP_DASHBOARD_PORT": str(port),
           "ONEMAP_DASHBOARD_TOKEN": token, "ONEMAP_LOG_LEVEL": "INFO",
           "ONEMAP_DASHBOARD_OPERATORS": str(write_operators(tmp / "operators.yaml"))}
    log = tmp / "dashboard.log"
    proc = spawn(onemap_command("dashboard"), env=env, log_path=log)
    dash = RunningDashboard(f"http://127.0.0.1:{port}", token, proc, log, redis_url)

    def ready() -> bool:
        try:
            status, _, _ = dash.get("/api/areas")
            return status == 200
        except OSError:
            return False

    wait_until(ready, 60, f"dashboard (log: {log})", proc)
    return dash


@pytest.fixture(scope="module")
def dashboard(redis_url: str, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[RunningDashboard]:
    """A fresh Redis db and a dashboard process reading it, for one test module."""
    redis.Redis.from_url(redis_url).flushdb()
    dash = start_dashboard(redis_url, tmp_path_factory.mktemp("dashboard"))
    yield dash
    stop([dash.proc])


@dataclasses.dataclass
class WallPage:
    page: Any
    errors: list[str]

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("window.__cspViolations || []"))


def new_wall_page(browser: Any, contexts: list[Any], width: int = 1920, height: int = 1080,
                  init_scripts: Sequence[str] = ()) -> tuple[Any, list[str]]:
    """A page in a new browser context as the command room's wall has it (zh-CN,
    Asia/Shanghai; the CSP probe and ``init_scripts`` injected before the page), and the list
    its console errors and warnings (``console.<type>: <text> @ <url>``) and page errors are
    collected into. The context goes into ``contexts``, for the fixture to close."""
    context = browser.new_context(viewport={"width": width, "height": height},
                                  locale="zh-CN", timezone_id="Asia/Shanghai")
    contexts.append(context)
    for script in (CSP_PROBE, *init_scripts):
        context.add_init_script(script)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(
        f"console.{m.type}: {m.text} @ {m.location.get('url')}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    return page, errors


@pytest.fixture()
def open_wall(browser: Any, dashboard: RunningDashboard
              ) -> Iterator[Callable[..., WallPage]]:
    """Open the wall page at a resolution, logged in with ``?token=``; collect console errors."""
    contexts: list[Any] = []

    def open_page(width: int = 1920, height: int = 1080, *, login: bool = True) -> WallPage:
        page, errors = new_wall_page(browser, contexts, width, height)
        url = dashboard.url + (f"/?token={dashboard.token}" if login else "/")
        page.goto(url)
        if login:
            page.wait_for_function("() => window.onemapWall && window.onemapWall.stateCount > 0",
                                   timeout=15_000)
        return WallPage(page, errors)

    yield open_page
    for context in contexts:
        context.close()
