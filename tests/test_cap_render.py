"""OneMap alerts rendered as CAP 1.2: valid against the OASIS schema, right msgType and
references for each lifecycle step, drills marked, and a faithful round trip through the parser.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from xml.etree import ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.rules.cap_render import (
    DEFAULT_SENDER,
    cap_identifier,
    cap_identity,
    clean_text,
    render_cap,
)
from onemap.rules.lifecycle import Exposure, LifecycleStage
from onemap.rules.rulebook import default_rules_dir, load_rulebook
from onemap.streams.feeds.cap import (
    CapAlert,
    CapReference,
    cap_schema,
    cap_warning_level,
    parse_cap,
)

BEIJING = timezone(timedelta(hours=8))
PLACE = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001",
              "美平社区")
T0 = datetime(2017, 8, 23, 12, 0, 0, 123456, tzinfo=BEIJING)
Y, ORANGE, R, B, N = (WarningLevel.YELLOW, WarningLevel.ORANGE, WarningLevel.RED, WarningLevel.BLUE,
                 WarningLevel.NONE)


def hazard(level: WarningLevel, previous: WarningLevel, minutes: int = 0, *,
           exercise: bool = False) -> Hazard:
    return Hazard(
        hazard_id="water_level:ZH-RIV-001", hazard_type="water_level", feed="water",
        source_id="ZH-RIV-001", source_name="前山河水位站", level=level, previous_level=previous,
        place=PLACE, lon=113.2786, lat=22.0581, observed_at=T0 + timedelta(minutes=minutes),
        key_figure=KeyFigure("水位", 3.52, "米", "警戒水位", 3.2),
        reason="前山河水位站水位3.52米，超过警戒水位（黄色）", rule_id="water_level",
        rule_version="v1", exercise=exercise)


def lifecycle(levels: list[WarningLevel], *, exercise: bool = False) -> list[Alert]:
    """Alerts as the real lifecycle stage makes them, one transition per level change."""
    stage = LifecycleStage(Exposure(population_of=lambda code: 5_000))
    book = load_rulebook(default_rules_dir())
    state: dict[str, dict[str, int]] = {}
    alerts: list[Alert] = []
    previous = N
    for i, level in enumerate(levels):
        alerts += stage.process([hazard(level, previous, 10 * i, exercise=exercise)], state,
                                book.urgency, book.lifecycle,
                                now=T0 + timedelta(minutes=10 * i, seconds=5))
        previous = level
    return alerts


def render_chain(alerts: list[Alert]) -> list[bytes]:
    """Each transition references every earlier message of the same alert, as CAP practice."""
    out: list[bytes] = []
    earlier: list[CapReference] = []
    for alert in alerts:
        if alert.transition == "new":
            earlier = []
        out.append(render_cap(alert, previous=earlier))
        earlier = [*earlier, cap_identity(alert)]
    return out


def assert_schema_valid(xml: bytes) -> None:
    errors = list(cap_schema().iter_errors(ET.fromstring(xml)))
    assert errors == [], errors[0]


FULL = lifecycle([Y, R, B, N])


def test_every_transition_renders_schema_valid_cap() -> None:
    assert [a.transition for a in FULL] == ["new", "escalated", "de-escalated", "resolved"]
    for xml in render_chain(FULL):
        assert xml.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
        assert_schema_valid(xml)
        assert parse_cap(xml).unvalidated == ()


def test_msg_type_and_references_follow_the_lifecycle() -> None:
    parsed = [parse_cap(xml) for xml in render_chain(FULL)]
    assert [p.msg_type for p in parsed] == ["Alert", "Update", "Update", "Cancel"]
    assert parsed[0].references == ()
    for n in range(1, 4):
        assert parsed[n].references == tuple(p.reference for p in parsed[:n])
    assert [p.identifier for p in parsed] == [f"water_level:ZH-RIV-001#{n}" for n in (1, 2, 3, 4)]
    assert len({p.identifier for p in parsed}) == 4


def test_round_trip_gives_back_the_alert() -> None:
    for alert, xml in zip(FULL, render_chain(FULL), strict=True):
        cap = parse_cap(xml)
        assert (cap.sender, cap.status, cap.scope) == (DEFAULT_SENDER, "Actual", "Restricted")
        assert cap.sent == alert.issued_at.replace(microsecond=0)
        assert cap.reference == cap_identity(alert)
        (info,) = cap.infos
        assert cap_warning_level(info) == alert.level
        assert info.language == "zh-CN" and info.categories == ("Met",)
        assert info.onset == alert.hazard.observed_at.replace(microsecond=0)
        assert info.parameter("onemap:level") == alert.level.label
        assert info.parameter("onemap:previousLevel") == alert.previous_level.label
        assert info.parameter("onemap:transition") == alert.transition
        assert info.parameter("onemap:alertId") == alert.alert_id
        assert info.parameter("onemap:hazardId") == alert.hazard_id
        assert float(info.parameter("onemap:score") or "nan") == alert.score
        assert info.parameter("onemap:rule") == "water_level@v1"
        assert info.description is not None and alert.hazard.reason in info.description
        assert "水位3.52米（警戒水位3.2米）" in info.description
        (area,) = info.areas
        assert area.area_desc == "金湾区平沙镇美平社区前山河水位站周边"
        (circle,) = area.circles
        assert circle.lon == pytest.approx(113.2786, abs=1e-6)
        assert circle.lat == pytest.approx(22.0581, abs=1e-6)
        assert circle.radius_km == 1.0
        assert area.geocodes == {"GB/T 2260": ("440404",), "GB/T 10114": ("440404104",),
                                 "统计用区划代码": ("440404104001",)}


def test_grades_and_wording_per_transition() -> None:
    infos = [parse_cap(xml).infos[0] for xml in render_chain(FULL)]
    assert [(i.urgency, i.severity, i.certainty) for i in infos] == [
        ("Expected", "Moderate", "Observed"), ("Immediate", "Extreme", "Observed"),
        ("Future", "Minor", "Observed"), ("Past", "Unknown", "Observed")]
    assert [i.event for i in infos] == [
        "水位黄色预警", "水位红色预警", "水位蓝色预警", "水位预警解除"]
    assert [i.parameter("预警颜色") for i in infos] == ["黄色", "红色", "蓝色", "无预警"]
    assert infos[1].headline == "金湾区平沙镇美平社区前山河水位站水位预警由黄色升级为红色"
    assert infos[3].headline == "金湾区平沙镇美平社区前山河水位站水位蓝色预警解除"
    assert infos[3].response_types == ("AllClear",)


def test_exercise_is_marked_everywhere_and_never_shares_an_identifier() -> None:
    drill = lifecycle([ORANGE, N], exercise=True)
    parsed = [parse_cap(xml) for xml in render_chain(drill)]
    for xml in render_chain(drill):
        assert_schema_valid(xml)
    assert [p.status for p in parsed] == ["Exercise", "Exercise"]
    assert all(p.exercise and not p.actual for p in parsed)
    assert all(p.note and "演练" in p.note for p in parsed)
    assert all((p.infos[0].headline or "").startswith("【演练】") for p in parsed)
    assert parsed[0].identifier == "exercise:water_level:ZH-RIV-001#1"
    assert parsed[1].references == (parsed[0].reference,)
    assert cap_warning_level(parsed[0].infos[0]) == ORANGE


def test_ledger_dict_renders_like_the_record() -> None:
    alert = FULL[0]
    assert render_cap(alert.to_dict()) == render_cap(alert)
    assert render_cap(alert) == render_cap(alert)  # deterministic: same transition, same bytes


def test_options_public_scope_instruction_expiry_and_sender() -> None:
    alert = FULL[0]
    expires = datetime(2017, 8, 23, 18, 0, tzinfo=BEIJING)
    xml = render_cap(alert, sender="ops@example.org", scope="Public", radius_km=2.5,
                     instruction="请立即转移低洼地带群众", expires=expires)
    assert_schema_valid(xml)
    cap = parse_cap(xml)
    assert (cap.sender, cap.scope, cap.restriction) == ("ops@example.org", "Public", None)
    assert cap.infos[0].instruction == "请立即转移低洼地带群众"
    assert cap.infos[0].expires == expires
    assert cap.infos[0].areas[0].circles[0].radius_km == 2.5


def test_out_of_area_hazard_has_no_geocodes_and_other_types_map_to_categories() -> None:
    base = FULL[0]
    for hazard_type, category in [("geohazard", "Geo"), ("feed_silent", "Infra"),
                                  ("rainstorm", "Met"), ("mystery", "Other")]:
        h = dataclasses.replace(base.hazard, hazard_type=hazard_type, place=Place())
        cap = parse_cap(render_cap(dataclasses.replace(base, hazard=h)))
        assert cap.infos[0].categories == (category,)
        assert cap.infos[0].areas[0].geocodes == {}
        assert cap.infos[0].areas[0].area_desc.startswith("辖区外")


@pytest.mark.parametrize(("change", "message"), [
    ({"transition": "escalated"}, "previous="),
    ({"transition": "resolved"}, "previous="),
    ({"transition": "exploded"}, "unknown alert transition"),
    ({"issued_at": datetime(2017, 8, 23, 12, 0)}, "naive"),  # noqa: DTZ001 - on purpose
])
def test_bad_input_is_a_value_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_cap(dataclasses.replace(FULL[0], **change))  # type: ignore[arg-type]


def test_bad_sender_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="sender"):
        render_cap(FULL[0], sender="OneMap Zhuhai, ops")


def test_identifier_escapes_what_cap_forbids() -> None:
    ident = cap_identifier("incident:12345 热线,投诉&<x>#7")
    assert not any(c in ident for c in " ,&<") and ident.isascii()
    assert cap_identifier("a%20b") != cap_identifier("a b")  # '%' is escaped too: injective


_TEXT = st.text(st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["a\rb\r\nc", "</description><x>&amp;", "\x00\x1f\ufffe", " \t\n", "]]>"])


@pytest.mark.timeout(60)
@settings(max_examples=100, deadline=None)
@given(reason=_TEXT, source_name=_TEXT, village=_TEXT, level=st.sampled_from(list(WarningLevel)),
       exercise=st.booleans(), score=st.floats(allow_nan=False, allow_infinity=False),
       lon=st.floats(-180, 180), lat=st.floats(-90, 90),
       offset_min=st.integers(-14 * 60, 14 * 60))
def test_arbitrary_text_renders_valid_cap_and_round_trips(
    *, reason: str, source_name: str, village: str, level: WarningLevel, exercise: bool,
    score: float, lon: float, lat: float, offset_min: int,
) -> None:
    tz = timezone(timedelta(minutes=offset_min))
    h = dataclasses.replace(
        hazard(level, N, exercise=exercise), reason=reason, source_name=source_name, lon=lon,
        lat=lat, place=dataclasses.replace(PLACE, village_name=village),
        observed_at=T0.astimezone(tz))
    transition = "new" if level > N else "resolved"
    alert = dataclasses.replace(FULL[0], hazard=h, level=level, transition=transition,
                                score=score, issued_at=T0.astimezone(UTC))
    previous = () if transition == "new" else (CapReference("a@b", "x#1", T0),)
    xml = render_cap(alert, previous=previous)
    assert_schema_valid(xml)
    cap: CapAlert = parse_cap(xml)
    (info,) = cap.infos
    assert cap_warning_level(info) == level
    assert info.description is not None and clean_text(reason).rstrip("。") in info.description
    assert info.areas[0].area_desc == clean_text(
        f"{dataclasses.replace(PLACE, village_name=village).label}{source_name}周边"
        if source_name else dataclasses.replace(PLACE, village_name=village).label)
    assert float(info.parameter("onemap:score") or "nan") == score
    circle = info.areas[0].circles[0]
    assert (circle.lon, circle.lat) == (pytest.approx(lon, abs=1e-6), pytest.approx(lat, abs=1e-6))


def test_ledger_alerts_carry_their_own_cap_references() -> None:
    """The lifecycle stage writes the earlier transitions on every alert, so any consumer of
    the ledger renders a complete Update / Cancel without looking anything up."""
    explicit = render_chain(FULL)
    from_ledger = [render_cap(Alert.from_json(a.to_json())) for a in FULL]
    assert from_ledger == explicit
    again = lifecycle([Y, N, Y])  # a new lifecycle after the resolution forgets the old one
    assert [len(a.earlier) for a in again] == [0, 1, 0]
