"""The wall display in headless Chromium, fed through Redis by the worker's own writer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import redis

from onemap.levels import WarningLevel
from onemap.sinks.dashboard.areas import area_levels
from onemap.sinks.dashboard.auth import COOKIE
from tests.browser import kit
from tests.browser.conftest import RunningDashboard, WallPage

pytestmark = [pytest.mark.browser, pytest.mark.integration]

COLOURS = {"blue": "#2f7bff", "yellow": "#ffd21f", "orange": "#ff8a00", "red": "#ff2d2d"}


def wait_js(page: Any, predicate: str, timeout_ms: int = 10_000) -> None:
    page.wait_for_function(f"() => {predicate}", timeout=timeout_ms)


def assert_clean(wall: WallPage) -> None:
    assert wall.errors == [], wall.errors
    assert wall.csp_violations() == []


def test_page_loads_with_no_console_errors_and_no_csp_violations(
        open_wall: Any, dashboard: RunningDashboard) -> None:
    kit.write_alerts(dashboard.redis_url, [
        kit.make_alert(kit.villages()[3], WarningLevel.ORANGE, source_id="LOAD-1")])
    wall = open_wall(1920, 1080)
    page = wall.page
    wait_js(page, "document.querySelector('path[data-admin=\"village\"]') !== null")
    assert page.title().startswith("珠海市应急一张图")
    # every panel is there and filled from the pushed state
    for selector in ("#top-list li.alert", "#district-rows tr", "#feeds li", "#ticker li",
                     "#kpis .kpi", ".legend-item"):
        assert page.locator(selector).count() > 0, selector
    assert page.locator("#conn").inner_text() == "实时"
    # all four levels of boundaries are on the map, districts filled at the city view
    counts = page.evaluate("""() => ({
        city: document.querySelectorAll('path[data-admin="city"]').length,
        district: document.querySelectorAll('path[data-admin="district"]').length,
        town: document.querySelectorAll('path[data-admin="town"]').length,
        village: document.querySelectorAll('path[data-admin="village"]').length,
        mode: window.onemapWall.mode})""")
    admin = kit.admin_map()
    assert counts == {"city": len(admin.city), "district": len(admin.district),
                      "town": len(admin.town), "village": len(admin.village),
                      "mode": "district"}
    # zooming in shows towns, then villages
    for step, mode in ((1, "town"), (2, "village"), (0, "district")):
        page.evaluate(f"() => window.onemapWall.map.setZoom(window.onemapWall.homeZoom + {step},"
                      " {animate: false})")
        wait_js(page, f"window.onemapWall.mode === '{mode}'")
    # every script, style and image came from the dashboard itself
    hosts = page.evaluate("() => performance.getEntriesByType('resource').map(e => e.name)")
    assert all(h.startswith(dashboard.url) for h in hosts), hosts
    assert_clean(wall)


def test_alert_written_to_redis_appears_within_two_seconds(
        open_wall: Any, dashboard: RunningDashboard, artifacts: Path) -> None:
    wall = open_wall(1920, 1080)
    page = wall.page
    village = kit.villages()[40]
    alert = kit.make_alert(village, WarningLevel.RED, source_id="LIVE-1", exposure=60)
    selector = f'#top-list li[data-hazard="{alert.hazard_id}"]'
    started = time.monotonic()
    kit.write_alerts(dashboard.redis_url, [alert])
    page.wait_for_selector(selector, timeout=2_000)
    in_list = time.monotonic() - started
    wait_js(page, f"window.onemapWall.markers.has('{alert.hazard_id}') && "
                  f"document.querySelector('path[data-code=\"{village}\"]')"
                  ".getAttribute('data-level') === 'red'", timeout_ms=2_000)
    everywhere = time.monotonic() - started
    assert everywhere < 2.0
    ticker = page.locator(f'#ticker li[data-alert="{alert.alert_id}"]')
    assert ticker.count() == 1 and "新增" in ticker.inner_text()

    # resolved: leaves the list and the map, the ticker says so
    started = time.monotonic()
    kit.write_alerts(dashboard.redis_url, [kit.resolve(alert)])
    page.wait_for_selector(selector, state="detached", timeout=2_000)
    resolved = time.monotonic() - started
    assert not page.evaluate(f"() => window.onemapWall.markers.has('{alert.hazard_id}')")
    assert "解除" in page.locator(f'#ticker li[data-alert="{alert.hazard_id}#2"]').inner_text()
    (artifacts / "wall-latency.json").write_text(json.dumps({
        "redis_write_to_top_list_s": round(in_list, 3),
        "redis_write_to_list_marker_and_colour_s": round(everywhere, 3),
        "resolved_to_removed_s": round(resolved, 3)}, indent=2))
    assert_clean(wall)


def test_a_browser_opening_late_gets_the_current_state_at_once(
        open_wall: Any, dashboard: RunningDashboard) -> None:
    alerts = [kit.make_alert(v, WarningLevel.YELLOW, source_id=f"LATE-{i}")
              for i, v in enumerate(kit.villages()[100:110])]
    kit.write_alerts(dashboard.redis_url, alerts)
    time.sleep(0.5)
    wall = open_wall(1920, 1080)  # returns once the first (state) event is applied
    ids = wall.page.evaluate("() => Array.from(window.onemapWall.markers.keys())")
    assert {a.hazard_id for a in alerts} <= set(ids)
    assert wall.page.evaluate("() => window.onemapWall.stateCount") == 1


def test_map_colours_match_redis(open_wall: Any, dashboard: RunningDashboard,
                                 redis_client: redis.Redis) -> None:
    admin = kit.admin_map()
    town = admin.town.codes[0]
    in_town = [v for v in admin.village.codes if v.startswith(town)]
    other = next(v for v in admin.village.codes if not v.startswith(town[:6]))
    kit.write_alerts(dashboard.redis_url, [
        kit.make_alert(in_town[0], WarningLevel.BLUE, source_id="COL-1"),
        kit.make_alert(in_town[1], WarningLevel.ORANGE, source_id="COL-2"),
        kit.make_alert(other, WarningLevel.YELLOW, source_id="COL-3"),
        # a drill in a village of its own never colours the map
        kit.make_alert(in_town[2], WarningLevel.RED, source_id="COL-DRILL", exercise=True),
    ])
    wall = open_wall(1920, 1080)
    page = wall.page
    wait_js(page, "window.onemapWall.markers.has('water_level:COL-3')")

    ids = cast(list[bytes], redis_client.zrange("onemap:alerts:open:actual", 0, -1))
    stored = [orjson.loads(cast(bytes, redis_client.hget(f"onemap:alert:{i.decode()}", "alert")))
              for i in ids]
    expected = {code: level.label for code, level in area_levels(stored).items()}
    assert expected[in_town[1]] == "orange" and expected[town] == "orange"
    assert in_town[2] not in expected  # the drill's village

    for step, mode in ((0, "district"), (1, "town"), (2, "village")):
        page.evaluate(f"() => window.onemapWall.map.setZoom(window.onemapWall.homeZoom + {step},"
                      " {animate: false})")
        wait_js(page, f"window.onemapWall.mode === '{mode}'")
        shown = page.evaluate("""() => Array.from(document.querySelectorAll('path[data-code]'))
            .map(p => [p.getAttribute('data-code'), p.getAttribute('data-admin'),
                       p.getAttribute('data-level'), p.getAttribute('data-filled'),
                       p.getAttribute('fill'), p.getAttribute('fill-opacity')])""")
        assert len(shown) == sum(len(t) for t in admin)
        for code, level_name, level, filled, fill, _opacity in shown:
            assert level == expected.get(code, "none"), (code, level_name)
            if filled == "1" and level != "none":
                assert fill == COLOURS[level], (code, fill)
        filled_levels = {lv for _, lv, _, f, _, _ in shown if f == "1"}
        assert filled_levels == {mode}
    assert_clean(wall)


def test_drill_alert_appears_only_in_the_drill_section(
        open_wall: Any, dashboard: RunningDashboard) -> None:
    wall = open_wall(1920, 1080)
    page = wall.page
    drill = kit.make_alert(kit.villages()[200], WarningLevel.RED, source_id="DRILL-9",
                           hazard_type="incident", exercise=True, exposure=90)
    kit.write_alerts(dashboard.redis_url, [drill])
    item = page.wait_for_selector(f'#drill-list li[data-hazard="{drill.hazard_id}"]',
                                  timeout=5_000)  # the 2 s latency is measured in its own test
    assert item is not None and item.inner_text().startswith("【演练】")
    assert "【演练】" in page.locator("#drills h2").inner_text()
    assert page.locator(f'#top-list [data-hazard="{drill.hazard_id}"]').count() == 0
    assert page.locator(f'#ticker [data-alert="{drill.alert_id}"]').count() == 0
    assert not page.evaluate(f"() => window.onemapWall.markers.has('{drill.hazard_id}')")
    assert page.evaluate(
        f"() => document.querySelector('path[data-code=\"{kit.villages()[200]}\"]')"
        ".getAttribute('data-level')") == "none"
    assert_clean(wall)


def test_feed_text_with_markup_is_shown_as_text(
        open_wall: Any, dashboard: RunningDashboard) -> None:
    wall = open_wall(1920, 1080)
    page = wall.page
    hostile = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    alert = kit.make_alert(kit.villages()[7], WarningLevel.RED, source_id="XSS-1",
                           hazard_type="incident", reason=f"群众报警：{hostile}",
                           source_name=f"12345热线{hostile}", exposure=95)
    kit.write_alerts(dashboard.redis_url, [alert])
    selector = f'#top-list li[data-hazard="{alert.hazard_id}"]'
    page.wait_for_selector(selector, timeout=2_000)
    assert hostile in page.locator(selector + " .source").text_content()
    page.click(selector)  # by selector: a push may have redrawn the list meanwhile
    page.wait_for_selector("#detail:not([hidden])")
    assert hostile in page.locator("#detail .reason").text_content()
    assert page.locator("#detail img, #top-list img, #ticker img, #detail script").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    # the first paint is rendered by the server: escaped there too
    status, _, body = dashboard.get("/")
    assert status == 200 and hostile.encode() not in body
    assert b"&lt;script&gt;window.__pwned" in body
    assert_clean(wall)


def test_without_the_token_everything_but_health_and_metrics_is_401(
        dashboard: RunningDashboard) -> None:
    for path in ("/", "/api/state", "/api/events", "/api/areas", "/api/boundaries/district",
                 "/api/config", "/static/onemap.js", "/static/vendor/leaflet/leaflet.js"):
        status, _, _ = dashboard.get(path, token=False)
        assert status == 401, path
    status, _, body = dashboard.get("/", token=False, headers={"Accept": "text/html"})
    assert status == 401 and b'name="token"' in body and b"<script" not in body
    assert dashboard.get("/?token=wrong", token=False)[0] == 401
    assert dashboard.get("/api/state", token=False,
                         headers={"Authorization": "Bearer wrong"})[0] == 401
    for path in ("/healthz", "/metrics"):
        assert dashboard.get(path, token=False)[0] == 200, path

    status, headers, _ = dashboard.get(f"/?token={dashboard.token}&x=1", token=False)
    assert status == 303 and headers["Location"] == "/?x=1"  # the token leaves the URL
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and dashboard.token not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    value = cookie.split(";")[0]
    assert dashboard.get("/api/areas", token=False, headers={"Cookie": value})[0] == 200
    assert dashboard.get("/api/areas", token=False,
                         headers={"Cookie": f"{COOKIE}=forged"})[0] == 401


def test_login_form_sets_the_cookie(browser: Any, dashboard: RunningDashboard) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        response = page.goto(dashboard.url + "/")
        assert response is not None and response.status == 401
        page.fill('input[name="token"]', "not-it")
        page.click('button[type="submit"]')
        assert "口令错误" in page.content()
        page.fill('input[name="token"]', dashboard.token)
        page.click('button[type="submit"]')
        page.wait_for_function("() => window.onemapWall && window.onemapWall.stateCount > 0")
        [cookie] = [c for c in context.cookies() if c["name"] == COOKIE]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("() => document.cookie") == ""  # not readable by scripts
    finally:
        context.close()


def test_headers_and_static_files(dashboard: RunningDashboard) -> None:
    status, headers, _ = dashboard.get("/")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/static/../server.py", "/static/vendor/../../server.py",
                 "/static/%2e%2e/server.py", "/static/.hidden", "/static/nope.js"):
        assert dashboard.get(path)[0] == 404, path
    for path in ("/static/vendor/leaflet/LICENSE", "/static/vendor/leaflet/images/layers.png",
                 "/static/vendor/leaflet.markercluster/leaflet.markercluster.js"):
        assert dashboard.get(path)[0] == 200, path
    status, _, body = dashboard.get("/api/boundaries/village")
    assert status == 200
    fc = json.loads(body)
    assert len(fc["features"]) == len(kit.admin_map().village)
    assert dashboard.get("/api/boundaries/province")[0] == 404
