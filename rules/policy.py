"""The stream-processing policy shared by all rules (lateness, hold, silence)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onemap.datafiles import StrictModel


class PipelinePolicy(StrictModel):
    rule: Literal["pipeline"]
    version: int = Field(ge=1)
    source: str = Field(min_length=1)
    lateness_s: float = Field(ge=0, le=86_400)
    downgrade_hold_s: float = Field(ge=0, le=86_400)
    silence_factor: float = Field(gt=1, le=100)
