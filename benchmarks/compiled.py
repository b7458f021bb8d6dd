"""The hot modules compiled with mypyc: what a compiler would buy a worker, measured.

Why: issue 7 wants 20,000 readings/s per worker and our per-reading Python is the limit
(benchmarks/README.md, "The floor"). mypyc compiles type-annotated modules to C extensions
without changing their source; this builds such a tree beside the checkout so that the
pipeline and stages benchmarks can run on it, A/B against the interpreted code in the same
hour (benchmarks/README.md, "Compiled with mypyc"). The project itself does not ship
compiled modules (why: the same section).

The tree (default ``build/compiled``) has the installed layout of the ``onemap`` namespace
(pyproject's package-dir mapping), every file a symlink into the checkout, and the compiled
extensions of :data:`HOT_MODULES` beside their sources (an extension is imported before a
``.py`` of the same name). Needs mypy (the ``test`` extra) and a C compiler with the Python
headers (Debian: gcc). The tree also links this checkout's ``benchmarks`` package, so a
benchmark runs from inside it::

    python -m benchmarks.compiled                      # build/compiled, ~1 min
    cd build/compiled
    PYTHONPATH=$PWD python -m benchmarks.bench_pipeline --workers 1 --no-profile \\
        --capacity-only --out DIR                      # the workers inherit PYTHONPATH
    PYTHONPATH=$PWD python -m benchmarks.bench_stages --instructions --out DIR

(From the checkout instead, its own ``onemap/`` folder, which holds only part of the
namespace, would shadow the tree's.)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: A tree this module made holds this file: only such a folder is replaced by a new build.
MARKER = ".onemap-compiled-tree"

#: The modules a reading passes through in the ingest and rules loops, as installed. Not
#: rules/weather.py and rules/water_level.py: their pydantic models have methods, and a
#: compiled class is not one pydantic can read (it fails at import).
HOT_MODULES = (
    "onemap/memo.py", "onemap/records.py",
    "onemap/streams/feeds/base.py", "onemap/streams/feeds/weather.py",
    "onemap/streams/feeds/water.py", "onemap/streams/ingest.py",
    "onemap/streams/handoff.py", "onemap/streams/source_state.py",
    "onemap/rules/windows.py", "onemap/rules/evaluate.py",
)


def installed_tree(dest: Path) -> None:
    """``dest`` as the installed ``onemap`` namespace (a folder per package, a symlink per
    file or data folder of the package's source folder) and the benchmarks."""
    mapping: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-dir"]
    if dest.exists() and any(dest.iterdir()) and not (dest / MARKER).exists():
        raise SystemExit(f"{dest} is not empty and not a tree this made (no {MARKER}): "
                         f"give a new or empty folder")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    (dest / MARKER).touch()
    package_folders = {ROOT / folder for folder in mapping.values()}
    for package, folder in mapping.items():
        target = dest.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for entry in (ROOT / folder).iterdir():
            if entry.name == "__pycache__" or entry in package_folders:
                continue  # a subpackage gets its own folder from its own mapping
            (target / entry.name).symlink_to(entry)
    (dest / "benchmarks").symlink_to(ROOT / "benchmarks")


def build(dest: Path, modules: Sequence[str] = HOT_MODULES) -> list[Path]:
    """The tree with ``modules`` compiled; the extensions built."""
    installed_tree(dest)
    done = subprocess.run([sys.executable, "-m", "mypyc", *modules], cwd=dest,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"mypyc failed (it needs mypy and a C compiler with the Python "
                         f"headers: pip install mypy; apt-get install gcc):\n"
                         f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    shutil.rmtree(dest / "build", ignore_errors=True)  # mypyc's intermediate C and objects
    return sorted(dest.rglob("*.so"))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", nargs="?", type=Path, default=ROOT / "build" / "compiled")
    args = ap.parse_args(argv)
    started = time.monotonic()
    print(f"compiling {len(HOT_MODULES)} modules with mypyc into {args.dest} (~1 min)",
          flush=True)
    built = build(args.dest)
    print(f"{len(built)} extensions in {time.monotonic() - started:.0f} s; run a benchmark "
          f"on them: cd {args.dest} && PYTHONPATH=$PWD python -m benchmarks.<name> ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
