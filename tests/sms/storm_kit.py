"""Shared test kit of the storm-protection tests: alerts built to order, a provider that
records what it was given, and a clock the test moves by hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from onemap.levels import WarningLevel
from onemap.records import Alert, Hazard, KeyFigure, Place
from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.roster import DutyRoster

CST = timezone(timedelta(hours=8))
T0 = datetime(2017, 8, 23, 10, 0, tzinfo=CST)
PINGSHA = Place("440400", "珠海市", "440404", "金湾区", "440404104", "平沙镇", "440404104001",
                "美平社区")
HONGQI = Place("440400", "珠海市", "440404", "金湾区", "440404103", "红旗镇", "440404103001",
               "红旗社区")
QIANSHAN = Place("440400", "珠海市", "440402", "香洲区", "440402003", "前山街道",
                 "440402003001", "前山社区")
#: One officer who hears of everything in the city (the storm's victim), always on duty.
ROSTER = DutyRoster.model_validate({"version": 1, "officers": [
    {"id": "city", "name": "市值班员", "area_code": "440400", "phone": "13800000001",
     "min_level": "blue"}]})


def alert(source: str, level: WarningLevel, previous: WarningLevel = WarningLevel.NONE,
          transition: str = "new", *, hazard_type: str = "wind", place: Place = PINGSHA,
          seq: int = 1, exercise: bool = False, notify: str = "send",
          at: datetime = T0) -> Alert:
    hazard = Hazard(
        hazard_id=f"{hazard_type}:{source}", hazard_type=hazard_type, feed="weather",
        source_id=source, source_name=f"{source}站", level=level, previous_level=previous,
        place=place, lon=113.2, lat=22.1, observed_at=at,
        key_figure=KeyFigure("阵风", 30.0, "米/秒"), reason="r", rule_id=hazard_type,
        rule_version="v", exercise=exercise)
    return Alert(alert_id=f"{hazard.hazard_id}#{seq}", hazard_id=hazard.hazard_id, seq=seq,
                 transition=transition, level=level, previous_level=previous, hazard=hazard,
                 score=50.0, score_breakdown={}, issued_at=at, notify=notify)


class Clock:
    """Time moved by the test: every decision and flush reads it."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, minutes: float) -> None:
        self.at += timedelta(minutes=minutes)


@dataclasses.dataclass
class Submitted:
    message: SmsMessage
    at: datetime


class RecordingProvider:
    """An SMS provider that keeps what it is given (the sinks' test outlet, like bytewax's
    TestingSink); ``outcomes`` scripts the answers (default: delivered)."""

    name = "recording"

    def __init__(self) -> None:
        self.submitted: list[Submitted] = []
        self.outcomes: list[Outcome] = []

    async def check(self) -> None:
        return None

    async def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]:
        out: list[Outcome] = []
        for m in messages:
            outcome = self.outcomes.pop(0) if self.outcomes else Outcome.DELIVERED
            if outcome == Outcome.DELIVERED:
                self.submitted.append(Submitted(m, now))
            out.append(outcome)
        return out

    async def close(self) -> None:
        return None

    def texts(self) -> list[str]:
        return [s.message.text for s in self.submitted]
