"""`onemap dashboard`: the command room's page, its JSON state and a live push (SSE).

The page is served whole by OneMap (no CDN): HTML rendered on the server with every feed
text escaped, one script and one stylesheet from /static, a strict Content-Security-Policy.
A browser opening late or reconnecting gets the current state at once, then live events.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import importlib.resources
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from onemap.levels import WarningLevel
from onemap.settings import Settings
from onemap.sinks.dashboard.state import (
    EVENTS_CHANNEL,
    UPDATED_AT_KEY,
    read_open_alerts,
    ticker_key,
)

log = logging.getLogger(__name__)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
REDIS_KEY: web.AppKey[aioredis.Redis] = web.AppKey("redis", aioredis.Redis)
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)

TRANSITION_CHINESE = {"new": "新增", "escalated": "升级", "de-escalated": "降级",
                      "resolved": "解除", "updated": "更新"}


class DashboardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("onemap_dashboard_requests_total", "HTTP requests by route.",
                                ["route"], registry=registry)
        self.clients = Gauge("onemap_dashboard_push_clients", "Browsers connected for push.",
                             registry=registry)
        self.redis_errors = Counter("onemap_dashboard_redis_errors_total",
                                    "Redis errors while serving.", registry=registry)


METRICS_KEY: web.AppKey[DashboardMetrics] = web.AppKey("metrics", DashboardMetrics)


async def load_state(client: aioredis.Redis) -> dict[str, Any]:
    """Open alerts (actual and exercise apart), the ticker and the last update time."""
    actual = await read_open_alerts(client, "actual")
    exercise = await read_open_alerts(client, "exercise")
    ticker = await client.lrange(ticker_key("actual"), 0, 29)
    updated = await client.get(UPDATED_AT_KEY)
    return {
        "alerts": [orjson.loads(a) for a in actual],
        "exercise": [orjson.loads(a) for a in exercise],
        "ticker": [orjson.loads(t) for t in ticker],
        "updated_at": updated.decode() if isinstance(updated, bytes) else updated,
        "served_at": datetime.now(UTC).isoformat(),
    }


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def alert_row(alert: dict[str, Any]) -> str:
    h = alert["hazard"]
    level = WarningLevel.parse(alert["level"])
    fig = h["key_figure"]
    figure = f"{fig['name']} {fig['value']:.2f}{fig['unit']}"
    return (
        f'<tr class="alert level-{_e(level.label)}" data-hazard="{_e(alert["hazard_id"])}">'
        f'<td class="level">{_e(level.chinese)}</td>'
        f'<td class="place">{_e(h["place"].get("district_name", ""))}'
        f'{_e(h["place"].get("town_name", ""))}{_e(h["place"].get("village_name", ""))}</td>'
        f'<td class="source">{_e(h["source_name"])}</td>'
        f'<td class="figure">{_e(figure)}</td>'
        f'<td class="reason">{_e(h["reason"])}</td>'
        f'<td class="score">{_e(alert["score"])}</td>'
        f'<td class="time">{_e(h["observed_at"][11:16])}</td></tr>'
    )


def render_page(state: dict[str, Any]) -> str:
    rows = "".join(alert_row(a) for a in state["alerts"]) or \
        '<tr class="empty"><td colspan="7">当前无预警</td></tr>'
    drills = "".join(alert_row(a) for a in state["exercise"])
    ticker = "".join(
        f'<li class="level-{_e(t["level"])}">{_e(t["issued_at"][11:19])} '
        f'{_e(TRANSITION_CHINESE.get(t["transition"], t["transition"]))} '
        f'{_e(t["hazard"]["source_name"])} {_e(WarningLevel.parse(t["level"]).chinese)}</li>'
        for t in state["ticker"])
    drill_block = (f'<section class="drills"><h2>【演练】演练预警</h2><table>'
                   f'<tbody id="drill-rows">{drills}</tbody></table></section>' if drills else "")
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>珠海市应急一张图 · OneMap</title>
<link rel="stylesheet" href="/static/onemap.css"></head>
<body><header><h1>珠海市应急一张图</h1>
<div class="meta">最后更新 <span id="updated">{_e(state["updated_at"] or "—")}</span>
 · 实时预警 <span id="count">{len(state["alerts"])}</span> 条
 · <span id="conn" class="conn">连接中</span></div></header>
<main><section class="alerts"><h2>实时预警（按紧急程度排序）</h2>
<table><thead><tr><th>等级</th><th>地点</th><th>监测点</th><th>关键数据</th><th>原因</th>
<th>紧急度</th><th>时间</th></tr></thead><tbody id="alert-rows">{rows}</tbody></table></section>
{drill_block}
<aside class="ticker"><h2>预警动态</h2><ul id="ticker">{ticker}</ul></aside></main>
<script src="/static/onemap.js"></script></body></html>"""


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def page(request: web.Request) -> web.Response:
    request.app[METRICS_KEY].requests.labels("page").inc()
    state = await load_state(request.app[REDIS_KEY])
    return web.Response(text=render_page(state), content_type="text/html", charset="utf-8")


async def api_state(request: web.Request) -> web.Response:
    request.app[METRICS_KEY].requests.labels("state").inc()
    state = await load_state(request.app[REDIS_KEY])
    return web.Response(body=orjson.dumps(state), content_type="application/json")


async def api_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a ``state`` event at once, then one ``alert`` per transition."""
    metrics = request.app[METRICS_KEY]
    metrics.requests.labels("events").inc()
    client = request.app[REDIS_KEY]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    pubsub = client.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    metrics.clients.inc()
    try:
        state = await load_state(client)
        await response.write(b"event: state\ndata: " + orjson.dumps(state) + b"\n\n")
        async for data in _messages(pubsub):
            await response.write(b"event: alert\ndata: " + data + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        metrics.clients.dec()
        with contextlib.suppress(Exception):
            await pubsub.unsubscribe(EVENTS_CHANNEL)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
    return response


async def _messages(pubsub: Any) -> AsyncIterator[bytes]:
    while True:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=15.0)
        if msg is None:
            yield b"{}"  # keep-alive, so proxies and the browser see the stream alive
            continue
        yield bytes(msg["data"])


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[REDIS_KEY].ping()
    except Exception:  # any failure means "not healthy"; the body says which
        request.app[METRICS_KEY].redis_errors.inc()
        return web.json_response({"status": "redis unreachable"}, status=503)
    return web.json_response({"status": "ok"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ("onemap.js", "onemap.css"):
        raise web.HTTPNotFound()
    data = importlib.resources.files("onemap.sinks.dashboard").joinpath("static", name)
    ctype = "application/javascript" if name.endswith(".js") else "text/css"
    return web.Response(body=data.read_bytes(), content_type=ctype, charset="utf-8")


def make_app(client: aioredis.Redis, registry: CollectorRegistry | None = None) -> web.Application:
    registry = registry or CollectorRegistry()
    app = web.Application(middlewares=[security_headers])
    app[REDIS_KEY] = client
    app[METRICS_KEY] = DashboardMetrics(registry)
    app[REGISTRY_KEY] = registry
    app.router.add_get("/", page)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/static/{name}", static)
    return app


def run_dashboard(settings: Settings) -> int:
    from onemap import logs
    from onemap.embedded import require_free

    logs.configure(settings.log_level, settings.log_format)
    require_free(settings.dashboard_host, settings.dashboard_port, "dashboard",
                 "--dashboard-port or ONEMAP_DASHBOARD_PORT")
    client = aioredis.Redis.from_url(settings.redis_url)
    web.run_app(make_app(client), host=settings.dashboard_host, port=settings.dashboard_port,
                print=None, access_log=None, shutdown_timeout=2.0)
    return 0
