"""Storm protection, the pure part: each decision and its reason, summaries and the limits
file (no Redis here; tests/sms/test_sms_storm_redis.py runs the sink on a real Redis)."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta
from pathlib import Path

import pytest

from onemap.errors import ConfigError
from onemap.levels import WarningLevel
from onemap.records import Alert
from onemap.sinks.sms.sink import messages_for
from onemap.sinks.sms.storm import (
    Action,
    RecipientState,
    StormItem,
    StormLimits,
    Why,
    apply,
    complete_flush,
    decide,
    load_limits,
    next_due,
    plan_flush,
    summarise,
)
from onemap.sinks.sms.templates import DigestSummary, render_digest, segments
from tests.sms.storm_kit import HONGQI, QIANSHAN, ROSTER, T0, alert

R, OR, Y, B, N = (WarningLevel.RED, WarningLevel.ORANGE, WarningLevel.YELLOW,
                  WarningLevel.BLUE, WarningLevel.NONE)
LIMITS = load_limits()


def item(a: Alert, minutes: float = 0, limits: StormLimits = LIMITS) -> StormItem:
    message = messages_for(a, ROSTER)[0]
    return StormItem.of(message, a, limits, T0 + timedelta(minutes=minutes))


def run(state: RecipientState, *alerts_at: tuple[Alert, float],
        limits: StormLimits = LIMITS) -> tuple[RecipientState, list[tuple[Action, Why]]]:
    """Decide and apply each (alert, minute) in order, as the sink does."""
    out = []
    for a, minute in alerts_at:
        it = item(a, minute, limits)
        d = decide(state, it, it.at, limits)
        state = apply(state, it, d, it.at, limits, phone="13800000001")
        out.append((d.action, d.why))
    return state, out


def test_shipped_limits_hold_red_never_and_name_every_colour() -> None:
    assert LIMITS.class_of(R, "new") == LIMITS.class_of(R, "escalated") == "red"
    assert LIMITS.limit_of("red") is None
    assert LIMITS.class_of(OR, "de-escalated") == LIMITS.class_of(N, "resolved") == "downgrades"
    assert {LIMITS.class_of(c, "new") for c in (B, Y)} == {"low"}


def test_within_the_budget_messages_go_out_then_they_are_held_then_folded() -> None:
    # three orange wind alerts in three different towns: the orange budget is 3 per 30 min
    places = [dataclasses.replace(HONGQI, town_code=f"44040410{i}", town_name=f"镇{i}")
              for i in range(5)]
    state, got = run(RecipientState(), *[
        (alert(f"S{i}", OR, place=places[i]), i) for i in range(5)])
    assert got == [(Action.SEND, Why.WITHIN_LIMIT)] * 3 + [
        (Action.HOLD, Why.OVER_LIMIT), (Action.FOLD, Why.OVER_LIMIT)]
    assert [h.alert_id for h in state.held] == ["wind:S3#1", "wind:S4#1"]
    # 30 minutes after the first one, a slot is free again
    it = item(alert("S9", OR, place=places[0]), 30.5)
    d = decide(state, it, it.at, LIMITS)
    assert (d.action, d.detail) == (Action.SEND, "orange: 3 of 3 per 30 min")


def test_red_is_never_held_and_uses_no_budget() -> None:
    towns = [dataclasses.replace(HONGQI, town_code=f"44040410{i}") for i in range(6)]
    state, got = run(RecipientState(), *[(alert(f"S{i}", OR, place=towns[i]), 0)
                                         for i in range(4)])
    assert got[-1][0] == Action.HOLD
    state, got = run(state, *[(alert(f"R{i}", R, place=towns[0]), 1) for i in range(5)])
    assert got == [(Action.SEND, Why.IMMEDIATE)] * 5, "over the orange limit, grouped, held"
    assert all(s.cls != "red" for s in state.sent), "red does not consume a budget"
    _, got = run(state, (alert("S5", OR, place=towns[5]), 31))
    assert got == [(Action.SEND, Why.WITHIN_LIMIT)], "reds did not eat the orange budget"


def test_same_type_class_and_town_within_the_window_is_one_situation() -> None:
    state, got = run(RecipientState(), (alert("A", Y), 0), (alert("B", Y), 3),
                     (alert("C", Y, hazard_type="rainstorm"), 4), (alert("D", OR), 5),
                     (alert("E", Y, place=QIANSHAN), 6))
    assert got == [(Action.SEND, Why.WITHIN_LIMIT),
                   (Action.HOLD, Why.GROUPED),  # same: wind, yellow, 平沙镇
                   (Action.SEND, Why.WITHIN_LIMIT),  # another type
                   (Action.SEND, Why.WITHIN_LIMIT),  # orange: a worse situation, told at once
                   (Action.FOLD, Why.OVER_LIMIT)]  # blue/yellow: 2 per hour used
    # after the grouping window, the same group is a new situation (budget permitting)
    _, got = run(state, (alert("F", OR), 40))
    assert got == [(Action.SEND, Why.WITHIN_LIMIT)]


def test_a_downgrade_of_a_held_alert_follows_it_into_the_summary_and_makes_it_moot() -> None:
    state, got = run(RecipientState(), (alert("A", Y), 0), (alert("B", Y), 1),
                     (alert("B", N, Y, "resolved", seq=2), 2))
    assert got[1:] == [(Action.HOLD, Why.GROUPED), (Action.FOLD, Why.FOLLOWS_HELD)]
    assert [(h.alert_id, h.moot) for h in state.held] == [("wind:B#1", "resolved"),
                                                          ("wind:B#2", "")]


def test_an_escalation_to_red_goes_out_and_the_held_orange_becomes_moot() -> None:
    towns = [dataclasses.replace(HONGQI, town_code=f"44040410{i}") for i in range(4)]
    state, _ = run(RecipientState(), *[(alert(f"S{i}", OR, place=towns[i]), 0)
                                       for i in range(4)])
    state, got = run(state, (alert("S3", R, OR, "escalated", place=towns[3], seq=2), 2))
    assert got == [(Action.SEND, Why.IMMEDIATE)]
    assert [(h.alert_id, h.moot) for h in state.held] == [("wind:S3#1", "escalated")]
    plan = plan_flush(state, "city", "actual", T0 + timedelta(minutes=10), LIMITS)
    assert plan is not None and plan.kind == "digest", "a moot message is not sent as itself"
    assert plan.text == ("【珠海应急】近10分钟金湾区红旗镇另有1条台风大风预警："
                         "橙1（其中1条已升级），详见应急一张图")


def test_a_replayed_held_message_is_a_duplicate() -> None:
    state, _ = run(RecipientState(), (alert("A", Y), 0), (alert("B", Y), 1))
    it = item(alert("B", Y), 2)
    assert decide(state, it, it.at, LIMITS).action == Action.DUPLICATE


def test_a_flush_waits_then_sends_a_lone_message_as_itself_and_respects_the_interval() -> None:
    state, _ = run(RecipientState(), (alert("A", Y), 0), (alert("B", Y), 1))
    assert next_due(state, LIMITS) == T0 + timedelta(minutes=1 + LIMITS.digest.wait_minutes)
    assert plan_flush(state, "city", "actual", T0 + timedelta(minutes=5), LIMITS) is None
    at = T0 + timedelta(minutes=6)
    plan = plan_flush(state, "city", "actual", at, LIMITS)
    assert plan is not None and plan.kind == "single"
    assert plan.text == messages_for(alert("B", Y), ROSTER)[0].text
    assert plan.key == "digest/actual/city/1" and plan.keys == ("wind:B#1/city",)
    state = complete_flush(state, plan, at)
    assert state.held == () and state.seq == 1 and next_due(state, LIMITS) is None
    # the next batch may only go out one interval after this flush
    state, _ = run(state, (alert("C", Y), 7), (alert("D", Y, place=QIANSHAN), 8))
    assert next_due(state, LIMITS) == at + timedelta(minutes=LIMITS.digest.interval_minutes)


def test_messages_arriving_during_a_flush_stay_for_the_next_one() -> None:
    state, _ = run(RecipientState(), (alert("A", Y), 0), (alert("B", Y), 1),
                   (alert("C", Y), 2))
    at = T0 + timedelta(minutes=7)
    plan = plan_flush(state, "city", "actual", at, LIMITS)
    assert plan is not None and len(plan.keys) == 2
    state = dataclasses.replace(state, outgoing=plan)
    state, got = run(state, (alert("D", Y), 7.5))
    assert got == [(Action.HOLD, Why.GROUPED)], "the batch being sent is closed: a new one"
    state = complete_flush(state, plan, at)
    assert [h.alert_id for h in state.held] == ["wind:D#1"]


def test_summary_counts_levels_and_downgrades_and_names_the_top_places() -> None:
    towns = [dataclasses.replace(HONGQI, town_code=f"44040410{i}", town_name=f"镇{i}")
             for i in range(3)]
    state, _ = run(RecipientState(), *[(alert(f"S{i}", OR, place=towns[0]), 0)
                                       for i in range(6)])
    state, _ = run(state, (alert("Q1", Y, place=QIANSHAN, hazard_type="rainstorm"), 1),
                   (alert("Q2", Y, place=QIANSHAN, hazard_type="rainstorm"), 1),
                   (alert("Q3", Y, place=QIANSHAN, hazard_type="rainstorm"), 2),
                   (alert("Q3", N, Y, "resolved", place=QIANSHAN, hazard_type="rainstorm",
                          seq=2), 3))
    s = summarise(state.held, T0 + timedelta(minutes=12), LIMITS, exercise=False)
    assert s.minutes == 12 and s.kind == "" and s.where == ""
    assert sum(s.counts.values()) == s.total == len(state.held)
    assert s.places[0] == "金湾区" and set(s.places) == {"金湾区", "香洲区"}
    text = render_digest(s)
    assert text.startswith("【珠海应急】近12分钟另有") and "解除1" in text and len(text) <= 70


def test_a_drill_summary_is_marked_and_never_mixed() -> None:
    state, _ = run(RecipientState(), (alert("A", Y, exercise=True), 0),
                   (alert("B", Y, exercise=True), 1), (alert("C", Y, exercise=True), 2))
    plan = plan_flush(state, "city", "exercise", T0 + timedelta(minutes=7), LIMITS)
    assert plan is not None and plan.text.startswith("【演练】【珠海应急】")
    assert plan.key.startswith("digest/exercise/")


@pytest.mark.parametrize("seed", range(30))
def test_every_summary_fits_one_sms(seed: int) -> None:
    rng = random.Random(seed)
    names = ["香洲区", "金湾区", "斗门区", "横琴粤澳深度合作区", "高新技术产业开发区"]
    s = DigestSummary(
        minutes=rng.randint(1, 600), total=rng.randint(2, 9999),
        counts={k: rng.randint(1, 999) for k in ("orange", "yellow", "blue", "resolved")},
        moot={k: rng.randint(0, 99) for k in ("escalated", "resolved", "de-escalated")},
        places=tuple(rng.sample(names, 3)), more_places=True, kind=rng.choice(["", "暴雨"]),
        exercise=rng.random() < 0.5)
    text = render_digest(s)
    assert len(segments(text)) == 1, text
    assert text.startswith("【演练】【珠海应急】" if s.exercise else "【珠海应急】")


def test_inhibited_and_silenced_alerts_make_no_message() -> None:
    for notify in ("inhibited", "silenced"):
        assert messages_for(alert("A", R, notify=notify), ROSTER) == []
    assert len(messages_for(alert("A", R), ROSTER)) == 1


LIMITS_FILE = """\
version: 1
source: test
classes:
  red: {levels: [red], immediate: true}
  orange: {levels: [orange], max: 3, per_minutes: 30}
  low: {levels: [blue, yellow], max: 2, per_minutes: 60}
downgrades: {max: 2, per_minutes: 60}
grouping: {minutes: 30}
digest: {wait_minutes: 5, interval_minutes: 30, max_parts: 1, top_places: 3}
"""


@pytest.mark.parametrize(("old", "new", "message"), [
    ("red: {levels: [red], immediate: true}", "red: {levels: [red], max: 5, per_minutes: 10}",
     "limits.yaml:3: classes: Value error, class 'red' holds red and must be immediate: red "
     "alerts are never held back"),
    ("levels: [blue, yellow]", "levels: [yellow]",
     "limits.yaml:3: classes: Value error, colours in no class: blue"),
    ("levels: [orange]", "levels: [orange, yellow]",
     "limits.yaml:3: classes: Value error, colour 'yellow' is in both 'orange' and 'low'"),
    ("immediate: true}", "immediate: true, max: 1}",
     "limits.yaml:4: classes.red: Value error, an immediate class has no max/per_minutes"),
    ("max: 3, per_minutes: 30", "max: 3",
     "limits.yaml:5: classes.orange: Value error, a class that is not immediate needs both"),
    ("per_minutes: 30}", "per_minutes: 0}",
     "limits.yaml:5: classes.orange.per_minutes: Input should be greater than or equal to 1"),
    ("grouping: {minutes: 30}", "grouping: {minutes: 30, wait: 1}",
     "limits.yaml:8: grouping.wait: Extra inputs are not permitted"),
    ("levels: [orange]", "levels: [amber]",
     "limits.yaml:5: classes.orange.levels[0]: Input should be 'blue', 'yellow', 'orange' or"),
])
def test_bad_limits_files_are_rejected_with_file_line_and_field(
        tmp_path: Path, old: str, new: str, message: str) -> None:
    path = tmp_path / "limits.yaml"
    assert old in LIMITS_FILE
    path.write_text(LIMITS_FILE.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_limits(path)
    assert str(err.value).removeprefix(str(tmp_path) + "/").startswith(message), str(err.value)


def test_the_test_limits_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS_FILE, encoding="utf-8")
    assert load_limits(path) == LIMITS.model_copy(update={"source": "test"})
