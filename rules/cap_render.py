"""Render an alert transition from the ``onemap.alerts`` ledger as a CAP 1.2 message.

Other warning systems (the national and provincial publishing platforms, neighbouring cities'
command rooms) speak CAP, so every OneMap alert transition is also written as one CAP 1.2
``<alert>``, valid against the OASIS schema (tested) and readable back with
:func:`onemap.streams.feeds.cap.parse_cap` (round-trip tested).

The mapping, and why:

- ``identifier``: the alert id (``hazard_id#seq``, already the idempotency key of every sink)
  with the characters CAP forbids in identifiers (space, comma, ``<``, ``&``) and ``%`` and
  anything non-ASCII percent-encoded, so it is stable and unique per transition. Drills get an
  ``exercise:`` prefix so a drill can never share an identifier with an actual alert.
- ``msgType``: ``new`` -> Alert; ``escalated`` / ``de-escalated`` / ``updated`` -> Update;
  ``resolved`` -> Cancel. Update and Cancel must name the earlier message(s) in
  ``references``; the caller passes their identities (:func:`cap_identity` of each earlier
  transition), since only the ledger knows when they were sent.
- ``status``: Exercise for drills (``hazard.exercise``), with a ``note`` saying so and a
  【演练】 headline prefix, else Actual.
- ``scope``: Restricted by default -- OneMap alerts are for emergency managers and
  responsible persons, not the public -- with ``restriction`` saying who.
- ``info``: ``zh-CN``; category from the hazard type (:data:`CATEGORIES`); urgency,
  severity and certainty from the level (:func:`cap_grades`); ``onset`` is the reading's
  event time; headline and description in Chinese from the hazard's reason and key figure.
- parameters: ``预警颜色`` (the national colour, which
  :func:`~onemap.streams.feeds.cap.cap_warning_level` prefers over severity) and
  machine-readable ``onemap:*`` values (level, previous level, transition, ids, urgency score
  and its breakdown, rule and version) so a CAP consumer can explain the ranking too.
- ``area``: the place label as ``areaDesc``; a circle of ``radius_km`` around the hazard point
  (WGS 84; CAP writes ``lat,lon``); geocodes naming the divisions that contain the point:
  ``GB/T 2260`` (6-digit district, or city, code), ``GB/T 10114`` (9-digit town code) and
  ``统计用区划代码`` (12-digit village code of the National Bureau of Statistics). They locate
  the point for routing; the target area itself is the circle.

>>> from onemap.records import Alert, Hazard, KeyFigure, Place
>>> from datetime import datetime, timedelta, timezone
>>> t = datetime(2017, 8, 23, 12, 0, tzinfo=timezone(timedelta(hours=8)))
>>> hazard = Hazard("water_level:S1", "water_level", "water", "S1", "前山河站",
...     WarningLevel.ORANGE, WarningLevel.NONE, Place(district_code="440402",
...     district_name="香洲区"), 113.53, 22.24, t, KeyFigure("水位", 3.5, "米"),
...     "前山河站水位3.50米", "water_level", "v1")
>>> alert = Alert("water_level:S1#1", "water_level:S1", 1, "new", WarningLevel.ORANGE,
...     WarningLevel.NONE, hazard, 0.8, {"level": 0.8}, t)
>>> from onemap.streams.feeds.cap import parse_cap
>>> cap = parse_cap(render_cap(alert))
>>> cap.msg_type, cap.identifier, cap.infos[0].event, cap.infos[0].severity
('Alert', 'water_level:S1#1', '水位橙色预警', 'Severe')
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal
from xml.etree import ElementTree as ET  # building only; parsing is cap.py's job

import orjson

from onemap.levels import WarningLevel
from onemap.records import Alert, Place, dumps
from onemap.streams.feeds.cap import CAP_NS, SEVERITY_LEVEL, CapReference, format_cap_time

DEFAULT_SENDER = "onemap@zhuhai.yjgl.gov.cn"
DEFAULT_SENDER_NAME = "珠海市应急管理局 OneMap 应急一张图"
DEFAULT_RESTRICTION = "仅限应急管理部门、值班人员和隐患点责任人"
DEFAULT_RADIUS_KM = 1.0
EXERCISE_NOTE = "演练信息，非真实预警（OneMap exercise）"
LANGUAGE = "zh-CN"

#: OneMap's own parameter names (the colour parameter is read back by cap_warning_level).
COLOUR_PARAMETER = "预警颜色"

MSG_TYPES: Mapping[str, Literal["Alert", "Update", "Cancel"]] = {
    "new": "Alert",
    "escalated": "Update",
    "de-escalated": "Update",
    "updated": "Update",
    "resolved": "Cancel",
}

#: Hazard type -> (CAP category, Chinese name). CAP 1.2 §3.2.2 categories: "Met" is
#: "Meteorological (inc. flood)", so river, reservoir and tide levels, waterlogging and
#: storm surge are Met; "Geo" is "Geophysical (inc. landslide)"; a silent sensor is a failure
#: of monitoring infrastructure, "Infra"; incidents are "Safety" unless their category says
#: more (fire, health, transport, security). Unknown types are "Other".
CATEGORIES: Mapping[str, tuple[str, str]] = {
    "water_level": ("Met", "水位"),
    "waterlogging": ("Met", "内涝"),
    "tide": ("Met", "潮位"),
    "storm_surge": ("Met", "风暴潮"),
    "rainstorm": ("Met", "暴雨"),
    "rainfall": ("Met", "暴雨"),
    "wind": ("Met", "大风"),
    "typhoon": ("Met", "台风"),
    "geohazard": ("Geo", "地质灾害"),
    "landslide": ("Geo", "滑坡"),
    "collapse": ("Geo", "崩塌"),
    "debris_flow": ("Geo", "泥石流"),
    "subsidence": ("Geo", "地面塌陷"),
    "incident": ("Safety", "突发事件"),
    "fire": ("Fire", "火灾"),
    "medical": ("Health", "医疗救护"),
    "traffic": ("Transport", "交通事故"),
    "public_security": ("Security", "治安事件"),
    "hazmat": ("CBRNE", "危化品事故"),
    "building_collapse": ("Safety", "房屋倒塌"),
    "feed_silent": ("Infra", "监测中断"),
}

_SEVERITY_OF: Mapping[WarningLevel, str] = {
    level: severity for severity, level in SEVERITY_LEVEL.items()}
_URGENCY_OF: Mapping[WarningLevel, str] = {
    WarningLevel.RED: "Immediate", WarningLevel.ORANGE: "Immediate",
    WarningLevel.YELLOW: "Expected", WarningLevel.BLUE: "Future",
    WarningLevel.NONE: "Past",
}
# XML 1.0 cannot carry these at all, not even escaped; untrusted text (an incident's
# description) may contain them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_CAP_TOKEN_SAFE = ":#@/-._~!$'()*+;="


def cap_grades(level: WarningLevel) -> tuple[str, str, str]:
    """CAP (urgency, severity, certainty) for a OneMap level.

    Severity is the inverse of the parser's :data:`SEVERITY_LEVEL` (red Extreme ... blue Minor;
    an all-clear is Unknown, as real cancellations write it). Urgency follows what the colour
    asks of responders: red/orange act now (Immediate), yellow prepare (Expected), blue be
    aware (Future), all-clear Past. Certainty is Observed: OneMap alerts come from measured
    readings crossing thresholds, not from forecasts.

    >>> cap_grades(WarningLevel.RED)
    ('Immediate', 'Extreme', 'Observed')
    """
    return _URGENCY_OF[level], _SEVERITY_OF[level], "Observed"


def cap_identifier(alert_id: str, *, exercise: bool = False) -> str:
    """The CAP identifier of an alert transition (stable, CAP-legal).

    >>> cap_identifier("water_level:ZH-RIV-001#3")
    'water_level:ZH-RIV-001#3'
    >>> cap_identifier("incident:报警 1,2#1", exercise=True)
    'exercise:incident:%E6%8A%A5%E8%AD%A6%201%2C2#1'
    """
    token = urllib.parse.quote(alert_id, safe=_CAP_TOKEN_SAFE)
    return f"exercise:{token}" if exercise else token


def cap_identity(alert: Alert, sender: str = DEFAULT_SENDER) -> CapReference:
    """The (sender, identifier, sent) a later Update/Cancel lists in ``references``.

    ``sent`` is cut to whole seconds, as CAP writes it, so it matches the rendered message.
    """
    if not alert.alert_id:
        raise ValueError("an alert without alert_id has no CAP identifier")
    return CapReference(_check_sender(sender),
                        cap_identifier(alert.alert_id, exercise=alert.hazard.exercise),
                        alert.issued_at.replace(microsecond=0))


def earlier_identities(alert: Alert, sender: str = DEFAULT_SENDER) -> list[CapReference]:
    """The CAP identities of the earlier transitions the alert remembers (``Alert.earlier``)."""
    return [CapReference(_check_sender(sender),
                         cap_identifier(alert_id, exercise=alert.hazard.exercise),
                         issued_at.replace(microsecond=0))
            for alert_id, issued_at in alert.earlier]


def render_cap(
    alert: Alert | Mapping[str, Any],
    *,
    previous: Sequence[CapReference] = (),
    sender: str = DEFAULT_SENDER,
    sender_name: str = DEFAULT_SENDER_NAME,
    radius_km: float = DEFAULT_RADIUS_KM,
    expires: datetime | None = None,
    instruction: str | None = None,
    scope: Literal["Public", "Restricted"] = "Restricted",
    restriction: str = DEFAULT_RESTRICTION,
) -> bytes:
    """One alert transition as CAP 1.2 XML (UTF-8 bytes with an XML declaration).

    ``alert`` is an :class:`~onemap.records.Alert` or its ledger dict (``Alert.to_dict()``).
    ``previous`` are the identities of the earlier messages this one updates or cancels;
    required for every transition but ``new``; by default those the alert remembers
    (``Alert.earlier``, written by the lifecycle stage). Raises ValueError on a transition it
    does not know, a missing ``previous``, a naive time or a sender CAP forbids.
    """
    if not isinstance(alert, Alert):
        alert = Alert.from_json(dumps(dict(alert)))
    if not previous:
        previous = earlier_identities(alert, sender)
    msg_type = MSG_TYPES.get(alert.transition)
    if msg_type is None:
        raise ValueError(f"unknown alert transition {alert.transition!r}; expected one of "
                         f"{', '.join(MSG_TYPES)}")
    if msg_type != "Alert" and not previous:
        raise ValueError(f"a {alert.transition} alert is a CAP {msg_type}: pass the identity "
                         "of the earlier message(s) as previous=")
    hazard = alert.hazard
    if not (0 <= radius_km < 20_000 and -90 <= hazard.lat <= 90 and -180 <= hazard.lon <= 180):
        raise ValueError(f"cannot draw a circle of {radius_km} km at lon {hazard.lon}, "
                         f"lat {hazard.lat}")
    identity = cap_identity(alert, sender)

    root = ET.Element(_q("alert"))
    _add(root, "identifier", identity.identifier)
    _add(root, "sender", identity.sender)
    _add(root, "sent", format_cap_time(alert.issued_at))
    _add(root, "status", "Exercise" if hazard.exercise else "Actual")
    _add(root, "msgType", msg_type)
    _add(root, "scope", scope)
    if scope == "Restricted":
        _add(root, "restriction", restriction)
    if hazard.exercise:
        _add(root, "note", EXERCISE_NOTE)
    if previous:
        _add(root, "references", " ".join(str(ref) for ref in previous))

    _info(root, alert, msg_type, sender_name=sender_name, radius_km=radius_km,
          expires=expires, instruction=instruction)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True,
                              default_namespace=CAP_NS)
    return body


def _info(
    root: ET.Element, alert: Alert, msg_type: str, *, sender_name: str, radius_km: float,
    expires: datetime | None, instruction: str | None,
) -> None:
    hazard = alert.hazard
    info = ET.SubElement(root, _q("info"))
    category, name = CATEGORIES.get(hazard.hazard_type, ("Other", hazard.hazard_type))
    urgency, severity, certainty = cap_grades(alert.level)
    _add(info, "language", LANGUAGE)
    _add(info, "category", category)
    _add(info, "event", _event(name, alert.level))
    if msg_type == "Cancel":
        _add(info, "responseType", "AllClear")
    _add(info, "urgency", urgency)
    _add(info, "severity", severity)
    _add(info, "certainty", certainty)
    _add(info, "onset", format_cap_time(hazard.observed_at))
    if expires is not None:
        _add(info, "expires", format_cap_time(expires))
    _add(info, "senderName", sender_name)
    _add(info, "headline", _headline(alert, name))
    _add(info, "description", _description(alert))
    if instruction:
        _add(info, "instruction", instruction)
    for value_name, value in _parameters(alert):
        parameter = ET.SubElement(info, _q("parameter"))
        _add(parameter, "valueName", value_name)
        _add(parameter, "value", value)

    _area(info, alert, radius_km)


def _area(info: ET.Element, alert: Alert, radius_km: float) -> None:
    hazard = alert.hazard
    area = ET.SubElement(info, _q("area"))
    _add(area, "areaDesc", _area_desc(hazard.place, hazard.source_name))
    _add(area, "circle", f"{_coord(hazard.lat)},{_coord(hazard.lon)} {_coord(radius_km)}")
    for value_name, code in _geocodes(hazard.place):
        geocode = ET.SubElement(area, _q("geocode"))
        _add(geocode, "valueName", value_name)
        _add(geocode, "value", code)


def _q(tag: str) -> str:
    return f"{{{CAP_NS}}}{tag}"


def _add(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, _q(tag)).text = clean_text(text)


def clean_text(text: str) -> str:
    """Text as it survives CAP: characters XML cannot carry dropped, line ends as XML reads
    them back (CR LF and CR become LF), ends stripped as the parser strips them.

    >>> clean_text(" 水位\\x00超警\\r\\n ")
    '水位超警'
    """
    return _NOT_XML.sub("", text).replace("\r\n", "\n").replace("\r", "\n").strip()


def _check_sender(sender: str) -> str:
    if not sender or any(c.isspace() or c in ",<&" for c in sender):
        raise ValueError(f"CAP sender {sender!r} must be non-empty without spaces, commas, < or &")
    return sender


def _coord(value: float) -> str:
    """Six decimals (~0.1 m for degrees): plain notation, never ``1e-05``."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _event(name: str, level: WarningLevel) -> str:
    return f"{name}预警解除" if level == WarningLevel.NONE else f"{name}{level.chinese}预警"


def _headline(alert: Alert, name: str) -> str:
    hazard = alert.hazard
    where = f"{hazard.place.label}{hazard.source_name}"
    colour, before = alert.level.chinese, alert.previous_level.chinese
    if alert.transition == "resolved":
        text = f"{where}{name}{before}预警解除"
    elif alert.transition == "escalated":
        text = f"{where}{name}预警由{before}升级为{colour}"
    elif alert.transition == "de-escalated":
        text = f"{where}{name}预警由{before}降为{colour}"
    else:
        text = f"{where}{name}{colour}预警"
    return f"【演练】{text}" if hazard.exercise else text


def _description(alert: Alert) -> str:
    hazard = alert.hazard
    figure = hazard.key_figure
    parts = [hazard.reason.rstrip("。")]
    measured = f"{figure.name}{figure.value:g}{figure.unit}"
    if figure.threshold is not None:
        measured += f"（{figure.threshold_name}{figure.threshold:g}{figure.unit}）"
    parts.append(measured)
    parts.append(f"观测时间{hazard.observed_at.strftime('%Y-%m-%d %H:%M')}"
                 f"（UTC{format_cap_time(hazard.observed_at)[-6:]}）")
    return "。".join(p for p in parts if p) + "。"


def _parameters(alert: Alert) -> list[tuple[str, str]]:
    hazard = alert.hazard
    breakdown = orjson.dumps(alert.score_breakdown, option=orjson.OPT_SORT_KEYS).decode()
    return [
        (COLOUR_PARAMETER, alert.level.chinese),
        ("onemap:level", alert.level.label),
        ("onemap:previousLevel", alert.previous_level.label),
        ("onemap:transition", alert.transition),
        ("onemap:alertId", alert.alert_id),
        ("onemap:hazardId", hazard.hazard_id),
        ("onemap:hazardType", hazard.hazard_type),
        ("onemap:score", repr(float(alert.score))),
        ("onemap:scoreBreakdown", breakdown),
        ("onemap:rule", f"{hazard.rule_id}@{hazard.rule_version}"),
    ]


def _area_desc(place: Place, source_name: str) -> str:
    return f"{place.label}{source_name}周边" if source_name else place.label


def _geocodes(place: Place) -> list[tuple[str, str]]:
    codes = []
    county = place.district_code or place.city_code
    if county:
        codes.append(("GB/T 2260", county))
    if place.town_code:
        codes.append(("GB/T 10114", place.town_code))
    if place.village_code:
        codes.append(("统计用区划代码", place.village_code))
    return codes
