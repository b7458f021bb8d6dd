"""The CAP 1.2 parser on the specification's examples, real alerts and hostile input.

Every rejection has a stable reason code (the dead-letter reason and metric label); hostile
input is refused fast, before anything is expanded or fetched.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from onemap.errors import InputRejected
from onemap.levels import WarningLevel
from onemap.streams.feeds.cap import (
    EXAMPLE,
    MAX_CAP_BYTES,
    UNVALIDATED_SIGNATURE,
    CapCircle,
    CapInfo,
    CapReference,
    Severity,
    cap_warning_level,
    parse_cap,
)

# The CAP reference data (OASIS CAP 1.2 Appendix A examples and real public alerts), copied
# from the team's shared data so the tests never depend on anything outside the repository.
SHARED = Path(__file__).resolve().parent / "data" / "cap" / "reference"
HOSTILE = Path(__file__).parent / "data" / "cap"
SHARED_FILES = sorted(SHARED.glob("*.xml"))
#: sha256 of the OASIS cap12.xsd as distributed (without OneMap's provenance comment).
OASIS_CAP12_XSD_SHA256 = "f6c6ed7537a463968b7b36110f7e8bba1f86ad2257a8b84619d7dce530e57401"
PDT = timezone(timedelta(hours=-7))


def shared(name: str) -> bytes:
    return (SHARED / name).read_bytes()


# --- the reference messages ------------------------------------------------------------------

@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda p: p.name)
def test_every_reference_message_parses(path: Path) -> None:
    alert = parse_cap(path.read_bytes())
    assert alert.identifier and alert.sender
    assert alert.sent.utcoffset() is not None
    expected = (UNVALIDATED_SIGNATURE,) if path.name == "real-google-PAAQ-4-mg5a94.xml" else ()
    assert alert.unvalidated == expected


def test_thunderstorm_example_a2_fields_and_polygon_axis_order() -> None:
    alert = parse_cap(shared("spec-appendix-a2.xml"))
    assert (alert.identifier, alert.sender, alert.status, alert.msg_type, alert.scope) == (
        "KSTO1055887203", "KSTO@NWS.NOAA.GOV", "Actual", "Alert", "Public")
    assert alert.sent == datetime(2003, 6, 17, 14, 57, tzinfo=PDT)
    assert alert.actual and not alert.exercise and not alert.signed
    (info,) = alert.infos
    assert (info.event, info.urgency, info.severity, info.certainty) == (
        "SEVERE THUNDERSTORM", "Immediate", "Severe", "Observed")
    assert info.categories == ("Met",) and info.response_types == ("Shelter",)
    assert info.language == "en-US"  # the schema's default when <language> is absent
    assert info.event_codes == {"SAME": ("SVR",)}
    assert info.expires == datetime(2003, 6, 17, 16, 0, tzinfo=PDT)
    assert info.onset is None and info.effective is None
    assert info.headline == "SEVERE THUNDERSTORM WARNING"
    assert info.instruction == "TAKE COVER IN A SUBSTANTIAL SHELTER UNTIL THE STORM PASSES."
    (area,) = info.areas
    assert area.geocodes == {"SAME": ("006109", "006009", "006003")}
    (polygon,) = area.polygons
    # CAP writes lat,lon; the shapely polygon is lon, lat.
    assert polygon.exterior.coords[0] == (-120.14, 38.47)
    assert polygon.bounds == (-120.14, 38.34, -119.74, 38.62)
    assert polygon.contains(Point(-119.94, 38.49))  # inside, in lon/lat order
    assert not polygon.contains(Point(38.49, -119.94))
    assert area.repairs == ()
    assert cap_warning_level(info) == WarningLevel.ORANGE


def test_earthquake_update_a3_references_circle_and_parameters() -> None:
    alert = parse_cap(shared("spec-appendix-a3.xml"))
    assert alert.msg_type == "Update"
    assert alert.references == (CapReference(
        "trinet@caltech.edu", "TRI13970876.1", datetime(2003, 6, 11, 20, 30, tzinfo=PDT)),)
    (info,) = alert.infos
    assert info.parameters["Magnitude"] == ("3.4 Ml",)
    assert info.parameter("EventID") == "13970876"
    assert info.areas[0].circles == (CapCircle(lon=-115.5527, lat=32.9525, radius_km=0.0),)
    assert cap_warning_level(info) == WarningLevel.BLUE  # Minor


def test_amber_alert_a4_has_two_languages() -> None:
    alert = parse_cap(shared("spec-appendix-a4.xml"))
    assert alert.source == "SW"
    assert [i.language for i in alert.infos] == ["en-US", "es-US"]
    assert [i.event for i in alert.infos] == ["Child Abduction", "Abducción de Niño"]
    assert all(i.areas[0].geocodes == {"SAME": ("006037",)} for i in alert.infos)


def test_ipaws_alert_keeps_repeated_parameters_and_long_polygon() -> None:
    alert = parse_cap(shared("real-ipaws-5e7e0fc5023f1930efcf3deb.xml"))
    assert alert.signed and alert.unvalidated == ()  # a well-formed signature validates
    assert alert.codes == ("IPAWSv1.0",)
    (info,) = alert.infos
    assert info.severity == "Extreme" and cap_warning_level(info) == WarningLevel.RED
    assert info.parameters["BLOCKCHANNEL"] == ("CAPEXCH", "NWEM", "EAS", "PUBLIC")
    assert info.parameter("EAS-ORG") == "CIV"
    assert info.event_codes == {"SAME": ("LAE",)}
    assert info.resources[0].mime_type == "image/jpeg" and info.resources[0].has_deref_uri
    (area,) = info.areas
    assert area.area_desc == "Montgomery County"
    assert area.geocodes["SAME"] == ("024031",)
    (polygon,) = area.polygons
    assert len(polygon.exterior.coords) == 41
    minx, miny, maxx, maxy = polygon.bounds  # Montgomery County, MD (Rockville)
    assert -78 < minx < maxx < -76 and 38.5 < miny < maxy < 39.5


def test_ipaws_cancel_references_the_alert_it_cancels() -> None:
    alert = parse_cap(shared("real-ipaws-5e6dd9de023f1930ef6548d9.xml"))
    assert alert.msg_type == "Cancel" and alert.infos == ()
    assert alert.references == (CapReference(
        "bbrundage@dps.state.nv.us", "AS-NV-e18921c7-1b35-4a81-9705-42d25c265ddd",
        datetime(2019, 4, 18, 12, 2, 32, tzinfo=timezone(timedelta(hours=-6)))),)


def test_signed_google_alert_is_accepted_with_the_signature_reported_unvalidated() -> None:
    alert = parse_cap(shared("real-google-PAAQ-4-mg5a94.xml"))
    assert alert.signed
    assert alert.unvalidated == ("xmldsig Signature",)
    assert alert.msg_type == "Update" and len(alert.references) == 3
    assert alert.references[2].identifier == "PAAQ-3-mg5a94"
    assert alert.references[0].sent == datetime(2013, 1, 5, 9, 1, 16, tzinfo=UTC)  # -00:00
    assert alert.incidents == ("mg5a94",)
    (info,) = alert.infos
    assert info.onset == info.expires == datetime(2013, 1, 5, 10, 58, 23, tzinfo=UTC)
    assert info.parameter("EventPreliminaryMagnitude") == "7.5"
    assert info.areas[0].circles == (CapCircle(-134.9, 55.3, 0.0),)
    assert cap_warning_level(info) == WarningLevel.NONE  # severity Unknown


def test_packaged_schema_is_the_shared_schema_plus_a_comment() -> None:
    packaged = importlib.resources.files("onemap.streams.feeds").joinpath("cap12.xsd")
    text = packaged.read_text(encoding="utf-8")
    assert "targetNamespace=\"urn:oasis:names:tc:emergency:cap:1.2\"" in text
    start = text.index("<!-- OneMap provenance")
    end = text.index("-->", start) + len("-->\n")
    original = hashlib.sha256((text[:start] + text[end:]).encode()).hexdigest()
    assert original == OASIS_CAP12_XSD_SHA256


# --- hostile and malformed input -----------------------------------------------------------

REJECTED = [
    ("billion-laughs.xml", "hostile-xml", None),
    ("xxe-file.xml", "hostile-xml", None),
    ("xxe-http.xml", "hostile-xml", None),
    ("xxe-parameter-entity.xml", "hostile-xml", None),
    ("external-dtd.xml", "hostile-xml", None),
    ("internal-entity.xml", "hostile-xml", None),
    ("truncated.xml", "invalid-xml", None),
    ("not-xml.xml", "invalid-xml", None),
    ("gbk-bytes-declared-utf8.xml", "bad-encoding", None),
    ("gbk-declared.xml", "bad-encoding", None),
    ("utf16.xml", "bad-encoding", None),
    ("too-deep.xml", "too-large", None),
    ("wrong-namespace-cap11.xml", "schema-invalid", "/alert"),
    ("no-namespace.xml", "schema-invalid", "/alert"),
    ("missing-status.xml", "schema-invalid", "/alert"),
    ("bad-severity.xml", "schema-invalid", "/alert/info/severity"),
    ("foreign-element-after-info.xml", "schema-invalid", "/alert"),
    ("signature-broken-and-alert-invalid.xml", "schema-invalid", "/alert/info/urgency"),
    ("naive-sent.xml", "bad-time", "/alert/sent"),
    ("zulu-sent.xml", "bad-time", "/alert/sent"),
    ("naive-expires.xml", "bad-time", "/alert/info/expires"),
    ("polygon-three-points.xml", "bad-polygon", "/alert/info[1]/area[1]/polygon[1]"),
    ("polygon-not-closed.xml", "bad-polygon", "/alert/info[1]/area[1]/polygon[1]"),
    ("polygon-lon-lat-swapped.xml", "bad-polygon", "/alert/info[1]/area[1]/polygon[1]"),
    ("polygon-not-numbers.xml", "bad-polygon", "/alert/info[1]/area[1]/polygon[1]"),
    ("polygon-flat.xml", "bad-polygon", "/alert/info[1]/area[1]/polygon[1]"),
    ("circle-negative-radius.xml", "bad-circle", "/alert/info[1]/area[1]/circle[1]"),
    ("circle-no-radius.xml", "bad-circle", "/alert/info[1]/area[1]/circle[1]"),
    ("references-malformed.xml", "bad-field", "references"),
    ("identifier-with-space.xml", "bad-field", "identifier"),
]


def test_every_fixture_is_covered() -> None:
    accepted = {"polygon-bowtie.xml", "signature-broken.xml"}
    assert {p.name for p in HOSTILE.glob("*.xml")} == {n for n, _, _ in REJECTED} | accepted


@pytest.mark.timeout(5)
@pytest.mark.parametrize(("name", "reason", "field"), REJECTED, ids=[r[0] for r in REJECTED])
def test_bad_documents_are_rejected_with_reason_and_field(
    name: str, reason: str, field: str | None,
) -> None:
    with pytest.raises(InputRejected) as info:
        parse_cap((HOSTILE / name).read_bytes())
    assert (info.value.reason, info.value.field) == (reason, field), info.value.detail


@pytest.mark.timeout(5)
def test_external_entities_are_never_resolved() -> None:
    with pytest.raises(InputRejected) as info:
        parse_cap((HOSTILE / "xxe-file.xml").read_bytes())
    assert "root:" not in info.value.detail and "DTD" in info.value.detail


def test_messages_name_the_path_and_the_schema_reason() -> None:
    with pytest.raises(InputRejected) as info:
        parse_cap((HOSTILE / "bad-severity.xml").read_bytes())
    assert info.value.detail.startswith("/alert/info/severity: value must be one of")


@pytest.mark.timeout(5)
def test_oversized_input_is_rejected_before_parsing() -> None:
    padding = b"<!--" + b"x" * MAX_CAP_BYTES + b"-->"
    with pytest.raises(InputRejected) as info:
        parse_cap(EXAMPLE.replace(b"<alert", padding + b"<alert", 1))
    assert info.value.reason == "too-large"


def test_a_broken_signature_alone_is_reported_not_hidden() -> None:
    alert = parse_cap((HOSTILE / "signature-broken.xml").read_bytes())
    assert alert.signed and alert.unvalidated == (UNVALIDATED_SIGNATURE,)


def test_self_intersecting_polygon_is_repaired_and_the_repair_recorded() -> None:
    alert = parse_cap((HOSTILE / "polygon-bowtie.xml").read_bytes())
    area = alert.infos[0].areas[0]
    assert len(area.polygons) == 2 and all(p.is_valid and p.area > 0 for p in area.polygons)
    (repair,) = area.repairs
    assert repair.startswith("/alert/info[1]/area[1]/polygon[1]: Self-intersection")
    assert "make_valid" in repair


def test_update_and_cancel_carry_their_references() -> None:
    refs = ("zhuhai@weather.gd.cn,44000041600000_20170823100000,2017-08-23T10:00:00+08:00 "
            "zhuhai@weather.gd.cn,44000041600000_20170823110000,2017-08-23T11:00:00+08:00")
    for msg_type in ("Update", "Cancel"):
        raw = EXAMPLE.replace(b"<msgType>Alert</msgType>", f"<msgType>{msg_type}</msgType>"
                              f"<scope>Public</scope><references>{refs}</references>".encode()
                              ).replace(b"<scope>Public</scope>\n", b"", 1)
        alert = parse_cap(raw)
        assert alert.msg_type == msg_type
        assert [str(r) for r in alert.references] == refs.split()
        assert alert.references[1].sent == datetime(
            2017, 8, 23, 11, tzinfo=timezone(timedelta(hours=8)))


def test_exercise_status_is_kept() -> None:
    alert = parse_cap(EXAMPLE.replace(b"<status>Actual</status>", b"<status>Exercise</status>"))
    assert alert.exercise and not alert.actual


# --- OneMap warning level ----------------------------------------------------------------------

def info(event: str = "Flood", severity: str = "Unknown", headline: str | None = None,
         **parameters: str) -> CapInfo:
    return CapInfo(language="zh-CN", categories=("Met",), event=event, urgency="Expected",
                   severity=cast(Severity, severity), certainty="Likely",
                   headline=headline, parameters={k: (v,) for k, v in parameters.items()})


@pytest.mark.parametrize(("severity", "level"), [
    ("Extreme", WarningLevel.RED), ("Severe", WarningLevel.ORANGE),
    ("Moderate", WarningLevel.YELLOW), ("Minor", WarningLevel.BLUE),
    ("Unknown", WarningLevel.NONE),
])
def test_severity_maps_to_the_four_colours(severity: str, level: WarningLevel) -> None:
    assert cap_warning_level(info(severity=severity)) == level


def test_a_chinese_colour_is_preferred_over_severity() -> None:
    assert cap_warning_level(info("暴雨红色预警信号", "Severe")) == WarningLevel.RED
    assert cap_warning_level(info("台风", "Extreme", headline="台风蓝色预警")) == WarningLevel.BLUE
    assert cap_warning_level(info("海浪黄色警报", "Minor")) == WarningLevel.YELLOW
    # a parameter beats the text; the last colour named in text wins
    colour = {"预警颜色": "橙色"}
    assert cap_warning_level(info("暴雨红色预警信号", **colour)) == WarningLevel.ORANGE
    assert cap_warning_level(info("暴雨黄色预警升级为橙色预警")) == WarningLevel.ORANGE
    assert cap_warning_level(info("Storm", "Minor", level="Red")) == WarningLevel.RED
    # a colour word that does not name a warning is not a level
    assert cap_warning_level(info("蓝色海岸风暴潮", "Moderate")) == WarningLevel.YELLOW
    # an unrelated parameter that happens to hold a colour (the US HSAS code) is ignored
    assert cap_warning_level(info("Advisory", "Minor", HSAS="RED")) == WarningLevel.BLUE


# --- nothing but InputRejected, ever -----------------------------------------------------------

def _expect_only_rejections(raw: bytes) -> None:
    try:
        parse_cap(raw)
    except InputRejected as exc:
        assert exc.reason in {"too-large", "bad-encoding", "hostile-xml", "invalid-xml",
                              "schema-invalid", "bad-time", "bad-field", "bad-polygon",
                              "bad-circle"}


_FAST = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
_VALID = [EXAMPLE] + [p.read_bytes() for p in SHARED_FILES if p.stat().st_size < 10_000]


@pytest.mark.timeout(120)
@_FAST
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_only_ever_raise_input_rejected(raw: bytes) -> None:
    _expect_only_rejections(raw)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid CAP message with a few byte-level or token-level edits."""
    data = bytearray(draw(st.sampled_from(_VALID)))
    tokens = [b"<", b">", b"/", b"&", b"&amp;", b",", b" ", b"\x00", b"\xff", b"-",
              b"<!DOCTYPE a>", b"<info>", b"</info>", b"<polygon>1,1 1,1</polygon>",
              b"9999", b"24:00:00", b"+08:00", b"nan", b"1e999", b"\xe6\xb0\xb4"]
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "delete", "insert", "token"]))
        if action == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 40))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at:at] = draw(st.sampled_from(tokens))
    return bytes(data)


@pytest.mark.timeout(120)
@_FAST
@given(mutated())
def test_mutated_messages_only_ever_raise_input_rejected(raw: bytes) -> None:
    _expect_only_rejections(raw)


@st.composite
def text_mutated(draw: st.DrawFn) -> bytes:
    """Change the text of one element of the example to arbitrary text (schema-level fuzz)."""
    text: str = EXAMPLE.decode()
    values = ["44000041600000_20170823100000", "2017-08-23T10:00:00+08:00", "Actual", "Alert",
              "Met", "Immediate", "Severe", "Observed", "珠海市",
              "22.2,113.5 22.3,113.5 22.3,113.6 22.2,113.6 22.2,113.5"]
    target: str = draw(st.sampled_from(values))
    replacement: str = draw(st.text(st.characters(codec="utf-8"), max_size=40)
                            | st.from_regex(r"[-0-9., +:T]{0,40}", fullmatch=True))
    escaped = replacement.replace("&", "&amp;").replace("<", "&lt;")
    return text.replace(target, escaped, 1).encode()


@pytest.mark.timeout(120)
@_FAST
@given(text_mutated())
def test_arbitrary_element_text_only_ever_raises_input_rejected(raw: bytes) -> None:
    _expect_only_rejections(raw)


def test_reference_data_is_all_there() -> None:
    # four Appendix A examples and three real alerts: an empty glob must not pass silently
    assert len(SHARED_FILES) == 7
