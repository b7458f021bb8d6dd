"""The CLI's offline commands, run as a user runs them (a real process)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from onemap.embedded import onemap_command

ROOT = Path(__file__).resolve().parent.parent


def onemap(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(onemap_command(*args), capture_output=True,
                          text=True, timeout=120, cwd=cwd, check=False)


def test_locate_one_point_prints_four_levels() -> None:
    r = onemap("locate", "113.576", "22.271")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "市\t440400\t珠海市"
    assert "区\t440402\t香洲区" in r.stdout
    assert r.stdout.count("\n") == 4


def test_locate_out_of_area_is_flagged_not_dropped() -> None:
    r = onemap("locate", "114.5", "22.0")
    assert r.returncode == 0 and "out of area" in r.stdout


def test_locate_csv_streams_rows_with_codes_and_progress(tmp_path: Path) -> None:
    src = tmp_path / "points.csv"
    src.write_text("id,lon,lat\na,113.3,22.1\nb,120,30\n", encoding="utf-8")
    r = onemap("locate", "--csv", str(src))
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].startswith("id,lon,lat,city_code,city_name,district_code")
    assert rows[1].startswith("a,113.3,22.1,440400,珠海市,440404,金湾区,440404103,")
    assert rows[1].endswith(",1") and rows[2].endswith(",0")
    assert "locate: 2 rows" in r.stderr


def test_check_rules_good_and_bad(tmp_path: Path) -> None:
    assert onemap("check", "rules", "rules/default").returncode == 0
    bad = tmp_path / "rules"
    bad.mkdir()
    (bad / "water_level.yaml").write_bytes(
        (ROOT / "tests/data/bad_rules/bad_number.yaml").read_bytes())
    r = onemap("check", "rules", str(bad))
    assert r.returncode == 2
    assert "water_level.yaml:14: kinds.river.red.offset_m" in r.stderr


def test_check_boundaries_on_the_shipped_map() -> None:
    r = onemap("check", "boundaries", "fixtures/zhuhai")
    assert r.returncode == 0, r.stdout + r.stderr


def test_up_refuses_a_broker_storage_the_embedded_broker_cannot_use(tmp_path: Path) -> None:
    """Fails fast, before starting anything, and says what would work."""
    done = onemap("up", "--broker-storage", "postgres://postgres@localhost/tansu",
                  "--data-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1, done
    assert "postgres://postgres@localhost/tansu" in done.stderr
    assert "memory://tansu/" in done.stderr and "s3://BUCKET/" in done.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "nothing was started"
    for bad in ("s3://", "file:///var/tansu"):
        assert onemap("up", "--broker-storage", bad, "--data-dir", str(tmp_path),
                      cwd=tmp_path).returncode == 1
