"""Readings -> hazard state changes, recomputed per source from docs/rules.md and the rule
files, with pandas for grouping and numpy for the event-time windows.

How it differs from the streaming code on purpose: instead of a mutable per-source state
updated one observation at a time, every window a rule needs is computed for every
evaluation point at once, from the readings that had *arrived* by then (an ``arrived ×
readings`` mask per source). Only what is inherently sequential stays a loop: the level in
force (it goes up at once and down only after the hold, and a water level's hysteresis
depends on it), the "starts to accelerate" news, and silence.

Windows, as documented (rules/windows.py docstrings, which docs/rules.md points to):

* rolling sums (rain): readings with ``end - w < t <= end``;
* maxima (wind, "strongest over the last hour"): ``end - w <= t <= end``;
* least-squares rates (water rise, displacement): ``end - w < t <= end``.

``end`` is the source's newest event time so far (a late reading is applied as of the
newest one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from tests.oracle.data import COLOURS, LEVELS, OracleData, level_of
from tests.oracle.inputs import Place

F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]
NONE, BLUE, YELLOW, ORANGE, RED = range(5)
#: Feeds whose levels take effect both ways at once (no downgrade hold).
IMMEDIATE = ("incident", "cap")
CLOSE = 1e-9  # comparison slack for floating sums and rates (far below any resolution)


@dataclasses.dataclass(frozen=True)
class HazardRecord:
    """One hazard state change, in the oracle's own terms (levels as 0..4)."""

    hazard_id: str
    hazard_type: str
    feed: str
    source_id: str
    level: int
    previous_level: int
    observed_at: datetime
    place: Place
    lon: float
    lat: float
    exercise: bool
    key_figure: str
    key_value: float | None
    trend: dict[str, Any]

    @property
    def label(self) -> str:
        return LEVELS[self.level]


@dataclasses.dataclass(frozen=True)
class Candidate:
    hazard_type: str
    level: int
    key_figure: str
    key_value: float | None
    trend: dict[str, Any]


def trend(rate_h: float | None, hours_to_next: float | None) -> dict[str, Any]:
    direction = "steady" if rate_h is None or abs(rate_h) < 1e-3 else \
        ("rising" if rate_h > 0 else "falling")
    return {"direction": direction, "rate_per_h": rate_h, "hours_to_next_level": hours_to_next}


# -- windows over arrived readings ----------------------------------------------------------

@dataclasses.dataclass
class Windows:
    """Event-time windows of one source, for every evaluation point (row i) at once.

    ``arrived[i, j]``: reading j had arrived when reading i was evaluated; ``end[i]``: the
    source's newest event time then.
    """

    t: F64
    end: F64
    arrived: BOOL

    @classmethod
    def of(cls, t: F64) -> Windows:
        n = t.size
        return cls(t, np.maximum.accumulate(t), np.tril(np.ones((n, n), dtype=bool)))

    def mask(self, has: BOOL, seconds: float, *, closed_left: bool = False) -> BOOL:
        t, end = self.t[None, :], self.end[:, None]
        start = t >= end - seconds if closed_left else t > end - seconds
        result: BOOL = self.arrived & has[None, :] & start & (t <= end)
        return result

    def sum(self, values: F64, seconds: float) -> F64:
        has = ~np.isnan(values)
        m = self.mask(has, seconds)
        sums: F64 = np.where(m, np.nan_to_num(values)[None, :], 0.0).sum(axis=1)
        return np.round(sums, 6)

    def max(self, values: F64, seconds: float) -> F64:
        m = self.mask(~np.isnan(values), seconds, closed_left=True)
        best = np.where(m, np.nan_to_num(values, nan=-np.inf)[None, :], -np.inf).max(axis=1)
        out: F64 = np.where(np.isfinite(best), best, np.nan)
        return out

    def rate_per_h(self, values: F64, seconds: float) -> F64:
        """Least-squares slope per hour (NaN with fewer than two points)."""
        has = ~np.isnan(values)
        m = self.mask(has, seconds).astype(np.float64)
        origin_t = self.t[0]
        origin_v = values[has][0] if has.any() else 0.0
        x = self.t - origin_t
        y = np.nan_to_num(values - origin_v)
        n = m.sum(axis=1)
        sx, sy = m @ x, m @ y
        with np.errstate(invalid="ignore", divide="ignore"):
            mx, my = sx / n, sy / n
            den = m @ (x * x) - n * mx * mx
            num = m @ (x * y) - n * mx * my
            slope = num / den * 3600.0
        ok = (n >= 2) & (np.abs(den) > 1e-6)
        out: F64 = np.where(ok, slope, np.nan)
        return out

    def latest(self, values: F64) -> F64:
        """The value of the newest arrived reading that has one."""
        has = ~np.isnan(values)
        m = self.arrived & has[None, :]
        t = np.where(m, self.t[None, :], -np.inf)
        newest = t.max(axis=1, keepdims=True)
        # the last-arrived of the readings at that newest time
        pick = (m & (t == newest)) * np.arange(1, self.t.size + 1)[None, :]
        index = pick.argmax(axis=1)
        out: F64 = np.where(np.isfinite(newest[:, 0]), values[index], np.nan)
        return out

    def first_time(self, values: F64, keep_s: float) -> F64:
        """Event time of the oldest reading still kept (history: ``keep_s`` before the newest
        reading of this series)."""
        has = ~np.isnan(values)
        m = self.arrived & has[None, :]
        t = np.where(m, self.t[None, :], np.nan)
        with np.errstate(all="ignore"):
            newest = np.nanmax(np.where(m, t, -np.inf), axis=1, keepdims=True)
            kept = m & (self.t[None, :] >= newest - keep_s)
            first: F64 = np.where(kept, self.t[None, :], np.inf).min(axis=1)
        return np.where(np.isfinite(first), first, np.nan)


def _opt(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


# -- rules: one function per rule file, from its documented criterion ------------------------

def highest(figure: float, bounds: dict[str, float]) -> int:
    """The highest colour whose bound the figure reaches (0: none)."""
    reached = NONE
    for i, colour in enumerate(COLOURS, start=1):
        if figure >= bounds[colour] - CLOSE:
            reached = i
    return reached


def rainstorm(sums: dict[float, float], last_hour: float, rule: dict[str, Any]) -> Candidate:
    levels = rule["levels"]
    reached = NONE
    for i, colour in enumerate(COLOURS, start=1):
        if sums[float(levels[colour]["window_h"])] >= levels[colour]["rain_mm"] - CLOSE:
            reached = i
    shown = COLOURS[max(reached, BLUE) - 1]
    window = float(levels[shown]["window_h"])
    return Candidate("rainstorm", reached, f"{window:g}小时降雨", round(sums[window], 1),
                     trend(last_hour, None))


def wind(mean: float | None, gust: float | None, rule: dict[str, Any]) -> Candidate:
    levels = rule["levels"]
    reached = NONE
    for i, colour in enumerate(COLOURS, start=1):
        if (mean or 0.0) >= levels[colour]["mean_ms"] - CLOSE or \
                (gust or 0.0) >= levels[colour]["gust_ms"] - CLOSE:
            reached = i
    shown = COLOURS[max(reached, BLUE) - 1]
    if (gust is not None and gust >= levels[shown]["gust_ms"] - CLOSE) or mean is None:
        return Candidate("wind", reached, "阵风", gust or 0.0, {})
    return Candidate("wind", reached, "平均风速", mean, {})


def water_bounds(station: pd.Series, rule: dict[str, Any]) -> dict[str, float] | None:
    criteria = rule["kinds"].get(station["kind"])
    if criteria is None:
        return None
    column = {"warning": "warning_level_m", "guaranteed": "guaranteed_level_m",
              "flood_limit": "flood_limit_level_m"}
    bounds = {}
    for colour in COLOURS:
        threshold = station[column[criteria[colour]["threshold"]]]
        if pd.notna(threshold):
            bounds[colour] = float(threshold) + float(criteria[colour].get("offset_m", 0.0))
    return bounds


def water_level(value: float, rate_h: float | None, station: pd.Series, rule: dict[str, Any],
                current: int) -> Candidate:
    """Highest colour reached; a colour at or below the level in force only needs to be
    within ``hysteresis_m`` of its bound (docs/rules.md)."""
    bounds = water_bounds(station, rule) or {}
    reached = NONE
    for i, colour in enumerate(COLOURS, start=1):
        if colour not in bounds:
            continue
        bound = bounds[colour] - (rule["hysteresis_m"] if i <= current else 0.0)
        if value >= bound - CLOSE:
            reached = i
    to_next: float | None = None
    if reached < RED and COLOURS[reached] in bounds:
        target = bounds[COLOURS[reached]]
        if value >= target:
            to_next = 0.0
        elif rate_h is not None and rate_h > 0:
            to_next = round((target - value) / rate_h, 3)
    name = "积水深度" if station["kind"] == "waterlogging" else "水位"
    return Candidate("water_level", reached, name, value, trend(rate_h, to_next))


def geohazard(rate_h: float | None, short_h: float | None, rain_24h: float,
              point: pd.Series, rule: dict[str, Any]) -> Candidate:
    """Displacement rate against the point's own thresholds (the rule's defaults where it has
    none), one level up when accelerating (never from none, never above red), or 24 h rain,
    whichever is higher."""
    rates = {c: float(point[f"rate_{c}_mm_d"]) if pd.notna(point.get(f"rate_{c}_mm_d"))
             else float(rule["rate_mm_d"][c]) for c in COLOURS}
    rate_d = (rate_h or 0.0) * 24
    accelerating = (rate_h is not None and short_h is not None and rate_h > 0
                    and short_h >= rule["acceleration"]["ratio"] * rate_h)
    by_rate = highest(rate_d, rates)
    if accelerating and NONE < by_rate < RED:
        by_rate += 1
    by_rain = highest(rain_24h, {c: float(v) for c, v in rule["rain_24h_mm"].items()})
    shape = trend(rate_h, None)
    shape["accelerating"] = "yes" if accelerating else "no"
    if by_rain > by_rate:
        return Candidate("geohazard", by_rain, "24小时降雨", round(rain_24h, 1), shape)
    return Candidate("geohazard", max(by_rate, by_rain), "位移速率", round(rate_d, 2), shape)


def incident(values: dict[str, float], attrs: dict[str, str],
             rule: dict[str, Any]) -> Candidate:
    deaths = int(values.get("deaths", 0) + values.get("missing", 0))
    injured = int(values.get("injured", 0) + values.get("trapped", 0))
    if attrs.get("status") in rule.get("closing_statuses", ("handled", "closed")):
        return Candidate("incident", NONE, "死亡失踪", deaths, {})
    level = NONE
    for i, colour in enumerate(COLOURS, start=1):
        grade = rule["grades"][colour]
        if deaths >= grade["deaths"] or injured >= grade["injured"]:
            level = i
    floor = rule.get("category_floor", {}).get(attrs.get("category", "other"))
    if floor is not None:
        level = max(level, level_of(floor))
    return Candidate("incident", level, "死亡失踪" if deaths else "受伤被困",
                     deaths if deaths else injured, {})


# -- per source ------------------------------------------------------------------------------

@dataclasses.dataclass
class Evaluation:
    """What one accepted reading leads to: its row, whether it is the source's newest, and
    the candidates of each hazard type as of the newest reading."""

    row: Any
    in_order: bool
    newest: float
    candidates: list[Candidate]


def _classify(rows: pd.DataFrame, lateness: float) -> tuple[list[str], list[float | None]]:
    """Per reading: in-order / late / duplicate / too-late (per sensor stream), and the rain
    increment of a weather reading given as an accumulation (None otherwise)."""
    kinds: list[str] = []
    increments: list[float | None] = []
    newest: dict[str, float] = {}
    seen: dict[str, set[float]] = {}
    accum: dict[str, Any] | None = None
    for row in rows.itertuples():
        stream, t = row.sensor, row.t
        top = newest.get(stream)
        if top is None or t > top:
            kind = "in-order"
        elif top - t > lateness:
            kind = "too-late"
        elif t in seen.get(stream, set()):
            kind = "duplicate"
        else:
            kind = "late"
        increment = None
        if "rain_accum_mm" in row.values and kind != "duplicate":
            if kind == "late":
                kind = "too-late"  # an accumulation cannot be turned into a late increment
            else:
                value = row.values["rain_accum_mm"]
                since = row.attrs.get("accum_since", "")
                same = accum is not None and accum["since"] == since and value >= accum["value"]
                increment = round(value - accum["value"], 3) if same and accum else value
                accum = {"since": since, "value": value}
        kinds.append(kind)
        increments.append(increment)
        if kind in ("in-order", "late"):
            newest[stream] = max(t, top if top is not None else t)
            seen.setdefault(stream, set()).add(t)
    return kinds, increments


def _column(rows: pd.DataFrame, name: str) -> F64:
    return np.array([v.get(name, np.nan) for v in rows["values"]], dtype=np.float64)


def _weather(accepted: pd.DataFrame, w: Windows, rain_from_accum: F64,
             rules: dict[str, Any]) -> list[list[Candidate]]:
    """Rolling rain sums per rainstorm window, and the strongest wind of the last hour."""
    rain = _column(accepted, "rain_mm")
    rain = np.where(np.isnan(rain), rain_from_accum, rain)
    mean, gust = _column(accepted, "wind_speed_ms"), _column(accepted, "wind_gust_ms")
    windows = sorted({float(b["window_h"]) for b in rules["rainstorm"]["levels"].values()})
    sums = {h: w.sum(rain, h * 3600) for h in windows}
    last_hour = w.sum(rain, 3600)
    span = float(rules["wind"]["window_min"]) * 60
    mean_max, gust_max = w.max(mean, span), w.max(gust, span)
    has_rain = np.maximum.accumulate(~np.isnan(rain))
    has_wind = np.maximum.accumulate(~np.isnan(mean) | ~np.isnan(gust))
    out: list[list[Candidate]] = []
    for i in range(len(accepted)):
        here = []
        if has_rain[i]:
            here.append(rainstorm({h: float(s[i]) for h, s in sums.items()},
                                  float(last_hour[i]), rules["rainstorm"]))
        if has_wind[i]:
            here.append(wind(_opt(mean_max[i]), _opt(gust_max[i]), rules["wind"]))
        out.append(here)
    return out


def _water(accepted: pd.DataFrame, w: Windows) -> list[list[Candidate]]:
    """The newest level and the rise rate of the last hour; the level itself depends on the
    level in force (hysteresis), so it is judged later, in order (level -1: not yet)."""
    values = _column(accepted, "level_m")
    latest, rate = w.latest(values), w.rate_per_h(values, 3600)
    return [[Candidate("water_level", -1, "", float(latest[i]), {"rate_per_h": _opt(rate[i])})]
            for i in range(len(accepted))]


def _geohazard(accepted: pd.DataFrame, w: Windows, point: pd.Series,
               rules: dict[str, Any]) -> list[list[Candidate]]:
    """Displacement rates (long and short window, once the readings span long enough) and
    the 24 h rain at the point."""
    rule = rules["geohazard"]
    moved, rain = _column(accepted, "displacement_mm"), _column(accepted, "rain_mm")
    first = w.first_time(moved, 24 * 3600.0 + float(rules["pipeline"]["lateness_s"]))
    span_h = np.where(np.isnan(first), 0.0, (w.end - first) / 3600)
    rate = w.rate_per_h(moved, float(rule["rate_window_h"]) * 3600)
    rate = np.where(span_h >= float(rule["rate_min_span_h"]), rate, np.nan)
    short = w.rate_per_h(moved, float(rule["acceleration"]["window_h"]) * 3600)
    rain_24h = w.sum(rain, 24 * 3600)
    return [[geohazard(_opt(rate[i]), _opt(short[i]), float(rain_24h[i]), point, rule)]
            for i in range(len(accepted))]


def evaluate_source(rows: pd.DataFrame, data: OracleData) -> tuple[list[Evaluation], list[int]]:
    """The candidates after every accepted reading of one source (rows in arrival order),
    and the arrivals rejected as too late."""
    rules = data.rules
    kinds, increments = _classify(rows, float(rules["pipeline"]["lateness_s"]))
    keep = np.array([k in ("in-order", "late") for k in kinds], dtype=bool)
    too_late = [int(a) for a, k in zip(rows["arrival"], kinds, strict=True) if k == "too-late"]
    accepted = rows[keep].copy()
    if accepted.empty:
        return [], too_late
    feed = str(accepted["feed"].iloc[0])
    w = Windows.of(accepted["t"].to_numpy(dtype=np.float64))
    in_order = w.t >= np.concatenate([[-np.inf], w.end[:-1]])
    registry = data.registry(feed)
    per_row: list[list[Candidate]] = [[] for _ in range(len(accepted))]
    if feed == "weather":
        from_accum = np.array([np.nan if x is None else x
                               for x, k in zip(increments, keep, strict=True) if k])
        per_row = _weather(accepted, w, from_accum, rules)
    elif feed == "water":
        per_row = _water(accepted, w)
    elif feed == "geohazard" and registry is not None:
        per_row = _geohazard(accepted, w, registry.loc[str(accepted["source_id"].iloc[0])],
                             rules)
    out: list[Evaluation] = []
    newest_row: Any = None
    for i, row in enumerate(accepted.itertuples()):
        if in_order[i]:
            newest_row = row
        if feed == "incident":  # the latest report speaks for the incident
            per_row[i] = [incident(newest_row.values, newest_row.attrs, rules["incident"])]
        elif feed == "cap":  # the latest message's level, both ways at once
            per_row[i] = [Candidate("cap_warning", int(newest_row.values["level"]), "预警",
                                    newest_row.values["level"], {})]
        out.append(Evaluation(row, bool(in_order[i]), float(w.end[i]), per_row[i]))
    return out, too_late


# -- the whole input: levels in force, hold, silence ------------------------------------------

@dataclasses.dataclass
class _SourceState:
    levels: dict[str, int] = dataclasses.field(default_factory=dict)
    below_since: dict[str, float | None] = dataclasses.field(default_factory=dict)
    accelerating: dict[str, str] = dataclasses.field(default_factory=dict)
    newest: float | None = None
    latest: Any = None


def hazards(readings: pd.DataFrame, data: OracleData) -> tuple[list[HazardRecord], list[int]]:
    """Every hazard state change of the recorded input, feed by feed in topic order, and the
    readings rejected as too late (by position in ``readings``)."""
    rules = data.rules
    hold = float(rules["pipeline"]["downgrade_hold_s"])
    factor = float(rules["pipeline"]["silence_factor"])
    records: list[HazardRecord] = []
    rejected: list[int] = []
    for feed, feed_rows in readings.groupby("feed", sort=False):
        evaluations: dict[int, Evaluation] = {}
        for _, rows in feed_rows.sort_values("arrival").groupby("source_id", sort=False):
            evals, too_late = evaluate_source(rows, data)
            evaluations.update({int(e.row.arrival): e for e in evals})
            rejected.extend(too_late)
        registry = data.registry(str(feed))
        states: dict[str, _SourceState] = {}
        watermark = -np.inf
        for arrival in sorted(evaluations):
            e = evaluations[arrival]
            source = str(e.row.source_id)
            st = states.setdefault(source, _SourceState())
            if e.in_order:
                st.newest, st.latest = e.newest, e.row
            for cand in e.candidates:
                records.extend(_settle(cand, st, e, hold=hold, feed=str(feed),
                                       registry=registry, rules=rules))
            watermark = max(watermark, e.newest)
        if registry is not None:
            records.extend(_silences(states, registry, watermark, factor))
    return records, rejected


def silence_windows(readings: pd.DataFrame, data: OracleData,
                    ) -> dict[str, list[tuple[float, float]]]:
    """When each registered source *could* be judged silent, as (newest reading, next
    reading) event-time pairs: the feed's stream time (the newest event time read so far in
    its topic) passed ``newest + silence_factor × interval`` before the source's next reading
    arrived. The streaming code judges silence on a wall-clock timer, so which of these it
    catches depends on batch timing; a silence outside every window is wrong."""
    factor = float(data.rules["pipeline"]["silence_factor"])
    out: dict[str, list[tuple[float, float]]] = {}
    for feed, rows in readings.groupby("feed", sort=False):
        registry = data.registry(str(feed))
        if registry is None:
            continue
        ordered = rows.sort_values("arrival")
        stream_time = np.maximum.accumulate(ordered["t"].to_numpy(dtype=np.float64))
        for source, mine in ordered.groupby("source_id", sort=False):
            limit = factor * float(registry.loc[str(source), "expected_interval_s"])
            positions = ordered.index.get_indexer(mine.index)
            newest = np.maximum.accumulate(mine["t"].to_numpy(dtype=np.float64))
            for k in range(len(positions)):
                until = positions[k + 1] if k + 1 < len(positions) else len(ordered)
                if stream_time[until - 1] - newest[k] > limit:
                    nxt = float(newest[k + 1]) if k + 1 < len(positions) else np.inf
                    out.setdefault(f"sensor_silent:{source}", []).append(
                        (float(newest[k]), nxt))
    return out


def _settle(cand: Candidate, st: _SourceState, e: Evaluation, *, hold: float, feed: str,
            registry: pd.DataFrame | None, rules: dict[str, Any]) -> Iterator[HazardRecord]:
    """Apply the hold (up at once, down after ``hold`` seconds below) and yield a record
    when the level in force changes or a slope starts to accelerate."""
    kind = cand.hazard_type
    current = st.levels.get(kind, NONE)
    if kind == "water_level":
        assert registry is not None
        cand = water_level(cand.key_value or 0.0, cand.trend["rate_per_h"],
                           registry.loc[str(e.row.source_id)], rules["water_level"], current)
    t = e.newest
    below = st.below_since.get(kind)
    if cand.level >= current or feed in IMMEDIATE or hold <= 0:
        level, below = cand.level, None
    elif below is None:
        level, below = current, t
    elif t - below >= hold:
        level, below = cand.level, None
    else:
        level = current
    st.below_since[kind] = below
    flag = str(cand.trend.get("accelerating", ""))
    news = flag == "yes" and st.accelerating.get(kind) != "yes" and level > NONE
    st.accelerating[kind] = flag
    if level == current and not news:
        return
    st.levels[kind] = level
    yield _record(f"{kind}:{e.row.source_id}", kind, e.row, level=level, previous=current,
                  observed_at=st.latest.observed_at, figure=cand.key_figure,
                  value=cand.key_value, shape=cand.trend)


def _silences(states: dict[str, _SourceState], registry: pd.DataFrame, watermark: float,
              factor: float) -> Iterator[HazardRecord]:
    """Sources of a feed silent at the end of the input, by the feed's final stream time
    (docs/rules.md): orange when a level of theirs stood at orange or red, else yellow.

    Only the end is judged: mid-stream the documented rule depends on when it is applied
    (the worker checks on a wall-clock timer), see :func:`silence_windows`."""
    for source, st in states.items():
        if st.newest is None:
            continue
        if watermark - st.newest > factor * float(registry.loc[source, "expected_interval_s"]):
            worst = max(st.levels.values(), default=NONE)
            row = st.latest
            yield _record(f"sensor_silent:{source}", "sensor_silent", row,
                          level=ORANGE if worst >= ORANGE else YELLOW, previous=NONE,
                          observed_at=row.observed_at, figure="最后报送", value=None, shape={})


def _record(hazard_id: str, kind: str, row: Any, *, level: int, previous: int,
            observed_at: datetime, figure: str, value: float | None,
            shape: dict[str, Any]) -> HazardRecord:
    return HazardRecord(hazard_id=hazard_id, hazard_type=kind, feed=str(row.feed),
                        source_id=str(row.source_id), level=level, previous_level=previous,
                        observed_at=observed_at, place=row.place, lon=float(row.lon),
                        lat=float(row.lat), exercise=bool(row.exercise), key_figure=figure,
                        key_value=value, trend=dict(shape))
