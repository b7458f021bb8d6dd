"""Everything a worker needs, built once from settings: the data, the logic and its clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from onemap.metrics import PipelineMetrics, SinkMetrics
from onemap.registries import Registries, default_registries_dir
from onemap.rules.evaluate import RulesStage
from onemap.rules.lifecycle import LifecycleStage
from onemap.rules.rulebook import RuleBookHolder, default_rules_dir
from onemap.settings import Settings
from onemap.sinks.sms.roster import DutyRoster, load_roster
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
    roster: DutyRoster
    registries: Registries
    metrics: PipelineMetrics
    sink_metrics: SinkMetrics
    registry: CollectorRegistry
    now: Callable[[], datetime] = utc_now


def build_context(settings: Settings, registry: CollectorRegistry | None = None) -> WorkerContext:
    """Load boundaries, registries, rules and roster; any defect fails here, before consuming."""
    from onemap.geo.places import PlaceIndex

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
        lifecycle=LifecycleStage(places.population),
        rulebook=holder,
        roster=load_roster(Path(registries_dir) / "duty_roster.yaml"),
        registries=registries,
        metrics=PipelineMetrics(registry),
        sink_metrics=SinkMetrics(registry),
        registry=registry,
    )
