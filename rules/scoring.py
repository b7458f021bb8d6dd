"""The urgency score: a documented model whose weights are data; it returns its breakdown."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onemap.datafiles import RuleFile
from onemap.levels import WarningLevel
from onemap.rules.colours import Points


class LevelPoints(Points):
    """Points per warning colour."""


class ScoringModel(RuleFile):
    rule: Literal["scoring"]
    level_points: LevelPoints
    exposure_points_per_10k: float = Field(ge=0)
    exposure_cap: float = Field(ge=0)


def urgency(
    level: WarningLevel, population: int, model: ScoringModel,
) -> tuple[float, dict[str, float]]:
    """Score and its breakdown: how much the level and the exposed population contributed.

    >>> m = ScoringModel.model_validate({"rule": "scoring", "version": 1, "source": "t",
    ...     "level_points": {"blue": 10, "yellow": 30, "orange": 60, "red": 100},
    ...     "exposure_points_per_10k": 5, "exposure_cap": 30})
    >>> urgency(WarningLevel.RED, 20_000, m)
    (110.0, {'level': 100.0, 'exposure': 10.0})
    """
    if level == WarningLevel.NONE:
        return 0.0, {"level": 0.0, "exposure": 0.0}
    level_part = float(getattr(model.level_points, level.label))
    exposure = min(model.exposure_cap, population / 10_000 * model.exposure_points_per_10k)
    breakdown = {"level": round(level_part, 3), "exposure": round(exposure, 3)}
    return round(sum(breakdown.values()), 3), breakdown
