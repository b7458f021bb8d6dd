"""Everything a worker needs, built once from settings: the data, the logic and its clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from onemap.geo.places import PlaceIndex
from onemap.geo.proximity import SiteIndex, default_sites_path
from onemap.metrics import PipelineMetrics, SinkMetrics
from onemap.registries import Registries, default_registries_dir
from onemap.rules.evaluate import RulesStage
from onemap.rules.lifecycle import Exposure, LifecycleStage
from onemap.rules.rulebook import RuleBookHolder, default_rules_dir
from onemap.settings import Settings
from onemap.sinks.sms.roster import RosterHolder
from onemap.sinks.sms.storm import StormLimits, default_limits_path, load_limits
from onemap.streams.ingest import IngestStage, PlaceFinder


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass
class WorkerContext:
    settings: Settings
    ingest: IngestStage
    rules: RulesStage
    lifecycle: LifecycleStage
    rulebook: RuleBookHolder
    roster: RosterHolder
    sms_limits: StormLimits
    registries: Registries
    metrics: PipelineMetrics
    sink_metrics: SinkMetrics
    registry: CollectorRegistry
    now: Callable[[], datetime] = utc_now


def _in_or_shipped(path: Path, shipped: Path) -> Path:
    return path if path.exists() else shipped


def exposure_of(places: PlaceIndex, registries_dir: Path) -> Exposure:
    """The urgency's exposure from the map (population of any unit) and the vulnerable-site
    registry of ``registries_dir`` (the shipped one if the directory has none)."""
    sites = SiteIndex.from_csv(_in_or_shipped(registries_dir / "vulnerable_sites.csv",
                                              default_sites_path()))
    return Exposure(population_of=places.area_population, sites_near=sites.counts_near)


def build_context(settings: Settings, registry: CollectorRegistry | None = None) -> WorkerContext:
    """Load boundaries, registries, rules and roster; any defect fails here, before consuming."""
    registries_dir = settings.registries_dir or default_registries_dir()
    registries = Registries.load(registries_dir)
    places = PlaceIndex.load(settings.boundaries_dir)
    registry = registry or CollectorRegistry()
    holder = RuleBookHolder(settings.rules_dir or default_rules_dir())
    finder: PlaceFinder = places.find
    return WorkerContext(
        settings=settings,
        ingest=IngestStage(finder, registries, find_area=places.find_area,
                           find_codes=places.find_codes),
        rules=RulesStage(registries),
        lifecycle=LifecycleStage(exposure_of(places, Path(registries_dir))),
        rulebook=holder,
        roster=RosterHolder(Path(registries_dir) / "duty_roster.yaml"),
        sms_limits=load_limits(_in_or_shipped(Path(registries_dir) / "sms_limits.yaml",
                                              default_limits_path())),
        registries=registries,
        metrics=PipelineMetrics(registry),
        sink_metrics=SinkMetrics(registry),
        registry=registry,
    )
