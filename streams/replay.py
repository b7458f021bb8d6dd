"""`onemap replay`: produce recorded feed files into Kafka, paced by event time.

A replay file is a CAP message (``*.xml``, sent whole to ``onemap.in.cap``), a CSV
recording (``*.<feed>.csv``: a header of field names, one record per row), or JSON Lines,
one record per line, in one of two forms:

- an envelope ``{"feed": "water", "record": {...}}`` (files that mix feeds; ``record`` may
  also be a string, e.g. CAP XML, sent as is);
- a bare feed record, with the feed given by ``--feed`` or by the file name
  (``*.water.jsonl``).

Lines are sent in file order. With ``--speed X`` the gaps between event times are replayed
X times faster (``--speed 0``: as fast as possible). ``--rebase-now`` shifts every event
time so the first record happens now (a recorded storm replayed as live), keeping offsets.
Lines that are not JSON are still produced (the pipeline dead-letters them with a reason).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import orjson
from kafka import KafkaProducer

from onemap.errors import OneMapError
from onemap.settings import Settings
from onemap.streams.app import INPUT_TOPICS
from onemap.streams.feeds import FEEDS


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayItem:
    feed: str
    value: bytes
    key: bytes | None
    event_time: datetime | None


def feed_from_name(path: Path) -> str | None:
    parts = path.name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in INPUT_TOPICS else None


def _csv_value(text: str) -> Any:
    """A CSV cell as the JSON value a feed expects: numbers, booleans, else text.

    >>> [_csv_value(v) for v in ("3", "2.5", "true", "ZH-RIV-001", "2017-08-23T12:00:00+08:00")]
    [3, 2.5, True, 'ZH-RIV-001', '2017-08-23T12:00:00+08:00']
    >>> [_csv_value(v) for v in ("99999999999999999999", "nan", "1e999")]
    [1e+20, 'nan', '1e999']
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        number = int(text)
        if -(2**63) <= number < 2**63:  # what JSON carries as an integer (orjson: 64 bits)
            return number
    except ValueError:
        pass
    try:
        real = float(text)
    except ValueError:
        return text
    # nan/inf stay text, for the feed's parser to reject as such (JSON would make them null)
    return real if math.isfinite(real) else text


def read_csv_items(path: Path, feed: str | None) -> Iterator[ReplayItem]:
    """A CSV recording: a header of the feed's field names, one record per row (empty cells
    are left out); the feed comes from ``--feed`` or the file name (``*.water.csv``)."""
    import csv

    name = feed or feed_from_name(path)
    if name is None:
        raise OneMapError(f"{path}: name the feed with --feed or as *.<feed>.csv")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:  # a cell over csv's field limit (128 KiB) or bytes that are not UTF-8
            for row in reader:
                record = {k: _csv_value(v) for k, v in row.items() if k and v not in (None, "")}
                yield ReplayItem(name, orjson.dumps(record), _key(record),
                                 _event_time(name, record))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise OneMapError(f"{path}:{reader.line_num}: unreadable CSV: {exc}"[:300]) from None


def read_items(path: Path, feed: str | None = None) -> Iterator[ReplayItem]:
    if path.suffix.lower() == ".csv":
        yield from read_csv_items(path, feed)
        return
    if path.suffix.lower() == ".xml":  # one CAP message per file, sent as is
        raw = path.read_bytes()
        text = raw.decode("utf-8", "replace")
        yield ReplayItem("cap", raw, _key(text), _event_time("cap", text))
        return
    default_feed = feed or feed_from_name(path)
    with path.open("rb") as handle:
        for number, raw_line in enumerate(handle, start=1):
            line = raw_line.strip()
            if not line or line.startswith(b"#"):
                continue
            try:
                obj: Any = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and "feed" in obj and "record" in obj:
                name, record = str(obj["feed"]), obj["record"]
                try:
                    value = record.encode() if isinstance(record, str) else orjson.dumps(record)
                except TypeError as exc:  # nested deeper than orjson writes (254 levels)
                    raise OneMapError(f"{path}:{number}: the record cannot be written back as "
                                      f"JSON: {exc}") from None
            elif default_feed is not None:
                name, record, value = default_feed, obj, line
            else:
                raise OneMapError(
                    f"{path}:{number}: no feed for this line; use an envelope "
                    '{"feed": ..., "record": ...}, name the file *.<feed>.jsonl or pass --feed')
            if name not in INPUT_TOPICS:
                raise OneMapError(f"{path}:{number}: unknown feed {name!r}; "
                                  f"known: {', '.join(INPUT_TOPICS)}")
            yield ReplayItem(name, value, _key(record), _event_time(name, record))


def read_all(paths: Sequence[Path], feed: str | None = None) -> list[ReplayItem]:
    return [item for path in paths for item in read_items(path, feed)]


def _key(record: Any) -> bytes | None:
    """The source a record belongs to: its partition key, so each source stays in order."""
    if isinstance(record, str) and "urn:oasis:names:tc:emergency:cap" in record:
        from onemap.streams.feeds.cap import parse_cap
        from onemap.streams.feeds.capfeed import lineage

        try:
            return lineage(parse_cap(record.encode())).encode()
        except OneMapError:
            return None  # the pipeline dead-letters it with the reason
    if isinstance(record, dict):
        for field in ("station_id", "point_id", "incident_id", "source_id"):
            if isinstance(record.get(field), str):
                return str(record[field]).encode()
    return None


ISO_TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)")
CAP_SENT = re.compile(rb"<sent>([^<]+)</sent>")


def _event_time(feed: str, record: Any) -> datetime | None:
    if feed == "cap" and isinstance(record, str):
        found = CAP_SENT.search(record.encode())
        if found is None:
            return None
        try:  # a message the pipeline will dead-letter may say anything here
            sent = datetime.fromisoformat(found.group(1).decode())
        except ValueError:
            return None
        return sent if sent.tzinfo is not None else None
    adapter = FEEDS.get(feed)
    if adapter is None or not isinstance(record, dict):
        return None
    value = record.get(adapter.time_field)
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _shifted(shift: timedelta) -> Callable[[re.Match[bytes]], bytes]:
    """A time found in a CAP message, moved; one that is not a usable time stays as it is."""
    def move(match: re.Match[bytes]) -> bytes:
        try:
            return (datetime.fromisoformat(match.group(0).decode()) + shift).isoformat().encode()
        except (ValueError, OverflowError):
            return match.group(0)
    return move


def rebase(item: ReplayItem, shift: timedelta) -> ReplayItem:
    """The same record with its event time moved by ``shift`` (other fields untouched)."""
    adapter = FEEDS.get(item.feed)
    if item.event_time is None or adapter is None:
        return item
    try:
        new_time = item.event_time + shift
    except OverflowError:  # e.g. 9999-12-31 moved later: replayed as recorded
        return item
    if item.feed == "cap":  # every time in the message moves together
        return dataclasses.replace(item, value=ISO_TIME.sub(_shifted(shift), item.value),
                                   event_time=new_time)
    record = orjson.loads(item.value)
    record[adapter.time_field] = new_time.isoformat()
    try:
        value = orjson.dumps(record)
    except TypeError:  # nested deeper than orjson writes (254 levels): replayed as recorded
        return item
    return dataclasses.replace(item, value=value, event_time=new_time)


def replay(
    settings: Settings, files: Sequence[Path], *, speed: float = 0.0, feed: str | None = None,
    rebase_now: bool = False, progress: TextIO | None = sys.stderr,
) -> int:
    """Produce every line of ``files``; returns how many records were sent."""
    for path in files:
        if not path.is_file():
            raise OneMapError(f"replay file not found: {path}")
    items = [item for path in files for item in read_items(path, feed)]
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5,
                             acks="all", client_id="onemap-replay")
    first = next((i.event_time for i in items if i.event_time is not None), None)
    shift = (datetime.now(first.tzinfo) - first) if rebase_now and first is not None \
        else timedelta(0)
    started = time.monotonic()
    sent = 0
    try:
        for original in items:
            item = rebase(original, shift) if rebase_now else original
            if speed > 0 and first is not None and item.event_time is not None:
                due = (item.event_time - shift - first).total_seconds() / speed
                wait = due - (time.monotonic() - started)
                if wait > 0:
                    producer.flush()
                    time.sleep(wait)
            producer.send(settings.topic(INPUT_TOPICS[item.feed]), key=item.key,
                          value=item.value)
            sent += 1
            if progress is not None and (sent % 1000 == 0 or sent == len(items)):
                print(f"replay: {sent}/{len(items)} records sent", file=progress, flush=True)
        producer.flush()
    finally:
        producer.close()
    return sent
