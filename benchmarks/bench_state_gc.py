"""What the rules' per-source state costs the cyclic garbage collector.

Why: with a network of 10,000 sources a worker's full collections took 0.3-0.5 s each,
every 5-10 s, and every alert in flight waited for them (benchmarks/README.md, "A network of
sources"). A full collection visits every container object the collector tracks, so what
matters is how many of them a source's state holds, and that grows with its history (24 h
of readings in a worker that has run for a day, ~23 sealed hourly chunks per series).

This builds that state as a worker holds it: the pipeline benchmark's workload (the fixture
registries' 165 sources, a reading per source per 5-minute round of event time) through
``IngestStage`` and ``RulesStage`` into the rules loop's ``LoopSourceState`` over its
``SourceStateStore``, sealed (as a commit writes it) every ``--seal-rounds`` rounds, for
``--hours`` of event time. Then:

* **baseline**: a full collection with the state released (the rest of the process);
* **state**: a full collection holding it; the objects the collector tracks, per source;
  and the state's share: (state - baseline) per source, and the full collection a network
  of 10,000 such sources would cost at that rate.

Times are the median of ``--repeat`` collections, reported with the baseline measured in the
same process (DESIGN.md), never asserted.

Usage::

    python -m benchmarks.bench_state_gc                # 24 h of history (~1 min)
    python -m benchmarks.bench_state_gc --hours 2      # as bench_pipeline --network warms
    python -m benchmarks.bench_state_gc --quick        # a few seconds (the smoke test)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_pipeline import STEP_S, Workload, cpu_model, loadavg, sources
from benchmarks.bench_stages import by_feed
from benchmarks.report import write_results
from onemap.geo.places import PlaceIndex
from onemap.registries import Registries, default_registries_dir
from onemap.rules.evaluate import RulesStage
from onemap.rules.rulebook import default_rules_dir, load_rulebook
from onemap.streams.deadletter import RawRecord
from onemap.streams.outbox import Outbox
from onemap.streams.rules_loop import LoopSourceState, SourceStateStore, changelog_topic

RESULTS = Path(__file__).resolve().parent / "results"
NETWORK = 10_000


def build_state(hours: float, seal_rounds: int, say: Any) -> tuple[SourceStateStore,
                                                                    dict[str, Any], int]:
    """The store and the cache of logical values after ``hours`` of every source reporting
    every round (sealed every ``seal_rounds``), and how many sources."""
    places = PlaceIndex.load()
    registries = Registries.load(default_registries_dir())
    from onemap.streams.ingest import IngestStage
    ingest = IngestStage(places.find, registries, find_area=places.find_area,
                         find_codes=places.find_codes)
    rules, book = RulesStage(registries), load_rulebook(default_rules_dir())
    srcs = sources()
    workload = Workload(srcs, alert_fraction=0.01)
    store = SourceStateStore(changelog_topic("bench"))
    cache: dict[str, Any] = {}
    state = LoopSourceState(store, cache)
    rounds = int(hours * 3600 / STEP_S)
    for r in range(rounds):
        for feed, raws in by_feed(workload.take(len(srcs)), len(srcs)):
            observations = ingest.process(feed, raws).observations
            state.bind((o, RawRecord(b"", partition=0)) for o in observations)
            rules.process(observations, state, book, state.copies)
        if (r + 1) % seal_rounds == 0 or r == rounds - 1:
            state.seal_into(Outbox(lambda: None, lambda: None, {}))
        if (r + 1) % 48 == 0:
            say(f"  {(r + 1) * STEP_S / 3600:g} h of {hours:g} h built")
    del ingest, places
    return store, cache, len(srcs)


def full_collection_ms(repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(hours: float, seal_rounds: int, repeat: int, say: Any) -> dict[str, Any]:
    say(f"building {hours:g} h of state for the fixture's sources ...")
    store, cache, count = build_state(hours, seal_rounds, say)
    gc.collect()
    tracked_state = len(gc.get_objects())
    state_ms = full_collection_ms(repeat)
    del store, cache
    gc.collect()
    tracked_base = len(gc.get_objects())
    base_ms = full_collection_ms(repeat)
    per_source_objects = (tracked_state - tracked_base) / count
    per_source_us = (state_ms - base_ms) * 1000 / count
    return {
        "hours": hours, "seal_rounds": seal_rounds, "sources": count, "repeat": repeat,
        "baseline_ms": round(base_ms, 2), "state_ms": round(state_ms, 2),
        "ratio": round(state_ms / base_ms, 2) if base_ms else None,
        "tracked_baseline": tracked_base, "tracked_state": tracked_state,
        "tracked_per_source": round(per_source_objects, 1),
        "us_per_source": round(per_source_us, 1),
        "network_ms": round(per_source_us * NETWORK / 1000, 1),
        "cpu": cpu_model(), "load": loadavg(), "python": sys.version.split()[0],
    }


def markdown(r: dict[str, Any]) -> str:
    return "\n".join([
        "# The rules' state and the garbage collector",
        "",
        f"{r['sources']} sources with {r['hours']:g} h of history each, sealed every "
        f"{r['seal_rounds']} rounds; median of {r['repeat']} full collections "
        f"(CPU: {r['cpu']}; Python {r['python']}; load {r['load']}).",
        "",
        "| | full collection | objects tracked |",
        "| --- | ---: | ---: |",
        f"| baseline (the state released) | {r['baseline_ms']} ms | {r['tracked_baseline']:,} |",
        f"| holding the state | {r['state_ms']} ms ({r['ratio']} ×) | "
        f"{r['tracked_state']:,} |",
        f"| the state, per source | {r['us_per_source']} µs | {r['tracked_per_source']} |",
        "",
        f"At that rate the state of a network of {NETWORK:,} such sources adds "
        f"**{r['network_ms']} ms** to every full collection.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seal-rounds", type=int, default=1,
                        help="rounds of readings between two seals (a commit every round: "
                             "each source's head written once per reading, as a network's)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 h, 3 collections")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="state-gc")
    args = parser.parse_args(argv)
    if args.quick:
        args.hours, args.repeat = 1.0, 3

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    result = run(args.hours, args.seal_rounds, args.repeat, say)
    text = markdown(result)
    print(text)
    write_results(args.out, args.name, result, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
