"""The rule set in force: loaded strictly from a directory, versioned, reloaded on edit.

A bad edit is reported (file, line, field) and the last good rule set stays in force.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import logging
from pathlib import Path

from onemap.datafiles import file_version, iter_yaml, load_yaml, validate_model
from onemap.errors import ConfigError
from onemap.rules.geohazard import GeohazardRule
from onemap.rules.incident import IncidentRule
from onemap.rules.lifecycle import LifecyclePolicy
from onemap.rules.policy import PipelinePolicy
from onemap.rules.urgency import UrgencyModel
from onemap.rules.water_level import WaterLevelRule
from onemap.rules.weather import TOLERANCE, RainstormRule, WindRule

log = logging.getLogger(__name__)

RuleModel = (WaterLevelRule | RainstormRule | WindRule | GeohazardRule | IncidentRule
             | UrgencyModel | LifecyclePolicy | PipelinePolicy)

#: Every rule file names its kind in ``rule:``; one file per kind.
RULE_MODELS: dict[str, type[RuleModel]] = {
    "water_level": WaterLevelRule,
    "rainstorm": RainstormRule,
    "wind": WindRule,
    "geohazard": GeohazardRule,
    "incident": IncidentRule,
    "urgency": UrgencyModel,
    "lifecycle": LifecyclePolicy,
    "pipeline": PipelinePolicy,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """The numbers of a rule set that the rules stage reads at every reading, as plain
    floats computed once per rule set: the derived ones (a rule's longest window, its
    lowest bounds) scanned every colour of the rule at every reading, the others were a
    chain of attribute reads off the rule models. (The ~10 % of the stage's instructions
    in ``slot_tp_getattr_hook`` that ``bench_stages --instructions`` showed were mostly
    Enum members read off their classes: rules/windows.py ``IN_ORDER``.)"""

    lateness_s: float
    history_s: float
    downgrade_hold_s: float
    silence_factor: float
    #: the rainstorm rule's longest window and its lowest bound (less the comparison's
    #: tolerance): a rainfall below it reaches no colour
    rain_window_s: float
    rain_floor_mm: float
    #: the wind rule's window and the least mean wind and gust that reach a colour (less the
    #: tolerance)
    wind_window_s: float
    wind_mean_floor_ms: float
    wind_gust_floor_ms: float


@dataclasses.dataclass(frozen=True)
class RuleBook:
    """One consistent, validated rule set and the version stamped on what it produces."""

    water_level: WaterLevelRule
    rainstorm: RainstormRule
    wind: WindRule
    geohazard: GeohazardRule
    incident: IncidentRule
    urgency: UrgencyModel
    lifecycle: LifecyclePolicy
    pipeline: PipelinePolicy
    version: str
    directory: Path

    def rule_version(self, rule_id: str) -> str:
        """``<rule>@v<its version>+<hash of the whole rule set>``: stamped on every hazard."""
        model: RuleModel | None = getattr(self, rule_id, None)
        if model is None:  # a rule whose mapping is fixed in code (e.g. CAP severity)
            return f"{rule_id}@builtin+{self.version}"
        return f"{rule_id}@v{model.version}+{self.version}"

    @property
    def history_s(self) -> float:
        """How much per-source history the windows need (24 h) plus the allowed lateness."""
        return 24 * 3600.0 + self.pipeline.lateness_s

    @functools.cached_property
    def limits(self) -> Limits:
        """(Computed once per rule set: a changed rule set is a new RuleBook.)"""
        wind = self.wind.levels.values()
        return Limits(
            lateness_s=self.pipeline.lateness_s, history_s=self.history_s,
            downgrade_hold_s=self.pipeline.downgrade_hold_s,
            silence_factor=self.pipeline.silence_factor,
            rain_window_s=self.rainstorm.longest_window_s,
            rain_floor_mm=self.rainstorm.lowest_mm - TOLERANCE,
            wind_window_s=self.wind.window_min * 60.0,
            wind_mean_floor_ms=min(b.mean_ms for b in wind) - TOLERANCE,
            wind_gust_floor_ms=min(b.gust_ms for b in wind) - TOLERANCE)


def default_rules_dir() -> Path:
    return Path(str(importlib.resources.files("onemap.rules").joinpath("default")))


def load_rulebook(directory: Path) -> RuleBook:
    """Load and validate every rule file in ``directory``; any defect raises ConfigError."""
    if not directory.is_dir():
        raise ConfigError("rules directory does not exist", path=str(directory))
    found: dict[str, RuleModel] = {}
    paths = list(iter_yaml(directory))
    for path in paths:
        data, lines = load_yaml(path)
        if not isinstance(data, dict) or "rule" not in data:
            raise ConfigError("a rule file must be a mapping with a 'rule' key", path=str(path),
                              line=1, field="rule")
        kind = data["rule"]
        model = RULE_MODELS.get(kind)
        if model is None:
            raise ConfigError(f"unknown rule {kind!r}; known: {', '.join(sorted(RULE_MODELS))}",
                              path=str(path), line=lines.get(("rule",)), field="rule")
        if kind in found:
            raise ConfigError(f"rule {kind!r} is defined twice", path=str(path), field="rule")
        found[kind] = validate_model(model, data, lines, path)
    missing = sorted(set(RULE_MODELS) - set(found))
    if missing:
        raise ConfigError(f"missing rule file(s) for: {', '.join(missing)}", path=str(directory))
    return RuleBook(**found, version=file_version(*paths),  # type: ignore[arg-type]
                    directory=directory)


class RuleBookHolder:
    """Holds the rule set in force and swaps it when the files change and validate."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.current = load_rulebook(directory)
        self._stamp = self._fingerprint()
        self.last_error: ConfigError | None = None

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        return tuple(
            (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in iter_yaml(self.directory)
        )

    def maybe_reload(self) -> str | None:
        """Reload if files changed: returns "reloaded", "rejected" or None (no change)."""
        try:
            stamp = self._fingerprint()
        except OSError:
            return None
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            book = load_rulebook(self.directory)
        except ConfigError as exc:
            self.last_error = exc
            log.error("rule files rejected, keeping version %s: %s", self.current.version, exc)
            return "rejected"
        self.last_error = None
        if book.version == self.current.version:
            return None
        log.warning("rules reloaded: version %s -> %s", self.current.version, book.version)
        self.current = book
        return "reloaded"
