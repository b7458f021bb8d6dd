"""Stage 3: hazard state changes -> alert transitions on the ledger (``onemap.alerts``).

Each hazard has one alert whose lifecycle is new -> updated / escalated / de-escalated ->
resolved; every transition gets the next sequence number, so ``hazard_id#seq`` identifies it
for good and every sink can be idempotent on it. The same hazard at the same level never
alerts twice.

Every transition carries the urgency score of :mod:`onemap.rules.urgency` (model v2, weights
in ``rules/default/urgency.yaml``) with its breakdown, computed when the transition is issued:

* ``now`` is the hazard record's own event time (so a replay scores exactly as live did);
* exposure: the people of the hazard's village (of its town / district / city for a hazard
  placed on a whole area) and the vulnerable sites within the model's radius of its kind;
* ``colocated``: the other open hazards of the same *rank area* (see :func:`rank_area`) and
  the same status (drills never raise actual alerts, nor the other way round).

Why the rank area is the district: hazards are partitioned by it (``onemap.hazards`` key),
so every hazard whose compound risk or corroboration can touch another (the widest scope in
the urgency model is the district) is processed by the same worker, in order, whatever the
number of workers. A hazard placed on the whole city is ranked with the other city-wide ones.

Notification policy (Alertmanager's inhibit and silence; the sinks obey ``Alert.notify``):

* **inhibition** (rules/default/lifecycle.yaml): an open alert at a high level mutes the
  lower-level alerts of the same kind in its area, e.g. a red rainstorm for a town mutes the
  yellow rainstorm alerts inside it. A muted alert is still on the ledger and the wall, with
  ``notify="inhibited"`` and the reason; an alert is never muted by one at its own level or
  below.
* **silences** (who, why, until when: ``onemap.rules.silences``) are matched by the caller,
  which passes ``mute``: a function returning the reason a hazard is silenced, or None.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, MutableMapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from onemap.datafiles import RuleFile, StrictModel
from onemap.levels import WarningLevel
from onemap.records import OUT_OF_AREA_CODE, Alert, Hazard, Place
from onemap.rules.urgency import Scope, UrgencyContext, UrgencyModel, same_area, urgency

LevelName = Literal["blue", "yellow", "orange", "red"]
EqualField = Literal["hazard_type", "feed", "source_id"]
#: State keys that are not hazards: the open hazards of each rank area.
LIVE_PREFIX: Final = "__live__:"
#: How many earlier transitions an alert remembers for its CAP references.
MAX_EARLIER: Final = 50


class Transition(enum.Enum):
    NEW = "new"
    UPDATED = "updated"  # same level, news worth showing (e.g. a slope starts to accelerate)
    ESCALATED = "escalated"
    DE_ESCALATED = "de-escalated"
    RESOLVED = "resolved"


def transition_for(open_level: WarningLevel | None, level: WarningLevel,
                   update: bool = False) -> Transition | None:
    """The lifecycle step a hazard's new level makes; None when nothing changes.

    ``update`` marks a hazard record that reports news at an unchanged level.

    >>> transition_for(None, WarningLevel.YELLOW).value
    'new'
    >>> transition_for(WarningLevel.YELLOW, WarningLevel.RED).value
    'escalated'
    >>> transition_for(WarningLevel.RED, WarningLevel.NONE).value
    'resolved'
    >>> transition_for(WarningLevel.RED, WarningLevel.RED) is None
    True
    """
    if open_level is None:
        return Transition.NEW if level > WarningLevel.NONE else None
    if level == WarningLevel.NONE:
        return Transition.RESOLVED
    if level > open_level:
        return Transition.ESCALATED
    if level < open_level:
        return Transition.DE_ESCALATED
    return Transition.UPDATED if update else None


def rank_area(place: Place) -> str:
    """The partition key of hazards and the area whose open hazards score each other: the
    district (or the coarser unit a hazard is placed on).

    >>> rank_area(Place("440400", "", "440404", "", "440404104"))
    '440404'
    >>> rank_area(Place("440400")), rank_area(Place())
    ('440400', 'out-of-area')
    """
    return place.district_code or place.city_code or OUT_OF_AREA_CODE


# -- the policy file -----------------------------------------------------------------------

class InhibitSide(StrictModel):
    """Levels a side of an inhibit rule covers (inclusive)."""

    min_level: LevelName = "blue"
    max_level: LevelName = "red"

    def covers(self, level: WarningLevel) -> bool:
        return WarningLevel.parse(self.min_level) <= level <= WarningLevel.parse(self.max_level)


class InhibitRule(StrictModel):
    """An open ``source`` alert mutes ``target`` alerts in the same ``scope`` area that agree
    on every field in ``equal`` and are at a lower level."""

    name: str = Field(min_length=1)
    source: InhibitSide
    target: InhibitSide
    equal: list[EqualField] = Field(default_factory=lambda: list[EqualField](["hazard_type"]))
    scope: Scope


class LifecyclePolicy(RuleFile):
    rule: Literal["lifecycle"]
    inhibit: list[InhibitRule] = Field(default_factory=list)
    #: seconds after which an alert still open at that level is sent again (SMS reminders,
    #: sinks/sms/reminders.py); levels not listed are never repeated
    repeat_s: dict[LevelName, Annotated[float, Field(ge=60)]] = Field(default_factory=dict)

    def repeat_interval(self, level: WarningLevel) -> float | None:
        """The repeat interval of a level in seconds (None: not repeated).

        >>> LifecyclePolicy(rule="lifecycle", version=1, source="t",
        ...                 repeat_s={"red": 7200}).repeat_interval(WarningLevel.RED)
        7200.0
        """
        value = self.repeat_s.get(level.label)  # type: ignore[call-overload]
        return None if value is None else float(value)


def inhibited_by(hazard: Hazard, open_hazards: Sequence[Hazard],
                 rules: Sequence[InhibitRule]) -> tuple[str, str] | None:
    """(rule name, inhibiting hazard id) if an open hazard mutes this one; else None.

    The inhibitor with the highest level wins, then the smallest hazard id (deterministic).

    >>> from onemap.rules.urgency import example_hazard
    >>> rule = InhibitRule(name="red-mutes-yellow", source=InhibitSide(min_level="red"),
    ...                    target=InhibitSide(max_level="yellow"), scope="town")
    >>> red = example_hazard(hazard_id="geohazard:GH2", level=WarningLevel.RED)
    >>> inhibited_by(example_hazard(level=WarningLevel.YELLOW), [red], [rule])
    ('red-mutes-yellow', 'geohazard:GH2')
    >>> inhibited_by(example_hazard(level=WarningLevel.ORANGE), [red], [rule]) is None
    True
    """
    best: tuple[int, str, str] | None = None
    for rule in rules:
        if not rule.target.covers(hazard.level):
            continue
        for other in open_hazards:
            if (other.hazard_id == hazard.hazard_id or other.exercise != hazard.exercise
                    or other.level <= hazard.level or not rule.source.covers(other.level)
                    or any(getattr(other, f) != getattr(hazard, f) for f in rule.equal)
                    or not same_area(hazard.place, other.place, rule.scope)):
                continue
            candidate = (-int(other.level), other.hazard_id, rule.name)
            if best is None or candidate < best:
                best = candidate
    return None if best is None else (best[2], best[1])


# -- the stage -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Exposure:
    """Where the score's exposure comes from (the map and the site registry).

    ``population_of(code)``: people in a unit of any level; ``sites_near(lon, lat, radius_m)``:
    vulnerable sites within the radius, counted per kind.
    """

    population_of: Callable[[str], int]
    sites_near: Callable[[float, float, float], dict[str, int]] = \
        dataclasses.field(default=lambda lon, lat, r: {})

    def context(self, hazard: Hazard, model: UrgencyModel,
                colocated: Sequence[Hazard]) -> UrgencyContext:
        sites = self.sites_near(hazard.lon, hazard.lat, model.radius_m(model.kind_of(hazard)))
        place = hazard.place
        # the most precise unit known: the village, or the whole area a hazard is placed on
        people = self.population_of(place.area_code) if place.area_code != OUT_OF_AREA_CODE \
            else 0
        return UrgencyContext(population=people, sites=sites, colocated=colocated)


#: A silence check: the reason a hazard is silenced now, or None.
Mute = Callable[[Hazard], str | None]


class LifecycleStage:
    stage = "lifecycle"

    def __init__(self, exposure: Exposure) -> None:
        self.exposure = exposure
        # parsed open hazards, by (hazard id, seq): the state holds them as JSON dicts
        self._parsed: dict[tuple[str, int], Hazard] = {}

    @staticmethod
    def state_keys(hazard: Hazard) -> tuple[str, str]:
        """The state keys one hazard record writes: its own and its rank area's live index
        (the caller binds both to the record's partition)."""
        return hazard.hazard_id, LIVE_PREFIX + rank_area(hazard.place)

    def process(
        self, hazards: Sequence[Hazard], state: MutableMapping[str, Any],
        model: UrgencyModel, policy: LifecyclePolicy, *, now: datetime,
        mute: Mute | None = None,
    ) -> list[Alert]:
        """The alert transitions of a batch of hazard records, in order; ``now`` is the
        issue time stamped on them (scores use each record's event time)."""
        alerts: list[Alert] = []
        for hazard in hazards:
            alert = self._one(hazard, state, model=model, policy=policy, now=now, mute=mute)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _one(self, hazard: Hazard, state: MutableMapping[str, Any], *, model: UrgencyModel,
             policy: LifecyclePolicy, now: datetime, mute: Mute | None) -> Alert | None:
        previous = state.get(hazard.hazard_id) or {}
        open_level = WarningLevel(previous["level"]) if previous.get("open") else None
        seen = previous.get("observed_at")
        if seen is not None and hazard.observed_at < datetime.fromisoformat(seen):
            return None  # an older record again (redelivered after a crash): already applied
        fresh = seen is None or hazard.observed_at > datetime.fromisoformat(seen)
        step = transition_for(open_level, hazard.level,
                              update=hazard.level == hazard.previous_level and fresh)
        if step is None:
            return None
        seq = int(previous.get("seq", 0)) + 1
        _, live_key = self.state_keys(hazard)
        live_ids: list[str] = list((state.get(live_key) or {}).get("ids", []))
        others = [h for h in self._open_hazards(live_ids, state)
                  if h.hazard_id != hazard.hazard_id and h.exercise == hazard.exercise]
        score, breakdown = urgency(hazard, self.exposure.context(hazard, model, others),
                                   model, hazard.observed_at)
        notify, why = "send", ""
        silenced = mute(hazard) if mute is not None else None
        inhibitor = inhibited_by(hazard, others, policy.inhibit)
        if silenced is not None:
            notify, why = "silenced", silenced
        elif inhibitor is not None:
            notify, why = "inhibited", f"{inhibitor[0]}: {inhibitor[1]}"
        first_seen = previous.get("first_seen") if open_level is not None else None
        earlier: list[list[str]] = list(previous.get("earlier", [])) \
            if open_level is not None else []
        is_open = step != Transition.RESOLVED
        state[hazard.hazard_id] = {
            "seq": seq, "level": int(hazard.level), "open": is_open,
            "observed_at": hazard.observed_at.isoformat(),
            "first_seen": first_seen or hazard.observed_at.isoformat(),
            **({"hazard": hazard.to_dict(),
                "earlier": [*earlier, [f"{hazard.hazard_id}#{seq}", now.isoformat()]][
                    -MAX_EARLIER:]} if is_open else {}),
        }
        ids = set(live_ids)
        (ids.add if is_open else ids.discard)(hazard.hazard_id)
        if ids != set(live_ids):
            state[live_key] = {"ids": sorted(ids)}
        if is_open:
            self._parsed[(hazard.hazard_id, seq)] = hazard
        self._parsed.pop((hazard.hazard_id, seq - 1), None)
        return Alert(
            alert_id=f"{hazard.hazard_id}#{seq}", hazard_id=hazard.hazard_id, seq=seq,
            transition=step.value, level=hazard.level,
            previous_level=open_level if open_level is not None else WarningLevel.NONE,
            hazard=hazard, score=score, score_breakdown=breakdown, issued_at=now,
            notify=notify, notify_reason=why,
            earlier=tuple((a, datetime.fromisoformat(t)) for a, t in earlier),
        )

    def _open_hazards(self, ids: Sequence[str],
                      state: MutableMapping[str, Any]) -> list[Hazard]:
        out: list[Hazard] = []
        for hazard_id in ids:
            entry = state.get(hazard_id) or {}
            if not entry.get("open") or "hazard" not in entry:
                continue
            key = (hazard_id, int(entry["seq"]))
            hazard = self._parsed.get(key)
            if hazard is None:  # after a restart or a rebalance: parse once, then cached
                hazard = self._parsed[key] = Hazard.from_dict(entry["hazard"])
            out.append(hazard)
        return out
