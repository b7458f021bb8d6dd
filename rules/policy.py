"""The stream-processing policy shared by all rules (lateness, hold, silence)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onemap.datafiles import RuleFile


class PipelinePolicy(RuleFile):
    rule: Literal["pipeline"]
    lateness_s: float = Field(ge=0, le=86_400)
    downgrade_hold_s: float = Field(ge=0, le=86_400)
    silence_factor: float = Field(gt=1, le=100)
