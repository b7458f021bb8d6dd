"""Fuzz the CAP feed parser (``parse_cap_reading``, i.e. parse_cap plus the reading): at least
10,000 inputs, including hostile XML (docs/fuzzing.md).

Properties, for every input: a Reading the next stage can use, or InputRejected with a
documented reason, nothing else; no input hangs (the harness's budget); a valid message in a
legal variation (namespace prefix, CDATA, comments, declaration, BOM) gives exactly the reading
it describes.
"""

from __future__ import annotations

import random

import pytest

from onemap.errors import InputRejected
from onemap.streams.feeds.cap import EXAMPLE, MAX_REPAIR_POINTS, parse_cap
from onemap.streams.feeds.capfeed import parse_cap_reading
from tests.fuzz.cap_strategies import cap_case
from tests.fuzz.harness import Budget, fuzz
from tests.fuzz.strategies import CAP_REASONS, Case, judge_case

POLYGON = b"22.2,113.5 22.3,113.5 22.3,113.6 22.2,113.6 22.2,113.5"


def test_cap_parser_survives_fuzzing() -> None:
    def check(case: Case) -> str:
        return judge_case(case, parse_cap_reading, "cap", CAP_REASONS)

    stats = fuzz("parse_cap_reading", cap_case, check)
    assert stats.outcomes.get("accepted", 0) >= stats.inputs // 8, stats.outcomes
    assert {"invalid-xml", "hostile-xml", "schema-invalid", "bad-encoding", "too-large",
            "bad-time", "bad-polygon", "bad-circle", "bad-field"} <= set(stats.outcomes), \
        stats.outcomes


def scribble(points: int, seed: int = 1) -> bytes:
    """A closed ring of random points in Zhuhai: hundreds of self-intersections."""
    rnd = random.Random(seed)
    ring = [f"{rnd.uniform(22, 23):.5f},{rnd.uniform(113, 114):.5f}" for _ in range(points)]
    return " ".join([*ring, ring[0]]).encode()


def test_a_scribbled_polygon_is_repaired_or_refused_never_hangs() -> None:
    """Found by fuzzing: make_valid's default method took minutes on a 400-point random ring
    (a worker stuck on one message). Now such rings are repaired by the faster union method up
    to MAX_REPAIR_POINTS points per message, and refused beyond, all within the budget."""
    with Budget("scribble", run_s=60, per_input_s=30).running() as budget:
        small = EXAMPLE.replace(POLYGON, scribble(60))
        with budget.input(small):
            area = parse_cap(small).infos[0].areas[0]
        assert area.repairs and len(area.polygons) > 1
        big = EXAMPLE.replace(POLYGON, scribble(MAX_REPAIR_POINTS + 1))
        with budget.input(big), pytest.raises(InputRejected) as info:
            parse_cap(big)
        assert info.value.reason == "bad-polygon" and "at most" in info.value.detail
        # the limit is per message: two rings that fit alone do not fit together
        half = scribble(MAX_REPAIR_POINTS // 2 + 1)
        two = EXAMPLE.replace(POLYGON, half + b"</polygon><polygon>" + half)
        with budget.input(two), pytest.raises(InputRejected) as info:
            parse_cap(two)
        assert info.value.field == "/alert/info[1]/area[1]/polygon[2]"


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00"])
def test_a_time_outside_the_utc_range_is_bad_time(when: str) -> None:
    """Found by fuzzing: accepted, then an OverflowError wherever a later stage used UTC."""
    raw = EXAMPLE.replace(b"2017-08-23T10:00:00+08:00", when.encode())
    with pytest.raises(InputRejected) as info:
        parse_cap(raw)
    assert (info.value.reason, info.value.field) == ("bad-time", "sent")


def test_an_element_with_thousands_of_attributes_is_refused_before_validation() -> None:
    """Found by fuzzing: the schema check's cost is quadratic in an element's attributes
    (20,000 of them, 280 KB, took minutes); now refused as too-large before validating."""
    attrs = b" ".join(b'a%d="1"' % i for i in range(20_000))
    raw = EXAMPLE.replace(b"<sender>", b"<sender " + attrs + b">")
    with Budget("attributes", run_s=30, per_input_s=10).running() as budget, \
            budget.input(raw), pytest.raises(InputRejected) as info:
        parse_cap(raw)
    assert info.value.reason == "too-large" and "attributes" in info.value.detail


def test_utf16_without_a_bom_is_bad_encoding_not_a_crash() -> None:
    """Found by fuzzing: UTF-16-LE without a BOM is valid UTF-8 (NULs between ASCII), so the
    encoding check let it through and expat raised ValueError, which escaped the parser."""
    raw = ('<?xml version="1.0" encoding="utf-16-le"?>'
           + EXAMPLE.decode().split("?>", 1)[1]).encode("utf-16-le")
    with pytest.raises(InputRejected) as info:
        parse_cap(raw)
    assert info.value.reason == "bad-encoding"


def test_a_circle_radius_too_big_for_a_float_is_bad_circle() -> None:
    """Found by fuzzing: a 400-digit radius passed the decimal check, became inf, and shapely
    raised ValueError building the disc."""
    raw = EXAMPLE.replace(b"<polygon>" + POLYGON + b"</polygon>",
                          b"<circle>22.2,113.5 " + b"9" * 400 + b"</circle>")
    with pytest.raises(InputRejected) as info:
        parse_cap_reading(raw)
    assert (info.value.reason, info.value.field) == ("bad-circle",
                                                     "/alert/info[1]/area[1]/circle[1]")
