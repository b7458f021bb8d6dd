"""The roll-up village → town → district → city as one batch function: the *definition*
the live ranking is checked against, not what the wall runs.

Why it is kept: the wall's colours, counts and risk indices come from the incremental
:class:`onemap.rules.ranking.Ranking` (``LiveState`` feeds it every alert). An independent
batch statement of the same rule, over (place, level) pairs or the ledger JSON in Redis, is
the oracle that the ranking's tests (tests/test_ranking.py) and the wall's browser tests
(map colours equal the roll-up of what Redis holds) compare against. Nothing in the running
system imports it.

The rule: an area's level is the highest level of the open *actual* alerts located inside it.
An alert's place carries its codes at every level (city, district, town, village), so one alert
colours its village and every area above it; nothing is pushed *down* (a town-level alert with
no village code does not colour the villages of the town). Drill (exercise) alerts and resolved
alerts never colour anything.

>>> from onemap.records import Place
>>> p = Place("440400", "珠海市", "440404", "金湾区", "440404100", "平沙镇",
...           "440404100001", "美平社区")
>>> levels = roll_up([(p, WarningLevel.ORANGE), (Place("440400"), WarningLevel.BLUE)])
>>> {code: level.label for code, level in levels.items()}
{'440400': 'orange', '440404': 'orange', '440404100': 'orange', '440404100001': 'orange'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from onemap.levels import WarningLevel
from onemap.records import Place

#: The place fields holding the codes of each level, coarse to fine.
CODE_FIELDS = ("city_code", "district_code", "town_code", "village_code")


def roll_up(placed: Iterable[tuple[Place, WarningLevel]]) -> dict[str, WarningLevel]:
    """Code → highest level among the (place, level) pairs inside it, at every level.

    Only areas with a level above NONE appear; an absent code means "no warning".
    """
    out: dict[str, WarningLevel] = {}
    for place, level in placed:
        if level <= WarningLevel.NONE:
            continue
        for code in (place.city_code, place.district_code, place.town_code,
                     place.village_code):
            if code and out.get(code, WarningLevel.NONE) < level:
                out[code] = level
    return out


def is_open_actual(alert: Mapping[str, Any]) -> bool:
    """An alert (ledger JSON) that may colour the map: actual, not resolved, level above none."""
    return (alert.get("status") == "actual" and alert.get("transition") != "resolved"
            and WarningLevel.parse(str(alert.get("level", "none"))) > WarningLevel.NONE)


def area_levels(alerts: Iterable[Mapping[str, Any]]) -> dict[str, WarningLevel]:
    """The roll-up over alerts in their ledger JSON form; drills and resolved ones are skipped.

    >>> a = {"status": "actual", "transition": "new", "level": "red",
    ...      "hazard": {"place": {"city_code": "440400", "district_code": "440402"}}}
    >>> drill = {**a, "status": "exercise"}
    >>> sorted((c, lv.label) for c, lv in area_levels([a, drill]).items())
    [('440400', 'red'), ('440402', 'red')]
    """
    return roll_up(
        (Place.from_dict(a["hazard"]["place"]), WarningLevel.parse(a["level"]))
        for a in alerts if is_open_actual(a))
