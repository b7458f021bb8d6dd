"""Hazard records -> alert transitions, urgency scores and the top K, from docs/ranking.md.

The lifecycle: each hazard has one alert: new -> escalated / de-escalated / updated (news at
the same level) -> resolved, one ``seq`` per transition; the same level never alerts twice.

The score of an alert is ``urgency(hazard, context, model, now = hazard.observed_at)`` with
the model of ``rules/default/urgency.yaml`` and this context, looked up when the alert is
made (records in the order the lifecycle stage reads them):

* ``population``: residents of the hazard's village (of its finest unit when it is placed
  only on a town, district or the city);
* ``sites``: vulnerable sites within the model's radius for the hazard's kind (geodesic
  distance on WGS84, inclusive), counted per kind;
* ``colocated``: the other hazards whose alert is open, of the same status (actual or
  exercise), in the same *rank area*: the district code, or for a hazard placed on no
  district the coarser code it has (so a city-wide warning is co-located only with other
  city-wide ones).

The top K at an instant: the open alerts as of that event time (each hazard's latest alert
among those whose hazard reading is not later than the instant), ordered by score
descending, level descending, first seen ascending, hazard id ascending.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from pyproj import Geod

from tests.oracle.data import COLOURS, MAP_LEVELS, OracleData, level_of
from tests.oracle.hazards import NONE, RED, HazardRecord
from tests.oracle.inputs import Place

PARTS = ("level", "exposure_population", "exposure_sites", "trend", "compound", "freshness",
         "confidence")
SCOPES = {name: i for i, name in enumerate(MAP_LEVELS)}
GEOD = Geod(ellps="WGS84")


@dataclasses.dataclass(frozen=True)
class AlertRecord:
    alert_id: str
    hazard_id: str
    seq: int
    transition: str
    level: int
    previous_level: int
    hazard: HazardRecord
    score: float
    breakdown: dict[str, float]


def same_area(a: Place, b: Place, scope: str) -> bool:
    """Codes equal at ``scope``, or at the finer of the two places' finest levels when one is
    placed only on a coarser unit (docs/ranking.md, compound pairs)."""
    depth = min(SCOPES[scope], _finest(a), _finest(b))
    return depth >= 0 and a[depth] == b[depth]


def _finest(place: Place) -> int:
    levels = [i for i, code in enumerate(place) if code]
    return max(levels) if levels else -1


class Scorer:
    """The urgency model of docs/ranking.md, written from the formula."""

    def __init__(self, data: OracleData,
                 population: Callable[[Place], int] | None = None,
                 sites: Callable[[HazardRecord, float], dict[str, int]] | None = None) -> None:
        """``population`` and ``sites`` replace the fixture lookups (for hand-made tests)."""
        self.data = data
        self._population = population or data.population
        self._sites_of = sites
        self.model: dict[str, Any] = data.rules["urgency"]
        registry = data.sites
        self._site_lon = registry["lon"].to_numpy(dtype=np.float64)
        self._site_lat = registry["lat"].to_numpy(dtype=np.float64)
        self._site_kind = registry["kind"].to_numpy()
        self._near: dict[tuple[float, float, float], dict[str, int]] = {}

    def kind(self, h: HazardRecord) -> str:
        for sub in self.model.get("kinds", []):
            if sub["hazard_type"] == h.hazard_type and sub["key_figure"] == h.key_figure:
                return str(sub["kind"])
        return h.hazard_type

    def sites(self, h: HazardRecord) -> dict[str, int]:
        radii = self.model["sites"]["radius_m"]
        radius = float(radii.get(self.kind(h), radii.get("default", 0.0)))
        if self._sites_of is not None:
            return self._sites_of(h, radius)
        key = (h.lon, h.lat, radius)
        if key not in self._near:
            n = self._site_lon.size
            _, _, dist = GEOD.inv(np.full(n, h.lon), np.full(n, h.lat),
                                  self._site_lon, self._site_lat)
            kinds, counts = np.unique(self._site_kind[np.asarray(dist) <= radius],
                                      return_counts=True)
            self._near[key] = {str(k): int(c) for k, c in zip(kinds, counts, strict=True)}
        return self._near[key]

    def _matches(self, h: HazardRecord, side: dict[str, Any]) -> bool:
        return (self.kind(h) in side["kinds"] and h.level >= level_of(side.get("min_level",
                                                                                 "blue"))
                and (not side.get("accelerating", False)
                     or h.trend.get("accelerating") == "yes"))

    def score(self, h: HazardRecord, colocated: Sequence[HazardRecord], now: datetime,
              ) -> tuple[float, dict[str, float]]:
        if h.level <= NONE:
            return 0.0, dict.fromkeys(PARTS, 0.0)
        m = self.model
        level = float(m["level_points"][COLOURS[h.level - 1]])
        people = self._population(h.place)
        pop = m["population"]
        exposure = 0.0 if people <= 0 else min(
            pop["cap"], pop["points_per_decade"] * math.log10(1 + people / pop["reference_people"]))
        weights = m["sites"]["weights"]
        sites = min(m["sites"]["cap"], sum(weights.get(kind, 0.0) * count
                                           for kind, count in self.sites(h).items()))
        t = m["trend"]
        direction = h.trend.get("direction", "steady")
        trend = float({"rising": t["rising"], "falling": t["falling"]}.get(
            direction, t.get("steady", 0.0)))
        hours = h.trend.get("hours_to_next_level")
        if isinstance(hours, int | float) and math.isfinite(hours) and hours >= 0 \
                and h.level < RED:
            trend += t["soon_points"] * max(0.0, 1 - hours / t["soon_horizon_h"])
        others = [o for o in colocated if o.hazard_id != h.hazard_id and o.level > NONE
                  and o.exercise == h.exercise]
        bonus = 0.0
        for pair in m["compound"]["pairs"]:
            if any((self._matches(h, mine) and self._matches(o, theirs)
                    and same_area(h.place, o.place, pair["scope"]))
                   for mine, theirs in ((pair["a"], pair["b"]), (pair["b"], pair["a"]))
                   for o in others):
                bonus += pair["bonus"]
        compound = min(m["compound"]["cap"], bonus)
        base = level + exposure + sites + trend + compound
        f = m["freshness"]
        age = (now - h.observed_at).total_seconds()
        fresh = f["floor"] + (1 - f["floor"]) * 0.5 ** (max(0.0, age - f["grace_s"])
                                                         / f["half_life_s"])
        c = m["confidence"]
        feeds = {o.feed for o in others if o.feed != h.feed and o.hazard_type != "sensor_silent"
                 and o.level >= level_of(c.get("min_level", "blue"))
                 and same_area(h.place, o.place, c.get("scope", "town"))}
        silent = h.hazard_type != "sensor_silent" and any(
            o.hazard_type == "sensor_silent" and o.source_id == h.source_id for o in others)
        conf = max(c["floor"], 1 + min(c["max_bonus"], c["per_corroborating_feed"] * len(feeds))
                   - (c["silent_penalty"] if silent else 0.0))
        parts = {"level": level, "exposure_population": exposure, "exposure_sites": sites,
                 "trend": trend, "compound": compound, "freshness": base * (fresh - 1),
                 "confidence": base * fresh * (conf - 1)}
        return round(base * fresh * conf, 3), {k: round(v, 3) + 0.0 for k, v in parts.items()}


def rank_area(place: Place) -> str:
    """The district code; for a hazard placed on no district, the coarser code it has."""
    return place[1] or place[0] or "out-of-area"


def colocated_with(h: HazardRecord, open_hazards: Iterable[HazardRecord]) -> list[HazardRecord]:
    """Open hazards of the same status and the same rank area (:func:`rank_area`)."""
    area = rank_area(h.place)
    return [o for o in open_hazards if o.hazard_id != h.hazard_id and o.exercise == h.exercise
            and rank_area(o.place) == area]


def lifecycle(records: Iterable[HazardRecord], data: OracleData,
              scorer: Scorer | None = None) -> list[AlertRecord]:
    """Alert transitions for hazard records in the order the lifecycle stage reads them."""
    scorer = scorer or Scorer(data)
    state: dict[str, dict[str, Any]] = {}
    open_now: dict[str, HazardRecord] = {}
    alerts: list[AlertRecord] = []
    for h in records:
        before = state.get(h.hazard_id, {})
        open_level: int | None = before["level"] if before.get("open") else None
        fresh = "observed_at" not in before or h.observed_at > before["observed_at"]
        if open_level is None:
            step = "new" if h.level > NONE else None
        elif h.level == NONE:
            step = "resolved"
        elif h.level > open_level:
            step = "escalated"
        elif h.level < open_level:
            step = "de-escalated"
        else:
            step = "updated" if h.level == h.previous_level and fresh else None
        if step is None:
            continue
        seq = int(before.get("seq", 0)) + 1
        score, parts = scorer.score(h, colocated_with(h, open_now.values()), h.observed_at)
        state[h.hazard_id] = {"seq": seq, "level": h.level, "open": step != "resolved",
                              "observed_at": h.observed_at}
        if step == "resolved":
            open_now.pop(h.hazard_id, None)
        else:
            open_now[h.hazard_id] = h
        alerts.append(AlertRecord(f"{h.hazard_id}#{seq}", h.hazard_id, seq, step, h.level,
                                  open_level if open_level is not None else NONE, h, score,
                                  parts))
    return alerts


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    """What the top K needs of one alert, from either side."""

    hazard_id: str
    transition: str
    level: int
    score: float
    observed_at: datetime
    place: Place
    exercise: bool


def entries(alerts: Iterable[AlertRecord]) -> list[LedgerEntry]:
    return [LedgerEntry(a.hazard_id, a.transition, a.level, a.score, a.hazard.observed_at,
                        a.hazard.place, a.hazard.exercise) for a in alerts]


def top_k(ledger: Sequence[LedgerEntry], at: datetime, k: int, area: str = "*",
          exercise: bool = False) -> list[tuple[str, str, float]]:
    """(hazard id, level, score) of the k most urgent open alerts in ``area`` ('*': all) as
    of event time ``at``."""
    latest: dict[str, LedgerEntry] = {}
    first_seen: dict[str, datetime] = {}
    for e in ledger:
        if e.observed_at > at or e.exercise != exercise:
            continue
        latest[e.hazard_id] = e
        if e.transition == "new":
            first_seen[e.hazard_id] = e.observed_at
    live = [e for e in latest.values() if e.transition != "resolved"
            and (area == "*" or area in e.place)]
    live.sort(key=lambda e: (-e.score, -e.level, first_seen[e.hazard_id].timestamp(),
                             e.hazard_id))
    return [(e.hazard_id, COLOURS[e.level - 1], e.score) for e in live[:k]]


def live_levels(records: Iterable[HazardRecord], at: datetime) -> dict[str, str]:
    """Each live hazard's level as of event time ``at`` (records in their own order)."""
    last: dict[str, int] = {}
    for h in records:
        if h.observed_at <= at:
            last[h.hazard_id] = h.level
    return {i: COLOURS[level - 1] for i, level in sorted(last.items()) if level > NONE}
