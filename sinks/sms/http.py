"""HTTP SMS API provider: one JSON POST per message to a gateway.

URL: the gateway's own URL, plus client-side options as query parameters prefixed
``onemap_`` (removed before the request is made, so they never reach the gateway)::

    https://sms.example.gov.cn/v1/send?appid=42&onemap_success=code:0&onemap_template=@/etc/onemap/sms.json

Credentials: ``https://:TOKEN@host/...`` (bearer), ``https://USER:PASSWORD@host/...`` (basic),
or the ``secret`` setting (bearer, or basic with the URL's user). They never appear in logs,
errors or repr; the request URL is sent without them.

Options:

``onemap_template``
    the JSON body, inline (URL-encoded) or ``@PATH``; ``{phone}``, ``{text}``, ``{key}``,
    ``{alert_id}`` and ``{recipient_id}`` may appear inside its strings. Values are inserted
    into the parsed template and the body re-serialised, so quotes, backslashes and newlines in
    a text are always escaped and a text cannot add fields. Default
    ``{"phone": "{phone}", "text": "{text}", "key": "{key}"}``.
``onemap_success``
    ``FIELD:VALUE`` (dotted path into the JSON response) that must hold besides a 2xx status,
    for gateways that answer 200 with an error code in the body;
``onemap_retry_values``
    comma-separated values of that field that mean "try again later" (e.g. a rate limit code);
``onemap_auth``
    ``bearer``, ``basic`` or ``none`` (default: inferred from the credentials);
``onemap_timeout`` (s, 10), ``onemap_idempotency_header`` (``Idempotency-Key``).

The message key goes in the idempotency header so a gateway that honours it does not send a
retried request twice. Outcomes: 2xx (and the success field) -> DELIVERED; 408, 425, 429, 5xx,
timeouts, connection errors, and a 2xx whose body cannot be read -> RETRY (sending twice beats
dead-lettering a warning that was probably sent); any other status -> FAILED.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import json
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import aiohttp

from onemap.errors import ComponentError, ConfigError
from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.roster import masked

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"\{(\w+)\}")
FIELDS = ("phone", "text", "key", "alert_id", "recipient_id")
DEFAULT_TEMPLATE = '{"phone": "{phone}", "text": "{text}", "key": "{key}"}'
RETRY_STATUSES = frozenset({408, 425, 429})
OPTION_PREFIX = "onemap_"
SETTING = "ONEMAP_SMS_OUTBOX"
_AUTH_MODES: dict[str, Literal["bearer", "basic", "none"]] = {
    "bearer": "bearer", "basic": "basic", "none": "none"}


class BodyTemplate:
    """A JSON body with placeholders inside its strings, checked once, filled per message.

    >>> BodyTemplate('{"to": "86{phone}", "msg": "{text}"}').render(
    ...     {"phone": "13800000001", "text": 'say "1"\\n'})
    '{"to":"8613800000001","msg":"say \\\\"1\\\\"\\\\n"}'
    """

    def __init__(self, source: str) -> None:
        try:
            self.tree: Any = json.loads(source)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"SMS body template is not JSON: {exc}", field=SETTING) from exc
        unknown = sorted({name for text in _strings(self.tree)
                          for name in PLACEHOLDER.findall(text)} - set(FIELDS))
        if unknown:
            raise ConfigError(f"SMS body template has unknown placeholder(s) {unknown}; "
                              f"known: {list(FIELDS)}", field=SETTING)

    def render(self, values: Mapping[str, str]) -> str:
        def fill(node: Any) -> Any:
            if isinstance(node, str):
                # One pass: a value that itself contains "{phone}" is not substituted again.
                return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), node)
            if isinstance(node, list):
                return [fill(item) for item in node]
            if isinstance(node, dict):
                return {key: fill(value) for key, value in node.items()}
            return node
        return json.dumps(fill(self.tree), ensure_ascii=False, separators=(",", ":"))


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    return []


def _lookup(document: Any, path: str) -> Any:
    for name in path.split("."):
        if isinstance(document, dict) and name in document:
            document = document[name]
        elif isinstance(document, list) and name.isdigit() and int(name) < len(document):
            document = document[int(name)]
        else:
            return None
    return document


@dataclasses.dataclass(frozen=True)
class HttpSmsConfig:
    """The gateway, its credentials (never in repr) and how to read its answers."""

    url: str  # without credentials or onemap_ options
    template: BodyTemplate = dataclasses.field(repr=False)
    auth: Literal["bearer", "basic", "none"] = "none"
    username: str = ""
    secret: str = dataclasses.field(default="", repr=False)
    success_field: str | None = None
    success_value: str | None = None
    retry_values: frozenset[str] = frozenset()
    timeout_s: float = 10.0
    idempotency_header: str = "Idempotency-Key"

    @classmethod
    def from_url(cls, url: str, *, secret: str | None = None) -> HttpSmsConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("HTTP SMS URL must look like https://HOST/PATH", field=SETTING)
        options: dict[str, str] = {}
        query: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name.startswith(OPTION_PREFIX):
                options[name.removeprefix(OPTION_PREFIX)] = value
            else:
                query.append((name, value))
        user, password = _credentials(parts.username, parts.password, secret)
        auth_name = options.pop("auth", "basic" if user and password else
                                "bearer" if password else "none")
        auth = _AUTH_MODES.get(auth_name)
        if auth is None:
            raise ConfigError(f"onemap_auth must be bearer, basic or none, not {auth_name!r}",
                              field=SETTING)
        template = _template(options.pop("template", DEFAULT_TEMPLATE))
        success_field = success_value = None
        if "success" in options:
            success_field, sep, success_value = options.pop("success").partition(":")
            if not sep or not success_field:
                raise ConfigError("onemap_success must be FIELD:VALUE", field=SETTING)
        retry_values = frozenset(v for v in options.pop("retry_values", "").split(",") if v)
        try:
            timeout = float(options.pop("timeout", "10"))
        except ValueError as exc:
            raise ConfigError("onemap_timeout must be a number of seconds",
                              field=SETTING) from exc
        header = options.pop("idempotency_header", "Idempotency-Key")
        if options:
            raise ConfigError(f"unknown HTTP SMS option(s) {sorted(options)}; known: auth, "
                              "template, success, retry_values, timeout, idempotency_header",
                              field=SETTING)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        clean = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))
        if parts.scheme == "http" and auth != "none" and not _is_loopback(parts.hostname):
            log.warning("HTTP SMS gateway %s gets credentials over plain http", clean)
        return cls(url=clean, template=template, auth=auth,
                   username=user, secret=password, success_field=success_field,
                   success_value=success_value, retry_values=retry_values, timeout_s=timeout,
                   idempotency_header=header)


def _credentials(user: str | None, password: str | None,
                 secret: str | None) -> tuple[str, str]:
    """(user, secret) from the URL's userinfo or the secret setting."""
    name, word = unquote(user or ""), unquote(password or "")
    if secret is not None:
        return name, secret
    if name and password is None:
        return "", name  # https://TOKEN@host: a bare token
    return name, word


def _template(source: str) -> BodyTemplate:
    if source.startswith("@"):
        path = Path(source[1:])
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read SMS body template: {exc.strerror}",
                              path=str(path), field=SETTING) from exc
    return BodyTemplate(source)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class HttpSmsProvider:
    """SMS through an HTTP gateway; see the module docstring for the contract."""

    name = "http"

    def __init__(self, config: HttpSmsConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_url(cls, url: str, *, secret: str | None = None) -> HttpSmsProvider:
        return cls(HttpSmsConfig.from_url(url, secret=secret))

    def __repr__(self) -> str:
        return f"HttpSmsProvider({self.config.url}, auth={self.config.auth})"

    async def check(self) -> None:
        """Reach the gateway's host and port (no SMS is sent); raise naming them if not."""
        parts = urlsplit(self.config.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                               timeout=self.config.timeout_s)
        except (OSError, TimeoutError) as exc:
            reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise ComponentError(f"HTTP SMS gateway {host}:{port} is not reachable ({reason}); "
                                 "check ONEMAP_SMS_OUTBOX") from exc
        writer.close()
        await writer.wait_closed()

    async def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]:
        return list(await asyncio.gather(*(self._post(m) for m in messages)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            c = self.config
            headers = {"Content-Type": "application/json; charset=utf-8",
                       "Accept": "application/json"}
            if c.auth == "bearer":
                headers["Authorization"] = f"Bearer {c.secret}"
            elif c.auth == "basic":  # built here: aiohttp.BasicAuth is deprecated in 3.14
                pair = f"{c.username}:{c.secret}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=c.timeout_s))
        return self._session

    def body(self, message: SmsMessage) -> bytes:
        """The request body for one message (UTF-8 JSON)."""
        return self.config.template.render({
            "phone": message.phone, "text": message.text, "key": message.key,
            "alert_id": message.alert_id, "recipient_id": message.recipient_id,
        }).encode("utf-8")

    async def _post(self, message: SmsMessage) -> Outcome:
        c = self.config
        who = masked(message.phone)
        try:
            async with self._client().post(
                c.url, data=self.body(message), allow_redirects=False,
                headers={c.idempotency_header: message.key},
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After", "")
                raw = await resp.content.read(64 * 1024)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("HTTP SMS gateway %s: %s; %s to %s will be retried", c.url,
                        type(exc).__name__ if isinstance(exc, TimeoutError) else exc,
                        message.key, who)
            return Outcome.RETRY
        if status in RETRY_STATUSES or status >= 500:
            log.warning("HTTP SMS gateway %s answered %d%s; %s to %s will be retried", c.url,
                        status, f" (Retry-After {retry_after})" if retry_after else "",
                        message.key, who)
            return Outcome.RETRY
        if not 200 <= status < 300:
            log.error("HTTP SMS gateway %s answered %d for %s to %s: %s", c.url, status,
                      message.key, who, raw[:200].decode("utf-8", "replace"))
            return Outcome.FAILED
        return self._judge_body(message, raw)

    def _judge_body(self, message: SmsMessage, raw: bytes) -> Outcome:
        c = self.config
        who = masked(message.phone)
        if c.success_field is None:
            log.info("HTTP SMS gateway %s accepted %s to %s", c.url, message.key, who)
            return Outcome.DELIVERED
        try:
            value = _lookup(json.loads(raw), c.success_field)
        except (ValueError, UnicodeDecodeError):
            log.warning("HTTP SMS gateway %s answered 2xx with a body that is not JSON; "
                        "%s to %s will be retried", c.url, message.key, who)
            return Outcome.RETRY
        text = "" if value is None else str(value)
        if text == c.success_value:
            log.info("HTTP SMS gateway %s accepted %s to %s", c.url, message.key, who)
            return Outcome.DELIVERED
        if text in c.retry_values:
            log.warning("HTTP SMS gateway %s: %s=%s; %s to %s will be retried", c.url,
                        c.success_field, text, message.key, who)
            return Outcome.RETRY
        log.error("HTTP SMS gateway %s refused %s to %s: %s=%s", c.url, message.key, who,
                  c.success_field, text)
        return Outcome.FAILED
