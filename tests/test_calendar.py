"""PBS calendar events (`chunkyard.config.calendar`): the examples of PBS's documentation
(docs/calendarevents.rst), proxmox-time's own next-event cases, invalid input, DST, and a
property test of `next_after` against a minute-by-minute brute force over a model of the
grammar, in UTC and in Europe/Berlin."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkyard.config.calendar import CalendarEvent
from chunkyard.config.types import CALENDAR_EVENT

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
MIN, HOUR, DAY = 60, 3600, 86400
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
WORKDAYS = frozenset(range(MON, FRI + 1))


def span(first: int, last: int, step: int = 1) -> tuple[int, ...]:
    return tuple(range(first, last + 1, step))


def expect(weekdays: frozenset[int] | None = None, years: tuple[int, ...] | None = None,
           months: tuple[int, ...] | None = None, days: tuple[int, ...] | None = None,
           hours: tuple[int, ...] | None = (0,), minutes: tuple[int, ...] | None = (0,),
           seconds: tuple[int, ...] | None = (0,)) -> CalendarEvent:
    """The expansion of an event (defaults: every day at 00:00:00)."""
    return CalendarEvent("", weekdays=weekdays, years=years, months=months, days=days,
                         hours=hours, minutes=minutes, seconds=seconds)


def utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def berlin(text: str, fold: int = 0) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN, fold=fold).timestamp())


def occurrences(event: CalendarEvent, start: int, count: int,
                tz: dt.tzinfo = UTC) -> list[str]:
    found, t = [], start
    for _ in range(count):
        nxt = event.next_after(t, tz)
        assert nxt is not None and nxt > t
        found.append(dt.datetime.fromtimestamp(nxt, tz).strftime("%Y-%m-%d %H:%M:%S"))
        t = nxt
    return found


# -- the documentation's tables ---------------------------------------------------------------

# "Here is a table with some useful examples": example, alternative, and the expansion of the
# explanation column.
DOCS_EXAMPLES = [
    ("mon,tue,wed,thu,fri", "mon..fri", expect(weekdays=WORKDAYS)),  # every working day 00:00
    ("sat,sun", "sat..sun", expect(weekdays=frozenset({SAT, SUN}))),  # weekends at 00:00
    ("mon,wed,fri", None, expect(weekdays=frozenset({MON, WED, FRI}))),
    ("12:05", None, expect(hours=(12,), minutes=(5,))),  # every day at 12:05 PM
    ("*:00/5", "0/1:0/5", expect(hours=None, minutes=span(0, 55, 5))),  # every five minutes
    ("mon..wed *:30/10", "mon,tue,wed *:30/10",  # 30, 40 and 50 minutes after every hour
     expect(weekdays=frozenset({MON, TUE, WED}), hours=None, minutes=(30, 40, 50))),
    ("mon..fri 8..17,22:0/15", None,  # every 15 minutes 8 AM - 6 PM and 10 PM - 11 PM
     expect(weekdays=WORKDAYS, hours=(*span(8, 17), 22), minutes=(0, 15, 30, 45))),
    ("fri 12..13:5/20", "fri 12,13:5/20",  # Friday at 12:05, 12:25, 12:45, 13:05, 13:25, 13:45
     expect(weekdays=frozenset({FRI}), hours=(12, 13), minutes=(5, 25, 45))),
    ("12,14,16,18,20,22:5", "12/2:5",  # from 12:05 until 22:05, every 2 hours
     expect(hours=span(12, 22, 2), minutes=(5,))),
    ("*:*", "0/1:0/1", expect(hours=None, minutes=None)),  # every minute
    ("*-05", None, expect(days=(5,))),  # on the 5th day of every month
    ("Sat *-1..7 15:00", None,  # first Saturday each month at 15:00
     expect(weekdays=frozenset({SAT}), days=span(1, 7), hours=(15,))),
    ("2015-10-21", None, expect(years=(2015,), months=(10,), days=(21,))),  # 2015-10-21 00:00
]


@pytest.mark.parametrize(("example", "alternative", "expansion"), DOCS_EXAMPLES,
                         ids=[row[0] for row in DOCS_EXAMPLES])
def test_docs_examples(example: str, alternative: str | None,
                       expansion: CalendarEvent) -> None:
    event = CalendarEvent.parse(example)
    assert event == expansion
    assert str(event) == example
    if alternative is not None:
        assert CalendarEvent.parse(alternative) == expansion


# The explanations, as the times the events fire (UTC; 2024-01-01 is a Monday).
EXPLANATIONS = [
    ("mon..fri", "2024-01-04 12:00", ["2024-01-05 00:00:00", "2024-01-08 00:00:00"]),
    ("sat..sun", "2024-01-01 00:00", ["2024-01-06 00:00:00", "2024-01-07 00:00:00",
                                      "2024-01-13 00:00:00"]),
    ("mon,wed,fri", "2024-01-01 00:00", ["2024-01-03 00:00:00", "2024-01-05 00:00:00",
                                         "2024-01-08 00:00:00"]),
    ("12:05", "2024-01-01 12:05", ["2024-01-02 12:05:00", "2024-01-03 12:05:00"]),
    ("*:00/5", "2024-01-01 23:52", ["2024-01-01 23:55:00", "2024-01-02 00:00:00",
                                    "2024-01-02 00:05:00"]),
    ("mon..wed *:30/10", "2024-01-03 22:55", [
        "2024-01-03 23:30:00", "2024-01-03 23:40:00", "2024-01-03 23:50:00",
        "2024-01-08 00:30:00"]),
    ("mon..fri 8..17,22:0/15", "2024-01-05 17:30", [
        "2024-01-05 17:45:00", "2024-01-05 22:00:00", "2024-01-05 22:15:00",
        "2024-01-05 22:30:00", "2024-01-05 22:45:00", "2024-01-08 08:00:00"]),
    ("fri 12..13:5/20", "2024-01-01 00:00", [
        "2024-01-05 12:05:00", "2024-01-05 12:25:00", "2024-01-05 12:45:00",
        "2024-01-05 13:05:00", "2024-01-05 13:25:00", "2024-01-05 13:45:00",
        "2024-01-12 12:05:00"]),
    ("12/2:5", "2024-01-01 11:00", [
        "2024-01-01 12:05:00", "2024-01-01 14:05:00", "2024-01-01 16:05:00",
        "2024-01-01 18:05:00", "2024-01-01 20:05:00", "2024-01-01 22:05:00",
        "2024-01-02 12:05:00"]),
    ("*:*", "2024-01-01 23:58:30", ["2024-01-01 23:59:00", "2024-01-02 00:00:00"]),
    ("*-05", "2024-01-05 00:00", ["2024-02-05 00:00:00", "2024-03-05 00:00:00"]),
    ("Sat *-1..7 15:00", "2024-01-01 00:00", [
        "2024-01-06 15:00:00", "2024-02-03 15:00:00", "2024-03-02 15:00:00",
        "2024-04-06 15:00:00"]),
]


@pytest.mark.parametrize(("text", "start", "expected"), EXPLANATIONS,
                         ids=[row[0] for row in EXPLANATIONS])
def test_docs_explanations(text: str, start: str, expected: list[str]) -> None:
    assert occurrences(CalendarEvent.parse(text), utc(start), len(expected)) == expected


def test_a_date_fires_once() -> None:
    event = CalendarEvent.parse("2015-10-21")
    assert event.next_after(utc("2015-01-01 00:00"), UTC) == utc("2015-10-21 00:00")
    assert event.next_after(utc("2015-10-21 00:00"), UTC) is None


# "There are some special values that have a specific meaning"
SPECIAL_VALUES = [
    ("minutely", "*-*-* *:*:00", expect(hours=None, minutes=None)),
    ("hourly", "*-*-* *:00:00", expect(hours=None)),
    ("daily", "*-*-* 00:00:00", expect()),
    ("weekly", "mon *-*-* 00:00:00", expect(weekdays=frozenset({MON}))),
    ("monthly", "*-*-01 00:00:00", expect(days=(1,))),
    ("yearly", "*-01-01 00:00:00", expect(months=(1,), days=(1,))),
    ("annually", "*-01-01 00:00:00", expect(months=(1,), days=(1,))),
    ("quarterly", "*-01,04,07,10-01 00:00:00", expect(months=(1, 4, 7, 10), days=(1,))),
    ("semiannually", "*-01,07-01 00:00:00", expect(months=(1, 7), days=(1,))),
    ("semi-annually", "*-01,07-01 00:00:00", expect(months=(1, 7), days=(1,))),
]


@pytest.mark.parametrize(("keyword", "syntax", "expansion"), SPECIAL_VALUES,
                         ids=[row[0] for row in SPECIAL_VALUES])
def test_special_values(keyword: str, syntax: str, expansion: CalendarEvent) -> None:
    assert CalendarEvent.parse(keyword) == CalendarEvent.parse(syntax) == expansion
    assert str(CalendarEvent.parse(keyword)) == keyword


def test_field_formats() -> None:
    """"comma-separated, range, repetition, a combination, or * for every possible value"."""
    assert CalendarEvent.parse("01,02,03").minutes == (1, 2, 3)
    assert CalendarEvent.parse("01..10").minutes == span(1, 10)
    assert CalendarEvent.parse("05/10").minutes == (5, 15, 25, 35, 45, 55)
    assert CalendarEvent.parse("01,05..10,12/02").minutes == (1, *span(5, 10), *span(12, 58, 2))
    assert CalendarEvent.parse("*:00") == expect(hours=None)
    # repetition of a range and of '*' (proxmox-time accepts both)
    assert CalendarEvent.parse("4..10/2:0").hours == (4, 6, 8, 10)
    assert CalendarEvent.parse("*/7:0").hours == (0, 7, 14, 21)
    assert CalendarEvent.parse("*-*/10").days == (1, 11, 21, 31)
    assert CalendarEvent.parse("*/5-1").months == (1, 6, 11)
    # one component is the minute, two are hour:minute, three hour:minute:second
    assert CalendarEvent.parse("7") == expect(hours=None, minutes=(7,))
    assert CalendarEvent.parse("7:8") == expect(hours=(7,), minutes=(8,))
    assert CalendarEvent.parse("7:8:9") == expect(hours=(7,), minutes=(8,), seconds=(9,))
    assert CalendarEvent.parse("*:*:*") == expect(hours=None, minutes=None, seconds=None)
    # a date of two parts is month-day, of three year-month-day
    assert CalendarEvent.parse("12-25") == expect(months=(12,), days=(25,))
    assert CalendarEvent.parse("2024-12-25") == expect(years=(2024,), months=(12,), days=(25,))


@pytest.mark.parametrize("text", [
    "mon", "MON", "monDay", "tue", "Tuesday", "wed", "wednesday", "thu", "thursday", "fri",
    "friday", "sat", "saturday", "sun", "sunday"])
def test_weekday_names(text: str) -> None:
    (day,) = CalendarEvent.parse(text).weekdays or ()
    assert day == ["mo", "tu", "we", "th", "fr", "sa", "su"].index(text[:2].lower())


def test_weekday_lists_and_ranges() -> None:
    assert CalendarEvent.parse("fri..mon").weekdays == frozenset({FRI, SAT, SUN, MON})
    assert CalendarEvent.parse("mon,wed..fri").weekdays == frozenset({MON, WED, THU, FRI})
    assert CalendarEvent.parse("mon,tue..wednesday,fri..sat").weekdays == frozenset(
        {MON, TUE, WED, FRI, SAT})
    assert CalendarEvent.parse("mon..sun").weekdays is None  # every day
    assert CalendarEvent.parse("mon..sun") == CalendarEvent.parse("daily")


def test_spacing_and_utc_suffix() -> None:
    # like proxmox-time: any number of spaces between the parts, even none
    assert CalendarEvent.parse("mon   12:00") == CalendarEvent.parse("mon 12:00")
    assert CalendarEvent.parse("mon12:00") == CalendarEvent.parse("mon 12:00")
    assert CalendarEvent.parse("*-*-*12:00") == CalendarEvent.parse("12:00")
    event = CalendarEvent.parse("daily UTC")
    assert event.utc and str(event) == "daily UTC"
    assert event.next_after(utc("2024-06-01 12:00"), BERLIN) == utc("2024-06-02 00:00")
    assert CalendarEvent.parse("daily").next_after(
        utc("2024-06-01 12:00"), BERLIN) == utc("2024-06-01 22:00")  # midnight CEST


# -- proxmox-time's next-event tests (src/test.rs), computed in UTC ---------------------------

THURSDAY = 0  # 1970-01-01 00:00 UTC
JUL_31_2020 = 1596153600  # a Friday
DEC_31_2020 = 1609372800  # a Thursday
PROXMOX_TIME_CASES = [
    ("0", THURSDAY, THURSDAY + HOUR),
    ("*", THURSDAY, THURSDAY + MIN),
    ("*:0", THURSDAY, THURSDAY + HOUR),
    ("*:*", THURSDAY, THURSDAY + MIN),
    ("*:*:*", THURSDAY, THURSDAY + 1),
    ("*:3:5", THURSDAY, THURSDAY + 3 * MIN + 5),
    ("mon *:*", THURSDAY, THURSDAY + 4 * DAY),
    ("mon 2:*", THURSDAY, THURSDAY + 4 * DAY + 2 * HOUR),
    ("mon 2:50", THURSDAY, THURSDAY + 4 * DAY + 2 * HOUR + 50 * MIN),
    ("tue", THURSDAY, THURSDAY + 5 * DAY),
    ("thu", THURSDAY, THURSDAY + 7 * DAY),
    ("fri", THURSDAY, THURSDAY + DAY),
    ("sun", THURSDAY, THURSDAY + 3 * DAY),
    ("4..10/2:0", THURSDAY, THURSDAY + 4 * HOUR),
    ("4..10/2:0", THURSDAY + 5 * HOUR, THURSDAY + 6 * HOUR),
    ("4..10/2:0", THURSDAY + 11 * HOUR, THURSDAY + DAY + 4 * HOUR),
    ("5,10:4,8", THURSDAY, THURSDAY + 5 * HOUR + 4 * MIN),
    ("10,5:8,4", THURSDAY, THURSDAY + 5 * HOUR + 4 * MIN),
    ("6,4..10:23,5/5", THURSDAY, THURSDAY + 4 * HOUR + 5 * MIN),
    ("4..10,6:5/5,23", THURSDAY, THURSDAY + 4 * HOUR + 5 * MIN),
    ("sat", JUL_31_2020, JUL_31_2020 + DAY),
    ("thu", JUL_31_2020, JUL_31_2020 + 6 * DAY),
    ("fri", JUL_31_2020, JUL_31_2020 + 7 * DAY),
    ("fri", DEC_31_2020, DEC_31_2020 + DAY),
    ("thu", DEC_31_2020, DEC_31_2020 + 7 * DAY),
    ("daily", THURSDAY, THURSDAY + DAY),
    ("daily", THURSDAY + 1, THURSDAY + DAY),
    ("5/2:0", THURSDAY + 5 * HOUR, THURSDAY + 7 * HOUR),
    ("1:0", THURSDAY + 15 * HOUR, THURSDAY + DAY + HOUR),
    ("2020-07-31", 0, JUL_31_2020),
    ("02-28", 0, (31 + 27) * DAY),
    ("02-29", 0, 2 * 365 * DAY + (31 + 28) * DAY),  # 1972-02-29
    ("1965/5-01-01", -1, THURSDAY),
    ("2020-7..9-2/2", JUL_31_2020, JUL_31_2020 + 2 * DAY),
    ("2020,2021-12-31", JUL_31_2020, DEC_31_2020),
    ("minutely", THURSDAY, THURSDAY + MIN),
    ("hourly", THURSDAY, THURSDAY + HOUR),
    ("weekly", THURSDAY, THURSDAY + 4 * DAY),
    ("monthly", 0, 31 * DAY),
    ("quarterly", 0, (31 + 28 + 31) * DAY),
    ("semiannually", 0, (31 + 28 + 31 + 30 + 31 + 30) * DAY),
    ("semi-annually", 0, (31 + 28 + 31 + 30 + 31 + 30) * DAY),
    ("yearly", 0, 365 * DAY),
    ("annually", 0, 365 * DAY),
    ("2021-02-29", 0, None),
    ("02-30", 0, None),
]


@pytest.mark.parametrize(("text", "last", "expected"), PROXMOX_TIME_CASES)
def test_proxmox_time_cases(text: str, last: int, expected: int | None) -> None:
    assert CalendarEvent.parse(text).next_after(last, UTC) == expected
    assert CalendarEvent.parse(text + " UTC").next_after(last, BERLIN) == expected


def test_chains() -> None:
    t = THURSDAY
    for i in range(1, 100):
        t = CalendarEvent.parse("*:0").next_after(t, UTC) or 0
        assert t == THURSDAY + i * HOUR


def test_never_and_far() -> None:
    now = utc("2024-06-01 00:00")
    for text in ("2000-01-01", "*-02-30", "*-04-31", "2100-02-29", "sun 2024-06-03"):
        assert CalendarEvent.parse(text).next_after(now, BERLIN) is None, text
    assert CalendarEvent.parse("2150-06-01 12:00").next_after(now, UTC) == utc("2150-06-01 12:00")
    assert CalendarEvent.parse("*-02-29 00:00").next_after(now, UTC) == utc("2028-02-29 00:00")
    assert CalendarEvent.parse("fri *-02-29").next_after(now, UTC) == utc("2036-02-29 00:00")
    assert CalendarEvent.parse("2199-12-31 23:59:59").next_after(now, UTC) == utc(
        "2199-12-31 23:59:59")


# -- invalid input ----------------------------------------------------------------------------

INVALID = [
    ("", "empty"),
    ("   ", "empty"),
    (" daily", "whitespace"),
    ("daily ", "whitespace"),
    ("x" * 257, "257 characters, at most 256"),
    ("daily\nweekly", "control character"),
    ("mon\t12:00", "control character"),
    ("Daily", "unknown weekday 'Daily'"),
    ("mon..funday", "unknown weekday 'funday'"),
    ("mon,", "expected a weekday"),
    ("mon..", "expected a weekday"),
    ("12:60", "minute 60 is out of range 0..59"),
    ("*:61", "minute 61"),
    ("24:00", "hour 24 is out of range 0..23"),
    ("25:00", "hour 25"),
    ("0:0:60", "second 60"),
    ("*-13-01", "month 13 is out of range 1..12"),
    ("2020-13-01", "month 13"),
    ("*-0-01", "month 0"),
    ("*-*-32", "day 32 is out of range 1..31"),
    ("*-*-0", "day 0"),
    ("2200-01-01", "year 2200 is out of range 0..2199"),
    ("99999999999999999999", "minute 99999999999999999999"),
    ("5/0", "repetition step 0"),
    ("*/0", "repetition step 0"),
    ("1..5/0:0", "hour repetition step 0"),
    ("*/60", "minute repetition step 60"),
    ("10..5", "minute range 10..5 ends before it starts"),
    ("fri..mon 18..8:0", "hour range 18..8"),
    ("1,,2", "expected a minute"),
    (",1", "expected a minute"),
    ("1,", "expected a minute"),
    ("12:", "expected a minute"),
    (":30", "expected an hour"),
    ("*,5", "unexpected ',5'"),
    ("1:2:3:4", "unexpected ':4'"),
    ("1-2-3-4", "unexpected '-4'"),
    ("2020-12", "month 2020"),
    ("12:00 mon", "unexpected ' mon'"),
    ("daily 12:00", "unknown weekday 'daily'"),
    ("UTC", "expected a weekday, a date or a time"),
    ("@12345", "expected a minute (a number, a range or '*') at '@12345'"),
    ("2020-03~01", "month 2020 is out of range"),  # no reverse days (~)
    ("1.5", "unexpected '.5'"),
    ("１２:00", "expected a minute"),  # non-ASCII digits
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[repr(r[0][:20]) for r in INVALID])
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="invalid calendar event") as info:
        CalendarEvent.parse(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_config_type_validates_events() -> None:
    assert CALENDAR_EVENT.parse("mon..fri 8..17,22:0/15") == "mon..fri 8..17,22:0/15"
    assert CALENDAR_EVENT.format("daily") == "daily"
    for bad in ("mon..funday", "25:00", "*:61", "x" * 300, "daily\nweekly", ""):
        with pytest.raises(ValueError):
            CALENDAR_EVENT.parse(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("0123456789*,./-: montuewdhfrisaUTCly"), max_size=24))
def test_garbage_only_raises_value_error(text: str) -> None:
    try:
        event = CalendarEvent.parse(text)
    except ValueError:
        return
    assert str(event) == text
    assert CalendarEvent.parse(text) == event


# -- DST --------------------------------------------------------------------------------------

def test_spring_forward_skips_the_missing_times() -> None:
    # Europe/Berlin, 2024-03-31: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day
    event = CalendarEvent.parse("02:30")
    assert occurrences(event, berlin("2024-03-29 12:00"), 3, BERLIN) == [
        "2024-03-30 02:30:00", "2024-04-01 02:30:00", "2024-04-02 02:30:00"]
    assert occurrences(CalendarEvent.parse("*:*"), berlin("2024-03-31 01:58"), 3, BERLIN) == [
        "2024-03-31 01:59:00", "2024-03-31 03:00:00", "2024-03-31 03:01:00"]
    after_gap = CalendarEvent.parse("*:*").next_after(berlin("2024-03-31 01:59"), BERLIN)
    assert after_gap == berlin("2024-03-31 01:59") + MIN  # one minute later, at 03:00 CEST


def test_fall_back_fires_once() -> None:
    # Europe/Berlin, 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:00..02:59 are shown twice
    event = CalendarEvent.parse("02:30")
    first = berlin("2024-10-27 02:30", fold=0)
    assert event.next_after(berlin("2024-10-26 12:00"), BERLIN) == first
    assert event.next_after(first, BERLIN) == berlin("2024-10-28 02:30")
    second_showing = berlin("2024-10-27 02:10", fold=1)
    assert event.next_after(second_showing, BERLIN) == berlin("2024-10-28 02:30")
    # every minute: the repeated hour does not fire again
    minutely = CalendarEvent.parse("minutely")
    last_first_showing = berlin("2024-10-27 02:59", fold=0)
    assert minutely.next_after(last_first_showing, BERLIN) == berlin("2024-10-27 03:00")
    assert minutely.next_after(second_showing, BERLIN) == berlin("2024-10-27 03:00")


@pytest.fixture
def berlin_local_time() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.usefixtures("berlin_local_time")
def test_local_time_by_default() -> None:
    for text in ("daily", "02:30", "*:0/7", "sun 2..3:*", "minutely"):
        event = CalendarEvent.parse(text)
        for start in (berlin("2024-03-30 23:00"), berlin("2024-10-27 01:58"),
                      berlin("2024-10-27 02:20", fold=1), berlin("2024-07-01 12:00")):
            assert event.next_after(start) == event.next_after(start, BERLIN), (text, start)


# -- property test: next_after against a brute force over a model of the grammar -------------

@dataclass(frozen=True)
class Model:
    """An event as the test generated it: its text and the values of each part (None: all).
    Seconds are always :00, so a minute-by-minute search finds every event."""

    text: str
    weekdays: frozenset[int] | None
    years: frozenset[int] | None
    months: frozenset[int] | None
    days: frozenset[int] | None
    hours: frozenset[int] | None
    minutes: frozenset[int] | None
    utc: bool

    def matches(self, t: dt.datetime) -> bool:
        return all(values is None or value in values for values, value in (
            (self.weekdays, t.weekday()), (self.years, t.year), (self.months, t.month),
            (self.days, t.day), (self.hours, t.hour), (self.minutes, t.minute)))

    def brute_next(self, t: int, tz: dt.tzinfo, until: int) -> int | None:
        """Minute by minute: the first instant after t whose wall clock matches and is not a
        repeated showing (fold=1) of a wall time."""
        zone = UTC if self.utc else tz
        u = (t // MIN + 1) * MIN
        while u <= until:
            local = dt.datetime.fromtimestamp(u, zone)
            if local.fold == 0 and self.matches(local):
                return u
            u += MIN
        return None


def _number(value: int, pad: bool) -> str:
    return f"{value:02d}" if pad else str(value)


@st.composite
def value_list(draw: st.DrawFn, low: int, high: int, hot: list[int],
               max_step: int) -> tuple[str, frozenset[int] | None]:
    """A value list of a field (low..high) as text, and the values it stands for."""
    pad = draw(st.booleans())
    number = st.one_of(st.sampled_from(hot), st.integers(low, high))
    step = st.integers(1, max_step)
    kind = draw(st.sampled_from(["*", "*/", "items", "items", "items"]))
    if kind == "*":
        return "*", None
    if kind == "*/":
        n = draw(step)
        return f"*/{n}", frozenset(range(low, high + 1, n))
    texts, values = [], set()
    for _ in range(draw(st.integers(1, 3))):
        first = draw(number)
        form = draw(st.sampled_from(["single", "range", "repeat", "range-repeat"]))
        last = draw(st.integers(first, high)) if "range" in form else high
        n = draw(step) if "repeat" in form else 1
        text = _number(first, pad)
        if "range" in form:
            text += ".." + _number(last, pad)
        if "repeat" in form:
            text += f"/{n}"
        texts.append(text)
        values.update(range(first, (last if "range" in form or "repeat" in form else first)
                            + 1, n))
    return ",".join(texts), frozenset(values)


_NAMES = [("mon", "monday"), ("tue", "tuesday"), ("wed", "wednesday"), ("thu", "thursday"),
          ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday")]


@st.composite
def weekday_list(draw: st.DrawFn) -> tuple[str, frozenset[int]]:
    def name(day: int) -> str:
        word = draw(st.sampled_from(_NAMES[day]))
        return draw(st.sampled_from([word, word.upper(), word.capitalize()]))

    texts, days = [], set()
    for _ in range(draw(st.integers(1, 3))):
        first = draw(st.integers(0, 6))
        if draw(st.booleans()):
            last = draw(st.integers(0, 6))
            texts.append(f"{name(first)}..{name(last)}")
            days.update(range(first, last + 1) if first <= last
                        else [*range(first, 7), *range(last + 1)])
        else:
            texts.append(name(first))
            days.add(first)
    return ",".join(texts), frozenset(days)


_KEYWORD_MODELS = {
    "minutely": {}, "hourly": {"minutes": {0}}, "daily": {"hours": {0}, "minutes": {0}},
    "weekly": {"weekdays": {0}, "hours": {0}, "minutes": {0}},
    "monthly": {"days": {1}, "hours": {0}, "minutes": {0}},
    "quarterly": {"months": {1, 4, 7, 10}, "days": {1}, "hours": {0}, "minutes": {0}},
}


@st.composite
def models(draw: st.DrawFn) -> Model:
    utc_suffix = draw(st.integers(0, 9)) == 0
    suffix = " UTC" if utc_suffix else ""
    if draw(st.integers(0, 9)) == 0:
        keyword = draw(st.sampled_from(sorted(_KEYWORD_MODELS)))
        parts = {k: frozenset(v) for k, v in _KEYWORD_MODELS[keyword].items()}
        return Model(keyword + suffix, parts.get("weekdays"), None, parts.get("months"),
                     parts.get("days"), parts.get("hours"), parts.get("minutes"), utc_suffix)
    texts = []
    weekdays = years = months = days = None
    hours: frozenset[int] | None = frozenset({0})
    minutes: frozenset[int] | None = frozenset({0})
    has_weekdays, has_date, has_time = draw(st.booleans()), draw(st.booleans()), draw(
        st.booleans())
    if not (has_weekdays or has_date or has_time):
        has_time = True
    if has_weekdays:
        text, weekdays = draw(weekday_list())
        texts.append(text)
    if has_date:
        date = []
        if draw(st.booleans()):
            text, years = draw(value_list(0, 2199, [2023, 2024, 2025], 3))
            date.append(text)
        text, months = draw(value_list(1, 12, [1, 3, 10, 12], 12))
        date.append(text)
        text, days = draw(value_list(1, 31, [1, 2, 26, 27, 28, 29, 30, 31], 31))
        date.append(text)
        texts.append("-".join(date))
    if has_time:
        form = draw(st.sampled_from(["m", "h:m", "h:m:s"]))
        hours = None
        if form != "m":
            text, hours = draw(value_list(0, 23, [0, 1, 2, 3, 23], 23))
        minute_text, minutes = draw(value_list(0, 59, [0, 30, 59], 59))
        text = minute_text if form == "m" else f"{text}:{minute_text}"
        if form == "h:m:s":
            text += ":" + draw(st.sampled_from(["0", "00"]))
        texts.append(text)
    return Model(" ".join(texts) + suffix, weekdays, years, months, days, hours, minutes,
                 utc_suffix)


def _expansion(values: frozenset[int] | None, low: int, high: int) -> tuple[int, ...] | None:
    if values is None or values == frozenset(range(low, high + 1)):
        return None
    return tuple(sorted(values))


# Around Europe/Berlin's DST changes of 2024, a year's end there, and an ordinary day.
_STARTS = [utc("2024-03-31 01:00"), utc("2024-10-27 01:00"), utc("2024-12-31 23:00"),
           utc("2025-06-15 00:00")]
_WINDOW = 2 * DAY


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(), st.sampled_from(_STARTS),
       st.one_of(st.integers(-_WINDOW, DAY), st.integers(-2 * HOUR, 2 * HOUR)), st.booleans(),
       st.sampled_from([UTC, BERLIN]))
def test_next_after_matches_brute_force(model: Model, base: int, shift: int, on_minute: bool,
                                        tz: dt.tzinfo) -> None:
    event = CalendarEvent.parse(model.text)
    assert str(event) == model.text
    assert event == CalendarEvent(
        "", weekdays=None if model.weekdays is None or len(model.weekdays) == 7
        else model.weekdays,
        years=_expansion(model.years, 0, 2199), months=_expansion(model.months, 1, 12),
        days=_expansion(model.days, 1, 31), hours=_expansion(model.hours, 0, 23),
        minutes=_expansion(model.minutes, 0, 59), seconds=(0,), utc=model.utc)
    t = base + shift
    if on_minute:
        t -= t % MIN
    expected = model.brute_next(t, tz, t + _WINDOW)
    got = event.next_after(t, tz)
    if expected is not None:
        assert got == expected
    else:
        assert got is None or got > t + _WINDOW
