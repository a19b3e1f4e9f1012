"""Weekly time windows in a time zone (eligibility rules, the retraining job's off-peak hours)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from serving.config.base import StrictModel

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class TimeWindow(StrictModel):
    """Weekly opening hours in one time zone, e.g. weekdays 08:00-18:00 Europe/Amsterdam.

    The window includes `from` and excludes `to`. When `from` is later than `to` the window runs
    overnight and belongs to the day it opens: `days: [fri], from: "22:00", to: "06:00"` covers
    Friday 22:00 to Saturday 06:00.
    """

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    """Days on which the window opens."""
    from_: str = Field(alias="from")
    """Opening time, "HH:MM" (24 h) in `timezone`."""
    to: str
    """Closing time, "HH:MM" (24 h) in `timezone`; earlier than `from` means overnight."""
    timezone: str
    """IANA zone name (e.g. Europe/Amsterdam) that the times and days are read in."""

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _hh_mm(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                f'got the number {value}: quote times as "HH:MM" strings '
                "(YAML reads an unquoted 18:00 as the base-60 number 1080)"
            )
        if isinstance(value, str) and not _HH_MM.match(value):
            raise ValueError(f'expected "HH:MM" between 00:00 and 23:59, got {value!r}')
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/Amsterdam)"
            ) from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if self.from_ == self.to:
            raise ValueError(f"'from' and 'to' are both {self.to}: the window would be empty")
        return self

    def contains(self, moment: datetime) -> bool:
        """Whether `moment` falls in the window; a naive `moment` is taken as UTC."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        local = moment.astimezone(ZoneInfo(self.timezone))
        start, end, now = _clock_time(self.from_), _clock_time(self.to), local.time()
        weekday = local.weekday()
        if start < end:
            return DAYS[weekday] in self.days and start <= now < end
        if now >= start:
            return DAYS[weekday] in self.days
        return now < end and DAYS[(weekday - 1) % 7] in self.days


def _clock_time(hh_mm: str) -> time:
    hours, minutes = hh_mm.split(":")
    return time(int(hours), int(minutes))
