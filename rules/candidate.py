"""What an evaluator proposes for one hazard type of one source, before hysteresis hold."""

from __future__ import annotations

import dataclasses

from onemap.levels import WarningLevel
from onemap.records import KeyFigure


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """The level a source's readings deserve now for one hazard type, and why."""

    hazard_type: str
    level: WarningLevel
    key_figure: KeyFigure
    reason: str
    rule_id: str
    #: rising / steady / falling, rate per hour, hours to the next level (None: not heading
    #: there); empty where it does not apply (incidents).
    trend: dict[str, float | str | None] = dataclasses.field(default_factory=dict)


def trend_of(rate_h: float | None, hours_to_next: float | None,
             steady_below: float = 1e-3) -> dict[str, float | str | None]:
    """A trend record from a rate per hour.

    >>> trend_of(0.2, 1.5)
    {'direction': 'rising', 'rate_per_h': 0.2, 'hours_to_next_level': 1.5}
    >>> trend_of(None, None)["direction"]
    'steady'
    """
    if rate_h is None or abs(rate_h) < steady_below:
        direction = "steady"
    else:
        direction = "rising" if rate_h > 0 else "falling"
    return {"direction": direction, "rate_per_h": rate_h, "hours_to_next_level": hours_to_next}
