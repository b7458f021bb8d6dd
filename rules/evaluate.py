"""Stage 2: observations -> hazard state changes, with per-source state.

For each observation the stage (1) places it in event time against what the source already
reported (in order, late within the allowed lateness, duplicate, or too late), (2) adds its
values to the source's event-time series, (3) asks the feed's proposer for the level each
hazard type deserves as of the source's newest reading, (4) holds a falling level until the
readings stayed below it long enough, and (5) emits a hazard record when a level changes,
with the key figure and reason of the feed's evaluator (built only then: most readings
change nothing, and explaining them was half of the stage's time).

``state`` is any mutable mapping from source key to a JSON-able dict; in the worker it is a
faust table (changelogged, so it survives restarts), in tests a plain dict.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from onemap.levels import WarningLevel
from onemap.memo import per_object
from onemap.records import Hazard, KeyFigure, Observation, Place, place_dict
from onemap.registries import Registries
from onemap.rules.candidate import Candidate
from onemap.rules.geohazard import geohazard_level
from onemap.rules.incident import CATEGORY_CHINESE, incident_level
from onemap.rules.rulebook import Limits, RuleBook
from onemap.rules.water_level import water_candidate, water_level_reached
from onemap.rules.weather import rainstorm_level, rainstorm_reached, wind_level, wind_reached
from onemap.rules.windows import (
    DUPLICATE,
    IN_ORDER,
    LATE,
    TOO_LATE,
    Arrival,
    Owned,
    Series,
    carry_bound,
    classify,
    insert,
    window_bound,
    window_max,
)


class Decision(enum.Enum):
    """What the rules made of one observation (a metric label)."""

    LEVEL_CHANGED = "level-changed"
    UNCHANGED = "unchanged"
    LATE_APPLIED = "late-applied"
    DUPLICATE = "duplicate"
    TOO_LATE = "too-late"
    NO_RULE = "no-rule"

    # Members are singletons compared by identity, so identity is a valid hash; Enum's own
    # hashes the name in Python, and every reading counts its decision in a dict.
    __hash__ = object.__hash__


#: Members read at every reading, bound once (as windows.IN_ORDER and the others: reading
#: a member off an Enum class costs ten times a module global in Python 3.11).
UNCHANGED, LATE_APPLIED = Decision.UNCHANGED, Decision.LATE_APPLIED
NO_LEVEL = WarningLevel.NONE


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
    "weather": {"rain_mm": "rain", "wind_speed_ms": "wind_mean", "wind_gust_ms": "wind_gust"},
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


#: the series of a value a source never reported: shared, never changed (the rules only
#: read the series they are given)
_EMPTY: Series = []


def _series(st: dict[str, Any], name: str) -> Series:
    series: Series = st["series"].get(name, _EMPTY)
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
    if "wind_mean" in st["series"] or "wind_gust" in st["series"]:
        window = book.wind.window_min * 60
        out.append(wind_level(window_max(_series(st, "wind_mean"), st["newest"], window),
                              window_max(_series(st, "wind_gust"), st["newest"], window),
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
    reason = attrs.get("headline") or attrs.get("event", "")
    return [Candidate("cap_warning", level, figure, reason, "cap")]


EVALUATORS: dict[str, Evaluator] = {
    "water": _water, "weather": _weather, "geohazard": _geohazard, "incident": _incident,
    "cap": _cap}

#: Incident reports and official warnings take effect both ways at once; sensor levels are
#: held on the way down.
IMMEDIATE = {"incident", "cap"}


#: The level one hazard type of a source deserves now, before the hold on the way down, and
#: its "accelerating" flag ("yes"/"no"; "" where the rule has none): (hazard type, level,
#: flag), all that decides whether a hazard is emitted (a plain tuple: one is made per
#: hazard type and reading). The candidate with its key figure, reason and trend (the feed's
#: :data:`EVALUATORS`, the same level by construction) is built only for a hazard that is
#: emitted: for every other reading it was half of the stage's time
#: (benchmarks/results/stages-ablation.md).
Proposal = tuple[str, WarningLevel, str]
#: (partition, feed) -> stream time, epoch seconds (RulesStage.watermarks)
Watermarks = dict[tuple[int, str], float]


#: A feed's proposals from (state, registry entry, rules, levels in force, carried): the last
#: is what the stage carries in memory from the source's previous reading (e.g. a bound of
#: its rain sum, windows.window_bound), which a proposer may read and update.
Proposer = Callable[[dict[str, Any], Any, RuleBook, dict[str, WarningLevel], dict[str, Any]],
                    list[Proposal]]


def _propose_water(st: dict[str, Any], source: Any, book: RuleBook,
                   current: dict[str, WarningLevel], carried: dict[str, Any]) -> list[Proposal]:
    levels = _series(st, "level")
    if not levels:
        return []
    level = water_level_reached(levels, source, book.water_level,
                                current.get("water_level", NO_LEVEL))
    return [("water_level", level, "")]


def _propose_weather(st: dict[str, Any], source: Any, book: RuleBook,
                     current: dict[str, WarningLevel], carried: dict[str, Any]
                     ) -> list[Proposal]:
    out: list[Proposal] = []
    series = st["series"]
    newest = st["newest"]
    limits = book.limits
    if "rain" in series:
        rain = series["rain"]
        seconds = limits.rain_window_s
        at_most = carry_bound(carried.get("rain_bound"), rain, newest, seconds)
        if at_most is not None and at_most < limits.rain_floor_mm:
            # rainstorm_reached's own first test, without reading the rule model
            level, at_least = NO_LEVEL, at_most
        else:
            level, at_least = rainstorm_reached(rain, newest, book.rainstorm, at_most)
        carried["rain_bound"] = window_bound(rain, newest, seconds, at_least)
        out.append(("rainstorm", level, ""))
    if "wind_mean" in series or "wind_gust" in series:
        window = limits.wind_window_s
        mean_floor, gust_floor = limits.wind_mean_floor_ms, limits.wind_gust_floor_ms
        mean = _bounded_max(carried, "wind_mean_bound", _series(st, "wind_mean"), newest,
                            window, floor=mean_floor)
        gust = _bounded_max(carried, "wind_gust_bound", _series(st, "wind_gust"), newest,
                            window, floor=gust_floor)
        level = NO_LEVEL if mean < mean_floor and gust < gust_floor \
            else wind_reached(mean, gust, book.wind)
        out.append(("wind", level, ""))
    return out


def _bounded_max(carried: dict[str, Any], name: str, series: Series, end: float,
                 seconds: float, *, floor: float) -> float:
    """The window's largest value (0 if it has none: winds are never negative, the feeds
    reject them), or, when that is known to be below ``floor``, a bound of it carried from
    the source's previous reading (``carried[name]``, windows.carry_bound), which decides
    the same: most readings are calm and then the two window scans per reading are
    skipped."""
    bound = carry_bound(carried.get(name), series, end, seconds, max)
    if bound is None or bound >= floor:
        bound = window_max(series, end, seconds) or 0.0
    carried[name] = window_bound(series, end, seconds, bound)
    return bound


def _proposing(evaluator: Evaluator) -> Proposer:
    """Proposals read off the full candidates, for the feeds whose levels need most of the
    candidate's work anyway (geohazard rates) or that are rare (incidents, CAP)."""
    def propose(st: dict[str, Any], source: Any, book: RuleBook,
                current: dict[str, WarningLevel], carried: dict[str, Any]) -> list[Proposal]:
        return [(c.hazard_type, c.level, str(c.trend.get("accelerating", "")))
                for c in evaluator(st, source, book, current)]
    return propose


PROPOSERS: dict[str, Proposer] = {
    "water": _propose_water, "weather": _propose_weather,
    "geohazard": _proposing(_geohazard), "incident": _proposing(_incident),
    "cap": _proposing(_cap)}
#: a stored level (an int in the state) as a WarningLevel, without the enum's call
_LEVEL_OF = {int(level): level for level in WarningLevel}


@dataclasses.dataclass
class Copies:
    """What a batch of the rules stage copied from the state it was given, by id (the
    objects are held, so an id is not reused meanwhile), and may change in place: series
    lists (windows.insert's ``owned``) and source states. Copying a source's day of
    readings at every reading was the stage's largest cost; copying once per batch, or once
    for as long as the rules loop keeps its state (streams/rules_loop.py: a copy per
    source, kept across commits until a rebalance), is what this buys."""

    series: Owned = dataclasses.field(default_factory=dict)
    states: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)


class Source(NamedTuple):
    """What the stage needs of an observation's source: its registry entry (None for
    incidents and CAP warnings), display name and expected reporting interval (None: no
    expectation)."""

    entry: Any
    name: str
    interval_s: float | None


@per_object(maxsize=100_000)
def _registered(entry: Any) -> Source:
    """A registry entry's facts, read once per entry (the entries do not change, a reload
    makes new ones), so that a reading costs one lookup instead of a new Source."""
    return Source(entry, str(entry.name), float(entry.expected_interval_s))


class RulesStage:
    stage = "rules"

    def __init__(self, registries: Registries) -> None:
        self.registries = registries
        #: sources this worker has reported silent (in memory: after a restart a silence is
        #: reported again, and the lifecycle's dedup keeps that from alerting twice)
        self.silenced: dict[str, WarningLevel] = {}
        #: per source, what proposers carry from one reading to the next in memory (see
        #: Proposer); each carried value checks that it still fits the state it is used with
        #: (windows.carry_bound), so a restart, a rebalance or a failed batch only costs a
        #: sum. A carried rain bound holds two points of the state's rain series: no
        #: memory beyond the state's while the state is current.
        self.carried: dict[str, dict[str, Any]] = {}
        #: the copies the batch in progress may change in place; None outside :meth:`process`
        self.copies: Copies | None = None

    def _entry(self, feed: str, source_id: str) -> Any:
        """The registry entry of a registered source (None for incidents, CAP, unknowns)."""
        return (self.registries.for_feed(feed) or {}).get(source_id)

    def expected_interval_s(self, feed: str, source_id: str) -> float | None:
        """How often a registered source should report (None: no expectation, e.g. incidents)."""
        entry = self._entry(feed, source_id)
        return float(entry.expected_interval_s) if entry is not None else None

    def _silent(self, feed: str, source_id: str, gap_s: float, rules: RuleBook) -> bool:
        return _gap_silent(self.expected_interval_s(feed, source_id), gap_s,
                           rules.limits.silence_factor)

    def _silence_hazard(self, key: str, st: dict[str, Any], *, level: WarningLevel,
                        previous: WarningLevel, rules: RuleBook, reason: str) -> Hazard:
        feed, source_id = key.split(":", 1)
        latest = st["latest"]
        source = self._source_name(feed, source_id)
        return Hazard(
            hazard_id=f"sensor_silent:{source_id}", hazard_type="sensor_silent", feed=feed,
            source_id=source_id, source_name=source, level=level, previous_level=previous,
            place=Place.from_dict(latest["place"]), lon=latest["lon"], lat=latest["lat"],
            observed_at=datetime.fromisoformat(latest["observed_at"]),
            key_figure=KeyFigure("最后报送", 0.0, "", "", None), reason=reason,
            rule_id="pipeline", rule_version=rules.rule_version("pipeline"),
            exercise=bool(latest.get("exercise", False)))

    def _source_name(self, feed: str, source_id: str) -> str:
        entry = self._entry(feed, source_id)
        return str(entry.name) if entry is not None else source_id

    @staticmethod
    def watermarks(entries: Iterable[tuple[str, Any]]) -> Watermarks:
        """Stream time per partition and feed: the newest event time any source of the feed
        in the partition reported. Partitions are consumed at their own pace, so a source is
        only compared with the sources that share its partition (``partition`` is recorded
        by the worker's state shell; a plain dict in tests has one partition), and each
        feed's ingest runs at its own pace too."""
        watermarks: Watermarks = {}
        for k, v in entries:
            if isinstance(v, dict) and v.get("newest") is not None:
                group = (int(v.get("partition", 0)), k.split(":", 1)[0])
                watermarks[group] = max(watermarks.get(group, v["newest"]), v["newest"])
        return watermarks

    def silent_sources(self, entries: Iterable[tuple[str, Any]], rules: RuleBook,
                       watermarks: Watermarks | None = None) -> list[Hazard]:
        """"Sensor silent" hazards for sources that stopped reporting.

        Judged in stream time: against the newest event time any source of the same feed in
        the same partition reported (the watermark, :meth:`watermarks` of ``entries`` unless
        given: of all the sources, when ``entries`` are some of them), so a replayed storm
        behaves as a live one. A source is silent after ``silence_factor`` of its expected
        intervals; silence while the source was at orange or red is itself orange (losing a
        sensor in a storm is an emergency).
        A whole feed going quiet stops the watermark: that shows in the feed metrics instead.
        """
        items = [(k, v) for k, v in entries
                 if isinstance(v, dict) and v.get("newest") is not None]
        if watermarks is None:
            watermarks = self.watermarks(items)
        out: list[Hazard] = []
        for key, st in items:
            watermark = watermarks[(int(st.get("partition", 0)), key.split(":", 1)[0])]
            feed, source_id = key.split(":", 1)
            if key in self.silenced or not self._silent(feed, source_id,
                                                        watermark - st["newest"], rules):
                continue
            worst = max((WarningLevel(v) for v in st["levels"].values()),
                        default=WarningLevel.NONE)
            level = WarningLevel.ORANGE if worst >= WarningLevel.ORANGE else WarningLevel.YELLOW
            self.silenced[key] = level
            minutes = (watermark - st["newest"]) / 60
            name = self._source_name(feed, source_id)
            reason = f"{name}已{minutes:.0f}分钟未报送数据" + (
                f"（中断前为{worst.chinese}预警）" if worst else "")
            out.append(self._silence_hazard(key, st, level=level, previous=WarningLevel.NONE,
                                            rules=rules, reason=reason))
        return out

    def _source(self, obs: Observation) -> Source | None:
        """The observation's source: its registry entry, display name, reporting interval."""
        registry = self.registries.for_feed(obs.feed)
        if registry is not None:
            entry = registry.get(obs.source_id)
            return _registered(entry) if entry is not None else None
        if obs.feed == "incident":
            category = CATEGORY_CHINESE.get(obs.attrs.get("category", ""), "突发事件")
            return Source(None, f"{category}（{obs.attrs.get('channel', '')}警情）", None)
        if obs.feed == "cap":
            return Source(None, obs.attrs.get("event", "预警信息"), None)
        return None

    def process(
        self, observations: Sequence[Observation], state: MutableMapping[str, Any],
        rules: RuleBook, copies: Copies | None = None,
    ) -> RulesResult:
        """The observations' hazards, their readings applied to ``state``.

        What ``state`` held before is never changed in place: the batch copies a source's
        state and series the first time it changes them, into ``copies`` (new ones unless
        given), and changes those copies in place afterwards. A caller that gives the same
        ``copies`` to several batches lets them share those copies, as long as it never
        hands one batch's writes to something that must not change (the rules loop keeps
        one ``Copies`` across its commits: what it writes at a commit shares nothing that
        changes, and a rebalance, which drops what was not written, starts a new one)."""
        result = RulesResult()
        self.copies = copies if copies is not None else Copies()
        # in event-time order; sorted by the instants as floats (an aware datetime's
        # comparison asks its offset twice), equal instants in arrival order
        times = [o.event_seconds() for o in observations]
        try:
            for i in sorted(range(len(times)), key=times.__getitem__):
                decision = self.evaluate(observations[i], times[i], state, rules, result)
                result.decisions[decision] += 1
        finally:
            self.copies = None
        return result

    def evaluate(self, obs: Observation, t: float, state: MutableMapping[str, Any],
                 rules: RuleBook, result: RulesResult) -> Decision:
        """One observation (``t``: its event time in epoch seconds) against ``state``."""
        evaluator = EVALUATORS.get(obs.feed)
        source = self._source(obs)
        if evaluator is None or source is None:
            return Decision.NO_RULE
        key = state_key(obs)
        stored = state.get(key)
        st = self._writable(stored)
        limits = rules.limits
        lateness = limits.lateness_s
        # Duplicates and lateness are judged per sensor stream: a hazard point's GNSS and rain
        # gauge may report at the same instant without either being a duplicate.
        stream = obs.attrs.get("sensor", "")
        seen: Series = st["seen"].get(stream, [])
        arrival = classify(seen, t, seen[-1][0] if seen else None, lateness)
        if arrival is DUPLICATE:
            return Decision.DUPLICATE
        if arrival is TOO_LATE:
            result.rejected.append(Rejected(
                obs, "too-late", f"event time {obs.observed_at.isoformat()} is more than "
                f"{lateness:.0f} s older than this source's newest reading"))
            return Decision.TOO_LATE
        if "rain_accum_mm" in obs.values and arrival is LATE:
            result.rejected.append(Rejected(
                obs, "too-late", "a late accumulated-rainfall reading cannot be turned "
                "into an increment; send increments (rain_mm) to backfill"))
            return Decision.TOO_LATE
        arrival = self._record(obs, st, key=key, t=t, stream=stream, arrival=arrival,
                               source=source, rules=rules, limits=limits, result=result)
        changed = self._apply_levels(obs, st, key=key, evaluator=evaluator, source=source,
                                     rules=rules, limits=limits, result=result)
        # written even when it is the stored object itself (one of the copies, changed in
        # place): a state that holds writes until a seal (streams/rules_loop.py) needs to
        # know every source a reading changed since the last one
        state[key] = st
        if changed:
            return Decision.LEVEL_CHANGED
        return LATE_APPLIED if arrival is LATE else UNCHANGED

    def _writable(self, stored: dict[str, Any] | None) -> dict[str, Any]:
        """The source's state to change: ``stored`` itself if it is one of the batch's
        copies, else a copy (:func:`_copy_state`; a new state for a new source) that goes
        into the copies, changed in place by the source's later readings."""
        owned = self.copies.states if self.copies is not None else None
        if stored is not None and owned is not None and id(stored) in owned:
            return stored
        st = _copy_state(stored) or {
            "newest": None, "seen": {}, "series": {}, "latest": None, "levels": {},
            "below_since": {}, "accum": None}
        if owned is not None:
            owned[id(st)] = st
        return st

    def _record(self, obs: Observation, st: dict[str, Any], *, key: str, t: float,
                stream: str, arrival: Arrival, source: Source, rules: RuleBook,
                limits: Limits, result: RulesResult) -> Arrival:
        """Add an admitted reading to the source's series (and, if it is the newest, make it
        the source's latest); end a "silent" hazard if the source is back. Returns the
        arrival as it relates to the whole source (late if older than its newest)."""
        values = obs.values
        if "rain_accum_mm" in values:
            values = dict(values)  # the increment replaces the accumulation (a copy)
            _accumulation_to_increment(st, values, obs.attrs.get("accum_since", ""), t)
        keep_s = limits.history_s
        series = st["series"]
        owned = self.copies.series if self.copies is not None else None
        for name, series_name in SERIES[obs.feed].items():
            if name in values:
                series[series_name] = insert(series.get(series_name, _EMPTY), t, values[name],
                                             keep_s, owned)
        seen = st["seen"]
        seen[stream] = insert(seen.get(stream, _EMPTY), t, 0.0, limits.lateness_s, owned)
        if st["newest"] is not None and t < st["newest"]:
            return LATE  # in order for its sensor, but older than the source
        if arrival is IN_ORDER:
            previous_newest = st["newest"]
            st["newest"] = t
            st["latest"] = {"values": obs.values, "attrs": obs.attrs,
                            # (formatting the time at every reading was ~10 % of the
                            # stage's instructions: records.event_time keeps it)
                            "observed_at": obs.observed_at_iso(),
                            "place": place_dict(obs.place), "lon": obs.lon, "lat": obs.lat,
                            "exercise": obs.exercise}
            if previous_newest is not None and (
                    key in self.silenced or _gap_silent(source.interval_s, t - previous_newest,
                                                        limits.silence_factor)):
                # the source is back (or was judged silent while its partition's other
                # sources ran ahead): end its "silent" hazard (a no-op if none was open)
                raised = self.silenced.pop(key, WarningLevel.YELLOW)
                result.hazards.append(self._silence_hazard(
                    key, st, level=WarningLevel.NONE, previous=raised, rules=rules,
                    reason=f"{source.name}恢复报送"))
        return arrival

    def _apply_levels(self, obs: Observation, st: dict[str, Any], *, key: str,
                      evaluator: Evaluator, source: Source, rules: RuleBook, limits: Limits,
                      result: RulesResult) -> bool:
        """Settle each hazard type's proposed level against the one in force (held on the
        way down) and emit a hazard where it changes; whether any did."""
        levels = st["levels"]
        current = {k: _LEVEL_OF[v] for k, v in levels.items()} if levels else {}
        changed = False
        hold = 0.0 if obs.feed in IMMEDIATE else limits.downgrade_hold_s
        explained: dict[str, Candidate] | None = None
        carried = self.carried.get(key)
        if carried is None:
            carried = self.carried[key] = {}
        entry = source.entry
        below_since = st["below_since"]
        flags = st.setdefault("flags", {})
        for hazard_type, proposed, flag in PROPOSERS[obs.feed](st, entry, rules, current,
                                                               carried):
            now_level = current.get(hazard_type, NO_LEVEL)
            if proposed == now_level and not flag:  # the common case: settle's answer
                below_since[hazard_type] = None
                flags[hazard_type] = flag
                continue
            level, below = settle(proposed, now_level, below_since.get(hazard_type),
                                  st["newest"], hold)
            below_since[hazard_type] = below
            newly_accelerating = flag == "yes" and flags.get(hazard_type) != "yes" \
                and level > NO_LEVEL
            flags[hazard_type] = flag
            if level == now_level and not newly_accelerating:
                continue
            levels[hazard_type] = int(level)
            changed = True
            if explained is None:  # a hazard is emitted (rare): now its figure and reason
                explained = {c.hazard_type: c for c in evaluator(st, entry, rules, current)}
            cand = explained[hazard_type]
            result.hazards.append(Hazard(
                hazard_id=f"{hazard_type}:{obs.source_id}", hazard_type=hazard_type,
                feed=obs.feed, source_id=obs.source_id, source_name=source.name, level=level,
                previous_level=now_level, place=obs.place, lon=obs.lon, lat=obs.lat,
                # the newest reading's time, parsed only here (rare), not for every reading
                observed_at=datetime.fromisoformat(st["latest"]["observed_at"]),
                key_figure=cand.key_figure, reason=cand.reason,
                rule_id=cand.rule_id, rule_version=rules.rule_version(cand.rule_id),
                exercise=obs.exercise, trend=cand.trend,
            ))
        return changed


#: The parts of a source's state that :meth:`RulesStage.evaluate` changes in place; every
#: other part it replaces whole (``latest``, ``accum``, ``newest``) or leaves alone. What
#: keeps a copy of a state apart from the state's later changes copies these parts and may
#: share the others (here, and streams/source_state.py's heads).
CHANGED_IN_PLACE = frozenset({"seen", "series", "levels", "below_since", "flags"})


def _copy_state(st: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy of a source's state that :meth:`RulesStage.evaluate` may change (the stored
    one stays as it was if the reading is refused): the dicts it changes in place are
    copied, the rest is shared; the series lists are shared too: windows.insert changes in
    place only lists the batch's :class:`Copies` hold, never one the state held before the
    batch, and a point is never changed. (A deep copy of 24 h of history per
    reading was 62% of a worker's time: benchmarks/results/pipeline.md.)"""
    if not st:
        return None
    copy = dict(st)
    for name in CHANGED_IN_PLACE:
        part = st.get(name)
        if part is not None:
            copy[name] = dict(part)
    return copy


def _gap_silent(interval_s: float | None, gap_s: float, silence_factor: float) -> bool:
    """Whether a gap of ``gap_s`` between readings means the source was silent: more than
    ``silence_factor`` of its expected reporting intervals (None: never)."""
    return interval_s is not None and gap_s > silence_factor * interval_s


def _accumulation_to_increment(st: dict[str, Any], values: dict[str, float], since: str,
                               t: float) -> None:
    """Replace ``rain_accum_mm`` (rain since ``since``) by ``rain_mm`` (since the previous
    report), remembering the accumulation for the next report."""
    if "rain_accum_mm" not in values:
        return
    accum = values.pop("rain_accum_mm")
    previous = st.get("accum")
    st["accum"] = {"since": since, "value": accum, "t": t}
    if previous is None or previous["since"] != since or accum < previous["value"]:
        values["rain_mm"] = accum  # a new accumulation period (or a reset): all of it is new
    else:
        values["rain_mm"] = round(accum - float(previous["value"]), 3)
