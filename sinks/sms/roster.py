"""The duty roster: who is on call for which area, hazard types and levels.

Loaded strictly like the rules (file, line and field on any defect).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from onemap.datafiles import StrictModel, load_model
from onemap.levels import WarningLevel

PHONE = re.compile(r"^\+?\d{5,15}$")


class Officer(StrictModel):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    role: str = ""
    area_code: str = Field(pattern=r"^\d{6}(\d{3}(\d{3})?)?$")
    phone: str
    min_level: Literal["blue", "yellow", "orange", "red"] = "blue"
    hazard_types: tuple[str, ...] = ("all",)

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
    officers: tuple[Officer, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> DutyRoster:
        seen: set[str] = set()
        for officer in self.officers:
            if officer.id in seen:
                raise ValueError(f"officer id {officer.id!r} appears twice")
            seen.add(officer.id)
        return self


def load_roster(path: Path) -> DutyRoster:
    return load_model(DutyRoster, path)


def masked(phone: str) -> str:
    """A phone number fit for logs: 138****0001."""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"
