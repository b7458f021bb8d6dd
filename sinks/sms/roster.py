"""The duty roster: who is on call for which area, hazard types and levels.

Loaded strictly like the rules (file, line and field on any defect).
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from onemap.datafiles import StrictModel, load_model
from onemap.levels import WarningLevel

PHONE = re.compile(r"^\+?\d{5,15}$")


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Shift(StrictModel):
    """On duty on ``days`` from ``start`` to ``end`` (local time); an end before the start
    runs past midnight into the next day."""

    days: tuple[Day, ...] = DAYS
    start: time
    end: time

    def covers(self, local: datetime) -> bool:
        t = local.time().replace(tzinfo=None)
        day = DAYS[local.weekday()]
        if self.start <= self.end:
            return day in self.days and self.start <= t < self.end
        previous_day = DAYS[(local.weekday() - 1) % 7]
        return (day in self.days and t >= self.start) or \
            (previous_day in self.days and t < self.end)


class Officer(StrictModel):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    role: str = ""
    area_code: str = Field(pattern=r"^\d{6}(\d{3}(\d{3})?)?$")
    phone: str
    min_level: Literal["blue", "yellow", "orange", "red"] = "blue"
    hazard_types: tuple[str, ...] = ("all",)
    #: empty: always on duty
    shifts: tuple[Shift, ...] = ()
    #: who takes the officer's messages outside their shifts (an officer id in this roster)
    deputy: str | None = None

    def on_duty(self, local: datetime) -> bool:
        return not self.shifts or any(s.covers(local) for s in self.shifts)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        if not PHONE.match(value):
            raise ValueError("phone must be 5-15 digits, optionally starting with +")
        return value

    @property
    def threshold(self) -> WarningLevel:
        return WarningLevel.parse(self.min_level)

    def covers(self, hazard_type: str) -> bool:
        return "all" in self.hazard_types or hazard_type in self.hazard_types


class DutyRoster(StrictModel):
    version: int = Field(ge=1)
    #: the roster's local time (China: +08:00, no daylight saving)
    utc_offset: str = Field(default="+08:00", pattern=r"^[+-]\d\d:\d\d$")
    officers: tuple[Officer, ...]

    @model_validator(mode="after")
    def _unique_ids_and_known_deputies(self) -> DutyRoster:
        seen: set[str] = set()
        for officer in self.officers:
            if officer.id in seen:
                raise ValueError(f"officer id {officer.id!r} appears twice")
            seen.add(officer.id)
        for officer in self.officers:
            if officer.deputy is not None and (officer.deputy not in seen
                                               or officer.deputy == officer.id):
                raise ValueError(f"officer {officer.id!r}: deputy {officer.deputy!r} is not "
                                 "another officer of this roster")
        return self

    @property
    def tz(self) -> timezone:
        sign = -1 if self.utc_offset.startswith("-") else 1
        hours, minutes = int(self.utc_offset[1:3]), int(self.utc_offset[4:6])
        return timezone(sign * timedelta(hours=hours, minutes=minutes))

    def by_id(self, officer_id: str) -> Officer:
        return next(o for o in self.officers if o.id == officer_id)

    def on_duty_for(self, officer: Officer, when: datetime) -> Officer | None:
        """The officer if on duty at ``when``, else their deputy if on duty, else None."""
        local = when.astimezone(self.tz)
        if officer.on_duty(local):
            return officer
        if officer.deputy is not None:
            deputy = self.by_id(officer.deputy)
            if deputy.on_duty(local):
                return deputy
        return None


def load_roster(path: Path) -> DutyRoster:
    return load_model(DutyRoster, path)


def masked(phone: str) -> str:
    """A phone number fit for logs: 138****0001."""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"
