"""Replay files: JSON Lines envelopes, bare records named by file, CSV and CAP XML."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from onemap.errors import OneMapError
from onemap.streams.feeds import FEEDS
from onemap.streams.feeds.cap import EXAMPLE
from onemap.streams.replay import read_items, rebase


def test_csv_rows_become_valid_feed_records(tmp_path: Path) -> None:
    path = tmp_path / "rivers.water.csv"
    path.write_text("station_id,observed_at,level_m,exercise\n"
                    "ZH-RIV-001,2017-08-23T12:00:00+08:00,2.31,false\n"
                    "ZH-RIV-002,2017-08-23T12:05:00+08:00,1.9,\n", encoding="utf-8")
    items = list(read_items(path))
    assert [i.key for i in items] == [b"ZH-RIV-001", b"ZH-RIV-002"]
    first = FEEDS["water"].parse(items[0].value)
    assert (first.values, first.exercise) == ({"level_m": 2.31}, False)
    assert "exercise" not in json.loads(items[1].value)  # empty cells are left out
    moved = rebase(items[0], timedelta(hours=1))
    assert json.loads(moved.value)["observed_at"] == "2017-08-23T13:00:00+08:00"


def test_cap_xml_file_is_one_message_keyed_by_its_lineage(tmp_path: Path) -> None:
    path = tmp_path / "warning.xml"
    path.write_bytes(EXAMPLE)
    [item] = list(read_items(path))
    assert item.feed == "cap" and item.value == EXAMPLE
    assert item.key == b"44000041600000_20170823100000"
    assert item.event_time is not None and item.event_time.hour == 10


def test_a_file_without_a_feed_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "rivers.csv"
    path.write_text("station_id\nA\n", encoding="utf-8")
    with pytest.raises(OneMapError, match="--feed"):
        list(read_items(path))
