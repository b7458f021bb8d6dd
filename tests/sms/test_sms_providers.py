"""The provider registry and the demo providers behind the async SmsProvider interface."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from onemap.errors import ConfigError
from onemap.sinks.base import Outcome
from onemap.sinks.sms.http import HttpSmsProvider
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import ConsoleOutbox, FileOutbox, SmsEvent, provider_from_url
from onemap.sinks.sms.smpp import SmppProvider

NOW = datetime(2024, 8, 23, 4, 0, tzinfo=UTC)
MESSAGE = SmsMessage(key="a#1/o1", alert_id="a#1", recipient_id="o1", phone="13800000001",
                     text="啊" * 71)


def test_the_registry_maps_each_scheme_to_its_provider(tmp_path: Path) -> None:
    assert isinstance(provider_from_url(f"file://{tmp_path}/out.jsonl"), FileOutbox)
    assert isinstance(provider_from_url("console://"), ConsoleOutbox)
    assert isinstance(provider_from_url("smpp://onemap:pw@127.0.0.1:2775"), SmppProvider)
    assert isinstance(provider_from_url("https://gw.example/sms"), HttpSmsProvider)
    with pytest.raises(ConfigError, match="unknown SMS provider URL scheme 'ftp'") as caught:
        provider_from_url("ftp://user:hunter2@example/")
    assert "hunter2" not in str(caught.value)


def test_the_file_outbox_writes_one_fsynced_json_line_per_message(tmp_path: Path) -> None:
    async def scenario() -> list[Outcome]:
        outbox = provider_from_url(f"file://{tmp_path}/sms/out.jsonl")
        await outbox.check()
        outcomes = await outbox.submit([MESSAGE], NOW)
        await outbox.close()
        return outcomes
    assert asyncio.run(scenario()) == [Outcome.DELIVERED]
    [line] = (tmp_path / "sms" / "out.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert record["key"] == "a#1/o1" and [len(p) for p in record["parts"]] == [67, 4]


def test_the_console_outbox_prints_a_masked_number(capsys: pytest.CaptureFixture[str]) -> None:
    assert asyncio.run(ConsoleOutbox().submit([MESSAGE], NOW)) == [Outcome.DELIVERED]
    out = capsys.readouterr().out
    assert "138****0001" in out and "13800000001" not in out


def test_an_event_prints_with_a_masked_number() -> None:
    event = SmsEvent(kind="reply", phone="13800000001", at=NOW, text="1")
    assert "13800000001" not in repr(event) and "138****0001" in repr(event)
