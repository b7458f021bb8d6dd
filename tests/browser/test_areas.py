"""Unit tests (no browser, no Redis) of the wall's pure parts: the colour roll-up (the batch
oracle the live ranking is checked against), the live mirror's ordering rules, the token
check and the static-file guard. The ranking-backed live state: tests/test_dashboard_live.py."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
import pytest

from onemap.levels import WarningLevel as W
from onemap.records import Place
from onemap.sinks.dashboard import areas
from onemap.sinks.dashboard.auth import TokenAuth
from onemap.sinks.dashboard.live import Hub, LiveState
from onemap.sinks.dashboard.server import content_security_policy, static_file
from tests.browser import kit

CITY, XZ, DM = "440400", "440402", "440403"


def place(district: str = XZ, town: str = "", village: str = "") -> Place:
    return Place(CITY, "珠海市", district, "", town, "", village, "")


def alert(level: str, *, status: str = "actual", transition: str = "new",
          **codes: str) -> dict[str, Any]:
    return {"status": status, "transition": transition, "level": level,
            "hazard": {"place": {"city_code": CITY, **codes}}}


def test_the_highest_level_rolls_up_from_village_to_city() -> None:
    got = areas.roll_up([
        (place(XZ, "440402001", "440402001001"), W.YELLOW),
        (place(XZ, "440402001", "440402001002"), W.RED),
        (place(XZ, "440402002", "440402002001"), W.BLUE),
        (place(DM, "440403100", "440403100001"), W.ORANGE),
    ])
    assert got == {CITY: W.RED, XZ: W.RED, DM: W.ORANGE,
                   "440402001": W.RED, "440402001001": W.YELLOW, "440402001002": W.RED,
                   "440402002": W.BLUE, "440402002001": W.BLUE,
                   "440403100": W.ORANGE, "440403100001": W.ORANGE}


def test_nothing_is_pushed_down_and_none_colours_nothing() -> None:
    got = areas.roll_up([(place(XZ, "440402001"), W.ORANGE), (place(DM), W.NONE)])
    assert got == {CITY: W.ORANGE, XZ: W.ORANGE, "440402001": W.ORANGE}
    assert areas.roll_up([]) == {}
    assert areas.roll_up([(Place(), W.RED)]) == {}  # out of area: no code, no colour


def test_drills_and_resolved_alerts_never_colour_the_map() -> None:
    alerts = [alert("red", status="exercise", district_code=XZ),
              alert("none", transition="resolved", district_code=XZ),
              alert("yellow", district_code=DM)]
    assert areas.area_levels(alerts) == {CITY: W.YELLOW, DM: W.YELLOW}


def test_area_levels_on_real_alert_json_agree_with_roll_up() -> None:
    made = [kit.make_alert(v, lv, source_id=f"A{i}")
            for i, (v, lv) in enumerate(zip(kit.villages()[:40], [W.BLUE, W.RED] * 20,
                                            strict=True))]
    as_json = [orjson.loads(a.to_json()) for a in made]
    assert areas.area_levels(as_json) == areas.roll_up((a.hazard.place, a.level) for a in made)


def js(a: Any) -> dict[str, Any]:
    return cast(dict[str, Any], orjson.loads(a.to_json()))


def test_live_state_applies_newer_transitions_only() -> None:
    state = LiveState([(XZ, "香洲区")])
    first = kit.make_alert(kit.villages()[0], W.YELLOW, source_id="S1")
    later = kit.make_alert(kit.villages()[0], W.RED, source_id="S1", seq=2,
                           transition="escalated")
    assert state.apply(js(later))
    assert not state.apply(js(first))  # out of order: ignored
    assert not state.apply(js(later))  # duplicate: ignored
    assert [a["level"] for a in state.top()] == ["red"]
    assert state.apply(js(kit.resolve(later)))
    assert state.top() == [] and state.markers() == []
    assert [t["transition"] for t in state.ticker] == ["resolved", "escalated"]


def test_live_state_keeps_drills_apart() -> None:
    state = LiveState([(XZ, "香洲区")])
    drill = kit.make_alert(kit.villages()[0], W.RED, source_id="D1", exercise=True)
    state.apply(js(drill))
    summary = state.summary(drill.issued_at)
    assert summary["drill_total"] == 1 and summary["open_total"] == 0
    assert summary["top"] == [] and summary["areas"] == {} and list(state.ticker) == []
    assert state.markers() == []


def test_hub_batches_changes_into_one_update() -> None:
    async def run() -> list[bytes | None]:
        hub = Hub(cast(Any, None), LiveState())
        queue = hub.subscribe()
        a = kit.make_alert(kit.villages()[1], W.ORANGE, source_id="H1")
        b = kit.make_alert(kit.villages()[2], W.BLUE, source_id="H2")
        for item in (a, b, kit.resolve(b)):
            hub.on_message(item.to_json())
        hub.on_message(b"not json")
        hub.flush()
        return [queue.get_nowait() for _ in range(queue.qsize())]

    [event] = asyncio.run(run())
    assert event is not None and event.startswith(b"event: update\ndata: ")
    payload = orjson.loads(event.split(b"data: ", 1)[1])
    assert [m[0] for m in payload["markers"]["upsert"]] == ["water_level:H1"]
    assert payload["markers"]["remove"] == ["water_level:H2"]
    assert [t["transition"] for t in payload["ticker"]] == ["resolved", "new", "new"]
    assert payload["summary"]["open_total"] == 1


def test_token_cookie_and_bearer() -> None:
    auth = TokenAuth("t0ken")
    assert auth.cookie_ok(auth.cookie_value()) and "t0ken" not in auth.cookie_value()
    assert not auth.cookie_ok(None) and not auth.token_ok("t0ke") and not auth.token_ok(None)
    assert auth.bearer_ok("Bearer t0ken") and not auth.bearer_ok("Basic t0ken")
    assert TokenAuth("other").cookie_value() != auth.cookie_value()
    with pytest.raises(ValueError):
        TokenAuth("")


@pytest.mark.parametrize("name", ["../server.py", "vendor/../../server.py", ".hidden",
                                  "vendor//leaflet.js", "nope.js", "vendor\\x.js", ""])
def test_static_files_stay_inside_static(name: str) -> None:
    assert static_file(name) is None


def test_static_files_are_found() -> None:
    path = static_file("vendor/leaflet/leaflet.js")
    assert path is not None and path.name == "leaflet.js"


def test_csp_allows_the_tile_origin_for_images_only() -> None:
    csp = content_security_policy("https://tiles.example.cn:8443/{z}/{x}/{y}.png")
    assert "img-src 'self' data: https://tiles.example.cn:8443;" in csp
    assert "connect-src 'self';" in csp and "script-src 'self';" in csp
