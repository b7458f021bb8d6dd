"""The pure stages in process: records/s of ingest and rules per record, against a baseline.

Why: issue 7 wants 20,000 records/s per worker, and the pipeline benchmark
(``bench_pipeline``) measures a worker end to end, where faust, the broker and the machine's
other load blur what one change to our own Python buys. This runs only the pure work of the
two hot stages, in one process, on the pipeline benchmark's workload, so that a change to
``IngestStage.process`` or ``RulesStage.process`` can be measured in seconds:

* **baseline**: ``json.loads`` of each raw record (the least any stage must do with it); every
  other row is reported as a ratio to it, measured in the same process (DESIGN.md);
* ``IngestStage.process``: raw bytes to located observations, in batches of up to
  ``--batch`` records of one feed (each feed has its own input topic);
* ``Observation.from_json``: the rules agent's decode of what ingest wrote;
* ``RulesStage.process``: observations (batches of ``--batch`` in arrival order, the feeds
  mixed as on ``onemap.observations``) against warm per-source state, 24 h of readings per
  source as in a worker that has run for a day;
* ``source_state.split``: the stored form of each source a batch touched (what the rules loop's
  ``LoopSourceState`` writes after the batch), against the heads stored before.

Workload: ``benchmarks.bench_pipeline.Workload`` (the fixture registries' 19 river, reservoir
and tide stations and 146 weather stations, every source reporting once per 5-minute round
of event time, a small seeded share crossing a threshold). A warm-up of ``--warm-rounds``
rounds through ingest and rules builds the state; the measured records are the rounds after
it. Each repetition of the rules row starts from a copy of that warm state (a JSON round
trip, as a worker recovering its table would hold it), so every repetition does the same
work; the hazards and decisions of each repetition are checked to be the same.

Rates are the best of ``--repeat`` passes (the least disturbed: the machine is shared) and
never asserted anywhere; /proc/loadavg is recorded.

Usage::

    python -m benchmarks.bench_stages            # full: warm 24 h, 20,000 records, best of 6
    python -m benchmarks.bench_stages --quick    # a few seconds (the smoke test)
    python -m benchmarks.bench_stages --out DIR  # write DIR/stages.json and .md instead
    python -m benchmarks.bench_stages --name stages-before   # stages-before.json and .md
    python -m benchmarks.bench_stages --profile rules        # cProfile of one rules pass
    python -m benchmarks.bench_stages --instructions --name stages-instructions
        # instructions per record under valgrind's callgrind instead of seconds: the same
        # count from run to run, for A/B of a change on this noisy machine
        # (benchmarks/callgrind.py; one pass per row, ~5 min in full)
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import json
import os
import platform
import pstats
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks import callgrind
from benchmarks.bench_pipeline import STEP_S, Record, Workload, cpu_model, loadavg, sources
from benchmarks.report import write_results
from onemap.geo.places import PlaceIndex
from onemap.records import Observation
from onemap.registries import Registries, default_registries_dir
from onemap.rules.evaluate import RulesStage, state_key
from onemap.rules.rulebook import RuleBook, default_rules_dir, load_rulebook
from onemap.streams.deadletter import RawRecord
from onemap.streams.handoff import LocalObservations
from onemap.streams.ingest import IngestStage
from onemap.streams.source_state import split

RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Plan:
    quick: bool
    warm_rounds: int  # rounds of every source before the measured records (24 h = 288)
    records: int  # measured records
    repeat: int  # passes per row; the best counts
    batch: int  # records per stage batch (the worker's ONEMAP_BATCH_SIZE default: 500)


def plan_for(quick: bool, repeat: int | None, batch: int) -> Plan:
    if quick:
        return Plan(quick=True, warm_rounds=24, records=2_000, repeat=repeat or 2, batch=batch)
    # 24 h of rounds plus the allowed lateness (rules history_s): the state's steady size
    return Plan(quick=False, warm_rounds=300, records=20_000, repeat=repeat or 6, batch=batch)


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def by_feed(records: Sequence[Record], size: int) -> list[tuple[str, list[RawRecord]]]:
    """Ingest batches: each feed's records in order, up to ``size`` a batch (one input topic
    per feed, so a batch never mixes feeds)."""
    per_feed: dict[str, list[RawRecord]] = {}
    for r in records:
        per_feed.setdefault(r.topic_feed, []).append(RawRecord(r.value, r.key))
    return [(feed, batch) for feed, raws in per_feed.items() for batch in chunks(raws, size)]


@dataclasses.dataclass
class Row:
    """One measured row: ``run`` returns how many items it did; ``setup`` runs before each
    pass, outside the timing."""

    stage: str
    what: str
    run: Callable[[], int]
    setup: Callable[[], None] | None = None
    unit: str = "records"
    #: items per measured record (the split runs per source written, not per record)
    per_record: float = 1.0
    rates: list[float] = dataclasses.field(default_factory=list)


def measure(rows: Sequence[Row], repeat: int) -> None:
    """``repeat`` rounds, each running every row once in turn, so that a quiet (or a busy)
    moment of the shared machine falls on all rows alike; each row's best pass counts.
    A full garbage collection before each pass (untimed) keeps one row's garbage from
    being collected in the next row's time."""
    for _ in range(repeat):
        for row in rows:
            if row.setup is not None:
                row.setup()
            gc.collect()
            started = time.perf_counter()
            n = row.run()
            elapsed = time.perf_counter() - started
            row.rates.append(n / elapsed if elapsed > 0 else 0.0)


class Bench:
    """The stages, the workload and the warm state, built once."""

    def __init__(self, plan: Plan, alert_fraction: float, seed: int) -> None:
        self.plan = plan
        places = PlaceIndex.load()
        registries = Registries.load(default_registries_dir())
        self.book: RuleBook = load_rulebook(default_rules_dir())
        self.ingest = IngestStage(places.find, registries, find_area=places.find_area,
                                  find_codes=places.find_codes)
        self.rules = RulesStage(registries)
        srcs = sources()
        self.sources = len(srcs)
        workload = Workload(srcs, alert_fraction, seed=seed)
        state: dict[str, Any] = {}
        self.warm_records = plan.warm_rounds * len(srcs)
        for batch in chunks(workload.take(self.warm_records), plan.batch):
            for feed, raws in by_feed(batch, plan.batch):
                observations = self.ingest.process(feed, raws).observations
                self.rules.process(observations, state, self.book)
        self.rules.silenced.clear()
        self.warm_json = orjson.dumps(state)
        self.records = workload.take(plan.records)
        self.feeds = Counter(r.topic_feed for r in self.records)
        self.ingest_batches = by_feed(self.records, plan.batch)
        # the observations in arrival order (ingest keeps each feed's order)
        per_feed: dict[str, list[Observation]] = {}
        for feed, raws in self.ingest_batches:
            result = self.ingest.process(feed, raws)
            assert not result.dead_letters, result.dead_letters[:3]
            per_feed.setdefault(feed, []).extend(result.observations)
        cursors = {feed: iter(obs) for feed, obs in per_feed.items()}
        # as the rules loop gets them: decoded from what ingest wrote
        observations = [Observation.from_json(next(cursors[r.topic_feed]).to_json())
                        for r in self.records]
        self.rules_batches = chunks(observations, plan.batch)
        self.observations = observations
        self.observation_json = [o.to_json() for o in observations]
        self.state: dict[str, Any] = {}

    def fresh_state(self) -> None:
        self.state = orjson.loads(self.warm_json)
        self.rules.silenced.clear()

    # -- the rows -------------------------------------------------------------------------

    def baseline(self) -> int:
        for r in self.records:
            json.loads(r.value)
        return len(self.records)

    def ingest_pass(self) -> int:
        n = 0
        for feed, raws in self.ingest_batches:
            n += len(self.ingest.process(feed, raws).observations)
        return n

    def decode_pass(self) -> int:
        for raw in self.observation_json:
            Observation.from_json(raw)
        return len(self.observation_json)

    def fresh_bytes(self) -> None:
        """New bytes objects of the observations (a bytes object keeps its hash once made,
        and records come off the wire new): one set as ingest made them, one as consumed."""
        self.handed = [(bytes(bytearray(raw)), o)
                       for raw, o in zip(self.observation_json, self.observations, strict=True)]
        self.consumed = [bytes(bytearray(raw)) for raw in self.observation_json]

    def handoff_pass(self) -> int:
        local = LocalObservations(capacity=len(self.handed))
        for raw, o in self.handed:
            local.put(raw, o)
        for raw in self.consumed:
            local.take(raw)
        assert local.taken == len(self.consumed), (local.taken, local.missed)
        return len(self.consumed)

    def rules_pass(self) -> int:
        n = 0
        for batch in self.rules_batches:
            self.rules.process(batch, self.state, self.book)
            n += len(batch)
        return n

    def outcome(self) -> tuple[dict[str, int], int, list[list[tuple[str, Any, float]]]]:
        """One rules pass from the warm state: its decisions, its hazards, and per batch the
        values it left for each source it touched (with the oldest reading's time), which
        the split row writes."""
        self.fresh_state()
        decisions: Counter[str] = Counter()
        hazards = 0
        writes: list[list[tuple[str, Any, float]]] = []
        for batch in self.rules_batches:
            result = self.rules.process(batch, self.state, self.book)
            hazards += len(result.hazards)
            decisions.update({d.value: n for d, n in result.decisions.items() if n})
            oldest: dict[str, float] = {}
            for o in batch:
                key, t = state_key(o), o.observed_at.timestamp()
                oldest[key] = min(oldest.get(key, t), t)
            writes.append([(key, self.state[key], t) for key, t in oldest.items()])
        return dict(decisions), hazards, writes

    def split_rows(self, writes: list[list[tuple[str, Any, float]]]) -> Callable[[], int]:
        """Each batch's writes, against the heads the warm state was stored as."""
        warm = orjson.loads(self.warm_json)
        heads0 = {key: split(value, {}, None).head for key, value in warm.items()}

        def run() -> int:
            heads = dict(heads0)
            n = 0
            for batch in writes:
                for key, value, changed_from in batch:
                    heads[key] = split(value, heads.get(key), changed_from).head
                    n += 1
            return n
        return run

    def live_cases(self) -> None:
        """Each warm source's value, the head it is stored as, and its newest reading."""
        warm = orjson.loads(self.warm_json)
        self.live = [(value, split(value, {}, None).head, value["newest"])
                     for value in warm.values()
                     if isinstance(value, dict) and value.get("series")]

    def live_split(self) -> int:
        """A source's head written after one reading, no hour sealed (a live source reporting
        every few minutes: one reading per commit), for as many sources as there are
        measured records (cycling through the warm state's), so that its count per record
        is its count per source written."""
        cases = self.live
        n = len(self.records)
        for i in range(n):
            value, head, newest = cases[i % len(cases)]
            split(value, head, newest)
        return n


def rows_of(bench: Bench, plan: Plan, writes: list[list[tuple[str, Any, float]]]
            ) -> list[Row]:
    writes_n = sum(len(b) for b in writes)
    hours = plan.warm_rounds * STEP_S / 3600
    return [
        Row("baseline", "json.loads of each raw record", bench.baseline),
        Row("ingest", f"IngestStage.process, batches of up to {plan.batch} of one feed",
            bench.ingest_pass),
        Row("decode", "Observation.from_json (the rules agent's decode)", bench.decode_pass),
        Row("handoff", "LocalObservations put + take: instead of decode, for what the "
            "worker's own ingest made", bench.handoff_pass, setup=bench.fresh_bytes),
        Row("rules", f"RulesStage.process, batches of {plan.batch}, warm {hours:g} h state",
            bench.rules_pass, setup=bench.fresh_state),
        Row("state split", "source_state.split of each source a batch touched",
            bench.split_rows(writes), unit="sources",
            per_record=writes_n / len(bench.records)),
        Row("live split", "source_state.split after one reading, no hour sealed: per source "
            "written (a live source: one reading per commit)", bench.live_split,
            setup=bench.live_cases, unit="sources"),
    ]


def count_instructions(rows: Sequence[Row]) -> dict[str, int]:
    """Each row once under callgrind (the counts do not vary: one pass is enough)."""
    meter = callgrind.Meter()
    for row in rows:
        if row.setup is not None:
            row.setup()
        gc.collect()
        meter.begin()
        row.run()
        meter.end(row.stage)
    return callgrind.read_counts(meter.dir)


def build(plan: Plan, alert_fraction: float, seed: int, say: Callable[[str], None]
          ) -> tuple[Bench, dict[str, int], int, list[list[tuple[str, Any, float]]]]:
    started = time.perf_counter()
    bench = Bench(plan, alert_fraction, seed)
    say(f"built: {bench.sources} sources, {bench.warm_records:,} warm-up records, "
        f"{len(bench.records):,} measured, {time.perf_counter() - started:.1f} s")
    decisions, hazards, writes = bench.outcome()
    return bench, decisions, hazards, writes


def run(plan: Plan, *, alert_fraction: float, seed: int, label: str,
        say: Callable[[str], None], instructions: bool = False) -> dict[str, Any]:
    """Every row timed (best of ``plan.repeat`` passes), or with ``instructions`` counted
    once under callgrind (the process must be running under it: callgrind.py)."""
    bench, decisions, hazards, writes = build(plan, alert_fraction, seed, say)
    load_before = loadavg()
    measured = rows_of(bench, plan, writes)
    counts = count_instructions(measured) if instructions else {}
    if not instructions:
        measure(measured, plan.repeat)
    # every pass must do the same work (and so must a repeated run): checked, not assumed
    again = bench.outcome()
    assert again[:2] == (decisions, hazards), (again[:2], decisions, hazards)
    records = len(bench.records)
    rows: list[dict[str, Any]] = []
    for m in measured:
        if instructions:
            per_record = counts[m.stage] / records  # the split row's too: over the records
            rows.append({"stage": m.stage, "what": m.what, "unit": m.unit,
                         "instructions_per_record": round(per_record)})
            say(f"  {m.stage}: {per_record:,.0f} instructions per record")
            continue
        per_s = max(m.rates)
        rows.append({"stage": m.stage, "what": m.what, "per_s": round(per_s),
                     "us_per_record": round(1e6 / per_s * m.per_record, 2) if per_s else None,
                     "unit": m.unit, "passes_per_s": [round(r) for r in m.rates]})
        say(f"  {m.stage}: {per_s:,.0f} {m.unit}/s (passes: "
            f"{', '.join(f'{r:,.0f}' for r in m.rates)})")
    # per record: microseconds, or instructions; "× baseline" is the baseline's cost over
    # the row's (so, like a rate, higher is cheaper)
    cost = "instructions_per_record" if instructions else "us_per_record"
    base = rows[0][cost]
    for row in rows:
        row["x_baseline"] = (round(base / row[cost], 4)
                             if row["unit"] == "records" and row[cost] else None)
    # the handoff replaces the decode for most records (the total keeps the decode); the live
    # split is another workload's per-source cost, not this one's
    total = sum(r[cost] for r in rows if r["stage"] not in ("baseline", "handoff", "live split"))
    pure_total: dict[str, Any] = {cost: round(total, 2),
                                  "x_baseline": round(base / total, 4) if total else None}
    if not instructions:
        pure_total["records_per_s"] = round(1e6 / total) if total else None
    return {
        "date": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "quick": plan.quick,
        "label": label,
        "measure": "instructions (callgrind)" if instructions else "seconds",
        "machine": {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
                    "python": platform.python_version(), "platform": sys.platform},
        "loadavg": {"before": load_before, "after": loadavg()},
        "workload": {"sources": bench.sources, "feeds": dict(bench.feeds),
                     "step_s": STEP_S, "warm_rounds": plan.warm_rounds,
                     "warm_records": bench.warm_records, "records": records,
                     "batch": plan.batch, "repeat": 1 if instructions else plan.repeat,
                     "alert_fraction": alert_fraction, "seed": seed,
                     "decisions": decisions, "hazards": hazards,
                     "state_writes": sum(len(b) for b in writes)},
        "stages": rows,
        "pure_total": pure_total,
    }


def markdown(r: dict[str, Any], title: str = "Stages benchmark") -> str:
    w = r["workload"]
    counted = r.get("measure", "seconds") != "seconds"
    lines = [
        title + (" (quick)" if r["quick"] else "")
        + (" in instructions" if counted else "")
        + (f": {r['label']}" if r.get("label") else ""),
        "",
        f"{r['date']}, {r['machine']['cpu_count']} CPUs ({r['machine']['cpu_model']}), "
        f"Python {r['machine']['python']}, load average {r['loadavg']['before']} before, "
        f"{r['loadavg']['after']} after. Workload: bench_pipeline's {w['sources']} sources "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(w['feeds'].items()))} of the "
        f"{w['records']:,} measured records), {w['warm_rounds']} rounds of warm-up "
        f"({w['warm_records']:,} records, {w['step_s']} s of event time apart); batches of "
        f"{w['batch']}; "
        + ("one pass per row under valgrind's callgrind (instructions executed, the same "
           "from run to run; not time: a cache miss costs none). " if counted
           else f"best of {w['repeat']} passes. ")
        + "Rules decisions per pass: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(w["decisions"].items()))
        + f"; {w['hazards']} hazards; {w['state_writes']:,} state writes.",
        "",
        "| stage | what | instructions/record | × baseline |" if counted else
        "| stage | what | per s | µs/record | × baseline |",
        "| --- | --- | ---: | ---: |" if counted else "| --- | --- | ---: | ---: | ---: |",
    ]
    for s in r["stages"]:
        ratio = "" if s["x_baseline"] is None else f"{s['x_baseline']:.4f}"
        if counted:
            lines.append(f"| {s['stage']} | {s['what']} | {s['instructions_per_record']:,} | "
                         f"{ratio} |")
            continue
        unit = "" if s["unit"] == "records" else f" {s['unit']}"
        lines.append(f"| {s['stage']} | {s['what']} | {s['per_s']:,}{unit} | "
                     f"{s['us_per_record']} | {ratio} |")
    p = r["pure_total"]
    if counted:
        lines += ["", f"The pure work of ingest, decode, rules and state split together: "
                  f"{p['instructions_per_record']:,.0f} instructions per record "
                  f"({p['x_baseline']:.4f} × baseline). (The split row is per source "
                  "written, spread over the records.)"]
    else:
        lines += ["", f"The pure work of ingest, decode, rules and state split together: "
                  f"{p['us_per_record']} µs per record, so at most {p['records_per_s']:,} "
                  f"records/s on one core ({p['x_baseline']:.4f} × baseline) before faust, "
                  "the broker and the producer take their share. (The split row is per "
                  "source written; its µs/record spreads it over the records.)"]
    return "\n".join(lines) + "\n"


def profile(plan: Plan, stage: str, alert_fraction: float, seed: int, top: int) -> None:
    """cProfile of one pass of ``stage`` (ingest or rules), sorted by own time."""
    bench = Bench(plan, alert_fraction, seed)
    bench.fresh_state()
    target = bench.rules_pass if stage == "rules" else bench.ingest_pass
    prof = cProfile.Profile()
    prof.enable()
    target()
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="a few seconds (smoke test)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    ap.add_argument("--name", default="stages", help="results file name (without suffix)")
    ap.add_argument("--repeat", type=int, help="passes per row (default 6; quick 2)")
    ap.add_argument("--batch", type=int, default=500, help="records per stage batch")
    ap.add_argument("--alert-fraction", type=float, default=0.004)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--label", default="", help="what code this is (recorded in the results)")
    ap.add_argument("--profile", choices=("rules", "ingest"),
                    help="print a cProfile of one pass of this stage instead")
    ap.add_argument("--top", type=int, default=40, help="rows of the profile")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions under valgrind's callgrind instead of timing "
                    "(re-runs itself under it; needs valgrind and gcc)")
    ap.add_argument("--records", type=int, help="measured records (default 20,000; quick 2,000)")
    args = ap.parse_args(argv)
    if args.instructions and not callgrind.under_callgrind():
        try:
            return callgrind.rerun_under_callgrind(
                ["-m", "benchmarks.bench_stages",
                 *(sys.argv[1:] if argv is None else argv)])
        except callgrind.MissingTool as exc:
            print(f"bench_stages: {exc}", file=sys.stderr)
            return 2
    plan = plan_for(args.quick, args.repeat, args.batch)
    if args.records:
        plan = dataclasses.replace(plan, records=args.records)
    if args.profile:
        profile(plan, args.profile, args.alert_fraction, args.seed, args.top)
        return 0

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    r = run(plan, alert_fraction=args.alert_fraction, seed=args.seed, label=args.label,
            say=say, instructions=args.instructions)
    text = markdown(r)
    print(text)
    write_results(args.out, args.name, r, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
