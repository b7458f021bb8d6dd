"""All runtime settings, each declared once with its type, environment variable and doc.

Settings come from (in rising priority) defaults, ``ONEMAP_*`` environment variables and CLI
flags. They are validated before anything connects or consumes, so a bad value fails fast
with the variable's name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

from onemap.errors import ConfigError


def setting(default: Any, env: str, doc: str, *, secret: bool = False) -> Any:
    """Declare one setting: default value, environment variable and a one-line doc.

    A secret never appears in ``repr`` (so not in logs or tracebacks).
    """
    return dataclasses.field(default=default, repr=not secret,
                             metadata={"env": env, "doc": doc, "secret": secret})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob of a OneMap process. ``Settings.from_env()`` builds it."""

    kafka_url: str = setting(
        "kafka://127.0.0.1:19092", "ONEMAP_KAFKA",
        "Kafka bootstrap URL (kafka://host:port[,host:port]).")
    redis_url: str = setting(
        "redis://127.0.0.1:16379/0", "ONEMAP_REDIS", "Redis URL for dashboard state and dedup.")
    dashboard_host: str = setting("127.0.0.1", "ONEMAP_DASHBOARD_HOST", "Dashboard bind address.")
    dashboard_port: int = setting(8000, "ONEMAP_DASHBOARD_PORT", "Dashboard HTTP port.")
    dashboard_token: str | None = setting(
        None, "ONEMAP_DASHBOARD_TOKEN",
        "Viewer token for the wall display (required unless it listens on loopback).",
        secret=True)
    dashboard_operators: Path | None = setting(
        None, "ONEMAP_DASHBOARD_OPERATORS",
        "Operators file (YAML: name, role, token_sha256) of who may act through the wall's "
        "API (closed-loop steps, silences); none: nobody may (docs/dashboard.md).")
    dashboard_tile_url: str | None = setting(
        None, "ONEMAP_DASHBOARD_TILE_URL",
        "Optional base-map tile URL template (http(s)://.../{z}/{x}/{y}.png); none by default.")
    dashboard_tile_attribution: str = setting(
        "", "ONEMAP_DASHBOARD_TILE_ATTRIBUTION", "Attribution shown for the tile base map.")
    ingest_host: str = setting("127.0.0.1", "ONEMAP_INGEST_HOST", "HTTP ingest bind address.")
    ingest_port: int = setting(8100, "ONEMAP_INGEST_PORT",
                               "HTTP ingest port (POST /ingest/{feed}).")
    ingest_token: str | None = setting(
        None, "ONEMAP_INGEST_TOKEN", "Bearer token the HTTP ingest endpoint requires.",
        secret=True)
    metrics_host: str = setting("127.0.0.1", "ONEMAP_METRICS_HOST", "Worker metrics bind address.")
    metrics_port: int = setting(9108, "ONEMAP_METRICS_PORT", "Worker Prometheus /metrics port.")
    app_id: str = setting(
        "onemap", "ONEMAP_APP_ID",
        "Faust application id = consumer group; ingest's and rules' are <id>-ingest, <id>-rules.")
    partitions: int = setting(4, "ONEMAP_PARTITIONS", "Partitions per OneMap topic.")
    replication_factor: int = setting(
        1, "ONEMAP_REPLICATION_FACTOR", "Replication factor for topics OneMap creates.")
    topic_prefix: str = setting("onemap", "ONEMAP_TOPIC_PREFIX", "Prefix of every Kafka topic.")
    rebalance_timeout_s: float = setting(
        60.0, "ONEMAP_REBALANCE_TIMEOUT", "Consumer-group rebalance timeout; short when embedded.")
    session_timeout_s: float = setting(
        60.0, "ONEMAP_SESSION_TIMEOUT", "Consumer-group session timeout; short when embedded.")
    heartbeat_interval_s: float = setting(
        3.0, "ONEMAP_HEARTBEAT_INTERVAL", "Consumer-group heartbeat interval.")
    batch_size: int = setting(500, "ONEMAP_BATCH_SIZE", "Records per stage batch.")
    batch_wait_s: float = setting(
        0.05, "ONEMAP_BATCH_WAIT", "Longest wait to fill a batch before processing it anyway.")
    batch_linger_s: float = setting(
        0.01, "ONEMAP_BATCH_LINGER",
        "After a batch smaller than the batch size, how long a loop lets records gather "
        "before its next turn (Kafka's linger.ms); at most ONEMAP_BATCH_WAIT.")
    commit_interval_s: float = setting(
        5.0, "ONEMAP_COMMIT_INTERVAL",
        "How often the ingest and rules loops write their held state and commit offsets; "
        "a killed worker replays up to this much. Each commit writes one state record per "
        "source that reported since the last, so a network of many sources pays that record "
        "per reading at short intervals; 0: a commit per batch.")
    fetch_max_wait_s: float = setting(
        0.1, "ONEMAP_FETCH_MAX_WAIT",
        "Longest a consumer fetch waits for records. The embedded broker answers a "
        "waiting fetch up to about half this after a record arrives (Kafka at once), at "
        "every stage; shorter costs an idle worker more CPU.")
    data_dir: Path = setting(
        Path("var"), "ONEMAP_DATA_DIR", "Where local state lives (SMS outbox, faust tables).")
    rules_dir: Path | None = setting(
        None, "ONEMAP_RULES_DIR", "Rule files directory; default: the shipped rule set.")
    registries_dir: Path | None = setting(
        None, "ONEMAP_REGISTRIES_DIR", "Registries directory; default: the shipped fixtures.")
    boundaries_dir: Path | None = setting(
        None, "ONEMAP_BOUNDARIES_DIR", "Four-level boundaries; default: the Zhuhai fixture.")
    sms_outbox: str | None = setting(
        None, "ONEMAP_SMS_OUTBOX",
        "SMS provider URL: file://PATH (JSONL outbox) or console://; "
        "default file://DATA_DIR/sms-outbox.jsonl.")
    sms_pending_stale_s: float = setting(
        120.0, "ONEMAP_SMS_PENDING_STALE",
        "Seconds after which an SMS claim left pending by a killed worker is sent again.")
    sms_secret: str | None = setting(
        None, "ONEMAP_SMS_SECRET",
        "Password (SMPP) or token (HTTP) of the SMS gateway, kept out of the URL.", secret=True)
    rules_reload_interval_s: float = setting(
        2.0, "ONEMAP_RULES_RELOAD_INTERVAL", "How often rule files are checked for edits.")
    log_level: str = setting("WARNING", "ONEMAP_LOG_LEVEL", "Log level (quiet by default).")
    log_format: str = setting("text", "ONEMAP_LOG_FORMAT", "Log format: text or json.")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: Any,
    ) -> Settings:
        """Read ``ONEMAP_*`` variables, then apply non-None ``overrides`` (CLI flags)."""
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is not None and raw != "":
                values[f.name] = _coerce(raw, hints[f.name], f.metadata["env"])
        for name, value in overrides.items():
            if name not in hints:
                raise ConfigError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in ("dashboard_port", "metrics_port", "ingest_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ConfigError(f"port must be 1..65535, got {port}", field=_env_of(name))
        if not self.kafka_url.startswith("kafka://"):
            raise ConfigError(
                f"expected kafka://host:port, got {self.kafka_url!r}", field="ONEMAP_KAFKA")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"expected redis://host:port/db, got {self.redis_url!r}", field="ONEMAP_REDIS")
        if self.partitions < 1 or self.batch_size < 1:
            raise ConfigError("partitions and batch size must be at least 1")
        if not 0 < self.batch_wait_s <= 10:
            # faust's take would never hand over a batch smaller than the batch size
            raise ConfigError(f"expected more than 0 and at most 10 seconds, got "
                              f"{self.batch_wait_s}", field="ONEMAP_BATCH_WAIT")
        if not 0 <= self.batch_linger_s <= 1:
            raise ConfigError(f"expected 0-1 seconds, got {self.batch_linger_s}",
                              field="ONEMAP_BATCH_LINGER")
        if not 0 <= self.commit_interval_s <= 60:
            raise ConfigError(f"expected 0-60 seconds, got {self.commit_interval_s}",
                              field="ONEMAP_COMMIT_INTERVAL")
        if self.log_format not in ("text", "json"):
            raise ConfigError(
                f"expected text or json, got {self.log_format!r}", field="ONEMAP_LOG_FORMAT")

    @property
    def sms_outbox_url(self) -> str:
        return self.sms_outbox or f"file://{self.data_dir / 'sms-outbox.jsonl'}"

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka_url.removeprefix("kafka://").split(",")

    def topic(self, name: str) -> str:
        """Full topic name, e.g. ``topic("in.water") == "onemap.in.water"``."""
        return f"{self.topic_prefix}.{name}"

    def as_env(self) -> dict[str, str]:
        """The environment that gives a child process these same settings."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.metadata["env"]] = str(value)
        return out


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, doc) for every setting: the README's table."""
    return [
        (f.metadata["env"], "(secret)" if f.metadata["secret"] else str(f.default),
         f.metadata["doc"])
        for f in dataclasses.fields(Settings)
    ]


def _env_of(name: str) -> str:
    return str(next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == name))


def _coerce(raw: str, hint: Any, env: str) -> Any:
    text = str(hint)
    try:
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is Path or "Path" in text:
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"cannot read {raw!r} as {getattr(hint, '__name__', text)}",
                          field=env) from None
