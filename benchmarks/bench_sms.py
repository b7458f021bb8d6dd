"""SMS benchmark: storm-protection decisions per second, and the typhoon before/after.

Why: issue 6 asks for "SMS decisions per second". A decision is what the sink does with one
message before any gateway is involved: route and render it, then decide send / hold / fold
against the recipient's state. Measured in the same process against baselines:

* ``render`` - only the template (the least any SMS path must do), the baseline of the ratios;
* ``messages_for`` - routing by roster plus rendering;
* ``decide + apply`` - the pure storm decision and the state it leaves (``storm.py``);
* ``decide + apply + JSON`` - the same with the state decoded and encoded each time, as the
  Redis transaction does (the CPU a worker spends per message);
* ``sink on Redis`` - ``SmsSink.send`` end to end on a real redis-server (claim + WATCH
  transaction + a provider that accepts at once): the rate one worker achieves.

The workload is seeded: one always-on officer hears of every alert in 30 towns and 4 hazard
types with typhoon-like colours (45 % orange, 25 % red, 20 % yellow, 10 % downgrades),
15 seconds of event time apart (240 an hour, more than the typhoon's busiest recipient gets),
with the periodic flush run every simulated minute so that the held set stays realistic.

``--typhoon`` (on by default in a full run) also replays the typhoon scenario through the
pure pipeline and the sink on Redis with an injected clock, and reports how many SMS each
recipient gets without and with storm protection (the table in docs/sms.md).

Usage::

    python -m benchmarks.bench_sms            # full run, writes benchmarks/results/sms.*
    python -m benchmarks.bench_sms --quick    # tiny, for the smoke test (no typhoon)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from benchmarks.report import write_results
from onemap.embedded import free_port, start_redis, stop
from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.registries import Registries, default_registries_dir
from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.roster import DutyRoster, load_roster
from onemap.sinks.sms.sink import SENT_KEY_PREFIX, SmsSink, messages_for
from onemap.sinks.sms.storm import (
    RecipientState,
    StormItem,
    StormLimits,
    apply,
    complete_flush,
    decide,
    load_limits,
    plan_flush,
)
from onemap.sinks.sms.storm_store import DUE_KEY
from onemap.sinks.sms.templates import render

RESULTS = Path(__file__).resolve().parent / "results"
T0 = datetime(2017, 8, 23, 8, 0, tzinfo=UTC)
ROSTER = DutyRoster.model_validate({"version": 1, "officers": [
    {"id": "city", "name": "市值班员", "area_code": "440400", "phone": "13800000001",
     "min_level": "blue"}]})
#: Event time between two alerts to the one officer: 240 an hour, above the typhoon's peak
#: for the city duty officer (its held set then stays near the typhoon's, ~100 messages).
SPACING_S = 15
_TYPES = ("wind", "rainstorm", "water_level", "geohazard")
_LEVELS = ((WarningLevel.ORANGE, 45), (WarningLevel.RED, 25), (WarningLevel.YELLOW, 20))


# --- the synthetic decision workload ------------------------------------------------------

def workload(n: int, seed: int) -> list[Alert]:
    """``n`` alert transitions for one officer, 2 s of event time apart (seeded)."""
    rng = random.Random(seed)
    towns = [Place("440400", "珠海市", f"44040{d}", f"区{d}", f"44040{d}{t:03d}", f"镇{t}",
                   f"44040{d}{t:03d}001", f"村{t}") for d in (2, 3, 4) for t in range(10)]
    levels, weights = zip(*_LEVELS, strict=True)
    out: list[Alert] = []
    for i in range(n):
        at = T0 + timedelta(seconds=SPACING_S * i)
        level = rng.choices(levels, weights)[0]
        transition = rng.choices(("new", "escalated", "de-escalated", "resolved"),
                                 (45, 45, 5, 5))[0]
        previous = WarningLevel.NONE if transition == "new" else WarningLevel.YELLOW
        if transition == "resolved":
            level, previous = WarningLevel.NONE, WarningLevel.ORANGE
        elif transition == "de-escalated":
            level, previous = WarningLevel.YELLOW, WarningLevel.ORANGE
        hazard_type = rng.choice(_TYPES)
        source = f"S{rng.randrange(400):03d}"
        h = Hazard(hazard_id=f"{hazard_type}:{source}", hazard_type=hazard_type, feed="weather",
                   source_id=source, source_name=f"{source}站", level=level,
                   previous_level=previous, place=rng.choice(towns), lon=113.3, lat=22.2,
                   observed_at=at, key_figure=KeyFigure("阵风", 33.5, "米/秒"), reason="",
                   rule_id=hazard_type, rule_version="v")
        out.append(Alert(alert_id=f"{h.hazard_id}#{i}", hazard_id=h.hazard_id, seq=i,
                         transition=transition, level=level, previous_level=previous,
                         hazard=h, score=1.0, score_breakdown={}, issued_at=at))
    return out


def _rate(fn: Callable[[], int], min_s: float) -> tuple[float, int]:
    """Items per second of ``fn`` (which returns how many items it did), repeated until at
    least ``min_s`` seconds passed; the best of the repetitions (least disturbed)."""
    best, total = 0.0, 0
    spent = 0.0
    while spent < min_s or total == 0:
        started = time.perf_counter()
        n = fn()
        elapsed = time.perf_counter() - started
        spent += elapsed
        total += n
        best = max(best, n / elapsed if elapsed > 0 else 0.0)
    return best, total


def pure_decisions(alerts: Sequence[Alert], limits: StormLimits, *,
                   json_state: bool) -> tuple[int, Counter[str]]:
    """Decide every message of ``alerts`` for one recipient, flushing each simulated minute."""
    state = RecipientState()
    actions: Counter[str] = Counter()
    raw = state.to_json()
    next_tick = T0
    for a in alerts:
        now = a.issued_at
        while next_tick <= now:
            plan = plan_flush(state, "city", "actual", next_tick, limits)
            if plan is not None:
                state = complete_flush(state, plan, next_tick)
                raw = state.to_json()
            next_tick += timedelta(minutes=1)
        for m in messages_for(a, ROSTER):
            if json_state:
                state = RecipientState.from_json(raw)
            item = StormItem.of(m, a, limits, now)
            d = decide(state, item, now, limits)
            state = apply(state, item, d, now, limits, phone=m.phone)
            actions[d.action.value] += 1
            if json_state:
                raw = state.to_json()
    return len(alerts), actions


class AcceptingProvider:
    """A provider that accepts at once and keeps what it was given (no gateway time)."""

    name = "accepting"

    def __init__(self) -> None:
        self.submitted: list[tuple[SmsMessage, datetime]] = []

    async def check(self) -> None:
        return None

    async def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]:
        self.submitted += [(m, now) for m in messages]
        return [Outcome.DELIVERED] * len(messages)

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _sink(client: aioredis.Redis, provider: AcceptingProvider, clock: Clock, *,
          roster: DutyRoster, limits: StormLimits,
          registries: Registries | None = None) -> SmsSink:
    return SmsSink(client, provider, roster=lambda: roster, now=clock, registries=registries,
                   limits=lambda: limits)


async def sink_decisions(redis_url: str, alerts: Sequence[Alert],
                         limits: StormLimits) -> float:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
        clock = Clock(T0)
        sink = _sink(client, AcceptingProvider(), clock, roster=ROSTER, limits=limits)
        next_tick = T0
        started = time.perf_counter()
        for a in alerts:
            clock.at = a.issued_at
            if next_tick <= clock.at:
                await sink.tick()
                next_tick = clock.at + timedelta(minutes=1)
            await sink.send([a])
        return len(alerts) / (time.perf_counter() - started)
    finally:
        await client.aclose()


# --- the typhoon scenario, before and after -----------------------------------------------

def typhoon_alerts() -> list[Alert]:
    """The typhoon scenario through the pure stages (ingest -> rules -> lifecycle), as
    tests/test_typhoon.py runs it (about 7 s). The in-process pipeline of the tests is
    reused, so that this stays in step with the stages' interfaces."""
    from onemap.streams import typhoon
    from tests.test_pipeline_inprocess import Pipeline

    p = Pipeline()
    alerts: list[Alert] = []
    for line in typhoon.generate():
        rec = line["record"]
        raw = rec.encode() if isinstance(rec, str) else json.dumps(rec).encode()
        # each alert is issued when its reading is seen (a live feed at 1x)
        alerts += [dataclasses.replace(a, issued_at=a.hazard.observed_at)
                   for a in p.push(line["feed"], raw)]
    return alerts


@dataclasses.dataclass
class Delivery:
    key: str
    recipient_id: str
    at: datetime
    text: str
    kind: str  # "immediate", "individual", "single" (a lone held message), "digest"


@dataclasses.dataclass
class TyphoonRun:
    """What the typhoon made without (``before``) and with storm protection."""

    alerts: list[Alert]
    before: dict[str, list[SmsMessage]]
    deliveries: list[Delivery]
    #: claim value of every message key at the end (delivered, "delivered in digest/...")
    claims: dict[str, str]
    decided_at: dict[str, datetime]
    left_held: int
    left_due: int
    counts: Counter[str]

    def by_recipient(self) -> dict[str, list[Delivery]]:
        out: dict[str, list[Delivery]] = defaultdict(list)
        for d in self.deliveries:
            out[d.recipient_id].append(d)
        return out


def _minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    t = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t <= end:
        yield t
        t += timedelta(minutes=1)


async def run_typhoon(redis_url: str, alerts: Sequence[Alert], limits: StormLimits,
                      roster: DutyRoster | None = None,
                      registries: Registries | None = None) -> TyphoonRun:
    """Every alert through the sink at its event time, ``tick`` every minute between them and
    for two hours after the last (so every held message is flushed)."""
    roster = roster or load_roster(default_registries_dir() / "duty_roster.yaml")
    registries = registries or Registries.load(default_registries_dir())
    before: dict[str, list[SmsMessage]] = defaultdict(list)
    for a in alerts:
        for m in messages_for(a, roster, registries):
            before[m.recipient_id].append(m)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
        provider = AcceptingProvider()
        clock = Clock(min(a.issued_at for a in alerts))
        sink = _sink(client, provider, clock, roster=roster, limits=limits,
                     registries=registries)
        decided_at: dict[str, datetime] = {}
        for a in sorted(alerts, key=lambda a: a.issued_at):  # stable: ledger order kept
            for t in _minutes(clock.at, a.issued_at):
                clock.at = t
                await sink.tick()
            clock.at = max(clock.at, a.issued_at)
            for m in messages_for(a, roster, registries):
                decided_at[m.key] = clock.at
            outcomes = await sink.send([a])
            assert outcomes[0] != Outcome.RETRY, a.alert_id
        for t in _minutes(clock.at, clock.at + timedelta(hours=2)):
            clock.at = t
            await sink.tick()
        claims, left_held, left_due = await _leftovers(client, before)
    finally:
        await client.aclose()
    by_id = {a.alert_id: a for a in alerts}
    deliveries = []
    for m, at in provider.submitted:
        if m.key.startswith("digest/"):
            kind = "single" if "另有" not in m.text else "digest"
        else:
            alert = by_id[m.alert_id]
            immediate = limits.limit_of(limits.class_of(alert.level, alert.transition)) is None
            kind = "immediate" if immediate else "individual"
        deliveries.append(Delivery(m.key, m.recipient_id, at, m.text, kind))
    return TyphoonRun(list(alerts), dict(before), deliveries, claims, decided_at, left_held,
                      left_due, sink.counts)


async def _leftovers(client: aioredis.Redis, before: dict[str, list[SmsMessage]],
                     ) -> tuple[dict[str, str], int, int]:
    """Every message's claim, the messages still held and the recipients still due."""
    claims = {}
    for msgs in before.values():
        keys = [m.key for m in msgs]
        values = await client.mget([SENT_KEY_PREFIX + k for k in keys])
        claims.update({k: (v or b"").decode() for k, v in zip(keys, values, strict=True)})
    left_held = 0
    async for key in client.scan_iter("onemap:sms:storm:*:*"):
        left_held += len(RecipientState.from_json(await client.get(key)).held)
    return claims, left_held, await client.zcard(DUE_KEY)


def typhoon_table(r: TyphoonRun, roster: DutyRoster,
                  limits: StormLimits) -> tuple[list[dict[str, Any]], str]:
    names = {o.id: f"{o.role or o.name}" for o in roster.officers}
    by_id = {a.alert_id: a for a in r.alerts}

    def immediate(a: Alert) -> bool:
        return limits.limit_of(limits.class_of(a.level, a.transition)) is None

    after = r.by_recipient()
    rows = []
    for rid, msgs in sorted(r.before.items(), key=lambda kv: -len(kv[1])):
        got = after.get(rid, [])
        kinds = Counter(d.kind for d in got)
        reds = sum(1 for m in msgs if immediate(by_id[m.alert_id]))
        rows.append({"recipient": rid, "role": names.get(rid, "隐患点责任人"),
                     "before": len(msgs), "before_red": reds, "after": len(got),
                     "after_red": kinds["immediate"], "after_individual": kinds["individual"],
                     "after_summaries": kinds["digest"] + kinds["single"]})
    lines = ["| recipient | role | before | of which red | after | red (at once) | "
             "other, one by one | summaries | reduction |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    responsible = [x for x in rows if x["recipient"].startswith("responsible:")]
    for x in rows:
        if x["recipient"].startswith("responsible:"):
            continue
        cut = 1 - x["after"] / x["before"] if x["before"] else 0.0
        lines.append(f"| {x['recipient']} | {x['role']} | {x['before']} | {x['before_red']} | "
                     f"{x['after']} | {x['after_red']} | {x['after_individual']} | "
                     f"{x['after_summaries']} | {cut:.0%} |")
    if responsible:
        b = sum(x["before"] for x in responsible)
        a = sum(x["after"] for x in responsible)
        lines.append(f"| {len(responsible)} hazard points | 隐患点责任人 (each) | "
                     f"{b // len(responsible)} | | {a // len(responsible)} | | | | "
                     f"{1 - a / b:.0%} |")
    total_b = sum(x["before"] for x in rows)
    total_a = sum(x["after"] for x in rows)
    lines.append(f"| **all** | | **{total_b}** | {sum(x['before_red'] for x in rows)} | "
                 f"**{total_a}** | {sum(x['after_red'] for x in rows)} | "
                 f"{sum(x['after_individual'] for x in rows)} | "
                 f"{sum(x['after_summaries'] for x in rows)} | {1 - total_a / total_b:.0%} |")
    return rows, "\n".join(lines)


# --- running it ---------------------------------------------------------------------------

def run(*, quick: bool, seed: int, redis_url: str | None, typhoon: bool) -> dict[str, Any]:
    limits = load_limits()
    n = 2_000 if quick else 50_000
    min_s = 0.2 if quick else 2.0
    alerts = workload(n, seed)
    methods: list[dict[str, Any]] = []

    def add(name: str, per_s: float) -> None:
        methods.append({"method": name, "decisions_per_s": round(per_s),
                        "us_per_decision": round(1e6 / per_s, 2) if per_s else None})

    per_s, _ = _rate(lambda: sum(1 for a in alerts if render(a)), min_s)
    add("render (baseline)", per_s)
    per_s, _ = _rate(lambda: sum(len(messages_for(a, ROSTER)) for a in alerts), min_s)
    add("messages_for (routing + render)", per_s)
    _, actions = pure_decisions(alerts, limits, json_state=False)
    per_s, _ = _rate(lambda: pure_decisions(alerts, limits, json_state=False)[0], min_s)
    add("decide + apply (pure, incl. messages_for)", per_s)
    per_s, _ = _rate(lambda: pure_decisions(alerts, limits, json_state=True)[0], min_s)
    add("decide + apply + JSON state (pure, incl. messages_for)", per_s)
    proc = None
    tmp_dir = tempfile.TemporaryDirectory(prefix="onemap-bench-sms-")
    tmp = Path(tmp_dir.name)
    if redis_url is None:
        port = free_port()
        proc = start_redis("127.0.0.1", port, tmp / "redis")
        redis_url = f"redis://127.0.0.1:{port}/0"
    typhoon_result: dict[str, Any] | None = None
    try:
        sink_n = alerts[: 500 if quick else 10_000]
        add("SmsSink.send on Redis (claim + WATCH transaction)",
            asyncio.run(sink_decisions(redis_url, sink_n, limits)))
        if typhoon:
            roster = load_roster(default_registries_dir() / "duty_roster.yaml")
            started = time.perf_counter()
            t_alerts = typhoon_alerts()
            tr = asyncio.run(run_typhoon(redis_url, t_alerts, limits, roster))
            rows, table = typhoon_table(tr, roster, limits)
            typhoon_result = {"alerts": len(t_alerts), "rows": rows, "table": table,
                              "seconds": round(time.perf_counter() - started, 1),
                              "counts": dict(tr.counts)}
    finally:
        if proc is not None:
            stop([proc])
        tmp_dir.cleanup()
    base = methods[0]["decisions_per_s"]
    for m in methods:
        m["ratio_vs_render"] = round(m["decisions_per_s"] / base, 3) if base else None
    return {
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "quick": quick,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": sys.platform},
        "workload": {"messages": n, "seed": seed, "actions": dict(actions),
                     "sink_messages": len(sink_n)},
        "limits": limits.model_dump(mode="json"),
        "methods": methods,
        "typhoon": typhoon_result,
    }


def markdown(r: dict[str, Any]) -> str:
    w = r["workload"]
    lines = [
        "SMS benchmark" + (" (quick)" if r["quick"] else ""),
        "",
        f"{r['date']}, {r['machine']['cpu_count']} CPUs, Python {r['machine']['python']}. "
        f"Workload: {w['messages']:,} alert transitions for one officer (seed {w['seed']}), "
        f"decided as {', '.join(f'{k} {v:,}' for k, v in sorted(w['actions'].items()))}; "
        f"the Redis row uses the first {w['sink_messages']:,}.",
        "",
        "| method | decisions/s | µs/decision | × render |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {m['method']} | {m['decisions_per_s']:,} | {m['us_per_decision']} | "
              f"{m['ratio_vs_render']} |" for m in r["methods"]]
    t = r["typhoon"]
    if t:
        lines += ["", f"Typhoon scenario ({t['alerts']:,} alert transitions, eight hours, "
                  f"shipped roster and limits; {t['seconds']} s to run): SMS per recipient "
                  "without (before) and with storm protection (after).", "", t["table"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, no typhoon (smoke test)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--redis", help="a Redis URL to use (flushed!) instead of starting one")
    ap.add_argument("--typhoon", action=argparse.BooleanOptionalAction, default=None,
                    help="replay the typhoon scenario (default: on unless --quick)")
    args = ap.parse_args(argv)
    typhoon = (not args.quick) if args.typhoon is None else args.typhoon
    r = run(quick=args.quick, seed=args.seed, redis_url=args.redis, typhoon=typhoon)
    text = markdown(r)
    print(text)
    write_results(args.out, "sms", r, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
