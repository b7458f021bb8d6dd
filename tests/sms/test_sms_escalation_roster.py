"""The duty roster reloads without a restart: strict validation, the last good roster kept,
an outcome for the reload metric; and its escalation policy is validated like the rest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from onemap.errors import ConfigError
from onemap.registries import default_registries_dir
from onemap.sinks.sms.roster import RosterHolder, load_roster

SHIPPED = default_registries_dir() / "duty_roster.yaml"


@pytest.fixture()
def roster_file(tmp_path: Path) -> Path:
    path = tmp_path / "duty_roster.yaml"
    shutil.copy(SHIPPED, path)
    return path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    stat = path.stat()  # a new mtime even within the filesystem's timestamp granularity
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_an_edit_is_picked_up_and_reported_once(roster_file: Path) -> None:
    holder = RosterHolder(roster_file)
    assert holder.maybe_reload() is None  # unchanged
    edit(roster_file, 'phone: "13800000001"', 'phone: "13800000009"')
    assert holder.maybe_reload() == "reloaded"
    assert holder.current.by_id("ZH-DUTY-440400-01").phone == "13800000009"
    assert holder.maybe_reload() is None


def test_a_bad_edit_is_rejected_with_file_line_and_field_and_the_last_good_stays(
        roster_file: Path) -> None:
    holder = RosterHolder(roster_file)
    before = holder.current
    edit(roster_file, "red: {ack_within_min: 10, up_to: city}",
         "red: {ack_within_min: 0, up_to: city}")
    assert holder.maybe_reload() == "rejected"
    assert holder.current is before
    assert holder.last_error is not None
    message = str(holder.last_error)
    assert "duty_roster.yaml" in message and "escalation.red.ack_within_min" in message
    line = next(i for i, text in enumerate(roster_file.read_text().splitlines(), 1)
                if "ack_within_min: 0" in text)
    assert f":{line}" in message
    edit(roster_file, "ack_within_min: 0,", "ack_within_min: 15,")
    assert holder.maybe_reload() == "reloaded"
    assert holder.last_error is None
    assert holder.current.escalation is not None
    assert holder.current.escalation.red.ack_within_min == 15


@pytest.mark.parametrize(("old", "new", "field"), [
    ("  blue: {ack_within_min: 120, up_to: district}\n", "", "escalation.blue"),
    ("up_to: district}", "up_to: village}", "escalation.blue.up_to"),
    ("drills: false", "drills: false\n  storms: true", "escalation.storms"),
])
def test_the_escalation_policy_is_strict(roster_file: Path, old: str, new: str,
                                         field: str) -> None:
    edit(roster_file, old, new)
    with pytest.raises(ConfigError) as caught:
        load_roster(roster_file)
    assert field in str(caught.value)


def test_a_vanished_file_keeps_the_roster_in_force(roster_file: Path) -> None:
    holder = RosterHolder(roster_file)
    roster_file.unlink()
    assert holder.maybe_reload() is None
    assert holder.current.officers
