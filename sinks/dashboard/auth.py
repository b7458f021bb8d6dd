"""Access to the wall display: a shared viewer token for the kiosk, named operator tokens
for the people who act.

Why this shape: the wall is a kiosk browser left running for weeks. It is opened once with
``/?token=...`` (or the login form); the server answers with a cookie that is HttpOnly (no
script can read it), SameSite=Strict (no other site can make the browser use it) and derived
from the token by HMAC, so the token itself is never stored in the browser and rotating it
logs every viewer out. Viewers are read-only. Scripts may send ``Authorization: Bearer
<token>`` instead. /healthz and /metrics stay open for the orchestrator and Prometheus.

Operators (who acknowledge, dispatch, close and silence) are people, not a kiosk: each has a
token of their own, listed in an operators file (YAML: ``name``, ``role``, ``token_sha256``)
that holds only the SHA-256 of each token, so the file can be read by the deployment without
handing out anyone's rights. An operator token is accepted **only** as
``Authorization: Bearer``, never from a cookie: a browser never attaches that header by
itself, so no other site can make a wall (or an operator's browser) act (no CSRF), and the
kiosk cookie can never grant more than viewing. The file is re-read when it changes (at most
every ``check_every_s``); a bad edit keeps the last good operators and is logged.

>>> a = TokenAuth("s3cret")
>>> a.cookie_ok(a.cookie_value()), a.cookie_ok("forged"), a.token_ok("s3cret")
(True, False, True)
>>> token_sha256("t0ken")[:16]
'b46c09677343261f'
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

from pydantic import Field

from onemap.datafiles import StrictModel, load_yaml, validate_model
from onemap.errors import ConfigError

log = logging.getLogger(__name__)

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


def bearer_of(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def token_sha256(token: str) -> str:
    """What the operators file stores for a token (``printf %s TOKEN | sha256sum``)."""
    return hashlib.sha256(token.encode()).hexdigest()


Role = Literal["viewer", "operator"]

class OperatorEntry(StrictModel):
    name: str = Field(min_length=1, max_length=100)
    #: "operator" may act (steps, silences); "viewer" may only read, under its own name.
    role: Role
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class OperatorsFile(StrictModel):
    version: int = Field(ge=1)
    operators: list[OperatorEntry]


@dataclasses.dataclass(frozen=True, slots=True)
class Operator:
    """Who sent a request, as the operators file names them."""

    name: str
    role: Role

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


def load_operators(path: Path) -> dict[str, Operator]:
    """Token hash → operator, from the operators file; ConfigError (file, line, field) if
    it is invalid, names a person twice or gives two people the same token."""
    data, lines = load_yaml(path)
    model = validate_model(OperatorsFile, data, lines, path)
    out: dict[str, Operator] = {}
    names: set[str] = set()
    for i, entry in enumerate(model.operators):
        for field, twice, why in (
                ("name", entry.name in names, f"{entry.name!r} is listed twice"),
                ("token_sha256", entry.token_sha256 in out, "two entries share one token")):
            if twice:
                raise ConfigError(why, path=str(path), line=lines.get(("operators", i, field)),
                                  field=f"operators[{i}].{field}")
        names.add(entry.name)
        out[entry.token_sha256] = Operator(entry.name, entry.role)
    return out


class OperatorAuth:
    """Named tokens from the operators file, re-read when the file changes."""

    def __init__(self, path: Path, *, check_every_s: float = 2.0,
                 on_reload: Callable[[str], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self.on_reload = on_reload
        self._monotonic = monotonic
        self._stamp = self._file_stamp()
        self._by_hash = load_operators(path)  # a bad file at start-up is fatal
        self._checked = monotonic()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def refresh(self) -> None:
        """Re-read the file if it changed; keep the last good operators on a bad edit."""
        now = self._monotonic()
        if now - self._checked < self.check_every_s:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._by_hash = load_operators(self.path)
        except ConfigError as exc:
            log.error("operators file not reloaded, keeping the last good one: %s", exc)
            outcome = "error"
        else:
            log.info("operators file reloaded: %d entries", len(self._by_hash))
            outcome = "ok"
        if self.on_reload is not None:
            self.on_reload(outcome)

    def __len__(self) -> int:
        return len(self._by_hash)

    def identify(self, token: str | None) -> Operator | None:
        """The operator holding ``token``, or None (compared in constant time per entry)."""
        if not token:
            return None
        self.refresh()
        digest = token_sha256(token)
        found = None
        for known, operator in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                found = operator
        return found
