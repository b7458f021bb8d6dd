"""Per-colour tables in rule files: one figure for each of blue, yellow, orange and red."""

from __future__ import annotations

from pydantic import Field

from onemap.datafiles import StrictModel
from onemap.levels import WarningLevel


class ColourTable(StrictModel):
    """A figure per colour; ``of(NONE)`` is 0. Subclasses narrow the figures' bounds."""

    blue: float
    yellow: float
    orange: float
    red: float

    def of(self, level: WarningLevel) -> float:
        """
        >>> ColourTable(blue=1, yellow=2, orange=3, red=4).of(WarningLevel.ORANGE)
        3.0
        >>> ColourTable(blue=1, yellow=2, orange=3, red=4).of(WarningLevel.NONE)
        0.0
        """
        return 0.0 if level <= WarningLevel.NONE else float(getattr(self, level.label))


class Points(ColourTable):
    """Non-negative points per colour (scores)."""

    blue: float = Field(ge=0)
    yellow: float = Field(ge=0)
    orange: float = Field(ge=0)
    red: float = Field(ge=0)


class Thresholds(ColourTable):
    """Positive thresholds per colour (rates, rainfall)."""

    blue: float = Field(gt=0)
    yellow: float = Field(gt=0)
    orange: float = Field(gt=0)
    red: float = Field(gt=0)


class Weights(ColourTable):
    """Weights in [0, 1) per colour (probability-like)."""

    blue: float = Field(ge=0, lt=1)
    yellow: float = Field(ge=0, lt=1)
    orange: float = Field(ge=0, lt=1)
    red: float = Field(ge=0, lt=1)
