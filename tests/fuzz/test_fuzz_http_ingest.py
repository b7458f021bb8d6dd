"""Fuzz the HTTP ingest body parsing (``split_records`` then ``judge``): at least 10,000
request bodies (docs/fuzzing.md).

Properties: a body is split into records or refused as a whole with RequestRefused (4xx),
nothing else; a JSON array is split into the exact bytes of its elements (each parses to the
element it was); JSON Lines into its non-blank lines; every record gets exactly one verdict,
an accepted reading or a documented rejection whose dead letter serialises with the record's
exact bytes.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from random import Random

import orjson

from onemap.streams.deadletter import DeadLetter, RawRecord
from onemap.streams.feeds import FEEDS
from onemap.streams.http_ingest import (
    JSON_TYPES,
    NDJSON_TYPES,
    XML_TYPES,
    RequestRefused,
    judge,
    split_records,
)
from tests.fuzz.cap_strategies import cap_case
from tests.fuzz.harness import fuzz
from tests.fuzz.strategies import (
    DOCUMENTED_REASONS,
    JsonFeedSpec,
    geohazard_record,
    incident_record,
    json_case,
    water_record,
    weather_record,
)

SPECS = {
    name: JsonFeedSpec(name, FEEDS[name].parse, valid, ())
    for name, valid in (("water", water_record), ("weather", weather_record),
                        ("geohazard", geohazard_record), ("incident", incident_record))
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = [*sorted(JSON_TYPES | NDJSON_TYPES | XML_TYPES), "text/plain", ""]


def body(rnd: Random) -> tuple[str, str, bytes]:
    """(feed, content type, body): arrays, objects, lines, XML, junk, under any type."""
    feed = rnd.choice([*SPECS, "cap"])
    if feed == "cap":
        kind = rnd.choice(sorted(XML_TYPES) * 4 + TYPES)
        return feed, kind, cap_case(rnd).raw
    records = [json_case(rnd, SPECS[feed]).raw for _ in range(rnd.randint(0, 12))]
    shape = rnd.randrange(6)
    if shape == 0:
        kind, data = "application/json", (records[0] if records else b"")
    elif shape in (1, 2):
        sep = rnd.choice([b",", b", ", b" ,\n"])
        kind, data = "application/json", b"[" + sep.join(records) + b"]"
    elif shape == 3:
        kind = rnd.choice(sorted(NDJSON_TYPES))
        data = rnd.choice([b"\n", b"\r\n", b"\n\n"]).join(
            r.replace(b"\n", b" ").replace(b"\r", b" ") for r in records)
    elif shape == 4:
        kind, data = rnd.choice(TYPES), rnd.randbytes(rnd.randint(0, 200))
    else:
        kind = rnd.choice(TYPES)
        data = b"[" + b",".join(records) + rnd.choice([b"", b"]", b",]", b"]]", b"}"])
    return feed, kind, data


def check(item: tuple[str, str, bytes]) -> list[tuple[object, str]]:
    feed, kind, data = item
    try:
        records = split_records(feed, kind, data)
    except RequestRefused as exc:
        assert exc.status in (400, 413, 415), exc
        assert exc.body()["error"] and exc.detail
        return [(item, f"refused-{exc.status}")]
    assert records and all(isinstance(r, bytes) and r for r in records)
    if feed == "cap":
        assert records == [data]
    elif kind in JSON_TYPES:
        whole = orjson.loads(data)
        elements = whole if isinstance(whole, list) else [whole]
        assert [orjson.loads(r) for r in records] == elements, (records, elements)
    else:
        assert records == [line.strip() for line in data.split(b"\n") if line.strip()]
    verdicts = judge(FEEDS[feed], records)
    assert [v.index for v in verdicts] == list(range(len(records)))
    out: list[tuple[object, str]] = []
    for verdict, raw in zip(verdicts, records, strict=True):
        assert verdict.raw is raw
        assert (verdict.reading is None) != (verdict.rejection is None)
        assert verdict.key is None or isinstance(verdict.key, bytes)
        if verdict.rejection is None:
            out.append((raw, "accepted"))
            continue
        assert verdict.rejection.reason in DOCUMENTED_REASONS, verdict.as_json()
        orjson.dumps(verdict.as_json())  # the 207 response body
        letter = DeadLetter(RawRecord(raw, verdict.key, f"onemap.in.{feed}"), feed,
                            "http-ingest", verdict.rejection.reason, verdict.rejection.detail,
                            verdict.rejection.field)
        assert base64.b64decode(orjson.loads(letter.to_json(NOW))["original_b64"]) == raw
        out.append((raw, verdict.rejection.reason))
    return out


def test_http_ingest_body_parsing_survives_fuzzing() -> None:
    stats = fuzz("http_ingest split_records+judge", body, check, batch=20, per_item=2)
    assert {"accepted", "refused-400", "refused-415", "invalid-json"} <= set(stats.outcomes), \
        stats.outcomes
