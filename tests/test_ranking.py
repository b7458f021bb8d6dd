"""The live ranking: order and ties, removal, roll-up, risk index, drills apart, and top K
equal to a brute-force sort of the live set after any sequence of updates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.bench_ranking import MapSpec, core
from benchmarks.bench_ranking import main as bench_main
from onemap.levels import COLOURS, WarningLevel
from onemap.records import Place
from onemap.rules.ranking import (
    ALL,
    AREA_KINDS,
    DEFAULT_RISK,
    Key,
    Ranking,
    Rankings,
    risk_index,
    sort_key,
)
from onemap.rules.urgency import UrgencyModel, example_hazard
from onemap.sinks.dashboard.areas import roll_up

T0 = datetime(2026, 8, 23, 8, 0, tzinfo=UTC)


def village(city: int, district: int, town: int, v: int) -> Place:
    c = f"44{city:02d}00"
    d = f"44{city:02d}{district:02d}"
    t = f"{d}{town:03d}"
    return Place(c, f"市{city}", d, f"区{district}", t, f"镇{town}", f"{t}{v:03d}", f"村{v}")


def town_only(p: Place) -> Place:
    return Place(p.city_code, p.city_name, p.district_code, p.district_name, p.town_code,
                 p.town_name)


def district_only(p: Place) -> Place:
    return Place(p.city_code, p.city_name, p.district_code, p.district_name)


def hz(hid: str, level: WarningLevel, place: Place, minute: int = 0, *,
       exercise: bool = False) -> Any:
    return example_hazard(hazard_id=hid, source_id=hid, level=level, place=place,
                          observed_at=T0 + timedelta(minutes=minute), exercise=exercise)


V1, V2, V3 = village(1, 1, 1, 1), village(1, 1, 1, 2), village(1, 1, 2, 1)
V4 = village(1, 2, 1, 1)
R, ORG, Y, B, N = (WarningLevel.RED, WarningLevel.ORANGE, WarningLevel.YELLOW,
                 WarningLevel.BLUE, WarningLevel.NONE)


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["hazard_id"] for r in rows]


# -- order and ties ----------------------------------------------------------------------


def test_order_is_score_then_level_then_first_seen_then_id() -> None:
    r = Ranking()
    r.update(hz("e", ORG, V1, minute=5), 50.0)
    r.update(hz("d", ORG, V1, minute=5), 50.0)   # same everything but id: d before e
    r.update(hz("c", ORG, V1, minute=1), 50.0)   # seen earlier: before d and e
    r.update(hz("b", R, V1, minute=9), 50.0)   # higher level wins the score tie
    r.update(hz("a", B, V1, minute=9), 80.0)   # highest score first, whatever its level
    assert ids(r.top(ALL)) == ["a", "b", "c", "d", "e"]
    assert [row["rank"] for row in r.top(ALL)] == [1, 2, 3, 4, 5]
    assert ids(r.top(ALL, 2)) == ["a", "b"]


def test_ties_do_not_depend_on_arrival_order() -> None:
    hazards = [hz(h, ORG, V1, minute=3) for h in "qwerty"]
    one, two = Ranking(), Ranking()
    for h in hazards:
        one.update(h, 40.0)
    for h in reversed(hazards):
        two.update(h, 40.0)
    assert ids(one.top(ALL)) == ids(two.top(ALL)) == sorted("qwerty")


def test_first_seen_is_kept_across_updates_and_reset_after_resolve() -> None:
    r = Ranking()
    r.update(hz("old", ORG, V1, minute=0), 50.0)
    r.update(hz("new", ORG, V1, minute=10), 50.0)
    r.update(hz("old", ORG, V1, minute=20), 50.0)   # a newer reading: still first seen at 0
    assert ids(r.top(ALL)) == ["old", "new"]
    assert r.top(ALL)[0]["first_seen"] == T0.isoformat()
    r.update(hz("old", N, V1, minute=21), 0.0)
    r.update(hz("old", ORG, V1, minute=30), 50.0)   # a new situation
    assert ids(r.top(ALL)) == ["new", "old"]


def test_update_results() -> None:
    r = Ranking()
    assert r.update(hz("a", ORG, V1), 50.0) == "added"
    assert r.update(hz("a", ORG, V1, minute=1), 50.0, {"level": 50.0}) == "updated"
    assert r.top(ALL)[0]["breakdown"] == {"level": 50.0}
    assert r.update(hz("a", ORG, V1, minute=2), 55.0) == "moved"
    assert r.update(hz("a", ORG, V2, minute=3), 55.0) == "moved"
    assert r.update(hz("a", N, V2, minute=4), 0.0) == "removed"
    assert r.update(hz("a", N, V2, minute=5), 0.0) == "ignored"


# -- removal and moves -------------------------------------------------------------------


def test_resolve_removes_from_every_list_and_count() -> None:
    r = Ranking()
    r.update(hz("a", R, V1), 90.0)
    r.update(hz("b", Y, V3), 30.0)
    r.update(hz("a", N, V1), 0.0)
    assert ids(r.top(ALL)) == ["b"]
    assert r.top(V1.town_code) == [] and r.top(V1.city_code)[0]["hazard_id"] == "b"
    assert r.area_state(V1.town_code)["level"] == "none"
    assert V1.town_code not in r.areas() and V1.village_code not in r.areas()
    assert r.area_state(V1.district_code)["counts"] == {"blue": 0, "yellow": 1, "orange": 0,
                                                        "red": 0}
    assert "a" not in r and len(r) == 1
    assert r.remove("b") and not r.remove("b")
    assert len(r) == 0 and set(r.areas()) == {ALL} and r.area_state(ALL)["live"] == 0


def test_a_hazard_that_moves_leaves_its_old_areas() -> None:
    r = Ranking()
    r.update(hz("cap", ORG, town_only(V1)), 60.0)
    r.update(hz("cap", ORG, district_only(V4)), 60.0)
    assert r.top(V1.town_code) == [] and ids(r.top(V4.district_code)) == ["cap"]
    assert r.area_state(V1.district_code)["live"] == 0
    assert r.area_state(V4.district_code)["level"] == "orange"


# -- roll-up and risk index --------------------------------------------------------------


def test_roll_up_village_town_district_city() -> None:
    r = Ranking()
    r.update(hz("v1", ORG, V1), 60.0)
    r.update(hz("v2", B, V2), 10.0)
    r.update(hz("t2", R, town_only(V3)), 100.0)       # an area hazard over a whole town
    r.update(hz("d2", Y, district_only(V4)), 30.0)
    levels = {c: lv.label for c, lv in r.levels().items()}
    assert levels == {
        V1.city_code: "red", V1.district_code: "red", V4.district_code: "yellow",
        V1.town_code: "orange", V3.town_code: "red",
        V1.village_code: "orange", V2.village_code: "blue"}   # nothing is pushed down
    assert r.area_state(V1.town_code)["counts"] == {"blue": 1, "yellow": 0, "orange": 1,
                                                    "red": 0}
    city = r.area_state(V1.city_code)
    assert city["live"] == 4 and city["kind"] == "city" and city["name"] == "市1"
    assert city["top_hazard"] == "t2"
    assert r.area_state(V2.village_code)["top_hazard"] is None   # villages keep no list
    # the same roll-up as the dashboard's rule
    assert r.levels() == roll_up((h.place, h.level) for h, _, _ in r.live())


def test_risk_index_formula() -> None:
    r = Ranking(risk=DEFAULT_RISK)
    r.update(hz("a", R, V1), 100.0)
    assert r.area_state(V1.town_code)["risk_index"] == 60.0
    r.update(hz("b", R, V2), 100.0)
    r.update(hz("c", B, V2), 10.0)
    # 100 × (1 - 0.4 × 0.4 × 0.95) = 84.8
    assert r.area_state(V1.town_code)["risk_index"] == 84.8
    assert r.area_state(V2.village_code)["risk_index"] == 100 * (1 - 0.4 * 0.95)
    assert r.area_state("nowhere")["risk_index"] == 0.0
    assert risk_index({WarningLevel.BLUE: 10}, DEFAULT_RISK) == round(100 * (1 - 0.95**10), 2)


def test_risk_weights_come_from_the_urgency_model() -> None:
    model = UrgencyModel.load_default()
    assert model.risk_index == DEFAULT_RISK


# -- drills ------------------------------------------------------------------------------


def test_drills_are_ranked_apart_and_never_mixed() -> None:
    rs = Rankings()
    rs.update(hz("real", ORG, V1), 60.0)
    rs.update(hz("drill", R, V1, exercise=True), 100.0)
    assert ids(rs["actual"].top(ALL)) == ["real"]
    assert ids(rs["exercise"].top(ALL)) == ["drill"]
    assert rs["actual"].area_state(V1.town_code)["level"] == "orange"
    assert rs["exercise"].area_state(V1.town_code)["status"] == "exercise"
    with pytest.raises(ValueError, match="exercise"):
        rs["actual"].update(hz("drill2", R, V1, exercise=True), 100.0)
    with pytest.raises(ValueError, match="actual"):
        rs["exercise"].update(hz("real2", R, V1), 100.0)


def test_snapshot_is_json() -> None:
    rs = Rankings()
    rs.update(hz("a", ORG, V1), 60.0, {"level": 60.0})
    rs.update(hz("d", Y, V1, exercise=True), 30.0)
    snap = rs.snapshot(5)
    again = json.loads(json.dumps(snap, ensure_ascii=False))
    assert again["actual"]["top"][ALL][0]["hazard_id"] == "a"
    assert again["actual"]["top"][V1.town_code][0]["place"]["village_name"] == "村1"
    assert again["exercise"]["areas"][V1.city_code]["level"] == "yellow"


def test_colocated_lists_the_district_neighbours() -> None:
    r = Ranking()
    a, b, c = hz("a", ORG, V1), hz("b", R, town_only(V3)), hz("c", Y, V4)
    for h, s in ((a, 60.0), (b, 100.0), (c, 30.0)):
        r.update(h, s)
    assert [h.hazard_id for h in r.colocated(a)] == ["b"]


def test_unknown_area_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown area kind"):
        Ranking(ranked=("province",))


# -- property: equal to a brute-force sort of the live set -------------------------------

PLACES = [village(c, d, t, v) for c in (1, 2) for d in (1, 2) for t in (1, 2) for v in (1, 2)]
PLACES += [town_only(p) for p in PLACES[::2]] + [district_only(p) for p in PLACES[::4]]
PLACES += [Place()]  # out of the map: only in ALL

update = st.tuples(
    st.integers(0, 11),                            # hazard id
    st.sampled_from([N, B, Y, ORG, R]),
    st.sampled_from([10.0, 20.0, 30.0, 30.5]),     # few scores: many ties
    st.integers(0, len(PLACES) - 1),
    st.integers(0, 3),                             # reading time: ties in first_seen too
)


def brute_force(live: dict[str, tuple[Any, float, datetime]], code: str, k: int) -> list[Key]:
    keys = sorted(
        sort_key(s, h.level, first, h.hazard_id) for h, s, first in live.values()
        if code == ALL or code in (h.place.city_code, h.place.district_code,
                                   h.place.town_code, h.place.village_code))
    return keys[:k]


@settings(max_examples=300, deadline=None)
@given(st.lists(update, max_size=60), st.integers(1, 6))
def test_top_k_equals_brute_force(ops: list[tuple[int, WarningLevel, float, int, int]],
                                  k: int) -> None:
    r = Ranking(ranked=AREA_KINDS)
    live: dict[str, tuple[Any, float, datetime]] = {}
    for step, (i, level, score, p, minute) in enumerate(ops):
        h = hz(f"h{i:02d}", level, PLACES[p], minute=minute + step)
        r.update(h, score)
        if level == N:
            live.pop(h.hazard_id, None)
        else:
            first = live[h.hazard_id][2] if h.hazard_id in live else h.observed_at
            live[h.hazard_id] = (h, score, first)
        codes = {ALL} | {c for q in PLACES for c in (q.city_code, q.district_code, q.town_code,
                                                     q.village_code) if c}
        for code in codes:
            assert r.keys(code, k) == brute_force(live, code, k), code
    assert len(r) == len(live)
    placed = [(h.place, h.level) for h, _, _ in live.values()]
    assert r.levels() == roll_up(placed)
    for code, state in r.areas().items():
        inside = [h for h, _, _ in live.values() if code == ALL or code in (
            h.place.city_code, h.place.district_code, h.place.town_code, h.place.village_code)]
        assert state["counts"] == {c.label: sum(h.level == c for h in inside) for c in COLOURS}
        quiet = 1.0
        for h in inside:
            quiet *= 1 - DEFAULT_RISK.of(h.level)
        assert state["risk_index"] == pytest.approx(100 * (1 - quiet), abs=0.006)


# -- the benchmark's core, tiny ----------------------------------------------------------


def test_benchmark_core_agrees_with_the_naive_baseline() -> None:
    out = core(MapSpec(cities=2, districts=4, towns=12, villages=60), live=80, updates=400,
               seed=3, k=5)
    assert out["equal"] and out["checks"] > 400 and out["mismatches"] == 0


def test_benchmark_quick_run_writes_its_results(tmp_path: Path) -> None:
    assert bench_main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "ranking.json").read_text(encoding="utf-8"))
    assert {"ranking", "naive", "speedup_vs_naive", "agreement", "targets",
            "targets_met"} <= set(result)
    assert result["agreement"]["mismatches"] == 0
    assert (tmp_path / "ranking.md").read_text(encoding="utf-8").startswith(
        "Ranking benchmark")
