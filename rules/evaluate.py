"""Stage 2: observations -> hazard state changes, with per-source state.

``state`` is any mutable mapping from source key to a small JSON-able dict; in the worker it
is a faust table (changelogged, so it survives restarts), in tests a plain dict.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import datetime
from typing import Any

from onemap.levels import WarningLevel
from onemap.records import Hazard, Observation
from onemap.registries import WaterStation
from onemap.rules.rulebook import RuleBook
from onemap.rules.water_level import evaluate_water_level


class Decision(enum.Enum):
    """What the rules made of one observation (a metric label)."""

    LEVEL_CHANGED = "level-changed"
    UNCHANGED = "unchanged"
    STALE = "stale"  # not newer than the last reading applied for this source
    NO_RULE = "no-rule"


@dataclasses.dataclass
class RulesResult:
    hazards: list[Hazard] = dataclasses.field(default_factory=list)
    decisions: dict[Decision, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(Decision, 0))


def state_key(obs: Observation) -> str:
    return f"{obs.feed}:{obs.source_id}"


class RulesStage:
    stage = "rules"

    def __init__(self, water_stations: Mapping[str, WaterStation]) -> None:
        self.water_stations = water_stations

    def process(
        self, observations: Sequence[Observation], state: MutableMapping[str, Any],
        rules: RuleBook,
    ) -> RulesResult:
        result = RulesResult()
        for obs in sorted(observations, key=lambda o: o.observed_at):
            decision, hazard = self.evaluate(obs, state, rules)
            result.decisions[decision] += 1
            if hazard is not None:
                result.hazards.append(hazard)
        return result

    def evaluate(
        self, obs: Observation, state: MutableMapping[str, Any], rules: RuleBook,
    ) -> tuple[Decision, Hazard | None]:
        key = state_key(obs)
        previous = state.get(key) or {}
        last_seen = previous.get("observed_at")
        if last_seen is not None and obs.observed_at <= datetime.fromisoformat(last_seen):
            return Decision.STALE, None
        current = WarningLevel(previous.get("level", 0))
        station = self.water_stations.get(obs.source_id) if obs.feed == "water" else None
        if station is None or "level_m" not in obs.values:
            return Decision.NO_RULE, None
        decision = evaluate_water_level(obs.values["level_m"], station, rules.water_level,
                                        current)
        state[key] = {"level": int(decision.level), "observed_at": obs.observed_at.isoformat()}
        if decision.level == current:
            return Decision.UNCHANGED, None
        hazard = Hazard(
            hazard_id=f"water_level:{obs.source_id}", hazard_type="water_level", feed=obs.feed,
            source_id=obs.source_id, source_name=station.name, level=decision.level,
            previous_level=current, place=obs.place, lon=obs.lon, lat=obs.lat,
            observed_at=obs.observed_at, key_figure=decision.key_figure,
            reason=decision.reason, rule_id="water_level",
            rule_version=rules.rule_version("water_level"), exercise=obs.exercise,
        )
        return Decision.LEVEL_CHANGED, hazard
