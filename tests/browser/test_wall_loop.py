"""The wall acting and narrowing: closed-loop steps shown live, an operator acting from the
wall, the top list narrowed to an area, silences and muted alerts. Headless Chromium against
a real `onemap dashboard` process and Redis, as the other wall tests."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from onemap.levels import WarningLevel
from tests.browser import kit
from tests.browser.conftest import (
    NAMED_VIEWER_TOKEN,
    OPERATOR_NAME,
    RunningDashboard,
    WallPage,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def send(dashboard: RunningDashboard, method: str, path: str, body: Any,
         token: str | None = None) -> tuple[int, Any]:
    """A write from another workstation (curl-like), with the operator's token."""
    request = urllib.request.Request(
        dashboard.url + path, data=orjson.dumps(body), method=method,
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {token or dashboard.operator_token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def wait_js(page: Any, predicate: str, timeout_ms: int = 5_000) -> None:
    page.wait_for_function(f"() => {predicate}", timeout=timeout_ms)


def assert_clean(wall: WallPage) -> None:
    assert wall.errors == [], wall.errors
    assert wall.csp_violations() == []


def row_of(hazard_id: str) -> str:
    return f'#top-list li[data-hazard="{hazard_id}"]'


def test_an_operators_step_shows_up_on_the_wall_live(
        open_wall: Any, dashboard: RunningDashboard) -> None:
    wall = open_wall(1920, 1080)
    page = wall.page
    alert = kit.make_alert(kit.villages()[300], WarningLevel.RED, source_id="LOOP-LIVE",
                           exposure=99)
    kit.write_alerts(dashboard.redis_url, [alert])
    row = page.wait_for_selector(row_of(alert.hazard_id))
    assert row is not None and "待确认" in page.locator(row_of(alert.hazard_id) +
                                                   " .loop-tag").inner_text()
    page.click(row_of(alert.hazard_id))
    page.wait_for_selector("#detail:not([hidden])")
    assert page.locator("#detail .loop-current").inner_text() == "待确认"
    assert page.locator("#detail .step-btn").count() == 0  # nobody logged in: no buttons
    assert page.locator("#op-login").is_visible()

    # an operator acknowledges from elsewhere: the wall follows without a reload
    status, body = send(dashboard, "POST", f"/api/alerts/{alert.hazard_id}/steps",
                        {"step": "acknowledged"})
    assert status == 200 and body["result"] == "accepted"
    page.wait_for_function(
        f"""() => {{
            const tag = document.querySelector('{row_of(alert.hazard_id)} .loop-tag');
            return tag && tag.textContent.startsWith('已确认');
        }}""", timeout=5_000)
    wait_js(page, "document.querySelector('#detail .loop-current').textContent === '已确认'")
    who = page.locator('#detail .loop-step[data-step="acknowledged"] .ls-who').inner_text()
    assert OPERATOR_NAME in who
    status, _ = send(dashboard, "POST", f"/api/alerts/{alert.hazard_id}/steps",
                     {"step": "dispatched", "unit": "消防<b>一</b>中队"})
    assert status == 200
    wait_js(page, "document.querySelector('#detail .loop-current').textContent === '已派遣'")
    note = page.locator('#detail .loop-step[data-step="dispatched"] .ls-note')
    assert note.inner_text() == "消防<b>一</b>中队"  # shown as text
    assert page.locator("#detail .loop b").count() == 0
    assert page.evaluate("() => window.onemapWall.stateCount") == 1  # live, not reloaded
    assert_clean(wall)


def test_an_operator_logs_in_on_the_wall_and_acts(
        open_wall: Any, dashboard: RunningDashboard, artifacts: Path) -> None:
    wall = open_wall(1920, 1080)
    page = wall.page
    alert = kit.make_alert(kit.villages()[310], WarningLevel.RED, source_id="LOOP-WALL",
                           exposure=120)
    kit.write_alerts(dashboard.redis_url, [alert])
    page.wait_for_selector(row_of(alert.hazard_id))
    page.click(row_of(alert.hazard_id))
    page.wait_for_selector("#detail:not([hidden])")

    page.click("#op-login")
    page.fill("#op-token", NAMED_VIEWER_TOKEN)  # a named viewer may not act
    page.click("#op-form button[type=submit]")
    wait_js(page, "document.getElementById('op-error').textContent === '该口令无操作权限'")
    assert page.locator("#detail .step-btn").count() == 0
    page.fill("#op-token", dashboard.operator_token)
    page.click("#op-form button[type=submit]")
    page.wait_for_selector("#op-name:not([hidden])")
    assert OPERATOR_NAME in page.locator("#op-name").inner_text()
    # the token lives in the script's memory only
    leaked = page.evaluate("""(t) => [Object.values(window.onemapWall).some(v =>
            typeof v === "string" && v.includes(t)) ||
            JSON.stringify(window.onemapWall.operator).includes(t),
        JSON.stringify(localStorage).includes(t), JSON.stringify(sessionStorage).includes(t),
        document.cookie.includes(t), document.getElementById('op-token').value]""",
                           dashboard.operator_token)
    assert leaked == [False, False, False, False, ""]

    buttons = page.locator("#detail .step-btn")
    assert buttons.all_inner_texts() == ["确认"]  # acknowledge first
    buttons.first.click()
    wait_js(page, "document.querySelector('#detail .loop-current').textContent === '已确认'")
    assert page.locator("#detail .step-btn").all_inner_texts() == [
        "派遣", "到场", "处置完毕", "办结"]
    page.click('#detail .step-btn[data-step="dispatched"]')
    page.screenshot(path=str(artifacts / "wall-operator-1920x1080.png"))
    page.fill("#detail .step-input", "")
    page.click("#detail .step-form button[type=submit]")
    assert "派往单位" in page.locator("#detail .loop-msg").inner_text()  # asked, not sent
    page.fill("#detail .step-input", "拱北派出所")
    page.click("#detail .step-form button[type=submit]")
    wait_js(page, "document.querySelector('#detail .loop-current').textContent === '已派遣'")
    status, _, body = dashboard.get(f"/api/alerts/{alert.hazard_id}/steps")
    loop = orjson.loads(body)["loop"]
    assert status == 200 and [(s["step"], s["actor"], s["unit"]) for s in loop["steps"]] == [
        ("acknowledged", OPERATOR_NAME, ""), ("dispatched", OPERATOR_NAME, "拱北派出所")]

    page.click(".op-logout")  # logging out forgets the token: the buttons go
    wait_js(page, "document.querySelectorAll('#detail .step-btn').length === 0")
    assert page.locator("#op-login").is_visible()
    assert_clean(wall)


def test_the_top_list_narrows_to_an_area_and_stays_live(
        open_wall: Any, dashboard: RunningDashboard) -> None:
    admin = kit.admin_map()
    villages = kit.villages()
    here = villages[120]
    district, town = here[:6], here[:9]
    elsewhere = next(v for v in villages if v[:6] != district)
    inside = kit.make_alert(here, WarningLevel.ORANGE, source_id="AREA-IN", exposure=40)
    outside = kit.make_alert(elsewhere, WarningLevel.RED, source_id="AREA-OUT", exposure=90)
    kit.write_alerts(dashboard.redis_url, [inside, outside])
    wall = open_wall(1920, 1080)
    page = wall.page
    page.wait_for_selector(row_of(outside.hazard_id))

    page.click(f'#district-rows tr[data-code="{district}"]')  # from the district table
    wait_js(page, f"document.getElementById('top-list').dataset.area === '{district}' && "
                  "window.onemapWall.areaTop !== null")
    page.wait_for_selector(row_of(inside.hazard_id))
    assert page.locator(row_of(outside.hazard_id)).count() == 0
    districts = page.evaluate(
        "() => window.onemapWall.areaTop.top.map(r => r.place.district_code)")
    assert districts and set(districts) == {district}
    assert page.locator("#area-select").input_value() == district
    info = page.locator("#area-info").inner_text()
    assert "风险指数" in info and "返回全市" in info
    name = admin.district.names[admin.district.index_of(district)]
    assert page.locator("#top-scope").inner_text().startswith(name)

    page.select_option("#area-select", town)  # a town, from the selector
    wait_js(page, f"window.onemapWall.areaTop && window.onemapWall.areaTop.area.code === '{town}'")
    assert page.evaluate("() => window.onemapWall.areaTop.top.every("
                         f"r => r.place.town_code === '{town}')")
    # still live: a new hazard in the town appears in the narrowed list
    late = kit.make_alert(villages[121] if villages[121][:9] == town else here,
                          WarningLevel.RED, source_id="AREA-LATE", exposure=200)
    kit.write_alerts(dashboard.redis_url, [late])
    page.wait_for_selector(row_of(late.hazard_id))
    assert page.locator("#top-list li.alert").first.get_attribute("data-hazard") == \
        late.hazard_id

    # the map: a town's tooltip shows its risk index; clicking it narrows to it
    page.evaluate("() => window.onemapWall.map.setZoom(window.onemapWall.homeZoom + 1,"
                  " {animate: false})")
    wait_js(page, "window.onemapWall.mode === 'town'")
    tip = page.evaluate(f"""() => {{
        const p = window.onemapWall.paths.town['{town}'];
        return p.getTooltip()._content(p).textContent; }}""")
    assert "风险指数" in tip and "点击" in tip
    risk = page.evaluate(f"() => window.onemapWall.summary.area_stats['{town}'][0]")
    assert risk > 0 and f"{risk:.1f}" in tip
    page.click("#area-info .ai-back")
    wait_js(page, "document.getElementById('top-list').dataset.area === ''")
    page.evaluate(f"() => window.onemapWall.paths.town['{town}'].fire('click')")
    wait_js(page, f"window.onemapWall.areaTop && window.onemapWall.areaTop.area.code === '{town}'")
    assert page.evaluate(f"() => document.querySelector('path[data-code=\"{town}\"]')"
                         ".classList.contains('area-selected')")
    assert_clean(wall)


def test_silences_are_listed_and_muted_alerts_marked(
        open_wall: Any, dashboard: RunningDashboard) -> None:
    hostile = '<img src=x onerror="window.__pwned = 1">'
    status, body = send(dashboard, "POST", "/api/silences", {
        "matchers": {"source_id": "MUTED-1"}, "duration_minutes": 120,
        "comment": f"水位计检修 {hostile}"})
    assert status == 201
    silence_id = body["silence"]["id"]
    muted = dataclasses.replace(
        kit.make_alert(kit.villages()[330], WarningLevel.ORANGE, source_id="MUTED-1",
                       exposure=70),
        notify="silenced", notify_reason=f"静默 {silence_id}：水位计检修")
    wall = open_wall(1920, 1080)
    page = wall.page
    page.wait_for_selector(f'#silences li[data-silence="{silence_id}"]')
    item = page.locator(f'#silences li[data-silence="{silence_id}"]')
    assert hostile in item.inner_text() and OPERATOR_NAME in item.inner_text()
    assert "生效中" in item.inner_text()
    assert page.locator("#silence-count").inner_text() == "1"
    assert page.locator("#silences img").count() == 0
    assert page.locator("#silences .si-end").count() == 0  # viewers cannot end it

    kit.write_alerts(dashboard.redis_url, [muted])
    page.wait_for_selector(row_of(muted.hazard_id) + " .muted-tag")
    assert page.locator(row_of(muted.hazard_id) + " .muted-tag").inner_text() == "已静默"
    assert page.locator(f'#ticker li[data-alert="{muted.alert_id}"] .muted-tag').inner_text() \
        == "已静默"
    page.click(row_of(muted.hazard_id))
    page.wait_for_selector("#detail:not([hidden])")
    assert "已静默" in page.locator("#detail .facts").inner_text()

    page.click("#op-login")
    page.fill("#op-token", dashboard.operator_token)
    page.click("#op-form button[type=submit]")
    page.click(f'#silences li[data-silence="{silence_id}"] .si-end')
    page.wait_for_selector(f'#silences li[data-silence="{silence_id}"]', state="detached")
    assert page.locator("#silence-count").inner_text() == "0"
    assert page.evaluate("() => window.__pwned") is None
    assert_clean(wall)
