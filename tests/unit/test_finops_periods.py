from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.finops.periods import InvalidPeriod, month_of, months_between, parse_period


def t(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_month_bounds_and_labels():
    p = parse_period("2026-11")
    assert (p.label, p.start, p.end) == ("2026-11", t(2026, 11, 1), t(2026, 12, 1))
    assert parse_period("2026-12").end == t(2027, 1, 1)
    assert parse_period("2028-02").hours == 29 * 24  # leap year
    assert month_of(t(2026, 11, 30, 23, 59)) == p


def test_year_day_and_ranges():
    assert (parse_period("2026").start, parse_period("2026").end) == (t(2026, 1, 1), t(2027, 1, 1))
    d = parse_period("2026-11-05")
    assert (d.start, d.end) == (t(2026, 11, 5), t(2026, 11, 6))
    r = parse_period("2026-11-01..2026-11-15")
    assert (r.start, r.end) == (t(2026, 11, 1), t(2026, 11, 16))
    assert parse_period("", now=t(2026, 11, 9)).label == "2026-11"
    assert parse_period("current", now=t(2027, 3, 9)).label == "2027-03"


@pytest.mark.parametrize("text", ["2026-13", "26-11", "2026-11-31", "2026-11-10..2026-11-01", "november", "2026-1"])
def test_bad_periods_are_refused(text):
    with pytest.raises(InvalidPeriod):
        parse_period(text)


def test_overlap_and_months_between():
    p = parse_period("2026-11")
    assert p.overlap_s(t(2026, 10, 31, 12), t(2026, 11, 1, 12)) == 12 * 3600
    assert p.overlap_s(t(2026, 12, 2), t(2026, 12, 3)) == 0
    labels = [m.label for m in months_between(t(2026, 11, 20), t(2027, 1, 2))]
    assert labels == ["2026-11", "2026-12", "2027-01"]
    assert [m.label for m in months_between(t(2026, 11, 20), t(2026, 11, 21))] == ["2026-11"]
