"""Rule files load strictly: every defect names file, line and field; reload keeps last good."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from onemap.errors import ConfigError
from onemap.rules.rulebook import RuleBookHolder, default_rules_dir, load_rulebook

CASES = Path(__file__).parent / "data" / "bad_rules"


def rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), target)
    return target


def test_shipped_rules_load_and_name_their_source() -> None:
    book = load_rulebook(default_rules_dir())
    assert "水情预警发布管理办法" in book.water_level.source
    assert book.rule_version("water_level").startswith("water_level@v1+")


@pytest.mark.parametrize(("case", "line", "field", "message"), [
    ("unknown_key", 9, "hysteresis_mm", "Extra inputs are not permitted"),
    ("bad_number", 14, "kinds.river.red.offset_m", "valid number"),
    ("unknown_threshold", 12, "kinds.river.orange.threshold", "'warning', 'guaranteed'"),
    ("duplicate_key", 6, "hysteresis_m", "duplicate key"),
    ("broken_yaml", 6, None, "flow sequence started at line 5"),
    ("unknown_kind", 12, "kinds.canal", "Input should be"),
])
def test_each_bad_rule_file_has_its_exact_error(
    tmp_path: Path, case: str, line: int, field: str | None, message: str,
) -> None:
    rules = rules_copy(tmp_path)
    shutil.copy(CASES / f"{case}.yaml", rules / "water_level.yaml")
    with pytest.raises(ConfigError) as info:
        load_rulebook(rules)
    err = info.value
    assert err.path is not None and err.path.endswith("water_level.yaml")
    assert err.line == line
    assert err.field == field
    assert message in str(err)


def test_reload_picks_up_edits_and_keeps_last_good_on_error(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    holder = RuleBookHolder(rules)
    first = holder.current
    assert holder.maybe_reload() is None

    path = rules / "water_level.yaml"
    path.write_text(path.read_text().replace("hysteresis_m: 0.05", "hysteresis_m: 0.10"))
    os.utime(path, ns=(1, 10**18))
    assert holder.maybe_reload() == "reloaded"
    assert holder.current.water_level.hysteresis_m == 0.10
    assert holder.current.version != first.version

    good = holder.current
    shutil.copy(CASES / "bad_number.yaml", path)
    os.utime(path, ns=(1, 2 * 10**18))
    assert holder.maybe_reload() == "rejected"
    assert holder.current is good
    assert holder.last_error is not None and holder.last_error.line == 14


def test_a_rule_table_must_name_all_four_colours(tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    shutil.copy(CASES / "rainstorm_missing_colour.yaml", rules / "rainstorm.yaml")
    with pytest.raises(ConfigError) as info:
        load_rulebook(rules)
    assert (info.value.line, info.value.field) == (5, "levels")
    assert "missing: red" in str(info.value)
