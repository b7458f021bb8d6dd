"""The typhoon scenario through the SMS sink with storm protection, on a real Redis with an
injected clock (each alert at its event time, the flush ticked every minute): the limits
hold for every recipient, every red goes out at once, and every held message is accounted
for in exactly one delivered summary. The per-recipient counts are in docs/sms.md
(``python -m benchmarks.bench_sms`` prints them)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import pytest

from benchmarks.bench_sms import TyphoonRun, run_typhoon, typhoon_alerts
from onemap.registries import default_registries_dir
from onemap.sinks.sms.roster import load_roster
from onemap.sinks.sms.storm import load_limits
from onemap.sinks.sms.templates import segments

pytestmark = pytest.mark.integration
LIMITS = load_limits()
ROSTER = load_roster(default_registries_dir() / "duty_roster.yaml")
CITY = "ZH-DUTY-440400-01"


@pytest.fixture(scope="module")
def typhoon(redis_url: str) -> TyphoonRun:
    return asyncio.run(run_typhoon(redis_url, typhoon_alerts(), LIMITS, ROSTER))


def test_nothing_is_left_held_and_nothing_went_twice(typhoon: TyphoonRun) -> None:
    assert typhoon.left_held == 0 and typhoon.left_due == 0
    keys = [d.key for d in typhoon.deliveries]
    assert len(keys) == len(set(keys)), "no message and no summary was delivered twice"
    assert sum(len(m) for m in typhoon.before.values()) > 1500, "the storm is a storm"


def test_every_red_goes_out_immediately(typhoon: TyphoonRun) -> None:
    delivered = {d.key: d for d in typhoon.deliveries}
    alerts = {a.alert_id: a for a in typhoon.alerts}
    reds = [m for msgs in typhoon.before.values() for m in msgs
            if LIMITS.class_of(alerts[m.alert_id].level, alerts[m.alert_id].transition) == "red"]
    assert len(reds) > 100
    for m in reds:
        d = delivered.get(m.key)
        assert d is not None and d.kind == "immediate", m.key
        assert d.at == typhoon.decided_at[m.key], f"{m.key} waited"


def test_every_held_message_is_in_exactly_one_delivered_summary(typhoon: TyphoonRun) -> None:
    delivered = {d.key for d in typhoon.deliveries}
    flushes = {d.key: d for d in typhoon.deliveries if d.kind in ("digest", "single")}
    folded: Counter[str] = Counter()
    for msgs in typhoon.before.values():
        for m in msgs:
            claim = typhoon.claims[m.key]
            if claim == "delivered":
                assert m.key in delivered, m.key
                continue
            outcome, _, flush = claim.partition(" in ")
            assert outcome == "delivered" and flush in flushes, (m.key, claim)
            assert flushes[flush].recipient_id == m.recipient_id
            folded[flush] += 1
    assert set(folded) == set(flushes), "every flush carried held messages"
    for key, d in flushes.items():
        if d.kind == "single":
            assert folded[key] == 1
        else:
            total = int(d.text.split("另有", 1)[1].split("条", 1)[0])
            assert total == folded[key], (d.text, folded[key])
            assert len(segments(d.text)) <= LIMITS.digest.max_parts, d.text


def test_no_recipient_gets_more_than_the_limits_allow(typhoon: TyphoonRun) -> None:
    alerts = {a.alert_id: a for a in typhoon.alerts}
    for rid, got in typhoon.by_recipient().items():
        by_class: dict[str, list[datetime]] = defaultdict(list)
        flush_times = []
        for d in got:
            if d.kind == "individual":
                a = alerts[d.key.split("/", 1)[0]]
                by_class[LIMITS.class_of(a.level, a.transition)].append(d.at)
            elif d.kind in ("digest", "single"):
                flush_times.append(d.at)
        for cls, times in by_class.items():
            limit = LIMITS.limit_of(cls)
            assert limit is not None
            window = timedelta(minutes=limit.per_minutes)
            for t in times:
                in_window = sum(1 for u in times if t - window < u <= t)
                assert in_window <= limit.max, f"{rid}: {cls} {in_window} in {window} at {t}"
        interval = timedelta(minutes=LIMITS.digest.interval_minutes)
        assert all(b - a >= interval for a, b in itertools.pairwise(flush_times)), rid


def test_the_city_duty_officer_is_spared_the_flood(typhoon: TyphoonRun) -> None:
    got = typhoon.by_recipient()[CITY]
    before = len(typhoon.before[CITY])
    not_red = [d for d in got if d.kind != "immediate"]
    not_red_before = before - sum(1 for d in got if d.kind == "immediate")
    assert not_red_before > 300
    assert len(not_red) < not_red_before / 5, (len(not_red), not_red_before)
    # the bound the limits file states: 12 an hour without red, over eight hours and the tail
    assert len(not_red) <= 12 * 10
