"""Stage 2: observations -> hazard state changes, with per-source state.

For each observation the stage (1) places it in event time against what the source already
reported (in order, late within the allowed lateness, duplicate, or too late), (2) adds its
values to the source's event-time series, (3) asks the feed's evaluator for the level each
hazard type deserves as of the source's newest reading, (4) holds a falling level until the
readings stayed below it long enough, and (5) emits a hazard record when a level changes.

``state`` is any mutable mapping from source key to a JSON-able dict; in the worker it is a
faust table (changelogged, so it survives restarts), in tests a plain dict.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from collections.abc import Callable, MutableMapping, Sequence
from datetime import datetime
from typing import Any

from onemap.levels import WarningLevel
from onemap.records import Hazard, KeyFigure, Observation
from onemap.registries import Registries
from onemap.rules.candidate import Candidate
from onemap.rules.geohazard import geohazard_level
from onemap.rules.incident import CATEGORY_CHINESE, incident_level
from onemap.rules.rulebook import RuleBook
from onemap.rules.water_level import water_candidate
from onemap.rules.weather import rainstorm_level, wind_level
from onemap.rules.windows import Arrival, Series, classify, insert


class Decision(enum.Enum):
    """What the rules made of one observation (a metric label)."""

    LEVEL_CHANGED = "level-changed"
    UNCHANGED = "unchanged"
    LATE_APPLIED = "late-applied"
    DUPLICATE = "duplicate"
    TOO_LATE = "too-late"
    NO_RULE = "no-rule"


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """An observation the rules refuse (it goes to the dead letter with this reason)."""

    observation: Observation
    reason: str
    detail: str


@dataclasses.dataclass
class RulesResult:
    hazards: list[Hazard] = dataclasses.field(default_factory=list)
    rejected: list[Rejected] = dataclasses.field(default_factory=list)
    decisions: dict[Decision, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(Decision, 0))


#: Which measured values become event-time series, and whether they are increments (summed
#: over windows, e.g. rain) or levels (sampled, e.g. water level, cumulative displacement).
SERIES: dict[str, dict[str, str]] = {
    "water": {"level_m": "level"},
    "weather": {"rain_mm": "rain"},
    "geohazard": {"displacement_mm": "displacement", "rain_mm": "rain"},
    "incident": {},
    "cap": {},
}


def state_key(obs: Observation) -> str:
    return f"{obs.feed}:{obs.source_id}"


def settle(candidate: WarningLevel, current: WarningLevel, below_since: float | None, t: float,
           hold_s: float) -> tuple[WarningLevel, float | None]:
    """Hysteresis in time: a level goes up at once, down only after ``hold_s`` below.

    Returns the level in force and since when the readings have been below it (or None).

    >>> R, Y = WarningLevel.RED, WarningLevel.YELLOW
    >>> settle(Y, R, None, 0.0, 600)        # first reading below: hold red, start the clock
    (<WarningLevel.RED: 4>, 0.0)
    >>> settle(Y, R, 0.0, 599.0, 600)
    (<WarningLevel.RED: 4>, 0.0)
    >>> settle(Y, R, 0.0, 600.0, 600)
    (<WarningLevel.YELLOW: 2>, None)
    >>> settle(R, Y, 100.0, 200.0, 600)     # up at once
    (<WarningLevel.RED: 4>, None)
    """
    if candidate >= current or hold_s <= 0:
        return candidate, None
    if below_since is None:
        return current, t
    if t - below_since >= hold_s:
        return candidate, None
    return current, below_since


Evaluator = Callable[[dict[str, Any], Any, RuleBook, dict[str, WarningLevel]], list[Candidate]]


def _series(st: dict[str, Any], name: str) -> Series:
    series: Series = st["series"].get(name, [])
    return series


def _water(st: dict[str, Any], source: Any, book: RuleBook,
           current: dict[str, WarningLevel]) -> list[Candidate]:
    levels = _series(st, "level")
    if not levels:
        return []
    return [water_candidate(levels, st["newest"], source, book.water_level,
                            current.get("water_level", WarningLevel.NONE))]


def _weather(st: dict[str, Any], source: Any, book: RuleBook,
             current: dict[str, WarningLevel]) -> list[Candidate]:
    out: list[Candidate] = []
    if "rain" in st["series"]:
        out.append(rainstorm_level(_series(st, "rain"), st["newest"], book.rainstorm))
    latest = st["latest"]["values"]
    if "wind_speed_ms" in latest or "wind_gust_ms" in latest:
        out.append(wind_level(latest.get("wind_speed_ms"), latest.get("wind_gust_ms"),
                              book.wind))
    return out


def _geohazard(st: dict[str, Any], source: Any, book: RuleBook,
               current: dict[str, WarningLevel]) -> list[Candidate]:
    return [geohazard_level(_series(st, "displacement"), _series(st, "rain"), st["newest"],
                            source, book.geohazard)]


def _incident(st: dict[str, Any], source: Any, book: RuleBook,
              current: dict[str, WarningLevel]) -> list[Candidate]:
    latest = st["latest"]
    return [incident_level(latest["values"], latest["attrs"], book.incident)]


def _cap(st: dict[str, Any], source: Any, book: RuleBook,
         current: dict[str, WarningLevel]) -> list[Candidate]:
    """A warning from another authority: its level is the message's (a Cancel ends it)."""
    latest = st["latest"]
    attrs = latest["attrs"]
    level = WarningLevel(int(latest["values"].get("level", 0)))
    figure = KeyFigure("预警", float(level), "级", attrs.get("severity", ""), None)
    verb = "解除" if attrs.get("msg_type") == "Cancel" else "发布"
    reason = f"{attrs.get('sender_name', '')}{verb}：{attrs.get('headline', '')}"
    return [Candidate("cap_warning", level, figure, reason, "cap")]


EVALUATORS: dict[str, Evaluator] = {
    "water": _water, "weather": _weather, "geohazard": _geohazard, "incident": _incident,
    "cap": _cap}

#: Incident reports and official warnings take effect both ways at once; sensor levels are
#: held on the way down.
IMMEDIATE = {"incident", "cap"}


class RulesStage:
    stage = "rules"

    def __init__(self, registries: Registries) -> None:
        self.registries = registries

    def _source(self, obs: Observation) -> tuple[Any, str] | None:
        """The registry entry and display name of the observation's source."""
        if obs.feed == "water":
            water = self.registries.water.get(obs.source_id)
            return (water, water.name) if water else None
        if obs.feed == "weather":
            station = self.registries.weather.get(obs.source_id)
            return (station, station.name) if station else None
        if obs.feed == "geohazard":
            point = self.registries.hazard_points.get(obs.source_id)
            return (point, point.name) if point else None
        if obs.feed == "incident":
            category = CATEGORY_CHINESE.get(obs.attrs.get("category", ""), "突发事件")
            return None, f"{category}（{obs.attrs.get('channel', '')}警情）"
        if obs.feed == "cap":
            return None, obs.attrs.get("event", "预警信息")
        return None

    def process(
        self, observations: Sequence[Observation], state: MutableMapping[str, Any],
        rules: RuleBook,
    ) -> RulesResult:
        result = RulesResult()
        for obs in sorted(observations, key=lambda o: o.observed_at):
            decision = self.evaluate(obs, state, rules, result)
            result.decisions[decision] += 1
        return result

    def evaluate(self, obs: Observation, state: MutableMapping[str, Any], rules: RuleBook,
                 result: RulesResult) -> Decision:
        evaluator = EVALUATORS.get(obs.feed)
        source = self._source(obs)
        if evaluator is None or source is None:
            return Decision.NO_RULE
        entry, source_name = source
        key = state_key(obs)
        st = copy.deepcopy(state.get(key)) or {
            "newest": None, "seen": [], "series": {}, "latest": None, "levels": {},
            "below_since": {}, "accum": None}
        t = obs.observed_at.timestamp()
        lateness = rules.pipeline.lateness_s
        arrival = classify(st["seen"], t, st["newest"], lateness)
        if arrival == Arrival.DUPLICATE:
            return Decision.DUPLICATE
        if arrival == Arrival.TOO_LATE:
            result.rejected.append(Rejected(
                obs, "too-late", f"event time {obs.observed_at.isoformat()} is more than "
                f"{lateness:.0f} s older than this source's newest reading"))
            return Decision.TOO_LATE
        values = dict(obs.values)
        if "rain_accum_mm" in values:
            if arrival == Arrival.LATE:
                result.rejected.append(Rejected(
                    obs, "too-late", "a late accumulated-rainfall reading cannot be turned "
                    "into an increment; send increments (rain_mm) to backfill"))
                return Decision.TOO_LATE
            values["rain_mm"] = _increment_from_accumulation(st, values.pop("rain_accum_mm"),
                                                             obs.attrs.get("accum_since", ""), t)
        for name, series_name in SERIES[obs.feed].items():
            if name in values:
                st["series"][series_name] = insert(_series(st, series_name), t, values[name],
                                                   rules.history_s)
        st["seen"] = insert(st["seen"], t, 0.0, lateness)
        if arrival == Arrival.IN_ORDER:
            st["newest"] = t
            st["latest"] = {"values": obs.values, "attrs": obs.attrs,
                            "observed_at": obs.observed_at.isoformat()}
        as_of = datetime.fromisoformat(st["latest"]["observed_at"])
        current = {k: WarningLevel(v) for k, v in st["levels"].items()}
        changed = False
        for cand in evaluator(st, entry, rules, current):
            now_level = current.get(cand.hazard_type, WarningLevel.NONE)
            hold = 0.0 if obs.feed in IMMEDIATE else rules.pipeline.downgrade_hold_s
            level, below = settle(cand.level, now_level,
                                  st["below_since"].get(cand.hazard_type), st["newest"], hold)
            st["below_since"][cand.hazard_type] = below
            if level == now_level:
                continue
            st["levels"][cand.hazard_type] = int(level)
            changed = True
            result.hazards.append(Hazard(
                hazard_id=f"{cand.hazard_type}:{obs.source_id}", hazard_type=cand.hazard_type,
                feed=obs.feed, source_id=obs.source_id, source_name=source_name, level=level,
                previous_level=now_level, place=obs.place, lon=obs.lon, lat=obs.lat,
                observed_at=as_of, key_figure=cand.key_figure, reason=cand.reason,
                rule_id=cand.rule_id, rule_version=rules.rule_version(cand.rule_id),
                exercise=obs.exercise, trend=cand.trend,
            ))
        state[key] = st
        if changed:
            return Decision.LEVEL_CHANGED
        return Decision.LATE_APPLIED if arrival == Arrival.LATE else Decision.UNCHANGED


def _increment_from_accumulation(st: dict[str, Any], accum: float, since: str,
                                 t: float) -> float:
    """Rain since the previous report, from an accumulation that resets at ``since``."""
    previous = st.get("accum")
    st["accum"] = {"since": since, "value": accum, "t": t}
    if previous is None or previous["since"] != since or accum < previous["value"]:
        return accum  # a new accumulation period (or a reset): all of it is new rain
    return round(accum - float(previous["value"]), 3)
