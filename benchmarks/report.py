"""Writing a benchmark's results: ``<name>.json`` (the numbers) and ``<name>.md`` (the table
people read) side by side in the results directory, the same way for every benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(out: Path, name: str, results: Any, text: str, *, indent: int = 2) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(
        json.dumps(results, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(text, encoding="utf-8")
