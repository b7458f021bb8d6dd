"""The live ranking: what is most urgent right now, for the city and every district and town.

Why: the wall's top list and the colour of every area must follow the hazard records as
they arrive, within a second, for a province-scale map; re-sorting every live hazard on
every record does not scale (see benchmarks/bench_ranking.py). So a :class:`Ranking` keeps,
for every area code, a sorted list of its live hazards (``sortedcontainers.SortedList``:
O(log n) insert and remove, O(k) for the top k) and per-area counts by level, updated one
hazard-state record at a time.

* **Order** (stable, total): score descending, then level descending, then first seen
  ascending (the older situation first), then hazard id ascending. Two rankings fed the
  same records in the same order are identical.
* **Areas**: a hazard is listed under every code of its place (city, district, town, and
  with ``ranked=AREA_KINDS`` village) and under :data:`ALL` (the whole map, including
  hazards outside it). Nothing is pushed *down*: a town-wide hazard does not appear in its
  villages' lists.
* **Roll-up** village → town → district → city: every area's counts by level and its level
  (the highest live level inside it), the same rule as the dashboard's
  :func:`onemap.sinks.dashboard.areas.roll_up`.
* **Risk index** per area: ``100 × (1 - Π(1 - w[level]))`` over the live hazards inside it,
  computed from the counts (``Π_l (1 - w_l)^n_l``), so it is exact and O(1) per area.
* **Resolve**: a record at level NONE removes the hazard.
* **Drills apart**: a Ranking holds one status (actual or exercise) and refuses the other;
  :class:`Rankings` holds one of each.

>>> from onemap.rules.urgency import example_hazard
>>> r = Ranking()
>>> r.update(example_hazard(), 70.0, {"level": 60.0, "exposure_population": 10.0})
'added'
>>> [(row["rank"], row["hazard_id"], row["score"]) for row in r.top("440402", 5)]
[(1, 'geohazard:GH1', 70.0)]
>>> s = r.area_state("440402001")
>>> s["kind"], s["level"], s["counts"]["orange"], s["risk_index"]
('town', 'orange', 1, 35.0)
>>> r.update(example_hazard(level=WarningLevel.NONE), 0.0)
'removed'
>>> r.area_state("440402")["level"], r.top("440402")
('none', [])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from typing import Any, Final, Literal

from sortedcontainers import SortedList

from onemap.levels import COLOURS, WarningLevel
from onemap.records import Hazard, Place
from onemap.rules.urgency import RiskWeights

#: The code under which every live hazard is ranked: the whole map.
ALL: Final = "*"
#: Place fields and the area kinds they hold, coarse to fine.
AREA_FIELDS: Final = ("city_code", "district_code", "town_code", "village_code")
AREA_KINDS: Final = ("city", "district", "town", "village")
#: Which kinds get a top list by default (every kind gets counts, level and risk index).
DEFAULT_RANKED: Final = ("city", "district", "town")

Status = Literal["actual", "exercise"]
#: (-score, -level, first seen as a POSIX timestamp, hazard id): ascending = most urgent first.
Key = tuple[float, int, float, str]

_PLACE_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Place))

#: Used when no urgency model is given (the same numbers as rules/default/urgency.yaml).
DEFAULT_RISK: Final = RiskWeights(blue=0.05, yellow=0.15, orange=0.35, red=0.6)


def sort_key(score: float, level: WarningLevel, first_seen: datetime, hazard_id: str) -> Key:
    """The ranking order as one ascending key (most urgent first).

    >>> from datetime import UTC
    >>> t = datetime(2026, 8, 23, tzinfo=UTC)
    >>> keys = [sort_key(50, WarningLevel.RED, t, "b"), sort_key(50, WarningLevel.RED, t, "a"),
    ...         sort_key(50, WarningLevel.ORANGE, t, "c"), sort_key(60, WarningLevel.BLUE, t, "d")]
    >>> [k[3] for k in sorted(keys)]
    ['d', 'a', 'b', 'c']
    """
    return (-float(score), -int(level), first_seen.timestamp(), hazard_id)


def risk_index(counts: Mapping[WarningLevel, int] | list[int], weights: RiskWeights) -> float:
    """``100 × (1 - Π(1 - w[level]))`` over the live hazards, from counts by level.

    >>> w = RiskWeights(blue=0.05, yellow=0.15, orange=0.35, red=0.6)
    >>> risk_index({WarningLevel.RED: 1}, w), risk_index({WarningLevel.RED: 2}, w)
    (60.0, 84.0)
    >>> risk_index({}, w)
    0.0
    """
    quiet = 1.0
    for level in COLOURS:
        n = counts[level] if isinstance(counts, list) else counts.get(level, 0)
        if n:
            quiet *= (1.0 - weights.of(level)) ** n
    return round(100.0 * (1.0 - quiet), 2) + 0.0


@dataclasses.dataclass(slots=True)
class _Entry:
    hazard: Hazard
    score: float
    breakdown: dict[str, float]
    first_seen: datetime
    key: Key
    codes: tuple[str, ...]  # every area code it is counted under (ALL first)
    ranked: tuple[str, ...]  # of those, the ones with a top list
    row: dict[str, Any] | None = None  # the wall's row (without rank), built on first use


class Ranking:
    """Live hazards of one status, ranked per area; updated one hazard record at a time.

    ``risk`` weighs the levels in the risk index (``UrgencyModel.risk_index``); ``ranked``
    says which area kinds keep a top list (``ALL`` always does).
    """

    def __init__(self, status: Status = "actual", risk: RiskWeights | None = None,
                 ranked: Collection[str] = DEFAULT_RANKED) -> None:
        unknown = set(ranked) - set(AREA_KINDS)
        if unknown:
            raise ValueError(f"unknown area kind(s) {sorted(unknown)}; expected {AREA_KINDS}")
        self.status: Status = status
        self.risk = risk if risk is not None else DEFAULT_RISK
        self._ranked_fields = tuple(
            (i, f) for i, (f, kind) in enumerate(zip(AREA_FIELDS, AREA_KINDS, strict=True))
            if kind in ranked)
        self._entries: dict[str, _Entry] = {}
        self._lists: dict[str, SortedList] = {ALL: SortedList()}
        self._counts: dict[str, list[int]] = {}
        self._names: dict[str, tuple[str, str]] = {ALL: ("", "")}  # code -> (kind, name)

    # -- updates --------------------------------------------------------------------------

    def update(self, hazard: Hazard, score: float,
               breakdown: Mapping[str, float] | None = None) -> str:
        """Apply one hazard-state record: 'added', 'moved' (its rank key or places
        changed), 'updated' (same rank: only the record is replaced), 'removed' (level NONE
        ended it) or 'ignored' (NONE for a hazard that is not live).

        Records are applied in the order given (the topic's order per partition); the
        hazard keeps the time it was first seen until it is resolved. O(log n) per record
        in each of its (at most five) area lists.
        """
        if hazard.exercise != (self.status == "exercise"):
            raise ValueError(
                f"hazard {hazard.hazard_id!r} is {'an exercise' if hazard.exercise else 'actual'}"
                f" and cannot enter the {self.status} ranking")
        old = self._entries.get(hazard.hazard_id)
        if hazard.level <= WarningLevel.NONE:
            if old is None:
                return "ignored"
            self._drop(old)
            return "removed"
        bd = dict(breakdown) if breakdown is not None else {}
        if old is None:
            codes, ranked = self._codes_of(hazard)
            key = (-float(score), -int(hazard.level), hazard.observed_at.timestamp(),
                   hazard.hazard_id)
            self._add(_Entry(hazard, float(score), bd, hazard.observed_at, key, codes, ranked))
            return "added"
        key = (-float(score), -int(hazard.level), old.key[2], hazard.hazard_id)
        before = old.hazard
        if before.place is not hazard.place and before.place != hazard.place:
            # it moved on the map (e.g. a CAP area redrawn): out of the old areas, into new
            codes, ranked = self._codes_of(hazard)
            self._drop(old)
            self._add(_Entry(hazard, float(score), bd, old.first_seen, key, codes, ranked))
            return "moved"
        # The common case, kept cheap: same places, a new score and/or level.
        changed = key != old.key
        if changed:
            lists, old_key = self._lists, old.key
            for code in old.ranked:
                sl = lists[code]
                sl.remove(old_key)
                sl.add(key)
            old.key = key
        if before.level != hazard.level:
            was, now = int(before.level), int(hazard.level)
            counts = self._counts
            for code in old.codes:
                row = counts[code]
                row[was] -= 1
                row[now] += 1
        old.hazard, old.score, old.breakdown, old.row = hazard, float(score), bd, None
        return "moved" if changed else "updated"

    def remove(self, hazard_id: str) -> bool:
        """Take a hazard out (e.g. its alert was closed); False if it was not live."""
        old = self._entries.get(hazard_id)
        if old is None:
            return False
        self._drop(old)
        return True

    def _codes_of(self, hazard: Hazard) -> tuple[tuple[str, ...], tuple[str, ...]]:
        p = hazard.place
        all_codes = (p.city_code, p.district_code, p.town_code, p.village_code)
        codes = (ALL, *(c for c in all_codes if c))
        ranked = (ALL, *(all_codes[i] for i, _ in self._ranked_fields if all_codes[i]))
        for code, kind, name in zip(all_codes, AREA_KINDS,
                                    (p.city_name, p.district_name, p.town_name,
                                     p.village_name), strict=True):
            if code and (code not in self._names or (name and self._names[code][1] != name)):
                self._names[code] = (kind, name)
        return codes, ranked

    def _add(self, e: _Entry) -> None:
        self._entries[e.hazard.hazard_id] = e
        lists = self._lists
        for code in e.ranked:
            sl = lists.get(code)
            if sl is None:
                sl = lists[code] = SortedList()
            sl.add(e.key)
        level = int(e.hazard.level)
        counts = self._counts
        for code in e.codes:
            row = counts.get(code)
            if row is None:
                row = counts[code] = [0, 0, 0, 0, 0]
            row[level] += 1

    def _drop(self, e: _Entry) -> None:
        del self._entries[e.hazard.hazard_id]
        lists = self._lists
        for code in e.ranked:
            sl = lists[code]
            sl.remove(e.key)
            if not sl and code != ALL:
                del lists[code]
        level = int(e.hazard.level)
        counts = self._counts
        for code in e.codes:
            row = counts[code]
            row[level] -= 1
            if not any(row):
                del counts[code]

    # -- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, hazard_id: object) -> bool:
        return hazard_id in self._entries

    def keys(self, area_code: str = ALL, k: int | None = None) -> list[Key]:
        """The rank keys of the top ``k`` (all when None) in an area with a top list."""
        sl = self._lists.get(area_code)
        if sl is None:
            return []
        return list(sl.islice(0, k))

    def top(self, area_code: str = ALL, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` most urgent live hazards in an area, as JSON-able rows for the wall.

        Areas of a kind without a top list (villages by default) and quiet areas give [].
        """
        entries = self._entries
        return [self._row(rank, entries[key[3]])
                for rank, key in enumerate(self.keys(area_code, k), start=1)]

    def _row(self, rank: int, e: _Entry) -> dict[str, Any]:
        row = e.row
        if row is None:
            h, p, f = e.hazard, e.hazard.place, e.hazard.key_figure
            row = e.row = {
                "hazard_id": h.hazard_id, "hazard_type": h.hazard_type, "status": self.status,
                "level": h.level.label, "score": e.score, "breakdown": dict(e.breakdown),
                "place": {name: getattr(p, name) for name in _PLACE_FIELDS},
                "label": p.label, "source_name": h.source_name,
                "key_figure": {"name": f.name, "value": f.value, "unit": f.unit,
                               "threshold_name": f.threshold_name, "threshold": f.threshold},
                "reason": h.reason, "trend": dict(h.trend), "lon": h.lon, "lat": h.lat,
                "first_seen": e.first_seen.isoformat(),
                "observed_at": h.observed_at.isoformat(),
            }
        return {"rank": rank, **row}

    def get(self, hazard_id: str) -> dict[str, Any] | None:
        """One live hazard's row (rank 0: not ranked here), or None."""
        e = self._entries.get(hazard_id)
        return None if e is None else self._row(0, e)

    def live(self) -> Iterator[tuple[Hazard, float, dict[str, float]]]:
        """Every live hazard with its score and breakdown, in no particular order."""
        for e in self._entries.values():
            yield e.hazard, e.score, e.breakdown

    def colocated(self, hazard: Hazard) -> list[Hazard]:
        """Live hazards sharing the hazard's district (or city, when it has no district),
        other than itself: the ``colocated`` of its :class:`~onemap.rules.urgency.UrgencyContext`.

        Needs districts (or, for city-only places, cities) to keep a top list; hazards placed
        only on the city are not included for a hazard that has a district.
        """
        p = hazard.place
        code = p.district_code or p.city_code
        entries = self._entries
        return [entries[key[3]].hazard for key in self.keys(code) if key[3] != hazard.hazard_id]

    def counts(self, code: str) -> dict[str, int]:
        row = self._counts.get(code, [0, 0, 0, 0, 0])
        return {c.label: row[c] for c in COLOURS}

    def level(self, code: str) -> WarningLevel:
        """The area's rolled-up level: the highest level of the live hazards inside it."""
        row = self._counts.get(code)
        if row is None:
            return WarningLevel.NONE
        for level in reversed(COLOURS):
            if row[level]:
                return level
        return WarningLevel.NONE

    def area_state(self, code: str) -> dict[str, Any]:
        """An area's state for the one map: level, counts by level, live total, risk index,
        and its most urgent hazard (when the area keeps a top list)."""
        row = self._counts.get(code, [0, 0, 0, 0, 0])
        kind, name = self._names.get(code, ("", ""))
        top = self.keys(code, 1)
        level = self.level(code)
        return {
            "code": code, "kind": "all" if code == ALL else kind, "name": name,
            "status": self.status, "level": level.label, "colour": level.chinese
            if level else "", "counts": {c.label: row[c] for c in COLOURS},
            "live": sum(row), "risk_index": risk_index(row, self.risk),
            "top_hazard": top[0][3] if top else None,
        }

    def areas(self) -> dict[str, dict[str, Any]]:
        """The state of every area with at least one live hazard (and of ``ALL``)."""
        out = {code: self.area_state(code) for code in self._counts}
        out.setdefault(ALL, self.area_state(ALL))
        return out

    def levels(self) -> dict[str, WarningLevel]:
        """Code → rolled-up level for every area with a live hazard (without ``ALL``)."""
        return {code: self.level(code) for code in self._counts if code != ALL}

    def snapshot(self, k: int = 10) -> dict[str, Any]:
        """Everything the wall shows for this status: the map's top ``k``, the top ``k`` of
        every area that keeps a list, and every area's state."""
        return {
            "status": self.status, "live": len(self),
            "top": {code: self.top(code, k) for code in self._lists},
            "areas": self.areas(),
        }


class Rankings:
    """One :class:`Ranking` per status, so drills are ranked apart and never mixed in.

    >>> from onemap.rules.urgency import example_hazard
    >>> rs = Rankings()
    >>> rs.update(example_hazard(exercise=True), 70.0)
    'added'
    >>> len(rs["actual"]), len(rs["exercise"])
    (0, 1)
    """

    STATUSES: Final = ("actual", "exercise")

    def __init__(self, risk: RiskWeights | None = None,
                 ranked: Collection[str] = DEFAULT_RANKED) -> None:
        self.by_status: dict[str, Ranking] = {
            "actual": Ranking("actual", risk, ranked),
            "exercise": Ranking("exercise", risk, ranked)}

    def __getitem__(self, status: str) -> Ranking:
        return self.by_status[status]

    def for_hazard(self, hazard: Hazard) -> Ranking:
        return self.by_status["exercise" if hazard.exercise else "actual"]

    def update(self, hazard: Hazard, score: float,
               breakdown: Mapping[str, float] | None = None) -> str:
        return self.for_hazard(hazard).update(hazard, score, breakdown)

    def set_risk(self, risk: RiskWeights) -> None:
        """Use new risk weights (a rule reload); the counts are unchanged."""
        for ranking in self.by_status.values():
            ranking.risk = risk

    def snapshot(self, k: int = 10) -> dict[str, Any]:
        return {status: r.snapshot(k) for status, r in self.by_status.items()}
