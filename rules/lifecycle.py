"""Stage 3: hazard state changes -> alert transitions on the ledger (``onemap.alerts``).

Each hazard has one alert whose lifecycle is new -> escalated / de-escalated -> resolved;
every transition gets the next sequence number, so ``hazard_id#seq`` identifies it for good
and every sink can be idempotent on it. The same hazard at the same level never alerts twice.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, MutableMapping, Sequence
from datetime import datetime
from typing import Any

from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard
from onemap.rules.scoring import ScoringModel, urgency


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


class LifecycleStage:
    stage = "lifecycle"

    def __init__(self, population_of: Callable[[str], int]) -> None:
        self.population_of = population_of

    def process(
        self, hazards: Sequence[Hazard], state: MutableMapping[str, Any],
        scoring: ScoringModel, now: datetime,
    ) -> list[Alert]:
        alerts: list[Alert] = []
        for hazard in hazards:
            previous = state.get(hazard.hazard_id) or {}
            open_level = WarningLevel(previous["level"]) if previous.get("open") else None
            seen = previous.get("observed_at")
            fresh = seen is None or hazard.observed_at > datetime.fromisoformat(seen)
            step = transition_for(open_level, hazard.level,
                                  update=hazard.level == hazard.previous_level and fresh)
            if step is None:
                continue
            seq = int(previous.get("seq", 0)) + 1
            score, breakdown = urgency(
                hazard.level, self.population_of(hazard.place.village_code), scoring)
            state[hazard.hazard_id] = {
                "seq": seq, "level": int(hazard.level), "open": step != Transition.RESOLVED,
                "observed_at": hazard.observed_at.isoformat()}
            alerts.append(Alert(
                alert_id=f"{hazard.hazard_id}#{seq}", hazard_id=hazard.hazard_id, seq=seq,
                transition=step.value, level=hazard.level,
                previous_level=open_level if open_level is not None else WarningLevel.NONE,
                hazard=hazard, score=score, score_breakdown=breakdown, issued_at=now,
            ))
        return alerts
