"""Fuzz the replay file readers (``read_items`` on JSON Lines, CSV and CAP XML files): at
least 10,000 lines, rows and files each (docs/fuzzing.md).

Properties: a file is read or refused with a OneMapError that names it (never another
exception, which would end ``onemap replay`` with a traceback); JSON Lines give one item per
non-blank, non-comment line, a bare line's bytes unchanged (the pipeline dead-letters what it
cannot parse, with those bytes); every CSV row becomes one JSON object; an XML file is one CAP
item with its exact bytes; each item can be rebased by a day either way.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from random import Random

import orjson
import pytest

from onemap.errors import OneMapError
from onemap.streams.app import INPUT_TOPICS
from onemap.streams.feeds import FEEDS
from onemap.streams.replay import ReplayItem, read_items, rebase
from tests.fuzz.cap_strategies import CAP_TEXTS, cap_case, cap_time, valid_parts
from tests.fuzz.harness import fuzz
from tests.fuzz.strategies import (
    NUMBERS,
    STRINGS,
    TIMES,
    Case,
    JsonFeedSpec,
    dump,
    geohazard_record,
    incident_record,
    json_case,
    text,
    water_record,
    weather_record,
)

SPECS = {
    name: JsonFeedSpec(name, FEEDS[name].parse, valid, ())
    for name, valid in (("water", water_record), ("weather", weather_record),
                        ("geohazard", geohazard_record), ("incident", incident_record))
}
COUNTER = itertools.count()


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="onemap-fuzz-replay-") as name:
        yield Path(name)


def write(folder: Path, suffix: str, data: bytes) -> Path:
    path = folder / f"f{next(COUNTER)}{suffix}"
    path.write_bytes(data)
    return path


def rebased(item: ReplayItem) -> bool:
    """Rebase by a day either way; False if the item cannot move (its time would leave the
    calendar, or it is nested deeper than orjson writes) and is replayed as recorded."""
    moved_all = True
    for shift in (timedelta(days=1), timedelta(days=-1)):
        moved = rebase(item, shift)
        if item.event_time is not None and moved is not item:
            assert moved.event_time == item.event_time + shift
        moved_all = moved_all and (moved is not item or item.event_time is None)
    return moved_all


# --- JSON Lines --------------------------------------------------------------------------------

def jsonl_line(rnd: Random) -> bytes:
    roll = rnd.random()
    feed = rnd.choice(sorted(SPECS))
    if roll < 0.5:
        return json_case(rnd, SPECS[feed]).raw.replace(b"\n", b" ").replace(b"\r", b" ")
    if roll < 0.9:  # an envelope, its record an object, a string (CAP) or anything
        record: object = rnd.choice([SPECS[feed].valid(rnd)[0], text(rnd),
                                     rnd.choice(STRINGS + TIMES), rnd.choice(NUMBERS[:20])])
        if rnd.random() < 0.3:
            feed, record = "cap", cap_case(rnd).raw.decode("utf-8", "replace")
        name = feed if rnd.random() < 0.97 else rnd.choice(["nosuch", "", 7])
        envelope = {"feed": name, "record": record}
        return dump(envelope) if rnd.random() < 0.9 else dump(envelope)[:-3]
    return rnd.choice([b"", b"   ", b"# a comment", b"not json",
                       rnd.randbytes(20).replace(b"\n", b" "), b'{"feed": "water"}', b"[1, 2]",
                       b"\xef\xbb\xbf{}"])


def test_jsonl_reader_survives_fuzzing(folder: Path) -> None:
    def gen(rnd: Random) -> tuple[str, list[bytes]]:
        return (rnd.choice([".water.jsonl", ".cap.jsonl", ".incident.jsonl"] * 3 + [".jsonl"]),
                [jsonl_line(rnd) for _ in range(rnd.randint(1, 15))])

    def check(item: tuple[str, list[bytes]]) -> list[tuple[object, str]]:
        suffix, lines = item
        path = write(folder, suffix, b"\n".join(lines))
        try:
            items = list(read_items(path))
        except OneMapError as exc:
            assert str(path) in str(exc), exc
            return [(line, "refused") for line in lines]
        outcomes: list[tuple[object, str]] = [(line, "skipped") for line in lines
                                              if not line.strip() or line.strip()[:1] == b"#"]
        wanted = [line.strip() for line in lines if line.strip()
                  and not line.strip().startswith(b"#")]
        # bytes.splitlines would split on more than \n; the reader splits on \n only
        assert len(items) == len(wanted), (len(items), wanted)
        for line, got in zip(wanted, items, strict=True):
            assert got.feed in INPUT_TOPICS
            envelope = _envelope(line)
            if envelope is None:
                assert got.value == line
            assert got.event_time is None or got.event_time.utcoffset() is not None
            outcomes.append((line, "item" if rebased(got) else "item-as-recorded"))
        return outcomes

    stats = fuzz("replay.read_items[jsonl]", gen, check, batch=20, per_item=7)
    assert stats.outcomes["item"] > 10 * stats.outcomes.get("item-as-recorded", 0), stats


def _envelope(line: bytes) -> dict[str, object] | None:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) and "feed" in obj and "record" in obj else None


# --- CSV ------------------------------------------------------------------------------------

CELLS = ["3", "2.5", "-0", "1e309", "nan", "NaN", "inf", "-inf", "Infinity", "1_000", "٣",
         "99999999999999999999", "-99999999999999999999", "9" * 5000, "true", "FALSE", " 3 ",
         "", " ", "ZH-RIV-001", "2017-08-23T12:00:00+08:00", '"quoted, comma"', '"a""b"',
         '"multi\nline"', "\x00", "水位", "x" * 140_000, "\ufeff"]


def test_csv_reader_survives_fuzzing(folder: Path) -> None:
    def gen(rnd: Random) -> bytes:
        feed = rnd.choice(sorted(SPECS))
        record, _ = SPECS[feed].valid(rnd)
        header = list(record) + [text(rnd, 6).replace(",", "") for _ in range(rnd.randint(0, 2))]
        rows = []
        for _ in range(rnd.randint(1, 12)):
            record, _ = SPECS[feed].valid(rnd)
            cells = [str(record.get(h, "")) for h in header]
            for _ in range(rnd.randint(0, 3)):
                cells[rnd.randrange(len(cells))] = rnd.choice(CELLS)
            if rnd.random() < 0.1:
                cells = cells[:rnd.randint(0, len(cells))] + ["extra"] * rnd.randint(0, 2)
            rows.append(",".join(cells))
        data = ("\n".join([",".join(header), *rows]) + "\n").encode()
        if rnd.random() < 0.05:
            data = data.replace(b"0", b"\xff", 1)  # not UTF-8
        return b"%s|" % feed.encode() + data

    def check(item: bytes) -> list[tuple[object, str]]:
        feed, data = item.split(b"|", 1)
        path = write(folder, f".{feed.decode()}.csv", data)
        try:
            items = list(read_items(path))
        except OneMapError as exc:
            assert str(path) in str(exc), exc
            return [(item, "refused")]
        for got in items:
            assert got.feed == feed.decode()
            record = orjson.loads(got.value)
            assert isinstance(record, dict)
            rebased(got)
        return [(item, "rows")] + [((item, n), "row") for n in range(len(items))]

    fuzz("replay.read_items[csv]", gen, check, batch=20, per_item=7)


# --- CAP XML -----------------------------------------------------------------------------------

def test_xml_reader_survives_fuzzing(folder: Path) -> None:
    def check(case: Case) -> str:
        path = write(folder, ".xml", case.raw)
        (item,) = read_items(path)  # an XML file is never refused: the pipeline judges it
        assert (item.feed, item.value) == ("cap", case.raw)
        assert item.event_time is None or item.event_time.utcoffset() is not None
        rebased(item)
        return "item" if item.event_time is None else "item-with-time"

    fuzz("replay.read_items[xml]", xml_case, check, batch=50)


def xml_case(rnd: Random) -> Case:
    """Mostly messages whose <sent> says anything (what the reader itself looks at), most of
    them in the wrong namespace so the CAP parser behind the key refuses them cheaply (the CAP
    parser has its own fuzz test); the rest the full CAP mix."""
    if rnd.random() < 0.15:
        return cap_case(rnd)
    parts, _ = valid_parts(rnd)
    parts.alert[2] = ("sent", rnd.choice([*TIMES, *CAP_TEXTS[:12], cap_time(rnd)[0]]))
    if rnd.random() < 0.8:
        parts.namespace = "urn:oasis:names:tc:emergency:cap:1.1"
    return Case(parts.render(rnd, decorate=True), "sent")
