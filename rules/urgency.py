"""The urgency of a live hazard: a documented, explainable model whose weights are data.

Why: the command room's one question is "what must we deal with first?". A warning colour
alone does not answer it: an orange slope above a school in a town where it is raining red
is more urgent than an orange river gauge in the paddy fields whose last reading is two
hours old. The score adds up what makes a hazard urgent and says how much each part gave,
so the wall can show *why* a hazard ranks where it does.

The model (weights in ``rules/default/urgency.yaml``, explained in docs/ranking.md)::

    base  = level + exposure_population + exposure_sites + trend + compound
    score = base × freshness_factor × confidence_factor

* **level**: points per warning colour.
* **exposure_population**: ``min(cap, points_per_decade × log10(1 + people / reference))``;
  people are the village's population for a point hazard, the area-weighted population of
  the affected villages for an area hazard (both supplied by the context).
* **exposure_sites**: ``min(cap, Σ weight[kind] × count[kind])`` over the vulnerable sites
  within the hazard type's radius (the context counts them; :meth:`UrgencyModel.radius_m`
  says which radius).
* **trend**: points for the direction (rising / steady / falling) plus
  ``soon_points × max(0, 1 - hours_to_next_level / horizon_h)`` when the next level is near.
* **compound**: hazards that feed each other in the same village / town / district raise
  each other: for every configured pair that this hazard and a co-located live hazard make,
  the pair's bonus (each pair counted once), capped.
* **freshness_factor**: 1 for ``grace_s`` after the last reading, then halves every
  ``half_life_s`` towards ``floor``: stale data counts less.
* **confidence_factor**: ``1 + per_corroborating_feed`` for every *other feed* with a live
  hazard in the same area (capped at ``max_bonus``), minus ``silent_penalty`` when the
  hazard's own source is silent (a live ``sensor_silent`` hazard for the same source);
  never below ``floor``.

The breakdown is additive: the two factors are reported as the points they add or take
away (``freshness = base × (f - 1)``, ``confidence = base × f × (c - 1)``), so the parts of
the breakdown sum to the score (up to rounding to 3 decimals).

>>> from datetime import timedelta
>>> m = UrgencyModel.load_default()
>>> h = example_hazard()
>>> score, parts = urgency(h, UrgencyContext(population=9_000), m, h.observed_at)
>>> parts["level"], parts["exposure_population"], score
(60.0, 10.0, 70.0)
>>> late = h.observed_at + timedelta(seconds=600 + 3600)   # one half-life after the grace
>>> urgency(h, UrgencyContext(population=9_000), m, late)[1]["freshness"]
-17.5
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

from pydantic import Field

from onemap.datafiles import RuleFile, StrictModel, load_yaml, validate_model
from onemap.geo.proximity import SiteKind
from onemap.levels import WarningLevel
from onemap.records import Hazard, KeyFigure, Place
from onemap.rules.colours import Points, Weights

LevelName = Literal["blue", "yellow", "orange", "red"]
Scope = Literal["village", "town", "district", "city"]

#: Place fields coarse to fine; a scope compares codes at its level (see :func:`same_area`).
_SCOPE_FIELDS: Final = ("city_code", "district_code", "town_code", "village_code")
_SCOPE_INDEX: Final[dict[str, int]] = {"city": 0, "district": 1, "town": 2, "village": 3}

#: The order of the parts in every breakdown.
PARTS: Final = ("level", "exposure_population", "exposure_sites", "trend", "compound",
                "freshness", "confidence")


class LevelPoints(Points):
    """Points per warning colour (NONE scores nothing)."""


class PopulationExposure(StrictModel):
    """``min(cap, points_per_decade × log10(1 + people / reference_people))``."""

    reference_people: float = Field(gt=0)
    points_per_decade: float = Field(ge=0)
    cap: float = Field(ge=0)


class SiteExposure(StrictModel):
    """Vulnerable sites within a radius that depends on the hazard type."""

    #: metres per hazard kind; ``default`` for kinds not listed.
    radius_m: dict[str, float] = Field(min_length=1)
    #: points per site of each kind.
    weights: dict[SiteKind, float]
    cap: float = Field(ge=0)


class TrendModel(StrictModel):
    rising: float
    steady: float = 0.0
    falling: float
    #: points when the next level is due now, falling linearly to 0 at ``soon_horizon_h``.
    soon_points: float = Field(ge=0)
    soon_horizon_h: float = Field(gt=0)


class PairSide(StrictModel):
    """One side of a compound pair: which kinds, from which level, optionally accelerating."""

    kinds: list[str] = Field(min_length=1)
    min_level: LevelName = "blue"
    accelerating: bool = False


class CompoundPair(StrictModel):
    """Two kinds of hazard that feed each other when live in the same ``scope`` area."""

    name: str = Field(min_length=1)
    a: PairSide
    b: PairSide
    scope: Scope
    bonus: float = Field(ge=0)


class CompoundModel(StrictModel):
    pairs: list[CompoundPair] = Field(default_factory=list)
    cap: float = Field(ge=0)


class FreshnessModel(StrictModel):
    grace_s: float = Field(ge=0)
    half_life_s: float = Field(gt=0)
    floor: float = Field(ge=0, le=1)


class ConfidenceModel(StrictModel):
    scope: Scope = "town"
    #: a corroborating hazard must be live at this level or above.
    min_level: LevelName = "blue"
    per_corroborating_feed: float = Field(ge=0)
    max_bonus: float = Field(ge=0)
    silent_penalty: float = Field(ge=0, le=1)
    floor: float = Field(ge=0, le=1)


class RiskWeights(Weights):
    """Per-level weights ``w`` of the area risk index ``100 × (1 - Π(1 - w))`` (ranking.py)."""


class SubKind(StrictModel):
    """A finer kind for pairing, told apart by the key figure's name (积水深度 → waterlogging)."""

    hazard_type: str = Field(min_length=1)
    key_figure: str = Field(min_length=1)
    kind: str = Field(min_length=1)


class UrgencyModel(RuleFile):
    rule: Literal["urgency"]
    level_points: LevelPoints
    population: PopulationExposure
    sites: SiteExposure
    trend: TrendModel
    compound: CompoundModel
    freshness: FreshnessModel
    confidence: ConfidenceModel
    risk_index: RiskWeights
    kinds: list[SubKind] = Field(default_factory=list)

    def radius_m(self, kind: str) -> float:
        """How far from a hazard of this kind vulnerable sites count."""
        radii = self.sites.radius_m
        return float(radii.get(kind, radii.get("default", 0.0)))

    def kind_of(self, hazard: Hazard) -> str:
        """The hazard's kind for pairing and site radii: its type, refined by ``kinds``."""
        for sub in self.kinds:
            if sub.hazard_type == hazard.hazard_type and sub.key_figure == hazard.key_figure.name:
                return sub.kind
        return hazard.hazard_type

    @classmethod
    def load(cls, path: Path) -> UrgencyModel:
        data, lines = load_yaml(path)
        return validate_model(cls, data, lines, path)

    @classmethod
    def load_default(cls) -> UrgencyModel:
        return cls.load(Path(__file__).with_name("default") / "urgency.yaml")


@dataclasses.dataclass(frozen=True, slots=True)
class UrgencyContext:
    """The facts about a hazard's surroundings that the score needs (computed by the caller).

    ``population``: people exposed (the village's for a point hazard, the area-weighted sum
    of the affected villages for an area hazard). ``sites``: vulnerable sites within
    :meth:`UrgencyModel.radius_m` of the hazard, counted per kind. ``colocated``: the other
    live hazards of the same status (actual or exercise) in the hazard's district, town or
    village; the model picks those in each rule's scope.
    """

    population: int = 0
    sites: Mapping[str, int] = dataclasses.field(default_factory=dict)
    colocated: Sequence[Hazard] = ()


def same_area(a: Place, b: Place, scope: Scope) -> bool:
    """Whether two places share the ``scope`` area.

    A place located only at a coarser level (an area hazard placed on its town or district)
    is compared at its own finest level: a district-wide rainstorm warning shares its
    district's every village.

    >>> v1 = Place("4404", "", "440402", "", "440402001", "", "440402001001")
    >>> v2 = Place("4404", "", "440402", "", "440402001", "", "440402001002")
    >>> same_area(v1, v2, "town"), same_area(v1, v2, "village")
    (True, False)
    >>> same_area(v1, Place("4404", "", "440402"), "village")
    True
    """
    for field in reversed(_SCOPE_FIELDS[: _SCOPE_INDEX[scope] + 1]):
        ca, cb = getattr(a, field), getattr(b, field)
        if ca and cb:
            return bool(ca == cb)
    return False


def population_points(people: int, m: PopulationExposure) -> float:
    """Log-scaled, capped: every tenfold more people adds the same points.

    >>> p = PopulationExposure(reference_people=1000, points_per_decade=10, cap=25)
    >>> population_points(0, p), population_points(9_000, p), population_points(10**9, p)
    (0.0, 10.0, 25.0)
    """
    if people <= 0:
        return 0.0
    return float(min(m.cap, m.points_per_decade * math.log10(1.0 + people / m.reference_people)))


def freshness_factor(age_s: float, m: FreshnessModel) -> float:
    """1 within the grace period, then halving every half-life towards the floor.

    >>> f = FreshnessModel(grace_s=600, half_life_s=3600, floor=0.5)
    >>> freshness_factor(0, f), freshness_factor(600 + 3600, f), freshness_factor(10**7, f)
    (1.0, 0.75, 0.5)
    """
    over = max(0.0, age_s - m.grace_s)
    return float(m.floor + (1.0 - m.floor) * 0.5 ** (over / m.half_life_s))


def _matches(hazard: Hazard, side: PairSide, model: UrgencyModel) -> bool:
    if model.kind_of(hazard) not in side.kinds:
        return False
    if hazard.level < WarningLevel.parse(side.min_level):
        return False
    return not side.accelerating or str(hazard.trend.get("accelerating", "")) == "yes"


def compound_pairs(hazard: Hazard, colocated: Sequence[Hazard],
                   model: UrgencyModel) -> list[tuple[str, str]]:
    """(pair name, partner hazard id) for every configured pair the hazard makes; one
    partner (the first by hazard id) per pair."""
    out: list[tuple[str, str]] = []
    for pair in model.compound.pairs:
        partners: list[str] = []
        for mine, theirs in ((pair.a, pair.b), (pair.b, pair.a)):
            if not _matches(hazard, mine, model):
                continue
            partners.extend(
                o.hazard_id for o in colocated
                if o.hazard_id != hazard.hazard_id and o.level > WarningLevel.NONE
                and o.exercise == hazard.exercise and _matches(o, theirs, model)
                and same_area(hazard.place, o.place, pair.scope))
        if partners:
            out.append((pair.name, min(partners)))
    return out


def confidence_factor(hazard: Hazard, colocated: Sequence[Hazard],
                      m: ConfidenceModel) -> float:
    """Other feeds corroborating in the same area raise it; a silent own source lowers it."""
    min_level = WarningLevel.parse(m.min_level)
    feeds = {o.feed for o in colocated
             if o.hazard_id != hazard.hazard_id and o.feed != hazard.feed
             and o.hazard_type != "sensor_silent" and o.level >= min_level
             and o.exercise == hazard.exercise and same_area(hazard.place, o.place, m.scope)}
    bonus = min(m.max_bonus, m.per_corroborating_feed * len(feeds))
    silent = hazard.hazard_type != "sensor_silent" and any(
        o.hazard_type == "sensor_silent" and o.source_id == hazard.source_id
        and o.level > WarningLevel.NONE for o in colocated)
    return max(m.floor, 1.0 + bonus - (m.silent_penalty if silent else 0.0))


def urgency(hazard: Hazard, context: UrgencyContext, model: UrgencyModel,
            now: datetime) -> tuple[float, dict[str, float]]:
    """The urgency score and its additive breakdown (keys in :data:`PARTS`).

    A hazard at level NONE (resolved) scores 0 with every part 0.

    >>> m = UrgencyModel.load_default()
    >>> h = example_hazard()   # orange geohazard point, accelerating, reading just now
    >>> rain = example_hazard(hazard_id="rainstorm:R1", hazard_type="rainstorm",
    ...                       feed="weather", level=WarningLevel.RED, trend={})
    >>> ctx = UrgencyContext(population=9_000, sites={"school": 1}, colocated=[rain])
    >>> score, parts = urgency(h, ctx, m, h.observed_at)
    >>> parts  # doctest: +NORMALIZE_WHITESPACE
    {'level': 60.0, 'exposure_population': 10.0, 'exposure_sites': 8.0, 'trend': 0.0,
     'compound': 20.0, 'freshness': 0.0, 'confidence': 9.8}
    >>> score
    107.8
    """
    if hazard.level <= WarningLevel.NONE:
        return 0.0, dict.fromkeys(PARTS, 0.0)
    level = model.level_points.of(hazard.level)
    people = population_points(context.population, model.population)
    weights: dict[str, float] = {str(k): v for k, v in model.sites.weights.items()}
    sites = min(model.sites.cap, sum(
        weights.get(kind, 0.0) * max(0, n) for kind, n in context.sites.items()))
    trend = _trend_points(hazard, model.trend)
    compound = min(model.compound.cap, sum(
        next(p.bonus for p in model.compound.pairs if p.name == name)
        for name, _ in compound_pairs(hazard, context.colocated, model)))
    base = level + people + sites + trend + compound
    age = (now - hazard.observed_at).total_seconds()
    fresh = freshness_factor(age, model.freshness)
    conf = confidence_factor(hazard, context.colocated, model.confidence)
    parts = {
        "level": level, "exposure_population": people, "exposure_sites": sites,
        "trend": trend, "compound": compound, "freshness": base * (fresh - 1.0),
        "confidence": base * fresh * (conf - 1.0),
    }
    breakdown = {k: round(v, 3) + 0.0 for k, v in parts.items()}
    return round(base * fresh * conf, 3), breakdown


def _trend_points(hazard: Hazard, m: TrendModel) -> float:
    direction = str(hazard.trend.get("direction", "steady"))
    points = {"rising": m.rising, "falling": m.falling}.get(direction, m.steady)
    hours = hazard.trend.get("hours_to_next_level")
    if isinstance(hours, int | float) and not isinstance(hours, bool) \
            and math.isfinite(hours) and hours >= 0 and hazard.level < WarningLevel.RED:
        points += m.soon_points * max(0.0, 1.0 - float(hours) / m.soon_horizon_h)
    return points


def example_hazard(**changes: object) -> Hazard:
    """A hazard for examples and tests: an orange, accelerating geohazard point in
    香洲区拱北街道 (any field can be replaced)."""
    from datetime import UTC

    base = Hazard(
        hazard_id="geohazard:GH1", hazard_type="geohazard", feed="geohazard",
        source_id="GH1", source_name="示例隐患点", level=WarningLevel.ORANGE,
        previous_level=WarningLevel.YELLOW,
        place=Place("440400", "珠海市", "440402", "香洲区", "440402001", "拱北街道",
                    "440402001001", "示例社区"),
        lon=113.55, lat=22.22, observed_at=datetime(2026, 8, 23, 8, 0, tzinfo=UTC),
        key_figure=KeyFigure("位移速率", 12.0, "毫米/天", "橙色预警线", 10.0),
        reason="示例", rule_id="geohazard", rule_version="geohazard@v1+example",
        trend={"direction": "steady", "rate_per_h": None, "hours_to_next_level": None,
               "accelerating": "yes"},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
