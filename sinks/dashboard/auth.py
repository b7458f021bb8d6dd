"""Viewer access to the wall display: one shared token, exchanged for an HttpOnly cookie.

Why this shape: the wall is a kiosk browser left running for weeks. It is opened once with
``/?token=...`` (or the login form); the server answers with a cookie that is HttpOnly (no
script can read it), SameSite=Strict (no other site can make the browser use it) and derived
from the token by HMAC, so the token itself is never stored in the browser and rotating it
logs every viewer out. Viewers are read-only: every route here is a GET except the login.
Scripts may send ``Authorization: Bearer <token>`` instead. /healthz and /metrics stay open
for the orchestrator and Prometheus.

>>> a = TokenAuth("s3cret")
>>> a.cookie_ok(a.cookie_value()), a.cookie_ok("forged"), a.token_ok("s3cret")
(True, False, True)
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

COOKIE: Final = "onemap_viewer"
COOKIE_MAX_AGE_S: Final = 30 * 24 * 3600
#: Paths anyone may fetch: probes, metrics, the login form and what it needs to look right.
OPEN_PATHS: Final = frozenset({"/healthz", "/metrics", "/login", "/static/onemap.css",
                                  "/static/favicon.svg"})


class TokenAuth:
    """Checks the shared viewer token and the cookie derived from it."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the dashboard token must not be empty")
        self._token = token.encode()

    def token_ok(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    def cookie_value(self) -> str:
        return hmac.new(self._token, b"onemap-dashboard-viewer-v1", hashlib.sha256).hexdigest()

    def cookie_ok(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate, self.cookie_value())

    def bearer_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return self.token_ok(header.removeprefix("Bearer ").strip())
