"""Prometheus metrics, one typed container per subsystem, on an injected registry.

Pure code never touches these; the stage shells and sinks record what the pure code returned.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class PipelineMetrics:
    """Metrics of the stream stages (ingest, rules, lifecycle) and the rule set."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records_in = Counter(
            "onemap_records_in_total", "Raw records consumed, per feed.", ["feed"],
            registry=registry)
        self.records_out = Counter(
            "onemap_records_out_total", "Records produced by each stage to its output topic.",
            ["stage"], registry=registry)
        self.dead_letters = Counter(
            "onemap_dead_letters_total", "Records sent to the dead-letter topic.",
            ["feed", "reason"], registry=registry)
        self.rule_decisions = Counter(
            "onemap_rule_decisions_total", "What the rules made of each observation.",
            ["decision"], registry=registry)
        self.alerts = Counter(
            "onemap_alerts_total", "Alert transitions written to the ledger.",
            ["level", "transition"], registry=registry)
        self.batch_seconds = Histogram(
            "onemap_stage_batch_duration_seconds", "Time to process one batch, per stage.",
            ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        self.event_to_alert = Histogram(
            "onemap_event_to_alert_seconds",
            "From a reading's event time to its alert being issued.",
            buckets=LAG_BUCKETS, registry=registry)
        self.rule_reloads = Counter(
            "onemap_rule_reloads_total", "Rule file reload attempts by outcome.", ["outcome"],
            registry=registry)
        self.rules_version = Gauge(
            "onemap_rules_version_info", "The rule set in force (value 1).", ["version"],
            registry=registry)
        # worker health: what ops need to see a stuck or starved pipeline
        self.consumer_lag = Gauge(
            "onemap_consumer_lag_records",
            "Records between the group's committed offset and the end of each partition this "
            "worker is assigned.", ["topic", "partition"], registry=registry)
        self.feed_last_event = Gauge(
            "onemap_feed_last_event_timestamp_seconds",
            "Newest event time (the reading's own timestamp) seen per input feed, Unix seconds.",
            ["feed"], registry=registry)
        self.feed_last_received = Gauge(
            "onemap_feed_last_received_timestamp_seconds",
            "Wall-clock time the last record of each input feed was consumed, Unix seconds.",
            ["feed"], registry=registry)
        self.hazards_live = Gauge(
            "onemap_hazards_live",
            "Open hazards (alerts not yet resolved) by level and hazard type, over the "
            "partitions this worker owns.", ["level", "type"], registry=registry)
        self.broker_errors = Counter(
            "onemap_broker_errors_total",
            "Errors talking to the Kafka broker, by operation (send, offsets, ledger-tail, "
            "commit: the ingest loop's offsets cut off by a rebalance).",
            ["operation"], registry=registry)
        self.broker_up = Gauge(
            "onemap_broker_up",
            "1 if the Kafka broker answered this worker's last metadata probe (every health "
            "tick), 0 if not. The clients retry on their own during an outage, so no error "
            "counter rises: this is how an outage shows.", registry=registry)
        self.redis_errors = Counter(
            "onemap_redis_errors_total",
            "Errors talking to Redis outside the sinks (e.g. writing feed health), by "
            "operation.", ["operation"], registry=registry)


class SinkMetrics:
    """Metrics of the outlets: Redis state, SMS."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "onemap_sink_deliveries_total", "Items handed to a sink, by outcome.",
            ["sink", "outcome"], registry=registry)
        self.errors = Counter(
            "onemap_sink_errors_total", "Errors talking to a sink's backend.", ["sink"],
            registry=registry)
        self.sms = Counter(
            "onemap_sms_messages_total", "SMS messages by outcome.", ["outcome"],
            registry=registry)
        self.sms_decisions = Counter(
            "onemap_sms_storm_decisions_total",
            "SMS storm-protection decisions per message: send, hold, fold, and why.",
            ["action", "why"], registry=registry)
        self.sms_not_sent = Counter(
            "onemap_sms_not_sent_total",
            "Alert transitions that made no SMS because notifications were muted.",
            ["reason"], registry=registry)
        self.batch_seconds = Histogram(
            "onemap_sink_batch_duration_seconds", "Time to deliver one batch, per sink.",
            ["sink"], buckets=STAGE_BUCKETS, registry=registry)
