"""`onemap dashboard`: the command room's wall display, its JSON API and a live push (SSE).

Everything the page needs is served by OneMap itself (the command room sits on an isolated
network): the page, its script and style, the vendored Leaflet, and the four-level boundaries as
GeoJSON. A strict Content-Security-Policy allows scripts, styles, images and connections from
this origin only (plus the tile server's origin, if a tile base map is configured).

Routes (viewers read; operators, named in the operators file, also act):

- ``/``                         the wall page; the shell arrives with the top alerts rendered
- ``/api/events``               server-sent events: ``state`` at once, then ``update`` pushes
- ``/api/state``                the same full snapshot as JSON
- ``/api/top``                  top list of an area (``?area=CODE&status=actual&k=N``)
- ``/api/areas``                every area's level, counts and risk index (the roll-up)
- ``/api/boundaries/{level}``   GeoJSON of city / district / town / village
- ``/api/alerts/{hazard_id}``   the latest transition of one hazard
- ``/api/alerts/{hazard_id}/steps``  GET the closed loop; POST a step (operator)
- ``/api/silences``             GET the silences; POST one (operator);
  ``DELETE /api/silences/{id}`` expires one (operator)
- ``/api/whoami``               who the request's credentials name, and whether they may act
- ``/api/config``               map settings for the page (bounds, optional tile layer)
- ``/login``                    token form (also ``/?token=...``) → HttpOnly cookie
- ``/healthz``, ``/metrics``    open, for probes and Prometheus

Writes (POST, DELETE under /api/) need an operator's ``Authorization: Bearer`` token: the
kiosk's cookie never grants them, so a cross-site request cannot act (no CSRF); a request
whose ``Origin`` is another site is refused anyway, and a body must be JSON.

>>> "script-src 'self'" in content_security_policy(None)
True
>>> content_security_policy("https://tiles.example.cn/{z}/{x}/{y}.png").split("; ")[3]
"img-src 'self' data: https://tiles.example.cn"
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import logging
import mimetypes
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from onemap.errors import ConfigError
from onemap.geo.boundaries import AdminLevel, AdminMap
from onemap.levels import WarningLevel
from onemap.rules.ranking import ALL
from onemap.rules.response import Loop, Step, malformed
from onemap.rules.silences import VALID, Matchers, Silence, validate_silence
from onemap.rules.urgency import RiskWeights, UrgencyModel
from onemap.settings import Settings
from onemap.sinks.dashboard import geojson
from onemap.sinks.dashboard.auth import (
    COOKIE,
    COOKIE_MAX_AGE_S,
    OPEN_PATHS,
    Operator,
    OperatorAuth,
    TokenAuth,
    bearer_of,
)
from onemap.sinks.dashboard.live import TOP_K, Hub, LiveState, loop_view
from onemap.sinks.dashboard.state import read_alert
from onemap.sinks.response import read_loop, record_step
from onemap.sinks.silences import add_silence, expire_silence, prune_silences, read_silences

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC_ROOT = Path(str(resources.files("onemap.sinks.dashboard").joinpath("static")))
KEEPALIVE_S = 15.0
#: Largest JSON body a write accepts (a step or a silence is a few hundred bytes).
MAX_BODY = 16 * 1024
MAX_K = 500
#: Expired silences older than this are removed when a new one is added.
SILENCE_RETENTION = timedelta(days=90)
STEP_FIELDS = frozenset({"step", "seq", "unit", "note"})
SILENCE_FIELDS = frozenset({"matchers", "comment", "starts_at", "ends_at", "duration_minutes"})


def content_security_policy(tile_url: str | None) -> str:
    """The page's CSP: nothing inline, nothing from elsewhere but the optional tile server.

    ``style-src 'self'`` with no 'unsafe-inline': Leaflet positions map panes, markers and
    tooltips by assigning ``element.style.*`` properties from script (CSSOM), which CSP does not
    restrict; it never writes ``style`` attributes into markup or adds <style> elements, and
    neither do our scripts, so inline styles stay forbidden. The browser tests check that the
    page raises no CSP violation.
    """
    img = "'self' data:"
    if tile_url:
        parts = urlsplit(tile_url)
        img += f" {parts.scheme}://{parts.netloc}"
    return ("default-src 'none'; script-src 'self'; style-src 'self'; "
            f"img-src {img}; connect-src 'self'; font-src 'self'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")


class DashboardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("onemap_dashboard_requests_total", "HTTP requests by route.",
                                ["route"], registry=registry)
        self.clients = Gauge("onemap_dashboard_push_clients", "Browsers connected for push.",
                             registry=registry)
        self.redis_errors = Counter("onemap_dashboard_redis_errors_total",
                                    "Redis errors while serving.", registry=registry)
        self.auth_failures = Counter("onemap_dashboard_auth_failures_total",
                                     "Requests refused for a missing or wrong token.",
                                     registry=registry)
        self.actions = Counter("onemap_dashboard_actions_total",
                               "Operator actions (closed-loop steps, silences) by outcome.",
                               ["action", "outcome"], registry=registry)
        self.operators_reloads = Counter("onemap_dashboard_operators_reloads_total",
                                         "Re-reads of the operators file by outcome.",
                                         ["outcome"], registry=registry)


@dataclass
class Dashboard:
    """What the handlers share: Redis, the live hub, the boundaries and the configuration."""

    client: aioredis.Redis
    registry: CollectorRegistry
    metrics: DashboardMetrics
    auth: TokenAuth | None
    admin: AdminMap | None
    tile_url: str | None
    tile_attribution: str
    operators: OperatorAuth | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    risk: RiskWeights | None = None
    state: LiveState = field(default_factory=LiveState)
    hub: Hub | None = None
    boundaries: dict[str, bytes] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: area code → (kind, name, parent code), from the boundaries
    areas: dict[str, tuple[str, str, str]] = field(default_factory=dict)


DASHBOARD_KEY: web.AppKey[Dashboard] = web.AppKey("dashboard", Dashboard)


def _dash(request: web.Request) -> Dashboard:
    return request.app[DASHBOARD_KEY]


def _hub(request: web.Request) -> Hub:
    hub = _dash(request).hub
    if hub is None:  # only between construction and start-up
        raise web.HTTPServiceUnavailable(text="dashboard is starting")
    return hub


# -- middleware -------------------------------------------------------------------------------


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers["Content-Security-Policy"] = content_security_policy(
        _dash(request).tile_url)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def require_viewer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without the token (query, cookie or bearer); ``?token=`` is swapped for the cookie."""
    dash = _dash(request)
    auth = dash.auth
    if auth is None or request.path in OPEN_PATHS:
        return await handler(request)
    token = request.query.get("token")
    if token is not None and request.method == "GET":
        if not auth.token_ok(token):
            dash.metrics.auth_failures.inc()
            return _unauthorized(request, "口令错误")
        query = {k: v for k, v in request.query.items() if k != "token"}
        response = _see_other(str(request.rel_url.with_query(query)))
        _set_cookie(response, auth, request)
        return response
    header = request.headers.get("Authorization")
    if auth.cookie_ok(request.cookies.get(COOKIE)) or auth.bearer_ok(header) \
            or _operator_of(dash, header) is not None:
        return await handler(request)
    dash.metrics.auth_failures.inc()
    return _unauthorized(request, "")


def _operator_of(dash: Dashboard, header: str | None) -> Operator | None:
    """The operator whose token the ``Authorization: Bearer`` header carries (any role)."""
    if dash.operators is None:
        return None
    return dash.operators.identify(bearer_of(header))


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def protect_writes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes to the API come from this origin or from no browser at all, with a JSON body.

    The operator's bearer token is what really protects writes (a browser never sends it
    by itself); this refuses what no legitimate client sends: a write announced as coming
    from another site, and a body that is not JSON (an HTML form can post text/plain
    cross-site without a preflight).
    """
    if request.method not in WRITE_METHODS or not request.path.startswith("/api/"):
        return await handler(request)
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if (origin is not None and (origin == "null" or urlsplit(origin).netloc != request.host)) \
            or site == "cross-site":
        _dash(request).metrics.auth_failures.inc()
        return _json_error(403, "cross-origin write refused")
    if request.can_read_body and request.content_type != "application/json":
        return _json_error(415, "send the body as application/json")
    return await handler(request)


def _json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class ApiError(Exception):
    """Answer the request with ``status`` and ``{"error": message, ...}`` (raised by the
    API's checks, turned into the response by :func:`api_errors`)."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response({"error": exc.message, **exc.extra}, status=exc.status,
                                 headers=exc.headers)


def _require_operator(request: web.Request) -> Operator:
    """The operator acting (else ApiError 401 / 403): only an operator's bearer token may
    act; the viewer token, the kiosk cookie and a viewer's own token may not."""
    dash = _dash(request)
    header = request.headers.get("Authorization")
    who = _operator_of(dash, header)
    if who is not None and who.may_act:
        return who
    if dash.operators is None:
        raise ApiError(403, "no operators are configured (ONEMAP_DASHBOARD_OPERATORS)")
    if who is not None or (dash.auth is not None and dash.auth.bearer_ok(header)) or (
            dash.auth is not None and dash.auth.cookie_ok(request.cookies.get(COOKIE))):
        raise ApiError(403, "viewing only: acting needs an operator's token")
    dash.metrics.auth_failures.inc()
    raise ApiError(401, "send an operator token: Authorization: Bearer <token>")


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _set_cookie(response: web.StreamResponse, auth: TokenAuth, request: web.Request) -> None:
    response.set_cookie(COOKIE, auth.cookie_value(), max_age=COOKIE_MAX_AGE_S, path="/",
                        httponly=True, samesite="Strict", secure=request.secure)


def _unauthorized(request: web.Request, message: str) -> web.Response:
    if request.path == "/" or "text/html" in request.headers.get("Accept", ""):
        return web.Response(status=401, text=login_page(message), content_type="text/html",
                            charset="utf-8")
    return web.json_response({"error": "unauthorized",
                              "how": "send the dashboard token: ?token=, the login form, "
                                     "or Authorization: Bearer"}, status=401)


def login_page(message: str) -> str:
    error = f'<p class="login-error">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>登录 · 珠海市应急一张图</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/onemap.css"></head>
<body class="login"><form class="login-box" method="post" action="/login">
<h1>珠海市应急一张图</h1><p>请输入大屏访问口令</p>{error}
<input type="password" name="token" autocomplete="current-password" autofocus required>
<button type="submit">进入</button></form></body></html>"""


async def login_form(request: web.Request) -> web.Response:
    return web.Response(text=login_page(""), content_type="text/html", charset="utf-8")


async def login(request: web.Request) -> web.StreamResponse:
    dash = _dash(request)
    if dash.auth is None:
        return _see_other("/")
    form = await request.post()
    token = form.get("token")
    if not isinstance(token, str) or not dash.auth.token_ok(token):
        dash.metrics.auth_failures.inc()
        await asyncio.sleep(0.5)  # slows guessing down; the counter shows attempts
        return web.Response(status=401, text=login_page("口令错误"), content_type="text/html",
                            charset="utf-8")
    response = _see_other("/")
    _set_cookie(response, dash.auth, request)
    return response


# -- the page ---------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


NOTIFY_LABELS = {"silenced": "已静默", "inhibited": "已抑制"}


def alert_item(row: dict[str, Any]) -> str:
    """One top-K entry (a ranking row) as HTML, for the first paint before the script runs;
    every text escaped."""
    level = WarningLevel.parse(row["level"])
    fig = row["key_figure"]
    notify = row.get("notify") or "send"
    muted = "" if notify == "send" else \
        f'<span class="muted-tag">{_e(NOTIFY_LABELS.get(notify, "不通知"))}</span>'
    return (f'<li class="alert level-{_e(level.label)}" data-hazard="{_e(row["hazard_id"])}">'
            f'<span class="rank">{_e(row["rank"])}</span>'
            f'<span class="badge level-{_e(level.label)}">{_e(level.chinese[:1])}</span>'
            f'<span class="main"><span class="place">{_e(row["label"])}</span>'
            f'<span class="what">{_e(row["source_name"])} · {_e(fig["name"])} '
            f'{_e(fig["value"])}{_e(fig["unit"])}</span>{muted}</span>'
            f'<span class="score">{_e(row["score"])}</span></li>')


def render_page(summary: dict[str, Any]) -> str:
    items = "".join(alert_item(row) for row in summary["top"]) or \
        '<li class="empty">当前无预警</li>'
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>珠海市应急一张图 · OneMap</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/vendor/leaflet/leaflet.css">
<link rel="stylesheet" href="/static/vendor/leaflet.markercluster/MarkerCluster.css">
<link rel="stylesheet" href="/static/onemap.css"></head>
<body class="wall">
<header class="bar">
 <div class="brand"><span class="emblem">应急</span><h1>珠海市应急一张图</h1>
  <span class="sub">实时风险监测预警</span></div>
 <div class="status"><span id="conn" class="conn">连接中</span>
  <span class="upd">数据更新 <b id="updated">{_e((summary["updated_at"] or "—")[11:19])}</b></span>
 </div>
 <div class="operator" id="operator"><button type="button" class="op-btn" id="op-login"
   hidden>值班员登录</button><span class="op-name" id="op-name" hidden></span>
  <form class="op-form" id="op-form" hidden><input type="password" id="op-token"
   autocomplete="off" placeholder="值班员口令" aria-label="值班员口令">
   <button type="submit">登录</button><button type="button" id="op-cancel">取消</button>
   <span class="op-error" id="op-error"></span></form></div>
 <div class="clock"><span id="clock-date"></span><b id="clock-time"></b></div>
</header>
<main class="grid">
 <section class="col left">
  <div class="panel kpis" id="kpis"></div>
  <div class="panel"><h2>分区预警统计</h2><table class="districts"><thead><tr><th>区域</th>
   <th class="c-red">红</th><th class="c-orange">橙</th><th class="c-yellow">黄</th>
   <th class="c-blue">蓝</th><th>合计</th><th title="风险指数 0–100">风险指数</th></tr>
   </thead><tbody id="district-rows"></tbody></table></div>
  <div class="panel"><h2>灾种分布</h2><ul class="types" id="types"></ul></div>
  <div class="panel"><h2>数据源状态</h2><ul class="feeds" id="feeds"></ul></div>
  <div class="panel silences" id="silences-panel"><h2>静默规则
   <span class="total">生效 <b id="silence-count">0</b> 条</span></h2>
   <ul class="silence-list" id="silences"></ul></div>
  <div class="panel drills" id="drills"><h2>【演练】演练预警 <span id="drill-count">0</span></h2>
   <ul class="drill-list" id="drill-list"></ul></div>
 </section>
 <section class="mapbox"><div id="map"></div>
  <div class="legend" id="legend"></div><div class="zoomhint" id="zoomhint"></div></section>
 <section class="col right">
  <div class="panel top"><h2>重点风险 <small id="top-scope">全市 · 按紧急度排序</small>
   <span class="total">共 <b id="open-total">{summary["open_total"]}</b> 处</span></h2>
   <div class="area-bar"><select id="area-select" aria-label="范围">
    <option value="">全市</option></select>
    <div class="area-info" id="area-info"></div></div>
   <ol class="top-list" id="top-list">{items}</ol></div>
  <div class="panel detail" id="detail" hidden></div>
  <div class="panel ticker"><h2>预警动态</h2><ul class="ticker-list" id="ticker"></ul></div>
 </section>
</main>
<script src="/static/vendor/leaflet/leaflet.js"></script>
<script src="/static/vendor/leaflet.markercluster/leaflet.markercluster.js"></script>
<script src="/static/onemap.js"></script></body></html>"""


async def page(request: web.Request) -> web.Response:
    dash = _dash(request)
    dash.metrics.requests.labels("page").inc()
    if dash.hub is not None:  # first paint from real state, unless Redis keeps us waiting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(dash.hub.ready.wait(), 2.0)
    summary = dash.state.summary(datetime.now(UTC))
    return web.Response(text=render_page(summary), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


# -- API --------------------------------------------------------------------------------------


async def _ready(request: web.Request) -> Hub:
    hub = _hub(request)
    try:
        await asyncio.wait_for(hub.ready.wait(), 5.0)
    except TimeoutError:
        raise web.HTTPServiceUnavailable(text="no state from Redis yet") from None
    return hub


async def api_state(request: web.Request) -> web.Response:
    _dash(request).metrics.requests.labels("state").inc()
    hub = await _ready(request)
    body = orjson.dumps(hub.state.snapshot(datetime.now(UTC)))
    return web.Response(body=body, content_type="application/json")


def _status_param(request: web.Request) -> str:
    status = request.query.get("status", "actual")
    if status not in ("actual", "exercise"):
        raise ApiError(400, "status must be actual or exercise")
    return status


async def api_areas(request: web.Request) -> web.Response:
    """Every area with a live hazard: level, counts by level, risk index, most urgent."""
    _dash(request).metrics.requests.labels("areas").inc()
    status = _status_param(request)
    hub = await _ready(request)
    ranking = hub.state.rankings[status]
    areas = {code: hub.state.area(code, status) for code in ranking.areas()}
    return web.json_response({
        "status": status,
        "levels": {code: a["level"] for code, a in areas.items()
                   if code != ALL and a["level"] != "none"},
        "areas": areas, "updated_at": hub.state.updated_at})


async def api_top(request: web.Request) -> web.Response:
    """``?area=CODE&status=actual&k=N``: the top ``k`` of an area (no area: the whole map)
    with the area's state; the same rows and order as the wall's list."""
    dash = _dash(request)
    dash.metrics.requests.labels("top").inc()
    status = _status_param(request)
    try:
        k = int(request.query.get("k", "10"))
    except ValueError:
        k = 0
    if not 1 <= k <= MAX_K:
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_K}")
    area = request.query.get("area", "").strip() or ALL
    if area != ALL and area not in dash.areas:
        raise ApiError(404, f"no area {area!r} on the map")
    hub = await _ready(request)
    state = hub.state
    kind, name, parent = dash.areas.get(area, ("all", "全市", ""))
    return web.json_response({
        "status": status, "k": k,
        "area": {**state.area(area, status), "kind": kind, "name": name, "parent": parent},
        "top": state.top(status, k, area)})


async def api_boundaries(request: web.Request) -> web.Response:
    dash = _dash(request)
    dash.metrics.requests.labels("boundaries").inc()
    body = dash.boundaries.get(request.match_info["level"])
    if body is None:
        raise web.HTTPNotFound(text="levels: city, district, town, village")
    response = web.Response(body=body, content_type="application/geo+json",
                            headers={"Cache-Control": "private, max-age=3600"})
    response.enable_compression()
    return response


async def api_alert(request: web.Request) -> web.Response:
    dash = _dash(request)
    dash.metrics.requests.labels("alert").inc()
    raw = await read_alert(dash.client, request.match_info["hazard_id"])
    if raw is None:
        raise web.HTTPNotFound(text="no such hazard (or resolved more than a day ago)")
    return web.Response(body=raw, content_type="application/json")


async def _json_object(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object body (else ApiError 400 / 413)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"body larger than {MAX_BODY} bytes") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; "
                            f"expected {', '.join(sorted(allowed))}")
    out: dict[str, Any] = body
    return out


def _text_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name, "")
    return value.strip() if isinstance(value, str) else None


def _redis_down(request: web.Request, exc: Exception) -> ApiError:
    _dash(request).metrics.redis_errors.inc()
    log.warning("Redis unavailable for %s %s: %s", request.method, request.path, exc)
    return ApiError(503, "Redis is unavailable; nothing was recorded",
                    headers={"Retry-After": "5"})


def _issued_at(dash: Dashboard, alert: dict[str, Any]) -> str | None:
    """When the alert was first issued, as far as this process knows: the loop's times
    count from there."""
    if int(alert.get("seq", 0)) == 1:
        return str(alert.get("issued_at") or "") or None
    return dash.state.first_issued.get(alert["hazard_id"]) or alert.get("issued_at")


def _loop_answer(dash: Dashboard, alert: dict[str, Any], loop: Loop,
                 **extra: Any) -> dict[str, Any]:
    return {"hazard_id": alert["hazard_id"], "alert_seq": int(alert["seq"]),
            "alert_transition": alert.get("transition"),
            "loop": loop_view(loop, _issued_at(dash, alert)), **extra}


async def _alert_of(request: web.Request) -> dict[str, Any]:
    dash = _dash(request)
    hazard_id = request.match_info["hazard_id"]
    try:
        raw = await read_alert(dash.client, hazard_id)
    except (RedisError, OSError) as exc:
        raise _redis_down(request, exc) from exc
    if raw is None:
        raise ApiError(404, f"no alert for hazard {hazard_id!r} "
                                "(unknown, or resolved more than a day ago)")
    alert: dict[str, Any] = orjson.loads(raw)
    return alert


async def api_steps(request: web.Request) -> web.Response:
    """The closed loop of one alert: every step with who, when, through what, and the
    seconds from the alert's issue to each step."""
    dash = _dash(request)
    dash.metrics.requests.labels("steps").inc()
    alert = await _alert_of(request)
    try:
        loop = await read_loop(dash.client, alert["hazard_id"])
    except (RedisError, OSError) as exc:
        raise _redis_down(request, exc) from exc
    return web.json_response(_loop_answer(dash, alert, loop))


async def api_add_step(request: web.Request) -> web.Response:
    """Record a step, taken by the operator now: 200 with the loop (``result`` accepted or
    already), 409 with the reason when the loop refuses it."""
    dash = _dash(request)
    dash.metrics.requests.labels("add_step").inc()
    who = _require_operator(request)
    body = await _json_object(request, STEP_FIELDS)
    name, unit, note = body.get("step"), _text_field(body, "unit"), _text_field(body, "note")
    seq = body.get("seq")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "step is required (a string)")
    if unit is None or note is None:
        raise ApiError(400, "unit and note must be strings")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
        raise ApiError(400, "seq must be a whole number from 1 (the alert transition seen)")
    alert = await _alert_of(request)
    latest = int(alert["seq"])
    if seq is not None and seq > latest:
        raise ApiError(400, f"seq {seq} is later than the alert's latest transition "
                                f"({latest})")
    step = Step(step=name, actor=who.name, via="api", at=dash.clock(),
                seq=latest if seq is None else seq, unit=unit, note=note)
    problem = malformed(step)
    if problem is not None:
        dash.metrics.actions.labels("step", "invalid").inc()
        raise ApiError(400, problem)
    try:
        loop, why = await record_step(dash.client, alert["hazard_id"], step)
    except (RedisError, OSError) as exc:
        raise _redis_down(request, exc) from exc
    except RuntimeError as exc:  # too many writers at once on this alert: try again
        raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from exc
    outcome = why if why in ("accepted", "already") else "refused"
    dash.metrics.actions.labels("step", outcome).inc()
    log.info("step %s on %s by %s: %s", name, alert["hazard_id"], who.name, why)
    answer = _loop_answer(dash, alert, loop, result=why)
    if outcome == "refused":
        return web.json_response({"error": why, **answer}, status=409)
    return web.json_response(answer)


def _silence_json(dash: Dashboard, s: Silence, now: datetime) -> dict[str, Any]:
    code = s.matchers.area_code
    return {**s.to_dict(), "state": s.state(now),
            "area_name": dash.areas.get(code, ("", "", ""))[1] if code else ""}


async def api_silences(request: web.Request) -> web.Response:
    """Every silence (pending, active, expired), newest start first."""
    dash = _dash(request)
    dash.metrics.requests.labels("silences").inc()
    try:
        silences = await read_silences(dash.client)
    except (RedisError, OSError) as exc:
        raise _redis_down(request, exc) from exc
    now = dash.clock()
    return web.json_response({"now": now.isoformat(), "silences": [
        _silence_json(dash, s, now) for s in reversed(silences)]})


def _time_field(body: dict[str, Any], name: str) -> datetime | None:
    """A time field (None when absent; else ApiError 400 unless a tz-aware ISO time)."""
    value = body.get(name)
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise ApiError(400, f"{name} must be an ISO 8601 time with its offset "
                            "(e.g. 2026-08-23T08:00+08:00)")
    return at


async def api_add_silence(request: web.Request) -> web.Response:
    """Create a silence set by the operator: 201 with it, 400 with why it is not valid."""
    dash = _dash(request)
    dash.metrics.requests.labels("add_silence").inc()
    who = _require_operator(request)
    body = await _json_object(request, SILENCE_FIELDS)
    now = dash.clock()
    if not isinstance(body.get("matchers"), dict):
        raise ApiError(400, "matchers is required: an object of source_id, hazard_type, "
                                "feed, area_code, status")
    try:
        matchers = Matchers.from_dict(body["matchers"])
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    starts, ends = _time_field(body, "starts_at"), _time_field(body, "ends_at")
    minutes = body.get("duration_minutes")
    if (ends is None) == (minutes is None):
        raise ApiError(400, "give either ends_at or duration_minutes")
    start = starts or now
    if minutes is not None:
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
            raise ApiError(400, "duration_minutes must be a positive number")
        try:
            ends = start + timedelta(minutes=minutes)
        except OverflowError:
            raise ApiError(400, "duration_minutes is too large") from None
    comment = _text_field(body, "comment")
    if comment is None:
        raise ApiError(400, "comment must be a string")
    if ends is None:  # for the type checker: one of the two was given
        raise ApiError(400, "give either ends_at or duration_minutes")
    silence = Silence(id=uuid.uuid4().hex, matchers=matchers, starts_at=start, ends_at=ends,
                      created_by=who.name, comment=comment)
    why = validate_silence(silence, now)
    if why != VALID:
        dash.metrics.actions.labels("silence", "invalid").inc()
        raise ApiError(400, why)
    try:
        await add_silence(dash.client, silence)
        await prune_silences(dash.client, now - SILENCE_RETENTION)
    except (RedisError, OSError) as exc:
        raise _redis_down(request, exc) from exc
    dash.metrics.actions.labels("silence", "added").inc()
    log.info("silence %s set by %s: %s", silence.id, who.name, matchers.to_dict())
    return web.json_response({"silence": _silence_json(dash, silence, now)}, status=201)


async def api_expire_silence(request: web.Request) -> web.Response:
    """End a silence now (it stays listed, expired): 200 with it, 404 if unknown."""
    dash = _dash(request)
    dash.metrics.requests.labels("expire_silence").inc()
    who = _require_operator(request)
    sid = request.match_info["id"]
    now = dash.clock()
    try:
        silence = await expire_silence(dash.client, sid, now)
    except (RedisError, OSError) as exc:
        raise _redis_down(request, exc) from exc
    except RuntimeError as exc:
        raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from exc
    if silence is None:
        raise ApiError(404, f"no silence {sid!r}")
    dash.metrics.actions.labels("silence", "expired").inc()
    log.info("silence %s expired by %s", sid, who.name)
    return web.json_response({"silence": _silence_json(dash, silence, now)})


async def api_whoami(request: web.Request) -> web.Response:
    """Who the request's bearer token names; a cookie or the viewer token is a viewer."""
    who = _operator_of(_dash(request), request.headers.get("Authorization"))
    if who is None:
        return web.json_response({"name": "", "role": "viewer", "may_act": False})
    return web.json_response({"name": who.name, "role": who.role, "may_act": who.may_act})


async def api_config(request: web.Request) -> web.Response:
    return web.json_response(_dash(request).config)


async def api_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``state`` at once, then ``update`` (deltas plus a fresh summary)."""
    dash = _dash(request)
    dash.metrics.requests.labels("events").inc()
    hub = _hub(request)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    dash.metrics.clients.inc()
    queue = None
    try:
        await response.write(b"retry: 1000\n\n")
        await hub.ready.wait()
        # subscribe and snapshot with no await in between: nothing can fall into the gap
        queue = hub.subscribe()
        await response.write(hub.state_event())
        while True:
            try:
                data = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                data = b": keep-alive\n\n"
            if data is None:  # too slow to keep up: close; the browser reconnects
                break
            await response.write(data)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        dash.metrics.clients.dec()
        if queue is not None:
            hub.unsubscribe(queue)
    return response


async def healthz(request: web.Request) -> web.Response:
    try:
        await _dash(request).client.ping()
    except Exception:  # any failure means "not healthy"; the body says which
        _dash(request).metrics.redis_errors.inc()
        return web.json_response({"status": "redis unreachable"}, status=503)
    return web.json_response({"status": "ok"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(_dash(request).registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def static_file(name: str) -> Path | None:
    """A file under static/ for a URL path; None for anything outside it or hidden."""
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p for p in parts):
        return None
    path = (STATIC_ROOT / name).resolve()
    if not path.is_relative_to(STATIC_ROOT.resolve()) or not path.is_file():
        return None
    return path


async def static(request: web.Request) -> web.Response:
    path = static_file(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    ctype = {".js": "application/javascript", ".css": "text/css", ".png": "image/png",
             ".svg": "image/svg+xml"}.get(path.suffix) or \
        mimetypes.guess_type(path.name)[0] or "text/plain"
    vendored = request.match_info["name"].startswith("vendor/")
    response = web.Response(
        body=path.read_bytes(), content_type=ctype,
        charset="utf-8" if ctype.startswith(("text/", "application/javascript")) else None,
        headers={"Cache-Control": "public, max-age=86400" if vendored else "no-cache"})
    if ctype != "image/png":
        response.enable_compression()
    return response


# -- the application --------------------------------------------------------------------------


def area_index(admin: AdminMap) -> dict[str, tuple[str, str, str]]:
    """Code → (kind, name, parent code) of every area on the map."""
    out: dict[str, tuple[str, str, str]] = {}
    for level in AdminLevel:
        table = admin[level]
        parents = admin[level.parent].codes if level.parent is not None else ()
        for i, code in enumerate(table.codes):
            parent = int(table.parent[i])
            out[code] = (level.label, table.names[i], parents[parent] if parent >= 0 else "")
    return out


def make_app(client: aioredis.Redis, registry: CollectorRegistry | None = None, *,
             token: str | None = None, admin: AdminMap | None = None,
             tile_url: str | None = None, tile_attribution: str = "",
             flush_s: float = 0.15, operators: Path | OperatorAuth | None = None,
             risk: RiskWeights | None = None,
             clock: Callable[[], datetime] | None = None) -> web.Application:
    """The dashboard app. ``token`` None means open access (only allowed on loopback by
    :func:`run_dashboard`); ``admin`` None loads the bundled Zhuhai map at start-up;
    ``operators`` (the operators file) None means nobody may act; ``clock`` gives the time
    of operators' steps and silences (tz-aware; now by default)."""
    registry = registry or CollectorRegistry()
    metrics = DashboardMetrics(registry)
    if isinstance(operators, Path):
        operators = OperatorAuth(
            operators, on_reload=lambda outcome: metrics.operators_reloads.labels(outcome).inc())
    if token and operators is not None:
        who = operators.identify(token)
        if who is not None:
            raise ConfigError(f"the viewer token is also {who.name!r}'s operator token: the "
                              "wall's kiosk must never be able to act; give them another",
                              field="ONEMAP_DASHBOARD_OPERATORS")
    dash = Dashboard(client=client, registry=registry, metrics=metrics,
                     auth=TokenAuth(token) if token else None, admin=admin,
                     tile_url=tile_url or None, tile_attribution=tile_attribution,
                     operators=operators, risk=risk)
    if clock is not None:
        dash.clock = clock
    app = web.Application(middlewares=[security_headers, require_viewer, protect_writes,
                                       api_errors],
                          client_max_size=MAX_BODY)
    app[DASHBOARD_KEY] = dash

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if dash.admin is None:
            dash.admin = await asyncio.get_running_loop().run_in_executor(
                None, AdminMap.load_default)
        admin = dash.admin
        dash.boundaries = geojson.all_levels(admin)
        dash.areas = area_index(admin)
        dash.state = LiveState(zip(admin[AdminLevel.DISTRICT].codes,
                                   admin[AdminLevel.DISTRICT].names, strict=True),
                               names={c: a[1] for c, a in dash.areas.items()}, risk=dash.risk)
        dash.config = {"bounds": geojson.bounds(admin), "tile_url": dash.tile_url,
                       "tile_attribution": dash.tile_attribution,
                       "levels": [lv.label for lv in AdminLevel], "top_k": TOP_K,
                       "operators": dash.operators is not None}
        dash.hub = Hub(client, dash.state, flush_s=flush_s,
                       on_error=metrics.redis_errors.inc)
        task = asyncio.create_task(dash.hub.run(), name="dashboard-hub")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/", page)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/api/areas", api_areas)
    app.router.add_get("/api/top", api_top)
    app.router.add_get("/api/boundaries/{level}", api_boundaries)
    # before /api/alerts/{hazard_id:.+}, which would take ".../steps" as a hazard id
    app.router.add_get("/api/alerts/{hazard_id:.+}/steps", api_steps)
    app.router.add_post("/api/alerts/{hazard_id:.+}/steps", api_add_step)
    app.router.add_get("/api/alerts/{hazard_id:.+}", api_alert)
    app.router.add_get("/api/silences", api_silences)
    app.router.add_post("/api/silences", api_add_silence)
    app.router.add_delete("/api/silences/{id}", api_expire_silence)
    app.router.add_get("/api/whoami", api_whoami)
    app.router.add_get("/api/config", api_config)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/static/{name:.+}", static)
    return app


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_dashboard(settings: Settings) -> int:
    from onemap import logs
    from onemap.embedded import require_free

    logs.configure(settings.log_level, settings.log_format)
    env = settings
    if env.dashboard_token is None and not _loopback(settings.dashboard_host):
        raise ConfigError(
            f"the dashboard listens on {settings.dashboard_host}, beyond this machine: set a "
            "viewer token in ONEMAP_DASHBOARD_TOKEN (open access is allowed on loopback only)",
            field="ONEMAP_DASHBOARD_TOKEN")
    if env.dashboard_tile_url and not env.dashboard_tile_url.startswith(("http://", "https://")):
        raise ConfigError(f"expected an http(s) tile URL template, got {env.dashboard_tile_url!r}",
                          field="ONEMAP_DASHBOARD_TILE_URL")
    require_free(settings.dashboard_host, settings.dashboard_port, "dashboard",
                 "--dashboard-port or ONEMAP_DASHBOARD_PORT")
    admin = AdminMap.from_files(settings.boundaries_dir) if settings.boundaries_dir else None
    urgency_file = settings.rules_dir / "urgency.yaml" if settings.rules_dir else None
    model = UrgencyModel.load(urgency_file) if urgency_file is not None and \
        urgency_file.exists() else UrgencyModel.load_default()
    client = aioredis.Redis.from_url(settings.redis_url)
    if env.dashboard_token is None:
        log.warning("dashboard without a token: open to anyone who can reach %s:%s",
                    settings.dashboard_host, settings.dashboard_port)
    web.run_app(make_app(client, token=env.dashboard_token, admin=admin,
                         tile_url=env.dashboard_tile_url,
                         tile_attribution=env.dashboard_tile_attribution,
                         operators=env.dashboard_operators, risk=model.risk_index),
                host=settings.dashboard_host, port=settings.dashboard_port,
                print=None, access_log=None, shutdown_timeout=2.0)
    return 0
