"""The streaming result, decoded from its topics' JSON, against the oracle's.

Every comparison returns a list of differences as readable lines (empty: equal), each naming
the hazard or alert and the field, with the oracle's value and the stream's.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from tests.oracle.data import LEVELS, MAP_LEVELS, level_of
from tests.oracle.hazards import NONE, HazardRecord
from tests.oracle.ranking import AlertRecord, LedgerEntry

TOLERANCE = 1e-6  # key figures, rates, hours (both sides round to 3-6 decimals)
SCORE_TOLERANCE = 1e-3  # scores and breakdown parts are rounded to 3 decimals


def place_of(d: dict[str, Any]) -> tuple[str, str, str, str]:
    return tuple(str(d.get(f"{level}_code", "")) for level in MAP_LEVELS)  # type: ignore[return-value]


def stream_hazard(raw: bytes | dict[str, Any]) -> HazardRecord:
    """A record of ``onemap.hazards`` (docs: onemap/records.py JSON) in the oracle's terms."""
    d = json.loads(raw) if isinstance(raw, bytes) else raw
    figure = d.get("key_figure") or {}
    return HazardRecord(
        hazard_id=d["hazard_id"], hazard_type=d["hazard_type"], feed=d["feed"],
        source_id=d["source_id"], level=level_of(d["level"]),
        previous_level=level_of(d["previous_level"]),
        observed_at=datetime.fromisoformat(d["observed_at"]), place=place_of(d["place"]),
        lon=float(d["lon"]), lat=float(d["lat"]), exercise=bool(d["exercise"]),
        key_figure=str(figure.get("name", "")), key_value=figure.get("value"),
        trend=dict(d.get("trend") or {}))


def stream_alert(raw: bytes) -> AlertRecord:
    """A ledger record decoded into the oracle's own alert record (same fields)."""
    d = json.loads(raw)
    return AlertRecord(d["alert_id"], d["hazard_id"], int(d["seq"]), d["transition"],
                       level_of(d["level"]), level_of(d["previous_level"]),
                       stream_hazard(d["hazard"]), float(d["score"]),
                       {k: float(v) for k, v in d["score_breakdown"].items()})


def stream_entries(alerts: Iterable[AlertRecord]) -> list[LedgerEntry]:
    return [LedgerEntry(a.hazard_id, a.transition, a.level, a.score, a.hazard.observed_at,
                        a.hazard.place, a.hazard.exercise) for a in alerts]


# -- silences ----------------------------------------------------------------------------------

@dataclasses.dataclass
class SilenceSplit:
    """The stream's sensor_silent records, sorted by what the oracle can say about them."""

    #: silences still open at the end, and everything else to compare exactly
    exact: list[HazardRecord]
    #: records of silences that were raised and ended mid-stream (timer-dependent), by
    #: position in the stream's hazard list
    transient: dict[int, HazardRecord]
    #: level-NONE records for a silence that was not open (the "no-op" end of a silence)
    noop: dict[int, HazardRecord]
    #: (raised, ended) pairs of the transient ones
    episodes: list[tuple[HazardRecord, HazardRecord]]


def split_silences(stream: Sequence[HazardRecord]) -> SilenceSplit:
    exact: list[HazardRecord] = []
    transient: dict[int, HazardRecord] = {}
    noop: dict[int, HazardRecord] = {}
    episodes: list[tuple[HazardRecord, HazardRecord]] = []
    open_at: dict[str, int] = {}
    for i, h in enumerate(stream):
        if h.hazard_type != "sensor_silent":
            exact.append(h)
        elif h.level > NONE:
            open_at[h.hazard_id] = i
        elif h.hazard_id in open_at:
            raised = open_at.pop(h.hazard_id)
            transient[raised], transient[i] = stream[raised], h
            episodes.append((stream[raised], h))
        else:
            noop[i] = h
    exact.extend(stream[i] for i in sorted(open_at.values()))
    return SilenceSplit(exact, transient, noop, episodes)


def inadmissible_silences(split: SilenceSplit, windows: dict[str, list[tuple[float, float]]],
                          ) -> list[str]:
    """Mid-stream silences the documented rule cannot justify (see hazards.silence_windows)."""
    out = []
    for h, end in split.episodes:
        t = h.observed_at.timestamp()
        match = [w for w in windows.get(h.hazard_id, []) if w[0] == t]
        if not match:
            out.append(f"{h.hazard_id}: silent after its reading at {h.observed_at}, but the "
                       "feed's stream time never passed the silence limit before its next "
                       "reading")
        elif end.observed_at.timestamp() != match[0][1]:
            # docs/rules.md: the silence "ends when it reports again", i.e. with its next reading
            out.append(f"{h.hazard_id}: silent after its reading at {h.observed_at:%H:%M:%S}, "
                       f"ended by a reading at {end.observed_at:%H:%M:%S}, but the source "
                       "reported again at "
                       f"{datetime.fromtimestamp(match[0][1], h.observed_at.tzinfo):%H:%M:%S}")
    return out


# -- hazards -----------------------------------------------------------------------------------

def _close(a: Any, b: Any, tol: float = TOLERANCE) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)


def hazard_differences(oracle: Sequence[HazardRecord], stream: Sequence[HazardRecord],
                       ) -> list[str]:
    """Per hazard id, the sequence of state changes must be equal, record by record."""
    out: list[str] = []
    mine: dict[str, list[HazardRecord]] = {}
    theirs: dict[str, list[HazardRecord]] = {}
    for h in oracle:
        mine.setdefault(h.hazard_id, []).append(h)
    for h in stream:
        theirs.setdefault(h.hazard_id, []).append(h)
    for hazard_id in sorted(set(mine) | set(theirs)):
        a, b = mine.get(hazard_id, []), theirs.get(hazard_id, [])
        if len(a) != len(b):
            out.append(f"{hazard_id}: oracle has {len(a)} state changes "
                       f"{_steps(a)}, stream {len(b)} {_steps(b)}")
            continue
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            for field, ok in _fields(x, y):
                if not ok:
                    out.append(f"{hazard_id} #{n + 1} ({x.observed_at.isoformat()}): {field}: "
                               f"oracle {_show(x, field)!r}, stream {_show(y, field)!r}")
    return out


def _steps(records: Sequence[HazardRecord]) -> str:
    return "[" + ", ".join(f"{h.observed_at:%H:%M:%S} {LEVELS[h.previous_level]}->{h.label}"
                           for h in records[:12]) + (" ...]" if len(records) > 12 else "]")


def _fields(x: HazardRecord, y: HazardRecord) -> list[tuple[str, bool]]:
    return [
        ("level", x.level == y.level), ("previous_level", x.previous_level == y.previous_level),
        ("observed_at", x.observed_at == y.observed_at),
        ("hazard_type", x.hazard_type == y.hazard_type), ("feed", x.feed == y.feed),
        ("place", x.place == y.place), ("exercise", x.exercise == y.exercise),
        ("lon", _close(x.lon, y.lon)), ("lat", _close(x.lat, y.lat)),
        ("key_figure", x.key_figure == y.key_figure),
        # the docs give no figure for a silence: only compared where the oracle has one
        ("key_value", x.key_value is None or _close(x.key_value, y.key_value)),
        ("trend.direction", x.trend.get("direction") == y.trend.get("direction")),
        ("trend.accelerating", x.trend.get("accelerating") == y.trend.get("accelerating")),
        ("trend.rate_per_h", _close(x.trend.get("rate_per_h"), y.trend.get("rate_per_h"))),
        ("trend.hours_to_next_level", _close(x.trend.get("hours_to_next_level"),
                                             y.trend.get("hours_to_next_level"))),
    ]


def _show(h: HazardRecord, field: str) -> Any:
    if field.startswith("trend."):
        return h.trend.get(field[6:])
    value = getattr(h, field)
    return LEVELS[value] if field in ("level", "previous_level") else value


def in_stream_order(oracle: Sequence[HazardRecord], stream: Sequence[HazardRecord],
                    split: SilenceSplit) -> list[HazardRecord]:
    """The oracle's records in the order the stream's lifecycle stage read its own: the
    n-th record of a hazard takes the place of the stream's n-th record of that hazard.

    Mid-stream silences (timer-dependent, checked by :func:`inadmissible_silences`) are
    taken from the stream as they are; oracle records the stream lacks go last.
    """
    queues: dict[str, deque[HazardRecord]] = {}
    for h in oracle:
        queues.setdefault(h.hazard_id, deque()).append(h)
    out: list[HazardRecord] = []
    for i, h in enumerate(stream):
        if i in split.transient or i in split.noop:
            out.append(h)
        elif queues.get(h.hazard_id):
            out.append(queues[h.hazard_id].popleft())
    out.extend(h for q in queues.values() for h in q)
    return out


# -- alerts ------------------------------------------------------------------------------------

def transition_differences(oracle: Sequence[AlertRecord], stream: Sequence[AlertRecord],
                           ) -> list[str]:
    """The ledger, alert by alert in order: id, transition, level, previous level."""
    out: list[str] = []

    def row(a: AlertRecord) -> tuple[str, str, str, str]:
        return a.alert_id, a.transition, LEVELS[a.level], LEVELS[a.previous_level]

    mine, theirs = [row(a) for a in oracle], [row(a) for a in stream]
    if sorted(mine) != sorted(theirs):
        missing = sorted(set(mine) - set(theirs))
        extra = sorted(set(theirs) - set(mine))
        out += [f"alert only in the oracle: {m}" for m in missing]
        out += [f"alert only in the stream: {e}" for e in extra]
    elif mine != theirs:
        first = next(i for i, (x, y) in enumerate(zip(mine, theirs, strict=True)) if x != y)
        out.append(f"same alerts in another order from position {first}: oracle "
                   f"{mine[first]}, stream {theirs[first]}")
    return out


def score_differences(oracle: Sequence[AlertRecord], stream: Sequence[AlertRecord],
                      ) -> list[str]:
    """Score and breakdown of every alert both sides made."""
    theirs = {a.alert_id: a for a in stream}
    out: list[str] = []
    for a in oracle:
        b = theirs.get(a.alert_id)
        if b is None:
            continue
        if set(a.breakdown) != set(b.breakdown):
            out.append(f"{a.alert_id}: breakdown parts: oracle {sorted(a.breakdown)}, "
                       f"stream {sorted(b.breakdown)}")
            continue
        if not _close(a.score, b.score, SCORE_TOLERANCE):
            parts = {k: (a.breakdown[k], b.breakdown[k]) for k in a.breakdown
                     if not _close(a.breakdown[k], b.breakdown[k], SCORE_TOLERANCE)}
            out.append(f"{a.alert_id}: score oracle {a.score}, stream {b.score}; parts "
                       f"(oracle, stream) {parts}")
    return out


def top_differences(at: datetime, area: str, mine: Sequence[tuple[str, str, float]],
                    theirs: Sequence[tuple[str, str, float]]) -> list[str]:
    """Equal hazard ids in equal order (and levels, scores) for one top K."""
    if [m[:2] for m in mine] == [t[:2] for t in theirs] and all(
            _close(m[2], t[2], SCORE_TOLERANCE) for m, t in zip(mine, theirs, strict=True)):
        return []
    return [f"top {len(mine)} of {area} at {at.isoformat()}:\n  oracle {list(mine)}\n"
            f"  stream {list(theirs)}"]


def level_differences(at: datetime, mine: dict[str, str], theirs: dict[str, str]) -> list[str]:
    out = []
    for hazard_id in sorted(set(mine) | set(theirs)):
        if mine.get(hazard_id) != theirs.get(hazard_id):
            out.append(f"live at {at.isoformat()}: {hazard_id}: oracle "
                       f"{mine.get(hazard_id, 'not live')}, stream "
                       f"{theirs.get(hazard_id, 'not live')}")
    return out
