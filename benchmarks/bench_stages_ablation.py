"""What each change to the pure stages bought: today's code with one change undone at a time.

A one-off record of the "cheaper rules and ingest per record" round (issue 7), kept so that
its numbers can be re-measured: every variant below is today's code with one of the changes
put back as it was in git 6b67645 (the code before the round; the functions are copied from
there), measured with ``bench_stages``' rows in one process, interleaved with today's code and
the ``json.loads`` baseline, best of ``--repeat`` passes. A variant slower than today by X µs
per record means that change bought X µs (changes overlap a little, so the parts need not add
up to the whole).

Usage::

    python -m benchmarks.bench_stages_ablation          # writes results/stages-ablation.*
    python -m benchmarks.bench_stages_ablation --quick  # a few seconds
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import enum
import operator
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.bench_pipeline import cpu_model, loadavg
from benchmarks.bench_stages import Bench, Row, measure, plan_for
from benchmarks.report import write_results
from onemap.levels import COLOURS, WarningLevel
from onemap.rules import evaluate as ev
from onemap.rules import weather
from onemap.rules.windows import Series
from onemap.streams import ingest

RESULTS = Path(__file__).resolve().parent / "results"
_VALUE = operator.itemgetter(1)
_HIGH, _LOW = float("inf"), float("-inf")


# -- the previous versions (git 6b67645) ------------------------------------------------------

def insert_before(series: Series, t: float, value: float, keep_s: float,
                  owned: Any = None) -> Series:
    """(``owned``: today's in-place inserts, ignored: a new list every time, as before)"""
    point = [float(t), float(value)]
    if not series or series[-1][0] < point[0]:
        out = [*series, point]
    else:
        out = list(series)
        bisect.insort(out, point)
    horizon = out[-1][0] - keep_s
    if out[0][0] >= horizon:
        return out
    return out[bisect.bisect_left(out, [horizon, _LOW]):]


def window_max_before(series: Series, end: float, seconds: float) -> float | None:
    lo = bisect.bisect_left(series, [end - seconds, _LOW])
    hi = bisect.bisect_right(series, [end, _HIGH])
    return max(map(_VALUE, series[lo:hi])) if hi > lo else None


def window_sum_before(series: Series, end: float, seconds: float) -> float:
    lo = bisect.bisect_right(series, [end - seconds, _HIGH])
    hi = bisect.bisect_right(series, [end, _HIGH])
    return float(sum(map(_VALUE, series[lo:hi])))


def rainstorm_reached_all_sums(rain: Series, newest: float, rule: weather.RainstormRule,
                               at_most: float | None = None) -> tuple[WarningLevel, float]:
    """Every colour's window summed for every reading (no shortcut, no carried bound)."""
    reached = WarningLevel.NONE
    by_window: dict[float, float] = {}
    for colour in COLOURS:
        bound = rule.levels[colour.label]
        seconds = bound.window_h * 3600
        total = by_window.get(seconds)
        if total is None:
            total = by_window[seconds] = window_sum_before(rain, newest, seconds)
        if total >= bound.rain_mm - 1e-9:
            reached = colour
    return reached, float("inf")


def copy_state_before(st: dict[str, Any] | None) -> dict[str, Any] | None:
    if not st:
        return None
    return {k: dict(v) if isinstance(v, dict) else v for k, v in st.items()}


# -- the variants -----------------------------------------------------------------------------

@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def full_candidates() -> Iterator[None]:
    """Every reading's candidate built in full (figure, reason, trend), as before."""
    full = {feed: ev._proposing(evaluator) for feed, evaluator in ev.EVALUATORS.items()}
    with patched(ev, "PROPOSERS", full):
        yield


@contextlib.contextmanager
def enum_hash() -> Iterator[None]:
    with patched(ev.Decision, "__hash__", enum.Enum.__hash__):
        yield


@contextlib.contextmanager
def place_per_point() -> Iterator[None]:
    def places(self: ingest.IngestStage, lon: Any, lat: Any) -> Any:
        return [ingest.Located(place, round(x, 7), round(y, 7)) for place, x, y in
                zip(self.find_places(lon, lat), lon.tolist(), lat.tolist(), strict=True)]
    with patched(ingest.IngestStage, "_places", places):
        yield


@contextlib.contextmanager
def with_list_points(name: str, value: Any) -> Iterator[None]:
    """``ev.<name>`` put back as it was, which compares a series' points with list probes:
    so points are lists again too (``insert_before``; today's are tuples, which a list does
    not compare with), i.e. the variant also undoes the tuples and the in-place inserts."""
    with patched(ev, "insert", insert_before), patched(ev, name, value):
        yield


#: (name, what the variant undoes, context manager)
VARIANTS: list[tuple[str, str, Callable[[], contextlib.AbstractContextManager[None]]]] = [
    ("all candidates in full", "figure, reason and trend built for every reading "
     "(so also every rain window summed)", full_candidates),
    ("no carried bounds", "the 12 h rain sum and the wind windows' maxima computed for "
     "every reading (the one-sum shortcut kept)",
     lambda: patched(ev, "carry_bound", lambda *a: None)),
    ("every rain window summed", "no shortcut and no carried bound: 12, 6, 3 h windows "
     "summed for every reading (and list points, as insert as before)",
     lambda: with_list_points("rainstorm_reached", rainstorm_reached_all_sums)),
    ("insert as before", "two copies per insert, list-comparing bisection, list points, "
     "a copy per reading (not per batch)", lambda: patched(ev, "insert", insert_before)),
    ("window max as before", "list-comparing bisection (a [t, ±inf] probe; and list "
     "points, as insert as before)",
     lambda: with_list_points("window_max", window_max_before)),
    ("state copy as before", "every dict of the state copied (latest, accum too)",
     lambda: patched(ev, "_copy_state", copy_state_before)),
    ("enum hash", "Decision hashed by Enum's Python __hash__", enum_hash),
    ("a Place per point", "ingest locates, builds a Place and rounds the point for every "
     "record",
     place_per_point),
]


def run(quick: bool, repeat: int | None) -> dict[str, Any]:
    plan = plan_for(quick, repeat, 500)
    bench = Bench(plan, 0.004, 7)
    load_before = loadavg()
    rows = [Row("baseline", "json.loads of each raw record", bench.baseline),
            Row("rules", "today", bench.rules_pass, setup=bench.fresh_state),
            Row("ingest", "today", bench.ingest_pass)]

    def variant(stage: str, name: str,
                make: Callable[[], contextlib.AbstractContextManager[None]]) -> Row:
        target = bench.rules_pass if stage == "rules" else bench.ingest_pass

        def go() -> int:
            with make():
                return target()
        return Row(stage, name, go, setup=bench.fresh_state if stage == "rules" else None)

    for name, _, make in VARIANTS:
        rows.append(variant("ingest" if name == "a Place per point" else "rules", name, make))
    measure(rows, plan.repeat)
    base = max(rows[0].rates)
    today = {r.stage: 1e6 / max(r.rates) for r in rows[1:3]}
    undone = dict((name, what) for name, what, _ in VARIANTS)
    out = []
    for r in rows:
        us = 1e6 / max(r.rates)
        out.append({"stage": r.stage, "variant": r.what, "undoes": undone.get(r.what, ""),
                    "us_per_record": round(us, 2), "x_baseline": round(max(r.rates) / base, 4),
                    "bought_us": round(us - today[r.stage], 2) if r.stage in today else None,
                    "passes_per_s": [round(x) for x in r.rates]})
    return {"date": datetime.now(UTC).replace(microsecond=0).isoformat(), "quick": quick,
            "machine": {"cpu_model": cpu_model(), "python": sys.version.split()[0]},
            "loadavg": {"before": load_before, "after": loadavg()},
            "records": len(bench.records), "repeat": plan.repeat, "rows": out}


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "Stages ablation" + (" (quick)" if r["quick"] else ""), "",
        f"{r['date']}, {r['machine']['cpu_model']}, Python {r['machine']['python']}, load "
        f"average {r['loadavg']['before']} before, {r['loadavg']['after']} after. Today's "
        "code with one change undone at a time (the previous version from git 6b67645), "
        f"bench_stages' workload ({r['records']:,} records, warm 24 h state), best of "
        f"{r['repeat']} interleaved passes. *Bought*: how much slower the variant is than "
        "today's code, per record.", "",
        "| stage | variant | undoes | µs/record | × baseline | bought µs/record |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in r["rows"]:
        bought = "" if row["bought_us"] is None else f"{row['bought_us']:.1f}"
        lines.append(f"| {row['stage']} | {row['variant']} | {row['undoes']} | "
                     f"{row['us_per_record']} | {row['x_baseline']:.4f} | {bought} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    r = run(args.quick, args.repeat)
    text = markdown(r)
    print(text)
    write_results(args.out, "stages-ablation", r, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
