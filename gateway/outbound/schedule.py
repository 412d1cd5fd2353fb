"""A profile's business hours and on-call ladder (the `schedule:` and `on_call:` keys of a profile file):

    schedule:
      timezone: Europe/London
      hours:                      # per weekday, HH:MM-HH:MM; a missing day is closed
        mon: "08:00-18:00"
        tue: "08:00-18:00"
        wed: "08:00-18:00"
        thu: "08:00-18:00"
        fri: "08:00-17:00"
      holidays: ["2026-12-25", "2026-12-26"]
    on_call:
      people:                     # paged in this order: primary, secondary, then fallbacks
        - {name: Dana (primary), number: "+447700900001"}
        - {name: Lee (secondary), number: "+447700900002", webhook_url: "https://pager.example/lee"}
        - {name: Ops desk, number: "+447700900003"}
      leg_timeout_s: 120          # ring + announce + wait for DTMF 1, per person
      announce_profile: front-desk  # the agent profile that speaks the announcement on each leg
      bridge_on_ack: true         # put the acknowledging person through to the caller, if still on
      caller_id: "+447700900000"  # presented to the on-call people (a number of the tenant)

Pure models and the one question "is it business hours at this instant" (zoneinfo).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.outbound.pacing import CallingHours, zone

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timezone: str = "UTC"
    hours: dict[Day, str] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        zone(v)
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: dict[Day, str]) -> dict[Day, str]:
        for day, window in v.items():
            try:
                CallingHours.parse(window, "UTC")
            except ValueError as exc:
                raise ValueError(f"{day}: {exc}") from None
        return v

    def open_at(self, when: datetime) -> bool:
        local = when.astimezone(zone(self.timezone))
        if local.date() in self.holidays:
            return False
        window = self.hours.get(_DAYS[local.weekday()])
        if not window:
            return False
        return CallingHours.parse(window, self.timezone).open_at(when)


class OnCallPerson(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=64)
    number: str = Field(..., pattern=r"^\+?[0-9*#]{2,32}$")
    webhook_url: str | None = None  # notified in parallel when this person's leg starts (SMS/push relay)

    @field_validator("number", mode="before")
    @classmethod
    def _as_string(cls, v: object) -> object:
        # written as people write numbers ("+44 7700 900-001"); dialled as digits
        text = str(v) if isinstance(v, int) else v
        return re.sub(r"[\s().-]", "", text) if isinstance(text, str) else text


class OnCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    people: list[OnCallPerson] = Field(..., min_length=1, max_length=8)  # primary, secondary, 6 fallbacks
    leg_timeout_s: float | None = Field(None, gt=0, le=600)  # None: GATEWAY_LADDER_LEG_TIMEOUT_S (120)
    announce_profile: str | None = None  # None: the profile itself
    bridge_on_ack: bool = True
    caller_id: str | None = Field(None, pattern=r"^\+?[0-9]{2,32}$")
