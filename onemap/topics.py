"""Create OneMap's topics (idempotent), with kafka-python's admin client."""

from __future__ import annotations

import logging

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from onemap.errors import ComponentError
from onemap.settings import Settings
from onemap.streams.app import all_topics
from onemap.streams.rules_loop import changelog_topic

log = logging.getLogger(__name__)


def ensure_topics(settings: Settings) -> list[str]:
    """Create every DESIGN.md topic that does not exist yet; returns the names."""
    names = all_topics(settings.topic_prefix)
    #: the rules' state: only the newest record of a key matters
    compacted = [changelog_topic(settings.app_id)]
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                 client_id="onemap-admin", request_timeout_ms=15000)
    except KafkaError as exc:
        raise ComponentError(
            f"cannot reach Kafka at {settings.kafka_url} ({exc}); is the broker running?"
        ) from exc
    try:
        for name in (*names, *compacted):  # one at a time: an existing topic must not hide
            # a missing one
            config = {"cleanup.policy": "compact"} if name in compacted else {}
            try:
                admin.create_topics([NewTopic(name, settings.partitions,
                                              settings.replication_factor,
                                              topic_configs=config)])
            except TopicAlreadyExistsError:
                log.debug("topic %s exists", name)
    finally:
        admin.close()
    return [*names, *compacted]
