"""Dead letters: a record OneMap cannot use, kept with its original bytes and the reason."""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime
from typing import Any, Protocol

from onemap.records import dumps


class Consumed(Protocol):
    """A record as a consumer hands it over: aiokafka's ``ConsumerRecord``, a RawRecord."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


@dataclasses.dataclass(slots=True)  # not frozen: see onemap.records.Observation
class RawRecord:
    """A record as consumed from Kafka, with where it came from."""

    value: bytes
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1

    @classmethod
    def of(cls, record: Any) -> RawRecord:
        """A consumed record (aiokafka's ``ConsumerRecord`` or faust's message; a RawRecord
        is itself); a tombstone's missing value becomes empty bytes, which no stage
        accepts."""
        if type(record) is cls:
            return record
        return cls(record.value if record.value is not None else b"", record.key,
                   record.topic, record.partition, record.offset)


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a record was rejected, at which stage, and the record itself."""

    record: RawRecord
    feed: str
    stage: str
    reason: str
    detail: str
    field: str | None = None

    def to_json(self, now: datetime) -> bytes:
        """JSON on ``onemap.deadletter``; the original bytes are base64, so nothing is lost."""
        try:
            text: str | None = self.record.value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return dumps({
            "feed": self.feed, "stage": self.stage, "reason": self.reason,
            "detail": self.detail, "field": self.field,
            "source": {"topic": self.record.topic, "partition": self.record.partition,
                       "offset": self.record.offset},
            "key_b64": base64.b64encode(self.record.key).decode() if self.record.key else None,
            "original_b64": base64.b64encode(self.record.value).decode(),
            "original_text": text if text is not None and len(text) <= 4096 else None,
            "rejected_at": now.isoformat(),
        })


def undecodable(record: RawRecord, stage: str, exc: Exception) -> DeadLetter:
    """A record between stages that does not decode (a producer bug or a foreign writer)."""
    return DeadLetter(record, feed="internal", stage=stage, reason="undecodable",
                      detail=repr(exc)[:200])
