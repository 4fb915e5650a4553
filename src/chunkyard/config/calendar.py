"""PBS calendar events: the `gc-schedule`, `prune-schedule` and job `schedule` values.

Grammar, as PBS documents it (docs/calendarevents.rst, "Calendar Events") and as proxmox-time
parses it (`calendar_event.rs`, `week_days.rs`, `date_time_value.rs`)::

    event    := keyword [" "* "UTC"]
              | [weekdays " "*] [date " "*] [time] [" "* "UTC"]   (at least one of the three)
    keyword  := minutely | hourly | daily | weekly | monthly | yearly | annually | quarterly
              | semiannually | semi-annually                    (exact, lower case)
    weekdays := wrange ("," wrange)*
    wrange   := wday [".." wday]         (a range may wrap: fri..mon is fri,sat,sun,mon)
    wday     := mon | tue | wed | thu | fri | sat | sun, or the full English name (any case)
    date     := [list(YEAR) "-"] list(MONTH) "-" list(DAY)
    time     := [list(HOUR) ":"] list(MINUTE) [":" list(SECOND)]
    list(F)  := "*" ["/" step] | item ("," item)*
    item     := num [".." num] ["/" step]   (a..b/c: from a to b, every c; a/c: from a on)
    num      := [0-9]+                      YEAR 0..2199, MONTH 1..12, DAY 1..31,
                                            HOUR 0..23, MINUTE 0..59, SECOND 0..59
    step     := [0-9]+                      1 .. the field's maximum

A missing weekday or date part means every day; a missing time means 00:00:00; a time of one
component is the minute of every hour (`0` is every full hour, `*` every minute); missing
seconds mean :00. `*/n` starts at the field's first value (0, or 1 for month and day). All
parts must match (weekday AND date AND time, not cron's OR). The keywords stand for the
docs' expansions (`minutely` is `*-*-* *:*:00`, `weekly` is `mon *-*-* 00:00:00`, ...).
A trailing `UTC` computes the event in UTC instead of local time (proxmox-time accepts it).

Where chunkyard is stricter than proxmox-time (which accepts these and then never or oddly
fires): a repetition step of 0 (`5/0`), month or day 0, an hour of 24 or more (PBS reads
`25:00` as minute 25, second 0 of every hour), control characters, leading or trailing
whitespace, and more than 256 characters. Like PBS, the parts may be separated by any number
of spaces, including none (`mon12:00`).

Time zones (`next_after`): events are wall-clock times in the given zone (local time by
default, as PBS computes them). A wall time a DST change skips (02:30 on the spring-forward
day in Europe/Berlin) does not exist and is skipped; a wall time shown twice (02:30 on the
fall-back day) fires once, at its first showing, so while the clock repeats an hour nothing
fires that already fired (`minutely` pauses for that hour).
"""

from __future__ import annotations

import calendar
import datetime
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

MAX_LENGTH = 256

_DAY = 86400
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
# With no year given, search one Gregorian cycle: weekdays and dates repeat every 400 years,
# so an event that does not fire in one cycle never does.
_CYCLE_YEARS = 400
_MAX_STEPS = 2000  # DST corrections in one search; each is one transition crossed

_WEEKDAYS = {name: i for i, names in enumerate((
    ("mon", "monday"), ("tue", "tuesday"), ("wed", "wednesday"), ("thu", "thursday"),
    ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday"))) for name in names}

_KEYWORDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
    "semi-annually": "*-01,07-01 00:00:00",
}

_LIST_CHARS = frozenset("0123456789*,./")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    article: str = "a"

    @property
    def all(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1))


_YEAR = _Field("year", 0, 2199)  # proxmox-time's (and systemd's) upper limit
_MONTH = _Field("month", 1, 12)
_DAY_OF_MONTH = _Field("day", 1, 31)
_HOUR = _Field("hour", 0, 23, "an")
_MINUTE = _Field("minute", 0, 59)
_SECOND = _Field("second", 0, 59)

_ALL_MONTHS = _MONTH.all
_ALL_DAYS = _DAY_OF_MONTH.all
_ALL_HOURS = _HOUR.all
_ALL_MINUTES = _MINUTE.all
_ALL_SECONDS = _SECOND.all

Values = tuple[int, ...] | None  # the sorted values a field matches; None: every value


@dataclass(frozen=True)
class CalendarEvent:
    """A parsed calendar event: the values each part matches (None: every value).

    Weekdays count from Monday = 0 (`datetime.date.weekday`). Two events are equal when they
    match the same times, whatever their text (`mon..fri` == `mon,tue,wed,thu,fri`).
    """

    text: str = field(compare=False)
    weekdays: frozenset[int] | None = None
    years: Values = None
    months: Values = None
    days: Values = None
    hours: Values = None
    minutes: Values = None
    seconds: Values = None
    utc: bool = False

    @classmethod
    def parse(cls, text: str) -> CalendarEvent:
        """Parse `text`; ValueError (one line, naming the bad part) if it is not an event."""
        return _Parser(text).event()

    def __str__(self) -> str:
        return self.text

    def next_after(self, t: int, tz: datetime.tzinfo | None = None) -> int | None:
        """The first time (unix seconds) strictly after `t` the event matches, in `tz` (the
        local time zone if None; UTC if the event ends in `UTC`). None if it never does
        again (searched up to its last year, or one 400-year cycle if it has no year)."""
        offset = _offset_function(datetime.UTC if self.utc else tz)
        try:
            return self._next_after(t, offset)
        except (OverflowError, OSError, ValueError):  # beyond what datetime/time handle
            return None

    # -- the search -----------------------------------------------------------------------

    def _next_after(self, t: int, offset: Callable[[int], int]) -> int | None:
        u = t + 1  # the earliest instant that may fire
        start_year = _wall_date(u + offset(u)).year
        last_year = (max(self.years) if self.years is not None
                     else start_year + _CYCLE_YEARS)
        for _ in range(_MAX_STEPS):
            here = offset(u)
            wall = u + here
            first = _first_instant(wall, offset)
            if first is not None and first < u:
                # After a fall-back, u shows a wall time again that was shown (and may have
                # fired) an hour ago: continue where the repeated wall times end.
                change = _first_change(offset, first, u)
                u = max(u + 1, change + (wall - first) - here)
                continue
            candidate = self._next_wall(wall, last_year)
            if candidate is None:
                return None
            instant = _first_instant(candidate, offset)
            if instant is not None:
                return instant
            # The candidate falls in a spring-forward gap: continue after the gap.
            before, after = offset(candidate - _DAY), offset(candidate + _DAY)
            low, high = candidate - max(before, after), candidate - min(before, after)
            if offset(low) == offset(high):  # not a simple gap: step past it
                u = max(u + 1, high + 1)
            else:
                u = max(u + 1, _first_change(offset, low, high))
        return None

    def _next_wall(self, wall: int, last_year: int) -> int | None:
        """The first matching wall-clock time at or after `wall` (seconds since 1970-01-01
        00:00 on the wall clock), in years up to `last_year`."""
        days, second_of_day = divmod(wall, _DAY)
        start = _wall_date(wall)
        first_time_today = self._first_time(second_of_day)
        first_time = self._first_time(0)
        assert first_time is not None  # every part matches at least one value
        months = self.months or _ALL_MONTHS
        month_days = self.days or _ALL_DAYS
        last_year = min(last_year, datetime.MAXYEAR)
        if self.years is None:
            years: Sequence[int] = range(start.year, last_year + 1)
        else:
            years = self.years[bisect_left(self.years, start.year):]
        for year in years:
            if year > last_year:
                break
            this_year = year == start.year
            for month in months[bisect_left(months, start.month) if this_year else 0:]:
                this_month = this_year and month == start.month
                length = calendar.monthrange(year, month)[1]
                for day in month_days[bisect_left(month_days, start.day) if this_month else 0:]:
                    if day > length:
                        break
                    date = datetime.date(year, month, day)
                    if self.weekdays is not None and date.weekday() not in self.weekdays:
                        continue
                    if this_month and day == start.day:
                        if first_time_today is None:
                            continue
                        return days * _DAY + first_time_today
                    return (date.toordinal() - _EPOCH_ORDINAL) * _DAY + first_time
        return None

    def _first_time(self, second_of_day: int) -> int | None:
        """The first matching second of the day at or after `second_of_day`, if any."""
        hours = self.hours or _ALL_HOURS
        minutes = self.minutes or _ALL_MINUTES
        seconds = self.seconds or _ALL_SECONDS
        hour0, rest = divmod(second_of_day, 3600)
        minute0, second0 = divmod(rest, 60)
        for hour in hours[bisect_left(hours, hour0):]:
            if hour > hour0:
                return hour * 3600 + minutes[0] * 60 + seconds[0]
            for minute in minutes[bisect_left(minutes, minute0):]:
                if minute > minute0:
                    return hour * 3600 + minute * 60 + seconds[0]
                i = bisect_left(seconds, second0)
                if i < len(seconds):
                    return hour * 3600 + minute * 60 + seconds[i]
        return None


# -- time zones ---------------------------------------------------------------------------

def _offset_function(tz: datetime.tzinfo | None) -> Callable[[int], int]:
    """The zone's UTC offset (seconds) at an instant; the C library's local time if None."""
    if tz is None:
        return lambda u: time.localtime(u).tm_gmtoff
    if tz is datetime.UTC:
        return lambda u: 0

    def offset(u: int) -> int:
        delta = datetime.datetime.fromtimestamp(u, tz).utcoffset()
        return 0 if delta is None else delta // datetime.timedelta(seconds=1)
    return offset


def _first_instant(wall: int, offset: Callable[[int], int]) -> int | None:
    """The first instant the clock shows `wall`; None if it skips it. Assumes at most one
    offset change within a day of it (true of every real zone's DST rules)."""
    found = [u for u in sorted({wall - offset(wall - _DAY), wall - offset(wall + _DAY)})
             if u + offset(u) == wall]
    return found[0] if found else None


def _first_change(offset: Callable[[int], int], low: int, high: int) -> int:
    """The first instant in (low, high] whose offset differs from low's (one change)."""
    before = offset(low)
    while high - low > 1:
        middle = (low + high) // 2
        if offset(middle) == before:
            low = middle
        else:
            high = middle
    return high


def _wall_date(wall: int) -> datetime.date:
    return datetime.date.fromordinal(_EPOCH_ORDINAL + wall // _DAY)


# -- parsing ------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.body = text
        self.pos = 0

    def fail(self, reason: str) -> ValueError:
        return ValueError(f"invalid calendar event {self.text!r}: {reason}")

    def rest(self) -> str:
        return self.body[self.pos:]

    def peek(self) -> str:
        return self.body[self.pos:self.pos + 1]

    def event(self) -> CalendarEvent:
        text = self.text
        if len(text) > MAX_LENGTH:
            raise ValueError(f"invalid calendar event: {len(text)} characters, "
                             f"at most {MAX_LENGTH}")
        if any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in text):
            raise self.fail("contains a control character")
        if not text.strip():
            raise self.fail("empty: expected a weekday, a date or a time")
        if text.strip() != text:
            raise self.fail("leading or trailing whitespace")
        utc = text.endswith("UTC")
        if utc:
            self.body = text[:-3].rstrip(" ")
        keyword = _KEYWORDS.get(self.body)
        if keyword is not None:
            return replace(_Parser(keyword).event(), text=text, utc=utc)
        weekdays: frozenset[int] | None = None
        years = months = days = None
        hours: Values = (0,)  # no time: 00:00:00
        minutes: Values = (0,)
        seconds: Values = (0,)
        found = False
        if self.peek().isascii() and self.peek().isalpha():
            weekdays = self.weekdays()
            found = True
            self.skip_spaces()
        if self.separator() == "-":
            years, months, days = self.date()
            found = True
            self.skip_spaces()
        if self.pos < len(self.body):
            hours, minutes, seconds = self.time()
            found = True
        if self.pos < len(self.body):
            raise self.fail(f"unexpected {self.rest()!r}")
        if not found:
            raise self.fail("expected a weekday, a date or a time")
        return CalendarEvent(text, weekdays=weekdays, years=years, months=months, days=days,
                             hours=hours, minutes=minutes, seconds=seconds, utc=utc)

    def skip_spaces(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def separator(self, pos: int | None = None) -> str:
        """The character after the value list starting at `pos` (default: here)."""
        i = self.pos if pos is None else pos
        while i < len(self.body) and self.body[i] in _LIST_CHARS:
            i += 1
        return self.body[i:i + 1]

    def weekdays(self) -> frozenset[int] | None:
        days: set[int] = set()
        while True:
            first = self.weekday()
            if self.rest().startswith(".."):
                self.pos += 2
                last = self.weekday()
                if first <= last:
                    days.update(range(first, last + 1))
                else:  # wraps around the week's end
                    days.update(range(first, 7))
                    days.update(range(last + 1))
            else:
                days.add(first)
            if self.peek() != ",":
                break
            self.pos += 1
        return None if len(days) == 7 else frozenset(days)

    def weekday(self) -> int:
        start = self.pos
        while self.peek().isascii() and self.peek().isalpha():
            self.pos += 1
        word = self.body[start:self.pos]
        if not word:
            raise self.fail(f"expected a weekday at {self.rest()!r}")
        number = _WEEKDAYS.get(word.lower())
        if number is None:
            raise self.fail(f"unknown weekday {word!r} (mon, tue, wed, thu, fri, sat, sun)")
        return number

    def date(self) -> tuple[Values, Values, Values]:
        three = self.separator(self.body.index("-", self.pos) + 1) == "-"
        years = None
        if three:
            years = self.values(_YEAR)
            self.expect("-")
        months = self.values(_MONTH)
        self.expect("-")
        days = self.values(_DAY_OF_MONTH)
        if self.peek() == "-":
            raise self.fail(f"unexpected {self.rest()!r}: a date is [YEARS-]MONTHS-DAYS")
        return years, months, days

    def time(self) -> tuple[Values, Values, Values]:
        parts = 1
        i = self.pos
        while parts < 3 and self.separator(i) == ":":
            i = self.body.index(":", i) + 1
            parts += 1
        hours: Values = None
        if parts > 1:
            hours = self.values(_HOUR)
            self.expect(":")
        minutes = self.values(_MINUTE)
        seconds: Values = (0,)
        if parts > 2:
            self.expect(":")
            seconds = self.values(_SECOND)
        return hours, minutes, seconds

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r} at {self.rest()!r}")
        self.pos += 1

    def values(self, f: _Field) -> Values:
        """A value list of field `f`: sorted values, None if that is every value."""
        if self.peek() == "*":
            self.pos += 1
            if self.peek() != "/":
                return None
            self.pos += 1
            found = set(range(f.low, f.high + 1, self.step(f)))
        else:
            found = set()
            while True:
                found.update(self.item(f))
                if self.peek() != ",":
                    break
                self.pos += 1
        values = tuple(sorted(found))
        return None if values == f.all else values

    def item(self, f: _Field) -> range:
        first = self.number(f)
        last = f.high
        ranged = self.rest().startswith("..")
        if ranged:
            self.pos += 2
            last = self.number(f)
            if first > last:
                raise self.fail(f"{f.name} range {first}..{last} ends before it starts")
        if self.peek() == "/":
            self.pos += 1
            return range(first, last + 1, self.step(f))
        return range(first, last + 1) if ranged else range(first, first + 1)

    def digits(self, what: str) -> int:
        start = self.pos
        while self.peek().isascii() and self.peek().isdigit():
            self.pos += 1
        if start == self.pos:
            raise self.fail(f"expected {what} at {self.rest()!r}")
        return int(self.body[start:self.pos])

    def number(self, f: _Field) -> int:
        value = self.digits(f"{f.article} {f.name} (a number, a range or '*')")
        if not f.low <= value <= f.high:
            raise self.fail(f"{f.name} {value} is out of range {f.low}..{f.high}")
        return value

    def step(self, f: _Field) -> int:
        value = self.digits(f"{f.article} {f.name} repetition step")
        if not 1 <= value <= f.high:
            raise self.fail(f"{f.name} repetition step {value} is out of range 1..{f.high}")
        return value
