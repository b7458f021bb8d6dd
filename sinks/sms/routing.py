"""Who gets an alert: a pure function of the alert and the roster, with its reasons."""

from __future__ import annotations

from onemap.levels import WarningLevel
from onemap.records import Alert
from onemap.registries import Registries
from onemap.sinks.sms.roster import DutyRoster, Officer


def area_covers(officer_area: str, alert_codes: tuple[str, ...]) -> bool:
    """An officer for 440402 (香洲区) covers every town and village inside it.

    >>> area_covers("440402", ("440400", "440402", "440402001", "440402001001"))
    True
    >>> area_covers("440403", ("440400", "440402", "440402001", "440402001001"))
    False
    """
    return officer_area in alert_codes


def recipients(alert: Alert, roster: DutyRoster) -> list[Officer]:
    """Officers whose area contains the hazard, who cover its type, from their minimum level;
    outside an officer's shifts their deputy takes the message (each person once).

    A transition downwards (de-escalated, resolved) goes to whoever was told of the level it
    leaves, so nobody hears "all clear" for something they were never told about, and
    nobody who was told is left without it.
    """
    place = alert.hazard.place
    codes = tuple(c for c in (place.city_code, place.district_code, place.town_code,
                              place.village_code) if c)
    relevant = max(alert.level, alert.previous_level)
    if relevant == WarningLevel.NONE:
        return []
    chosen: dict[str, Officer] = {}
    for officer in roster.officers:
        if not (area_covers(officer.area_code, codes)
                and officer.covers(alert.hazard.hazard_type)
                and relevant >= officer.threshold):
            continue
        on_duty = roster.on_duty_for(officer, alert.issued_at)
        if on_duty is not None:
            chosen.setdefault(on_duty.id, on_duty)
    return list(chosen.values())


def responsible_person(alert: Alert, registries: Registries | None) -> Officer | None:
    """A geological-hazard point's 责任人, who must hear of every level of their point."""
    if registries is None or alert.hazard.hazard_type != "geohazard":
        return None
    point = registries.hazard_points.get(alert.hazard.source_id)
    if point is None:
        return None
    return Officer(id=f"responsible:{point.point_id}", name=point.responsible_name,
                   role="隐患点责任人", area_code=alert.hazard.place.village_code or "440400",
                   phone=point.responsible_phone)
