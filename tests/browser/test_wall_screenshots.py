"""Screenshots of the wall during a typhoon-like situation, at 1920×1080 and 3840×2160.

Written to artifacts/ (gitignored); the 1920 one is also copied to docs/img/wall-1920.png for
the README when it is small enough.
"""

from __future__ import annotations

import base64
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from onemap.levels import WarningLevel
from onemap.records import Alert
from tests.browser import kit
from tests.browser.conftest import RunningDashboard

pytestmark = [pytest.mark.browser, pytest.mark.integration]

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
README_LIMIT = 400_000

#: A storm coming ashore in 香洲 (east): worst on the coast, milder inland and to the west.
DISTRICT_WEIGHTS = {
    "440402": [WarningLevel.RED] * 4 + [WarningLevel.ORANGE] * 4 + [WarningLevel.YELLOW] * 3
    + [WarningLevel.BLUE] * 2,
    "440404": [WarningLevel.ORANGE] * 3 + [WarningLevel.YELLOW] * 4 + [WarningLevel.BLUE] * 3,
    "440403": [WarningLevel.YELLOW] * 3 + [WarningLevel.BLUE] * 5 + [WarningLevel.ORANGE],
}
TYPES = ["water_level", "rainstorm", "rainstorm", "wind", "wind", "geohazard", "incident"]
FIGURES = {"water_level": (2.6, 3.6), "rainstorm": (45, 160), "wind": (17, 52),
           "geohazard": (3, 40), "incident": (1, 30)}
SOURCES = {"water_level": "潮位站", "rainstorm": "自动雨量站", "wind": "自动气象站",
           "geohazard": "地灾隐患点", "incident": "12345热线"}


def typhoon(rnd: random.Random) -> tuple[list[Alert], list[Alert]]:
    admin = kit.admin_map()
    villages = list(admin.village.codes)
    rnd.shuffle(villages)
    first: list[Alert] = []
    for i, village in enumerate(villages[:150]):
        levels = DISTRICT_WEIGHTS[village[:6]]
        if village[:6] == "440403" and rnd.random() < 0.5:
            continue
        kind = rnd.choice(TYPES)
        low, high = FIGURES[kind]
        place, _, _ = kit.place_of(village)
        first.append(kit.make_alert(
            village, rnd.choice(levels), source_id=f"TY-{i:03d}", hazard_type=kind,
            value=round(rnd.uniform(low, high), 2), exposure=round(rnd.uniform(0, 30), 1),
            source_name=f"{place.village_name.replace('居民委员会', '').replace('村民委员会', '')}"
                        f"{SOURCES[kind]}"))
    first += [kit.make_alert(villages[-1], WarningLevel.ORANGE, source_id="DRILL-A",
                             hazard_type="geohazard", exercise=True, value=12.5),
              kit.make_alert(villages[-2], WarningLevel.YELLOW, source_id="DRILL-B",
                             hazard_type="incident", exercise=True, value=6)]
    # then the storm moves: some escalate, some are resolved
    later: list[Alert] = []
    for alert in first[:12]:
        if alert.hazard.exercise:
            continue
        if alert.level < WarningLevel.RED and rnd.random() < 0.6:
            later.append(kit.make_alert(
                alert.hazard.place.village_code, WarningLevel(alert.level + 1),
                source_id=alert.hazard.source_id, hazard_type=alert.hazard.hazard_type,
                seq=2, transition="escalated", value=alert.hazard.key_figure.value * 1.2,
                source_name=alert.hazard.source_name))
        else:
            later.append(kit.resolve(alert))
    return first, later


def test_screenshots_at_both_wall_resolutions(open_wall: Any, dashboard: RunningDashboard,
                                              artifacts: Path) -> None:
    first, later = typhoon(random.Random(20170823))
    kit.write_alerts(dashboard.redis_url, first)
    time.sleep(0.3)
    kit.write_alerts(dashboard.redis_url, later)
    time.sleep(0.5)
    shots = {}
    for width, height in ((1920, 1080), (3840, 2160)):
        wall = open_wall(width, height)
        page = wall.page
        page.wait_for_function("() => window.onemapWall.markers.size > 100")
        page.locator("#top-list li.alert").first.click()
        page.wait_for_selector("#detail:not([hidden])")
        page.evaluate("() => window.onemapWall.map.fitBounds(window.onemapWall.config.bounds,"
                      " {animate: false})")
        time.sleep(1.0)  # let cluster icons settle
        path = artifacts / f"wall-{width}x{height}.png"
        page.screenshot(path=str(path))
        shots[width] = path
        if width == 1920:
            # zoomed in on the worst town: villages coloured, markers apart
            page.evaluate("""() => {
                const w = window.onemapWall, a = w.summary.top[0];
                w.map.setView([a.lat, a.lon], w.homeZoom + 2.5, {animate: false}); }""")
            page.wait_for_function("() => window.onemapWall.mode === 'village'")
            time.sleep(1.0)
            page.screenshot(path=str(artifacts / "wall-1920x1080-village-zoom.png"))
        assert wall.errors == [], wall.errors
        assert wall.csp_violations() == []
    for path in shots.values():
        assert path.stat().st_size > 50_000, f"{path} looks empty"
    # the README's copy: written beside the artifacts, and into docs/img only when asked
    # (ONEMAP_UPDATE_DOCS=1), so a test run never leaves the work tree changed
    small = shrink_png(open_wall, shots[1920].read_bytes())
    assert len(small) < README_LIMIT, len(small)
    (shots[1920].parent / "wall-1920-readme.png").write_bytes(small)
    if os.environ.get("ONEMAP_UPDATE_DOCS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        (DOCS_IMG / "wall-1920.png").write_bytes(small)


#: Posterise to fewer shades per channel (invisible on this dark flat design) so the PNG
#: compresses below the README budget; done by a canvas in a blank page (no CSP there).
SHRINK = """async ([data, bits]) => {
  const img = new Image();
  img.src = "data:image/png;base64," + data;
  await img.decode();
  const c = document.createElement("canvas");
  c.width = img.width; c.height = img.height;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height);
  const step = 1 << (8 - bits);
  for (let i = 0; i < px.data.length; i++) {
    if ((i & 3) !== 3) px.data[i] = Math.min(255, Math.round(px.data[i] / step) * step);
  }
  g.putImageData(px, 0, 0);
  return c.toDataURL("image/png").split(",")[1];
}"""


def shrink_png(open_wall: Any, png: bytes) -> bytes:
    if len(png) < README_LIMIT:
        return png
    page = open_wall(800, 600, login=False).page
    page.goto("about:blank")
    data = base64.b64encode(png).decode()
    for bits in (6, 5, 4):
        out = base64.b64decode(page.evaluate(SHRINK, [data, bits]))
        if len(out) < README_LIMIT:
            return out
    return out
