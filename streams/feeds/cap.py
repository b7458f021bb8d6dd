"""CAP 1.2 warnings feed (``onemap.in.cap``): a safe, strict parser for OASIS CAP 1.2 XML.

Meteorological and other departments publish warnings as CAP 1.2 (OASIS Common Alerting
Protocol, http://docs.oasis-open.org/emergency/cap/v1.2/CAP-v1.2-os.html); national warning
publishing systems such as China's 国家预警信息发布中心 use it too. One record is one
``<alert>`` document, as raw bytes.

Why each step, in order (every failure is :class:`~onemap.errors.InputRejected` with a stable
``reason``):

1. ``too-large`` -- more than :data:`MAX_CAP_BYTES` (1 MiB; the largest real alert we hold, with
   an inline JPEG, is 26 KB), nested deeper than :data:`MAX_DEPTH` or an element with more than
   :data:`MAX_ATTRIBUTES` attributes: bound memory and time before any XML work.
2. ``bad-encoding`` -- OneMap accepts UTF-8 only (every CAP example declares it, and Chinese
   producers sometimes send GBK; guessing would garble names). Bytes must decode as UTF-8 and a
   declared ``encoding`` must be UTF-8.
3. ``hostile-xml`` -- parsed by :mod:`defusedxml` with DTDs, entity declarations and external
   references forbidden: CAP needs none of them, and they are how billion-laughs expansion and
   XXE (``file:///etc/passwd``, ``http://...``) attacks work. Nothing is fetched, ever.
4. ``invalid-xml`` -- not well-formed (truncated, junk).
5. ``schema-invalid`` / ``bad-time`` -- validated against the CAP 1.2 XML schema
   (``cap12.xsd`` beside this module: the OASIS schema, copied unchanged from the shared CAP
   reference data with only a provenance comment added; loaded once from the package, never
   fetched; :mod:`xmlschema` is told ``allow="local"`` so no schema or hint can reach the
   network). The detail is the schema's path and reason. A failing time element (``sent``,
   ``effective``, ``onset``, ``expires``) is reported as ``bad-time``: the schema's pattern
   demands a UTC offset, and a naive time is the commonest real-world CAP defect.

   Signed alerts: CAP allows an xmldsig ``<Signature>`` after the last ``<info>``; xmlschema
   validates it strictly against its bundled (local) xmldsig schema. Real feeds carry signature
   blocks that fail that check (e.g. elided content) while the alert itself is valid. Such an
   alert is accepted only if a *copy with the signature removed* validates, and the result says
   so in :attr:`CapAlert.unvalidated` (``("xmldsig Signature",)``). Nothing else is loosened.
   OneMap never verifies signatures cryptographically; :attr:`CapAlert.signed` only says one is
   present.
6. ``bad-field`` / ``bad-polygon`` / ``bad-circle`` -- what the schema types as free strings but
   the CAP specification constrains: identifier and sender (non-empty, no spaces or commas),
   ``references`` (``sender,identifier,sent`` triples), polygons (``lat,lon`` pairs, at least
   four, closed ring, in range) and circles (``lat,lon radius_km``). Note CAP's **lat,lon**
   order; OneMap and shapely use lon, lat. A self-intersecting polygon is repaired with
   shapely's ``make_valid`` and the repair is recorded in :attr:`CapArea.repairs`; a message
   may have at most :data:`MAX_REPAIR_POINTS` points of such polygons repaired (the repair's
   cost grows with the crossings), beyond that it is ``bad-polygon``.

Times are timezone-aware datetimes in the offset the sender used. Sequences are tuples and the
dataclasses are frozen, so a parsed alert can be shared between stages without copying.

>>> alert = parse_cap(EXAMPLE)
>>> alert.msg_type, alert.sent.isoformat(), alert.infos[0].severity
('Alert', '2017-08-23T10:00:00+08:00', 'Severe')
>>> cap_warning_level(alert.infos[0]).label   # the colour in the event text wins
'red'
>>> area = alert.infos[0].areas[0]
>>> area.polygons[0].bounds   # (min lon, min lat, max lon, max lat)
(113.5, 22.2, 113.6, 22.3)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.resources
import math
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Literal, NamedTuple, cast
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree
import xmlschema
from shapely import make_valid
from shapely.geometry import GeometryCollection, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from onemap.errors import InputRejected
from onemap.levels import WarningLevel

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
SIGNATURE_TAG = f"{{{DSIG_NS}}}Signature"

#: Upper bound on one CAP document. Real alerts are a few KB; inline resources (base64 images
#: in ``derefUri``) reach tens of KB.
MAX_CAP_BYTES = 1024 * 1024
#: CAP nests 5 deep (alert/info/area/geocode/value), xmldsig about 6 below the alert.
MAX_DEPTH = 32
#: CAP elements have no attributes, xmldsig ones at most three. The schema check costs time
#: quadratic in an element's attributes (fuzzing found 20,000 of them taking minutes).
MAX_ATTRIBUTES = 16

#: Most points of self-intersecting polygons one message may have repaired. make_valid's cost
#: grows with the number of crossings, about quadratically in the points of a scribbled ring
#: (fuzzing found a 400-point random polygon taking minutes with the default method); valid
#: polygons of any size are not affected.
MAX_REPAIR_POINTS = 500

#: What :attr:`CapAlert.unvalidated` says when the signature block was left out of validation.
UNVALIDATED_SIGNATURE = "xmldsig Signature"

Status = Literal["Actual", "Exercise", "System", "Test", "Draft"]
MsgType = Literal["Alert", "Update", "Cancel", "Ack", "Error"]
Scope = Literal["Public", "Restricted", "Private"]
Urgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
Severity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
Certainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]

_TIME_TAGS = frozenset({"sent", "effective", "onset", "expires"})
# The schema's own pattern for CAP times (cap12.xsd), reused for times inside <references>.
_CAP_TIME = re.compile(r"\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d")
# A plain decimal: float() would also take "nan", "inf", "1e5" and "1_0".
_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_ENCODING_DECL = re.compile(rb"""\A<\?xml[^>]*?\sencoding\s*=\s*["']([^"']*)["']""")
_NS_PREFIX = re.compile(r"\{[^}]*\}")
_MAX_DETAIL = 400


class CapReference(NamedTuple):
    """One earlier message an Update/Cancel refers to: CAP's ``sender,identifier,sent``."""

    sender: str
    identifier: str
    sent: datetime

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{format_cap_time(self.sent)}"


class CapCircle(NamedTuple):
    """A CAP circle in OneMap's axis order: centre lon, lat (WGS 84) and radius in km."""

    lon: float
    lat: float
    radius_km: float


@dataclasses.dataclass(frozen=True, slots=True)
class CapArea:
    """One ``<area>``: its description and shapes. Polygons are shapely (lon, lat) polygons.

    ``repairs`` says which polygons were invalid (e.g. self-intersecting) and were replaced by
    their ``make_valid`` repair, so a consumer can tell the sender's shape was changed.
    """

    area_desc: str
    polygons: tuple[Polygon, ...] = ()
    circles: tuple[CapCircle, ...] = ()
    geocodes: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    altitude: float | None = None
    ceiling: float | None = None
    repairs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class CapResource:
    """A ``<resource>`` reference; an inline ``derefUri`` payload is not kept, only noted."""

    resource_desc: str
    mime_type: str
    size: int | None = None
    uri: str | None = None
    digest: str | None = None
    has_deref_uri: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class CapInfo:
    """One ``<info>`` block: a warning in one language.

    ``parameters``, ``event_codes`` map valueName to every value given for it, in document
    order (CAP allows a valueName to repeat, as IPAWS's BLOCKCHANNEL does).
    """

    language: str
    categories: tuple[str, ...]
    event: str
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    response_types: tuple[str, ...] = ()
    audience: str | None = None
    event_codes: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    resources: tuple[CapResource, ...] = ()
    areas: tuple[CapArea, ...] = ()

    def parameter(self, name: str) -> str | None:
        """The first value of parameter ``name``, or None."""
        values = self.parameters.get(name)
        return values[0] if values else None


@dataclasses.dataclass(frozen=True, slots=True)
class CapAlert:
    """A parsed, schema-validated CAP 1.2 alert.

    ``unvalidated`` lists the parts that were accepted without schema validation (only ever an
    xmldsig signature block); ``signed`` says a signature is present (never verified).
    """

    identifier: str
    sender: str
    sent: datetime
    status: Status
    msg_type: MsgType
    scope: Scope
    infos: tuple[CapInfo, ...] = ()
    references: tuple[CapReference, ...] = ()
    source: str | None = None
    restriction: str | None = None
    addresses: str | None = None
    codes: tuple[str, ...] = ()
    note: str | None = None
    incidents: tuple[str, ...] = ()
    signed: bool = False
    unvalidated: tuple[str, ...] = ()

    @property
    def reference(self) -> CapReference:
        """This message's own identity, for the ``references`` of a later message."""
        return CapReference(self.sender, self.identifier, self.sent)

    @property
    def actual(self) -> bool:
        """Only status Actual is real; Exercise/Test/System/Draft must never be acted on as one."""
        return self.status == "Actual"

    @property
    def exercise(self) -> bool:
        """A drill or test (CAP Exercise/Test): it flows through OneMap marked as such."""
        return self.status in ("Exercise", "Test")


def format_cap_time(when: datetime) -> str:
    """A time as CAP writes it: seconds precision, numeric offset (never ``Z``).

    >>> from datetime import timedelta, timezone
    >>> beijing = timezone(timedelta(hours=8))
    >>> format_cap_time(datetime(2017, 8, 23, 12, 50, 30, 999, tzinfo=beijing))
    '2017-08-23T12:50:30+08:00'
    """
    offset = when.utcoffset()
    if offset is None:
        raise ValueError(f"CAP times need a UTC offset; {when.isoformat()} is naive")
    text = when.replace(microsecond=0).isoformat()
    if offset.seconds % 60 or offset.microseconds:
        raise ValueError(f"CAP offsets are whole minutes; got {offset}")
    return text


@functools.cache
def cap_schema() -> xmlschema.XMLSchema10:
    """The CAP 1.2 schema, built once from the package file; nothing is fetched.

    The xmldsig namespace is loaded now, from xmlschema's bundled copy, so signatures are
    checked strictly and the first signed alert costs no more than any other.
    """
    source = importlib.resources.files("onemap.streams.feeds").joinpath("cap12.xsd")
    with importlib.resources.as_file(source) as path:
        schema = xmlschema.XMLSchema10(
            str(path), allow="local", defuse="always", use_location_hints=False)
    schema.load_namespace(DSIG_NS)
    return schema


def parse_cap(raw: bytes) -> CapAlert:
    """Parse and validate one CAP 1.2 alert; InputRejected (and nothing else) if unusable."""
    root = _parse_xml(raw)
    unvalidated = _validate(root)
    return _alert(root, unvalidated)


# --- bytes -> element tree ---------------------------------------------------------------------

def _parse_xml(raw: bytes) -> Element:
    if len(raw) > MAX_CAP_BYTES:
        raise InputRejected("too-large", f"CAP document is {len(raw)} bytes; limit {MAX_CAP_BYTES}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputRejected(
            "bad-encoding", f"not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 4]!r}); "
            "CAP is accepted in UTF-8 only") from None
    declared = _ENCODING_DECL.match(raw.removeprefix(b"\xef\xbb\xbf"))
    if declared and declared.group(1).decode("ascii", "replace").lower() not in ("utf-8", "utf8"):
        raise InputRejected(
            "bad-encoding", f"declared encoding {declared.group(1)!r:.40} is not UTF-8; "
            "CAP is accepted in UTF-8 only")
    try:
        root: Element = defusedxml.ElementTree.fromstring(
            raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise InputRejected(
            "hostile-xml", f"{type(exc).__name__}: DTDs, entity declarations and external "
            "references are refused") from None
    except ParseError as exc:
        raise InputRejected("invalid-xml", f"not well-formed XML: {exc}") from None
    except ValueError as exc:  # expat on a multi-byte encoding that the check above missed
        raise InputRejected(  # (UTF-16 without a BOM is valid UTF-8: NULs between ASCII)
            "bad-encoding", f"{exc}; CAP is accepted in UTF-8 only") from None
    _check_shape(root)
    return root


def _check_shape(root: Element) -> None:
    """Depth and attribute count, iteratively (a recursive walk is what a deep document would
    attack)."""
    stack = [(root, 1)]
    while stack:
        elem, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InputRejected("too-large", f"elements nest deeper than {MAX_DEPTH}")
        if len(elem.attrib) > MAX_ATTRIBUTES:
            raise InputRejected("too-large", f"an element has {len(elem.attrib)} attributes; "
                                f"at most {MAX_ATTRIBUTES}")
        stack.extend((child, depth + 1) for child in elem)


# --- schema validation -------------------------------------------------------------------------

def _validate(root: Element) -> tuple[str, ...]:
    """Validate ``root``; returns what was left unvalidated (the signature), else raises."""
    if root.tag != f"{{{CAP_NS}}}alert":
        raise InputRejected(
            "schema-invalid", f"root element is {root.tag!r:.120}; expected <alert> in the "
            f"CAP 1.2 namespace {CAP_NS}", field="/alert")
    error = _first_error(root)
    if error is None:
        return ()
    signatures = [child for child in root if child.tag == SIGNATURE_TAG]
    if signatures:
        unsigned = copy.copy(root)  # shallow: the original tree is not touched
        for signature in signatures:
            unsigned.remove(signature)
        retry = _first_error(unsigned)
        if retry is None:
            return (UNVALIDATED_SIGNATURE,)
        error = retry
    raise _rejection(error)


def _first_error(root: Element) -> xmlschema.XMLSchemaValidationError | None:
    try:
        return next(cap_schema().iter_errors(root), None)
    except xmlschema.XMLSchemaException as exc:  # a schema-side failure on odd input
        raise InputRejected("schema-invalid", f"cannot validate: {exc}"[:_MAX_DETAIL]) from None


def _rejection(error: xmlschema.XMLSchemaValidationError) -> InputRejected:
    path = _NS_PREFIX.sub("", error.path or "") or "/alert"
    reason = error.reason or error.message
    tag = error.elem.tag if error.elem is not None else ""
    local = _NS_PREFIX.sub("", tag) if isinstance(tag, str) else ""
    code = "bad-time" if local in _TIME_TAGS else "schema-invalid"
    return InputRejected(code, f"{path}: {reason}"[:_MAX_DETAIL], field=path)


# --- element tree -> dataclasses (the tree is schema-valid from here on) -----------------------

def _q(tag: str) -> str:
    return f"{{{CAP_NS}}}{tag}"


def _text(parent: Element, tag: str) -> str | None:
    elem = parent.find(_q(tag))
    if elem is None:
        return None
    return (elem.text or "").strip()


def _required(parent: Element, tag: str) -> str:
    value = _text(parent, tag)
    if value is None:  # the schema makes this unreachable; keep the type honest
        raise InputRejected("schema-invalid", f"<{tag}> is required", field=tag)
    return value


def _all_text(parent: Element, tag: str) -> tuple[str, ...]:
    return tuple((e.text or "").strip() for e in parent.iterfind(_q(tag)))


def _pairs(parent: Element, tag: str) -> dict[str, tuple[str, ...]]:
    """valueName/value pairs (parameter, eventCode, geocode); repeated names keep every value."""
    out: dict[str, list[str]] = {}
    for elem in parent.iterfind(_q(tag)):
        out.setdefault(_required(elem, "valueName"), []).append(_required(elem, "value"))
    return {name: tuple(values) for name, values in out.items()}


def _time(value: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # e.g. hour 24, which xs:dateTime allows
        raise InputRejected("bad-time", f"{field} = {value!r:.40} is not a usable time",
                            field=field) from None
    if parsed.utcoffset() is None:
        raise InputRejected("bad-time", f"{field} = {value!r:.40} has no UTC offset",
                            field=field)
    try:  # e.g. 0001-01-01T00:00:00+08:00: later stages compare and show times in UTC
        parsed.astimezone(UTC)
    except OverflowError:
        raise InputRejected("bad-time", f"{field} = {value!r:.40} is outside the years 1-9999 "
                            "in UTC", field=field) from None
    return parsed


def _optional_time(parent: Element, tag: str, field: str) -> datetime | None:
    value = _text(parent, tag)
    return None if value is None else _time(value, field)


def _token(value: str, field: str) -> str:
    """Identifier and sender: CAP forbids spaces, commas, < and &; references rely on it."""
    if not value or any(c.isspace() or c in ",<&" for c in value):
        raise InputRejected(
            "bad-field", f"{field} {value!r:.60} must be non-empty without spaces or commas",
            field=field)
    return value


def _references(value: str | None) -> tuple[CapReference, ...]:
    if value is None:
        return ()
    refs = []
    for triple in value.split():
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts) or not _CAP_TIME.fullmatch(parts[2]):
            raise InputRejected(
                "bad-field", f"reference {triple!r:.80} is not sender,identifier,sent",
                field="references")
        refs.append(CapReference(parts[0], parts[1], _time(parts[2], "references")))
    return tuple(refs)


def _decimal(text: str, what: str, reason: str, field: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise InputRejected(reason, f"{what} {text!r:.40} is not a decimal number", field=field)
    return float(text)


def _lat_lon(pair: str, reason: str, field: str) -> tuple[float, float]:
    """CAP's ``lat,lon`` as OneMap's (lon, lat), range-checked."""
    parts = pair.split(",")
    if len(parts) != 2:
        raise InputRejected(reason, f"point {pair!r:.40} is not lat,lon", field=field)
    lat = _decimal(parts[0], "latitude", reason, field)
    lon = _decimal(parts[1], "longitude", reason, field)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise InputRejected(reason, f"point {pair!r:.40} is out of range (lat,lon order)",
                            field=field)
    return lon, lat


@dataclasses.dataclass
class _RepairBudget:
    """Points of self-intersecting polygons this message may still have repaired."""

    points_left: int = MAX_REPAIR_POINTS


def _polygon(text: str, field: str, budget: _RepairBudget,
             ) -> tuple[list[Polygon], str | None]:
    """A CAP polygon as shapely polygons (several if repairing split it), and the repair note.

    The repair unions what the ring encloses (``method="structure"``): a warning covers every
    place inside the line the sender drew, and it costs a fraction of the default method's
    time on a scribbled ring (0.4 s against minutes for 400 random points).
    """
    pairs = text.split()
    if len(pairs) < 4:
        raise InputRejected(
            "bad-polygon", f"a CAP polygon needs at least 4 points; got {len(pairs)}",
            field=field)
    points = [_lat_lon(p, "bad-polygon", field) for p in pairs]
    if points[0] != points[-1]:
        raise InputRejected(
            "bad-polygon", "polygon is not closed (first point must equal last)", field=field)
    polygon = Polygon(points)
    if polygon.is_valid:
        return [polygon], None
    if len(points) > budget.points_left:
        raise InputRejected(
            "bad-polygon", f"self-intersecting polygon of {len(points)} points; OneMap repairs "
            f"at most {MAX_REPAIR_POINTS} points of such polygons per message", field=field)
    budget.points_left -= len(points)
    why = explain_validity(polygon)
    parts = [p for p in _polygons_in(make_valid(polygon, method="structure")) if p.area > 0]
    if not parts:
        raise InputRejected(
            "bad-polygon", f"polygon encloses no area ({why})"[:_MAX_DETAIL], field=field)
    return parts, f"{field}: {why}; repaired with make_valid into {len(parts)} polygon(s)"


def _polygons_in(geometry: BaseGeometry) -> Iterator[Polygon]:
    if isinstance(geometry, Polygon):
        yield geometry
    elif isinstance(geometry, MultiPolygon | GeometryCollection):
        for part in geometry.geoms:
            yield from _polygons_in(part)


def _circle(text: str, field: str) -> CapCircle:
    parts = text.split()
    if len(parts) != 2:
        raise InputRejected("bad-circle", f"circle {text!r:.60} is not 'lat,lon radius'",
                            field=field)
    lon, lat = _lat_lon(parts[0], "bad-circle", field)
    radius = _decimal(parts[1], "radius", "bad-circle", field)
    if radius < 0:
        raise InputRejected("bad-circle", f"circle radius {radius} km is negative", field=field)
    if not math.isfinite(radius):  # 400 digits are a decimal, and float() makes them inf
        raise InputRejected("bad-circle", f"circle radius {parts[1]!r:.40} km is out of range",
                            field=field)
    return CapCircle(lon, lat, radius)


def _area(elem: Element, where: str, budget: _RepairBudget) -> CapArea:
    polygons: list[Polygon] = []
    repairs: list[str] = []
    for n, text in enumerate(_all_text(elem, "polygon"), start=1):
        parts, repair = _polygon(text, f"{where}/polygon[{n}]", budget)
        polygons += parts
        if repair:
            repairs.append(repair)
    circles = tuple(_circle(text, f"{where}/circle[{n}]")
                    for n, text in enumerate(_all_text(elem, "circle"), start=1))
    altitude, ceiling = _text(elem, "altitude"), _text(elem, "ceiling")
    return CapArea(
        area_desc=_required(elem, "areaDesc"), polygons=tuple(polygons), circles=circles,
        geocodes=_pairs(elem, "geocode"),
        altitude=None if altitude is None else _finite(altitude, f"{where}/altitude"),
        ceiling=None if ceiling is None else _finite(ceiling, f"{where}/ceiling"),
        repairs=tuple(repairs),
    )


def _finite(text: str, field: str) -> float:
    value = float(text)  # xs:decimal, so always a plain number; may still overflow to inf
    if not math.isfinite(value):
        raise InputRejected("bad-field", f"{field} {text!r:.40} is out of range", field=field)
    return value


def _resource(elem: Element) -> CapResource:
    size = _text(elem, "size")
    try:
        size_bytes = None if size is None else int(size)
    except ValueError:  # xs:integer is unbounded; Python caps digits (the schema does too)
        raise InputRejected("bad-field", f"resource size {size!r:.40} is not usable",
                            field="resource/size") from None
    return CapResource(
        resource_desc=_required(elem, "resourceDesc"), mime_type=_required(elem, "mimeType"),
        size=size_bytes, uri=_text(elem, "uri"),
        digest=_text(elem, "digest"), has_deref_uri=elem.find(_q("derefUri")) is not None,
    )


def _info(elem: Element, where: str, budget: _RepairBudget) -> CapInfo:
    return CapInfo(
        language=_text(elem, "language") or "en-US",  # the schema's default
        categories=_all_text(elem, "category"),
        event=_required(elem, "event"),
        response_types=_all_text(elem, "responseType"),
        urgency=cast(Urgency, _required(elem, "urgency")),
        severity=cast(Severity, _required(elem, "severity")),
        certainty=cast(Certainty, _required(elem, "certainty")),
        audience=_text(elem, "audience"),
        event_codes=_pairs(elem, "eventCode"),
        effective=_optional_time(elem, "effective", f"{where}/effective"),
        onset=_optional_time(elem, "onset", f"{where}/onset"),
        expires=_optional_time(elem, "expires", f"{where}/expires"),
        sender_name=_text(elem, "senderName"),
        headline=_text(elem, "headline"),
        description=_text(elem, "description"),
        instruction=_text(elem, "instruction"),
        web=_text(elem, "web"),
        contact=_text(elem, "contact"),
        parameters=_pairs(elem, "parameter"),
        resources=tuple(_resource(r) for r in elem.iterfind(_q("resource"))),
        areas=tuple(_area(a, f"{where}/area[{n}]", budget)
                    for n, a in enumerate(elem.iterfind(_q("area")), start=1)),
    )


def _alert(root: Element, unvalidated: tuple[str, ...]) -> CapAlert:
    incidents = _text(root, "incidents")
    budget = _RepairBudget()
    return CapAlert(
        identifier=_token(_required(root, "identifier"), "identifier"),
        sender=_token(_required(root, "sender"), "sender"),
        sent=_time(_required(root, "sent"), "sent"),
        status=cast(Status, _required(root, "status")),
        msg_type=cast(MsgType, _required(root, "msgType")),
        scope=cast(Scope, _required(root, "scope")),
        infos=tuple(_info(info, f"/alert/info[{n}]", budget)
                    for n, info in enumerate(root.iterfind(_q("info")), start=1)),
        references=_references(_text(root, "references")),
        source=_text(root, "source"),
        restriction=_text(root, "restriction"),
        addresses=_text(root, "addresses"),
        codes=_all_text(root, "code"),
        note=_text(root, "note"),
        incidents=tuple(incidents.split()) if incidents else (),
        signed=any(child.tag == SIGNATURE_TAG for child in root),
        unvalidated=unvalidated,
    )


# --- OneMap warning level ------------------------------------------------------------------------

#: CAP severity -> OneMap colour. China grades warnings in four levels, I 特别严重 / II 严重 /
#: III 较重 / IV 一般, shown red / orange / yellow / blue (突发事件应对法 2007, art. 42;
#: 国家突发公共事件总体应急预案 2006; for weather, CMA's 气象灾害预警信号发布与传播办法,
#: Order No. 16, 2007). CAP 1.2 (§3.2.2 severity) has four ordered grades too, Extreme
#: "extraordinary threat" / Severe "significant threat" / Moderate "possible threat" / Minor
#: "minimal to no known threat"; OneMap pairs them in order. CAP "Unknown" gives no level.
SEVERITY_LEVEL: Mapping[str, WarningLevel] = {
    "Extreme": WarningLevel.RED,
    "Severe": WarningLevel.ORANGE,
    "Moderate": WarningLevel.YELLOW,
    "Minor": WarningLevel.BLUE,
    "Unknown": WarningLevel.NONE,
}

#: Parameters (valueName, compared case-insensitively) that carry a warning colour. Chinese
#: publishers name it 预警颜色 / 预警级别 / 预警等级; OneMap's own CAP output writes 预警颜色
#: and ``onemap:level`` (see onemap.rules.cap_render).
COLOUR_PARAMETERS = frozenset({
    "预警颜色", "预警级别", "预警等级", "onemap:level", "warninglevel", "warningcolour",
    "warningcolor", "colour", "color", "level",
})

_COLOUR_WORDS: Mapping[str, WarningLevel] = {
    "红色": WarningLevel.RED, "红": WarningLevel.RED, "red": WarningLevel.RED,
    "橙色": WarningLevel.ORANGE, "橙": WarningLevel.ORANGE, "orange": WarningLevel.ORANGE,
    "黄色": WarningLevel.YELLOW, "黄": WarningLevel.YELLOW, "yellow": WarningLevel.YELLOW,
    "蓝色": WarningLevel.BLUE, "蓝": WarningLevel.BLUE, "blue": WarningLevel.BLUE,
    "无预警": WarningLevel.NONE, "none": WarningLevel.NONE,
}
# In free text a colour counts only as the name of a warning: "暴雨橙色预警信号",
# "海浪黄色警报". The last such mention wins ("黄色预警升级为橙色预警" is orange).
_COLOUR_IN_TEXT = re.compile(r"([红橙黄蓝])色(?:预警|警报|信号)")


def cap_warning_level(info: CapInfo) -> WarningLevel:
    """The OneMap warning colour of one CAP info block.

    China's national warning publishing system encodes the colour of the signal (the official
    grade) in the message; CAP's ``severity`` is a coarser, sender-chosen mapping of it, so an
    explicit colour is preferred: first a colour parameter (:data:`COLOUR_PARAMETERS`), then
    "X色预警/警报/信号" in ``event``, then in ``headline``; otherwise ``severity`` via
    :data:`SEVERITY_LEVEL`.

    >>> info = CapInfo(language="zh-CN", categories=("Met",), event="暴雨橙色预警信号",
    ...                urgency="Immediate", severity="Severe", certainty="Likely")
    >>> cap_warning_level(info).label
    'orange'
    >>> cap_warning_level(dataclasses.replace(info, event="Flood", severity="Extreme")).label
    'red'
    """
    for name, values in info.parameters.items():
        if name.strip().casefold() in COLOUR_PARAMETERS:
            for value in values:
                level = _COLOUR_WORDS.get(value.strip().casefold())
                if level is not None:
                    return level
    for text in (info.event, info.headline or ""):
        mentions = _COLOUR_IN_TEXT.findall(text)
        if mentions:
            return _COLOUR_WORDS[mentions[-1]]
    return SEVERITY_LEVEL[info.severity]


EXAMPLE = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>44000041600000_20170823100000</identifier>
  <sender>zhuhai@weather.gd.cn</sender>
  <sent>2017-08-23T10:00:00+08:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>zh-CN</language>
    <category>Met</category>
    <event>台风红色预警信号</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <headline>珠海市气象台发布台风红色预警信号</headline>
    <area>
      <areaDesc>珠海市</areaDesc>
      <polygon>22.2,113.5 22.3,113.5 22.3,113.6 22.2,113.6 22.2,113.5</polygon>
    </area>
  </info>
</alert>""".encode()
"""A small CAP alert (Zhuhai, typhoon red signal) for examples and docs."""
