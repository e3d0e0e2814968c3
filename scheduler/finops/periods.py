"""Accounting periods: calendar months (budgets), and any span a report asks for. All UTC.

2026-11                  a month
2026                     a year
2026-11-05               a day
2026-11-01..2026-12-15   from the first day up to and including the second
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from placers.domain import UnixSeconds

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_YEAR = re.compile(r"^(\d{4})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


class InvalidPeriod(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open span [start, end) of Unix seconds, with the label it was asked for by."""

    label: str
    start: UnixSeconds
    end: UnixSeconds

    def overlap_s(self, a: UnixSeconds, b: UnixSeconds) -> float:
        """Seconds of [a, b) inside the period."""
        return max(0.0, min(b, self.end) - max(a, self.start))

    def contains(self, t: UnixSeconds) -> bool:
        return self.start <= t < self.end

    @property
    def hours(self) -> float:
        return (self.end - self.start) / 3600.0


def _ts(d: date) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()


def month_of(t: UnixSeconds) -> Period:
    """The calendar month (UTC) that contains t."""
    return _month_of_day(int(t // 86400))


@functools.lru_cache(maxsize=4096)
def _month_of_day(day: int) -> Period:
    d = datetime.fromtimestamp(day * 86400, UTC)
    return month(d.year, d.month)


def month(year: int, mon: int) -> Period:
    if not 1 <= mon <= 12:
        raise InvalidPeriod(f"month {mon} is not within 1..12")
    last = calendar.monthrange(year, mon)[1]
    start = date(year, mon, 1)
    return Period(f"{year:04d}-{mon:02d}", _ts(start), _ts(start + timedelta(days=last)))


def months_between(a: UnixSeconds, b: UnixSeconds) -> Iterator[Period]:
    """The months that [a, b) touches, in order (at least a's month)."""
    p = month_of(a)
    yield p
    while p.end < b:
        p = month_of(p.end)
        yield p


def parse_period(text: str, now: UnixSeconds | None = None) -> Period:
    """A period from its text form (see the module doc); '' or 'current' is the month of `now`."""
    text = text.strip()
    if text in {"", "current"}:
        if now is None:
            raise InvalidPeriod("'current' needs the present time")
        return month_of(now)
    try:
        if ".." in text:
            first, _, last = text.partition("..")
            a, b = _day(first.strip()), _day(last.strip())
            if b < a:
                raise InvalidPeriod(f"{text!r}: the end comes before the start")
            return Period(text, _ts(a), _ts(b + timedelta(days=1)))
        if m := _MONTH.match(text):
            return month(int(m.group(1)), int(m.group(2)))
        if m := _YEAR.match(text):
            y = int(m.group(1))
            return Period(text, _ts(date(y, 1, 1)), _ts(date(y + 1, 1, 1)))
        if _DAY.match(text):
            d = _day(text)
            return Period(text, _ts(d), _ts(d + timedelta(days=1)))
    except ValueError as exc:
        if isinstance(exc, InvalidPeriod):
            raise
        raise InvalidPeriod(f"{text!r}: {exc}") from None
    raise InvalidPeriod(f"{text!r}: expected YYYY-MM, YYYY, YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD")


def _day(text: str) -> date:
    if not _DAY.match(text):
        raise InvalidPeriod(f"{text!r}: expected a day as YYYY-MM-DD")
    return date.fromisoformat(text)
