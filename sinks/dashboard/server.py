"""`onemap dashboard`: the command room's wall display, its JSON API and a live push (SSE).

Everything the page needs is served by OneMap itself (the command room sits on an isolated
network): the page, its script and style, the vendored Leaflet, and the four-level boundaries as
GeoJSON. A strict Content-Security-Policy allows scripts, styles, images and connections from
this origin only (plus the tile server's origin, if a tile base map is configured).

Routes (all GET except the login; viewers are read-only):

- ``/``                         the wall page; the shell arrives with the top alerts rendered
- ``/api/events``               server-sent events: ``state`` at once, then ``update`` pushes
- ``/api/state``                the same full snapshot as JSON
- ``/api/areas``                area code → warning level (the colour roll-up)
- ``/api/boundaries/{level}``   GeoJSON of city / district / town / village
- ``/api/alerts/{hazard_id}``   the latest transition of one hazard
- ``/api/config``               map settings for the page (bounds, optional tile layer)
- ``/login``                    token form (also ``/?token=...``) → HttpOnly cookie
- ``/healthz``, ``/metrics``    open, for probes and Prometheus

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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from onemap.errors import ConfigError
from onemap.geo.boundaries import AdminLevel, AdminMap
from onemap.levels import WarningLevel
from onemap.settings import Settings
from onemap.sinks.dashboard import geojson
from onemap.sinks.dashboard.auth import COOKIE, COOKIE_MAX_AGE_S, OPEN_PATHS, TokenAuth
from onemap.sinks.dashboard.live import Hub, LiveState
from onemap.sinks.dashboard.state import read_alert

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC_ROOT = Path(str(resources.files("onemap.sinks.dashboard").joinpath("static")))
KEEPALIVE_S = 15.0


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
    state: LiveState = field(default_factory=LiveState)
    hub: Hub | None = None
    boundaries: dict[str, bytes] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


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
    if auth.cookie_ok(request.cookies.get(COOKIE)) or auth.bearer_ok(
            request.headers.get("Authorization")):
        return await handler(request)
    dash.metrics.auth_failures.inc()
    return _unauthorized(request, "")


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


def alert_item(alert: dict[str, Any], rank: int) -> str:
    """One top-K entry as HTML (first paint before the script runs); every text escaped."""
    h = alert["hazard"]
    level = WarningLevel.parse(alert["level"])
    place = "".join(h["place"].get(k, "") for k in ("district_name", "town_name",
                                                    "village_name")) or "辖区外"
    fig = h["key_figure"]
    return (f'<li class="alert level-{_e(level.label)}" data-hazard="{_e(alert["hazard_id"])}">'
            f'<span class="rank">{rank}</span>'
            f'<span class="badge level-{_e(level.label)}">{_e(level.chinese[:1])}</span>'
            f'<span class="main"><span class="place">{_e(place)}</span>'
            f'<span class="what">{_e(h["source_name"])} · {_e(fig["name"])} '
            f'{_e(fig["value"])}{_e(fig["unit"])}</span></span>'
            f'<span class="score">{_e(alert["score"])}</span></li>')


def render_page(summary: dict[str, Any]) -> str:
    items = "".join(alert_item(a, i + 1) for i, a in enumerate(summary["top"])) or \
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
 <div class="clock"><span id="clock-date"></span><b id="clock-time"></b></div>
</header>
<main class="grid">
 <section class="col left">
  <div class="panel kpis" id="kpis"></div>
  <div class="panel"><h2>分区预警统计</h2><table class="districts"><thead><tr><th>区域</th>
   <th class="c-red">红</th><th class="c-orange">橙</th><th class="c-yellow">黄</th>
   <th class="c-blue">蓝</th><th>合计</th></tr></thead><tbody id="district-rows"></tbody>
   </table></div>
  <div class="panel"><h2>灾种分布</h2><ul class="types" id="types"></ul></div>
  <div class="panel"><h2>数据源状态</h2><ul class="feeds" id="feeds"></ul></div>
  <div class="panel drills" id="drills"><h2>【演练】演练预警 <span id="drill-count">0</span></h2>
   <ul class="drill-list" id="drill-list"></ul></div>
 </section>
 <section class="mapbox"><div id="map"></div>
  <div class="legend" id="legend"></div><div class="zoomhint" id="zoomhint"></div></section>
 <section class="col right">
  <div class="panel top"><h2>重点风险 <small>按紧急度排序</small>
   <span class="total">共 <b id="open-total">{summary["open_total"]}</b> 处</span></h2>
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


async def api_areas(request: web.Request) -> web.Response:
    _dash(request).metrics.requests.labels("areas").inc()
    hub = await _ready(request)
    return web.json_response({"levels": hub.state.area_levels(),
                              "updated_at": hub.state.updated_at})


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


def make_app(client: aioredis.Redis, registry: CollectorRegistry | None = None, *,
             token: str | None = None, admin: AdminMap | None = None,
             tile_url: str | None = None, tile_attribution: str = "",
             flush_s: float = 0.15) -> web.Application:
    """The dashboard app. ``token`` None means open access (only allowed on loopback by
    :func:`run_dashboard`); ``admin`` None loads the bundled Zhuhai map at start-up."""
    registry = registry or CollectorRegistry()
    metrics = DashboardMetrics(registry)
    dash = Dashboard(client=client, registry=registry, metrics=metrics,
                     auth=TokenAuth(token) if token else None, admin=admin,
                     tile_url=tile_url or None, tile_attribution=tile_attribution)
    app = web.Application(middlewares=[security_headers, require_viewer])
    app[DASHBOARD_KEY] = dash

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if dash.admin is None:
            dash.admin = await asyncio.get_running_loop().run_in_executor(
                None, AdminMap.load_default)
        admin = dash.admin
        dash.boundaries = geojson.all_levels(admin)
        dash.state = LiveState(zip(admin[AdminLevel.DISTRICT].codes,
                                   admin[AdminLevel.DISTRICT].names, strict=True))
        dash.config = {"bounds": geojson.bounds(admin), "tile_url": dash.tile_url,
                       "tile_attribution": dash.tile_attribution,
                       "levels": [lv.label for lv in AdminLevel]}
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
    app.router.add_get("/api/boundaries/{level}", api_boundaries)
    app.router.add_get("/api/alerts/{hazard_id:.+}", api_alert)
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
    client = aioredis.Redis.from_url(settings.redis_url)
    if env.dashboard_token is None:
        log.warning("dashboard without a token: open to anyone who can reach %s:%s",
                    settings.dashboard_host, settings.dashboard_port)
    web.run_app(make_app(client, token=env.dashboard_token, admin=admin,
                         tile_url=env.dashboard_tile_url,
                         tile_attribution=env.dashboard_tile_attribution),
                host=settings.dashboard_host, port=settings.dashboard_port,
                print=None, access_log=None, shutdown_timeout=2.0)
    return 0
