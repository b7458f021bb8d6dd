"""Strict loading of data files (rules, rosters, registries): parse, validate, compile.

Every error names the file, the line and the field at fault, e.g.
``rules/water_level.yaml:12: kinds.river.red.offset_m: Input should be a valid number``.
Unknown keys are rejected by the models (``extra="forbid"``); duplicate YAML keys too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from onemap.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

LineMap = dict[tuple[str | int, ...], int]


class StrictModel(BaseModel):
    """Base of every data-file model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleFile(StrictModel):
    """What every rule file states besides its ``rule:`` kind: its version and its source."""

    version: int = Field(ge=1)
    source: str = Field(min_length=1)


def load_yaml(path: Path, text: str | None = None) -> tuple[Any, LineMap]:
    """Parse YAML safely, returning the data and a map from key path to 1-based line."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read file: {exc.strerror}", path=str(path)) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("file is empty", path=str(path))
        lines: LineMap = {}
        _walk(node, (), lines, str(path))
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            problem += f" ({context} started at line {context_mark.line + 1})"
        raise ConfigError(f"invalid YAML: {problem}", path=str(path), line=line) from None
    finally:
        loader.dispose()
    return data, lines


def _walk(node: yaml.Node, at: tuple[str | int, ...], lines: LineMap, path: str) -> None:
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r}", path=path, line=key_node.start_mark.line + 1,
                    field=_dotted((*at, key)))
            seen.add(key)
            lines[(*at, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*at, key), lines, path)
            lines[(*at, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*at, i), lines, path)


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def line_of(lines: LineMap, loc: tuple[str | int, ...]) -> int | None:
    """The line of the deepest known prefix of ``loc``."""
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None


def validate_model(model: type[M], data: Any, lines: LineMap, path: Path) -> M:
    """Validate ``data`` against ``model``; the first error becomes a precise ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        loc = tuple(p for p in first["loc"] if isinstance(p, str | int) and p != "[key]")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(
            f"{first['msg']}{more}", path=str(path), line=line_of(lines, loc),
            field=_dotted(loc)) from None


def load_model(model: type[M], path: Path) -> M:
    data, lines = load_yaml(path)
    return validate_model(model, data, lines, path)


def file_version(*paths: Path) -> str:
    """Content hash of files: the version stamped on everything they produce."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def iter_yaml(directory: Path) -> Iterator[Path]:
    yield from sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))


def load_csv_models(model: type[M], path: Path) -> list[M]:
    """Each CSV row validated as ``model``; empty cells are None; errors give file:line:column."""
    import csv

    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", path=str(path)) from None
    out: list[M] = []
    with handle:
        reader = csv.DictReader(handle)
        for row in reader:
            line = reader.line_num
            if None in row:
                raise ConfigError("row has more cells than the header", path=str(path),
                                  line=line)
            data = {k: (v if v != "" else None) for k, v in row.items()}
            try:
                out.append(model.model_validate(data))
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                field = ".".join(str(p) for p in first["loc"]) or "(row)"
                raise ConfigError(first["msg"], path=str(path), line=line, field=field) from None
    return out
