"""The wall's live state reads from the live ranking (rules/ranking.py): top lists per area,
ties, drills apart, resolved alerts removed, area colours and risk indices, loops and silences.

Unit tests: no Redis, no browser. Alerts are made like the lifecycle stage makes them
(tests/browser/kit.py) and applied as the JSON the dashboard receives from Redis.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson

from onemap.levels import WarningLevel as W
from onemap.records import Alert
from onemap.rules.ranking import ALL, AREA_KINDS, Ranking, risk_index
from onemap.rules.response import Loop, Step
from onemap.rules.silences import Matchers, Silence
from onemap.rules.urgency import RiskWeights
from onemap.sinks.dashboard.areas import roll_up
from onemap.sinks.dashboard.live import Hub, LiveState
from onemap.sinks.response import RESPONSE_CHANNEL
from onemap.sinks.silences import SILENCES_CHANNEL
from tests.browser import kit

T0 = datetime(2026, 8, 23, 8, 0, tzinfo=UTC)


def js(alert: Alert) -> dict[str, Any]:
    return cast(dict[str, Any], orjson.loads(alert.to_json()))


def towns_with_villages(n: int) -> list[tuple[str, list[str]]]:
    """``n`` towns with at least three villages each, from at least two districts."""
    by_town: dict[str, list[str]] = defaultdict(list)
    for v in kit.villages():
        by_town[v[:9]].append(v)
    towns = [(t, vs) for t, vs in sorted(by_town.items()) if len(vs) >= 3]
    picked, districts = [], set()
    for t, vs in towns:  # one per district first, then any
        if t[:6] not in districts:
            picked.append((t, vs))
            districts.add(t[:6])
    picked += [tv for tv in towns if tv not in picked]
    return picked[:n]


def scored(alert: Alert, score: float, **breakdown: float) -> Alert:
    parts = breakdown or {"level": score}
    return dataclasses.replace(alert, score=score, score_breakdown=parts)


def make(village: str, level: W, sid: str, score: float, *, seq: int = 1,
         transition: str = "new", exercise: bool = False, at: datetime = T0,
         **breakdown: float) -> Alert:
    a = kit.make_alert(village, level, source_id=sid, seq=seq, transition=transition,
                       exercise=exercise, issued_at=at)
    return scored(a, score, **breakdown)


def test_top_lists_per_area_come_from_the_ranking() -> None:
    (t1, v1), (t2, v2) = towns_with_villages(2)
    assert t1[:6] != t2[:6]  # two districts
    alerts = [make(v1[0], W.RED, "A", 90), make(v1[1], W.YELLOW, "B", 40),
              make(v2[0], W.ORANGE, "C", 70), make(v2[1], W.BLUE, "D", 15),
              make(v1[2], W.ORANGE, "E", 65)]
    state = LiveState()
    for a in alerts:
        assert state.apply(js(a))
    ids = lambda rows: [r["hazard_id"] for r in rows]  # noqa: E731
    assert ids(state.top()) == ["water_level:" + s for s in "ACEBD"]
    assert [r["rank"] for r in state.top()] == [1, 2, 3, 4, 5]
    assert ids(state.top(area=t1)) == ["water_level:A", "water_level:E", "water_level:B"]
    assert ids(state.top(area=t2[:6])) == ["water_level:C", "water_level:D"]
    assert ids(state.top(area=v2[1])) == ["water_level:D"]  # villages keep a list too
    assert ids(state.top(area=t1, k=1)) == ["water_level:A"]
    assert state.top(area="440499999") == []
    # the same as a Ranking fed the same hazards in the same order
    oracle = Ranking("actual", ranked=AREA_KINDS)
    for a in alerts:
        oracle.update(a.hazard, a.score, a.score_breakdown)
    for code in (ALL, t1, t2, t1[:6], v1[0]):
        assert ids(state.top(area=code, k=50)) == ids(oracle.top(code, 50))
    # a row carries the breakdown and what the wall adds from the alert
    row = state.top()[0]
    assert row["breakdown"] == {"level": 90}
    assert row["alert_id"] == "water_level:A#1" and row["transition"] == "new"
    assert row["notify"] == "send" and row["loop"] is None
    assert row["issued_at"] == T0.isoformat() and row["rule_id"] == "water_level"


def test_any_breakdown_keys_travel_to_the_wall() -> None:
    (_, v), = towns_with_villages(1)
    a = scored(make(v[0], W.ORANGE, "U2", 81.5), 81.5, level=60, exposure_population=12.5,
               exposure_sites=8, trend=10, compound=0, freshness=-9, confidence=0,
               something_new=0)
    state = LiveState()
    state.apply(js(a))
    assert state.top()[0]["breakdown"] == a.score_breakdown


def test_ties_keep_the_rankings_order_first_seen_then_id() -> None:
    (_, v), = towns_with_villages(1)
    later = make(v[0], W.ORANGE, "T-late", 60, at=T0)
    later = dataclasses.replace(later, hazard=dataclasses.replace(
        later.hazard, observed_at=T0 + timedelta(minutes=5)))
    early_b = make(v[1], W.ORANGE, "T-b", 60)
    early_a = make(v[2], W.ORANGE, "T-a", 60)
    higher_level = make(v[0], W.RED, "T-red", 60)
    state = LiveState()
    for a in (later, early_b, higher_level, early_a):
        state.apply(js(a))
    assert [r["hazard_id"][12:] for r in state.top()] == ["T-red", "T-a", "T-b", "T-late"]
    # an update to the same score keeps the first-seen time, so the order holds
    again = dataclasses.replace(early_b, seq=2, alert_id="water_level:T-b#2",
                                transition="updated", hazard=dataclasses.replace(
                                    early_b.hazard, observed_at=T0 + timedelta(hours=1)))
    assert state.apply(js(again))
    assert [r["hazard_id"][12:] for r in state.top()] == ["T-red", "T-a", "T-b", "T-late"]


def test_a_resync_keeps_first_seen_so_ties_do_not_reshuffle() -> None:
    (_, v), = towns_with_villages(1)
    a = make(v[0], W.YELLOW, "R-z", 30)
    b = make(v[1], W.YELLOW, "R-a", 30)
    b = dataclasses.replace(b, hazard=dataclasses.replace(
        b.hazard, observed_at=T0 + timedelta(minutes=1)))
    state = LiveState()
    state.apply(js(a))
    state.apply(js(b))
    assert [r["hazard_id"] for r in state.top()] == ["water_level:R-z", "water_level:R-a"]
    # Redis now holds a later transition of R-z, observed after R-a: a rebuild would swap them
    a2 = dataclasses.replace(a, seq=2, alert_id="water_level:R-z#2", transition="updated",
                             hazard=dataclasses.replace(a.hazard,
                                                        observed_at=T0 + timedelta(minutes=9)))
    changes = state.replace([js(a2), js(b)], [], [], [], None)
    assert changes == {}  # same markers
    assert [r["hazard_id"] for r in state.top()] == ["water_level:R-z", "water_level:R-a"]
    # and a hazard gone from Redis is gone from the ranking
    state.replace([js(b)], [], [], [], None)
    assert [r["hazard_id"] for r in state.top()] == ["water_level:R-a"]
    assert len(state.rankings["actual"]) == 1


def test_drills_are_ranked_apart_and_colour_nothing() -> None:
    (t, v), = towns_with_villages(1)
    real = make(v[0], W.YELLOW, "REAL", 30)
    drill = make(v[1], W.RED, "DRILL", 99, exercise=True)
    state = LiveState()
    state.apply(js(real))
    state.apply(js(drill))
    assert [r["hazard_id"] for r in state.top()] == ["water_level:REAL"]
    assert [r["hazard_id"] for r in state.top("exercise")] == ["water_level:DRILL"]
    assert state.top("exercise")[0]["status"] == "exercise"
    assert state.area_levels()[t] == "yellow" and v[1] not in state.area_levels()
    s = state.summary(T0)
    assert s["open_total"] == 1 and s["drill_total"] == 1
    assert s["levels"] == {"blue": 0, "yellow": 1, "orange": 0, "red": 0}
    assert [r["hazard_id"] for r in s["drills"]] == ["water_level:DRILL"]
    assert state.area(t, "exercise")["level"] == "red"  # its own roll-up, apart


def test_resolved_alerts_leave_the_lists_counts_and_colours() -> None:
    (t, v), = towns_with_villages(1)
    a = make(v[0], W.RED, "GONE", 95)
    b = make(v[1], W.BLUE, "STAYS", 10)
    state = LiveState()
    state.apply(js(a))
    state.apply(js(b))
    assert state.area_levels()[t] == "red"
    assert state.apply(js(kit.resolve(a)))
    assert [r["hazard_id"] for r in state.top()] == ["water_level:STAYS"]
    assert state.top(area=v[0]) == [] and v[0] not in state.area_levels()
    assert state.area_levels()[t] == "blue"
    assert state.summary(T0)["levels"] == {"blue": 1, "yellow": 0, "orange": 0, "red": 0}
    assert "water_level:GONE" not in state.open["actual"]
    assert not state.apply(js(kit.resolve(a)))  # a repeat changes nothing


def test_area_colours_counts_and_risk_equal_the_rankings_and_the_roll_up() -> None:
    towns = towns_with_villages(4)
    levels = [W.BLUE, W.YELLOW, W.ORANGE, W.RED]
    alerts = [make(v, levels[(i + j) % 4], f"M{i}-{j}", 10.0 * (i + j + 1))
              for i, (_, vs) in enumerate(towns) for j, v in enumerate(vs[:3])]
    alerts.append(make(towns[0][1][0], W.RED, "DRILL", 99, exercise=True))
    risk = RiskWeights(blue=0.1, yellow=0.2, orange=0.4, red=0.7)
    state = LiveState(names={towns[0][0]: "某镇"}, risk=risk)
    for a in alerts:
        state.apply(js(a))
    oracle = Ranking("actual", risk, ranked=AREA_KINDS)
    for a in alerts:
        if not a.hazard.exercise:
            oracle.update(a.hazard, a.score, a.score_breakdown)
    actual = [a for a in alerts if not a.hazard.exercise]
    expected = {c: lv.label for c, lv in roll_up((a.hazard.place, a.level) for a in actual).items()}
    assert state.area_levels() == expected == {c: lv.label for c, lv in oracle.levels().items()}
    stats = state.area_stats()
    assert set(stats) == set(expected)
    for code in expected:
        o = oracle.area_state(code)
        assert stats[code] == [o["risk_index"], *o["counts"].values()]
        assert o["risk_index"] == risk_index({W.parse(k): n for k, n in o["counts"].items()}, risk)
    assert state.area(towns[0][0])["risk_index"] > 0
    summary = state.summary(T0)
    assert summary["areas"] == expected and summary["city"]["risk_index"] == \
        oracle.area_state(ALL)["risk_index"]


def test_the_district_table_has_every_district_then_city_wide_and_outside() -> None:
    (t, v), = towns_with_villages(1)
    district = t[:6]
    inside = make(v[0], W.ORANGE, "IN", 60)
    city_wide = dataclasses.replace(make(v[1], W.YELLOW, "CITY", 30))
    city_wide = dataclasses.replace(city_wide, hazard=dataclasses.replace(
        city_wide.hazard, place=dataclasses.replace(
            city_wide.hazard.place, district_code="", district_name="", town_code="",
            town_name="", village_code="", village_name="")))
    outside = make(v[2], W.BLUE, "OUT", 10)
    outside = dataclasses.replace(outside, hazard=dataclasses.replace(
        outside.hazard, place=dataclasses.replace(outside.hazard.place.__class__())))
    state = LiveState([(district, "某区"), ("449999", "空区")])
    for a in (inside, city_wide, outside):
        state.apply(js(a))
    rows = {r["name"]: r for r in state.summary(T0)["districts"]}
    assert list(rows) == ["某区", "空区", "全市范围", "辖区外"]
    assert rows["某区"]["counts"]["orange"] == 1 and rows["某区"]["level"] == "orange"
    assert rows["某区"]["risk_index"] == 35.0
    assert rows["空区"]["live"] == 0 and rows["空区"]["risk_index"] == 0.0
    assert rows["全市范围"]["counts"] == {"blue": 0, "yellow": 1, "orange": 0, "red": 0}
    assert rows["辖区外"]["counts"] == {"blue": 1, "yellow": 0, "orange": 0, "red": 0}


def test_loops_ride_on_the_rows_with_times_from_the_first_issue() -> None:
    (_, v), = towns_with_villages(1)
    first = make(v[0], W.YELLOW, "L1", 30, at=T0)
    state = LiveState()
    state.apply(js(first))
    up = dataclasses.replace(make(v[0], W.RED, "L1", 90, seq=2, transition="escalated",
                                  at=T0 + timedelta(minutes=10)))
    state.apply(js(up))
    loop = Loop((Step("acknowledged", "张三", "api", T0 + timedelta(minutes=12), seq=2),))
    assert state.set_loop("water_level:L1", loop)
    assert not state.set_loop("water_level:NOT-OPEN", loop)
    row = state.top()[0]
    assert row["loop"]["current"] == "acknowledged" and row["loop"]["label"] == "已确认"
    assert row["loop"]["times"] == {"acknowledged": 720.0}  # from the first issue, not seq 2
    assert row["first_issued_at"] == T0.isoformat() and row["seq"] == 2
    state.apply(js(kit.resolve(up)))
    assert "water_level:L1" not in state.loops


def test_silences_in_force_or_to_come_are_listed_with_area_names() -> None:
    state = LiveState(names={"440402": "香洲区"})
    by = {"created_by": "张三", "comment": "检修"}
    state.silences = [
        Silence("old", Matchers(feed="water"), T0 - timedelta(hours=3), T0 - timedelta(hours=1),
                **by),
        Silence("now", Matchers(area_code="440402"), T0 - timedelta(hours=1),
                T0 + timedelta(hours=2), **by),
        Silence("soon", Matchers(source_id="S9"), T0 + timedelta(hours=1),
                T0 + timedelta(hours=1, minutes=30), **by),
    ]
    listed = state.summary(T0)["silences"]
    assert [(s["id"], s["state"]) for s in listed] == [("soon", "pending"), ("now", "active")]
    assert listed[1]["area_name"] == "香洲区" and listed[1]["matchers"] == {"area_code": "440402"}


def test_the_hub_pushes_loops_and_rereads_silences_when_told() -> None:
    (_, v), = towns_with_villages(1)
    a = make(v[0], W.ORANGE, "HUB", 60)

    async def run() -> tuple[list[bytes | None], bool, bool]:
        hub = Hub(cast(Any, None), LiveState())
        queue = hub.subscribe()
        hub.on_message(a.to_json())
        hub.flush()
        loop = Loop((Step("acknowledged", "李四", "sms", T0 + timedelta(minutes=3), seq=1),))
        hub.on_message(orjson.dumps({"hazard_id": a.hazard_id, "loop": loop.to_dict()}),
                       RESPONSE_CHANNEL)
        hub.on_message(b"{broken", RESPONSE_CHANNEL)
        hub.on_message(orjson.dumps({"hazard_id": "unknown", "loop": loop.to_dict()}),
                       RESPONSE_CHANNEL)
        pending_after_loop = hub._pending
        hub.flush()
        hub.on_message(b"some-id", SILENCES_CHANNEL)
        return [queue.get_nowait() for _ in range(queue.qsize())], pending_after_loop, \
            hub._silences_due

    events, pending, silences_due = asyncio.run(run())
    assert pending and silences_due
    second = orjson.loads(cast(bytes, events[1]).split(b"data: ", 1)[1])
    assert list(second["loops"]) == [a.hazard_id]
    assert second["loops"][a.hazard_id]["current"] == "acknowledged"
    assert second["loops"][a.hazard_id]["times"] == {"acknowledged": 180.0}
    assert second["summary"]["top"][0]["loop"]["steps"][0]["actor"] == "李四"
