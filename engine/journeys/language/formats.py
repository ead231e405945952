"""Checks for the small string formats in journeys: clock times, ISO datetimes, time zones, cron."""
from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple

from tidings.engine.platform.timezones import is_timezone

_CLOCK = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")


def check_clock(text: str) -> str | None:
    """None if `text` is a 24-hour HH:MM time, else why not."""
    if _CLOCK.match(text):
        return None
    return f"`{text}` is not a time of day; write 24-hour HH:MM like \"09:00\" or \"21:30\""


def _date_time(text: str, *, suffix: str) -> datetime:
    """An ISO 8601 date *and* time; `suffix` completes the examples in the errors ("Z" or "")."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"`{text}` is not an ISO 8601 date-time like 2026-12-01T09:00:00{suffix}") from None
    if "T" not in text.upper() and " " not in text:
        raise ValueError(f"`{text}` has no time of day; write a date-time like {text}T09:00:00{suffix}")
    return value


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date-time that names its offset (a bare time is ambiguous for a global audience)."""
    value = _date_time(text, suffix="Z")
    if value.tzinfo is None:
        raise ValueError(f"`{text}` has no time zone; add `Z` for UTC or an offset like +02:00")
    return value


def parse_wall_time(text: str) -> datetime:
    """An ISO 8601 date-time *without* offset, to the minute: a wall-clock time in some zone (a naive datetime)."""
    value = _date_time(text, suffix="")
    if value.tzinfo is not None:
        raise ValueError(f"`{text}` names an offset, but with `timezone: customer` it is the wall-clock time in "
                         f"each customer's own zone: write it without one, like {value.replace(tzinfo=None).isoformat()}")
    if value.second or value.microsecond:
        raise ValueError(f"`{text}` has seconds; a local send time is to the minute, like "
                         f"{value.replace(second=0, microsecond=0).isoformat()}")
    return value


def check_timezone(name: str) -> str | None:
    """None if `name` is an IANA zone (Europe/Paris) or UTC."""
    if is_timezone(name):
        return None
    return f"`{name}` is not an IANA time zone like UTC, Europe/Paris or America/New_York"


# --- cron -----------------------------------------------------------------------------------

_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
# (name, low, high, names) for the five standard fields
_FIELDS = [
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),  # 0 and 7 are both Sunday, as in cron(8)
]
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}


def check_cron(expr: str) -> str | None:
    """None if `expr` is a valid five-field cron expression (or @daily-style macro), else why not."""
    expr = MACROS.get(expr.strip().lower(), expr)
    parts = expr.split()
    if len(parts) != 5:
        return (f"cron expression `{expr}` has {len(parts)} field(s); it needs 5: "
                "minute hour day-of-month month day-of-week, e.g. \"0 9 * * MON\"")
    for text, (name, low, high, names) in zip(parts, _FIELDS):
        for item in text.split(","):
            problem = _check_cron_item(item, low, high, names)
            if problem:
                return f"cron {name} field `{text}`: {problem}"
    return None


class CronTimes(NamedTuple):
    """The values each field of a cron expression allows (day of week: 0 = Sunday ... 6)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]


def expand_cron(expr: str) -> CronTimes:
    """The sets of a valid cron expression (check it with check_cron first)."""
    expr = MACROS.get(expr.strip().lower(), expr)
    fields = []
    for text, (_, low, high, names) in zip(expr.split(), _FIELDS):
        allowed: set[int] = set()
        for item in text.split(","):
            base, _, step = item.partition("/")
            if base == "*":
                first, last = low, high
            else:
                bounds = [names.get(b.upper()) if not b.isdigit() else int(b) for b in base.split("-")]
                first, last = bounds[0], bounds[-1]
                if step and len(bounds) == 1:
                    last = high  # `5/15` is 5, 20, 35, 50 as in most crons
            allowed.update(range(first, last + 1, int(step) if step else 1))
        fields.append(frozenset(allowed))
    fields[4] = frozenset(d % 7 for d in fields[4])  # 7 is Sunday too
    return CronTimes(*fields)


def _check_cron_item(item: str, low: int, high: int, names: dict[str, int]) -> str | None:
    base, _, step = item.partition("/")
    if step and (not step.isdigit() or int(step) == 0):
        return f"step `/{step}` must be a positive number"
    if base == "*":
        return None
    bounds = base.split("-")
    if len(bounds) > 2 or not all(bounds):
        return f"`{item}` is not a value, a range a-b, `*` or a step */n"
    values = []
    for b in bounds:
        value = names.get(b.upper()) if not b.isdigit() else int(b)
        if value is None:
            return f"`{b}` is not a number" + (f" or a name like {next(iter(names))}" if names else "")
        if not low <= value <= high:
            return f"{value} is out of range {low}-{high}"
        values.append(value)
    if len(values) == 2 and values[0] > values[1]:
        return f"range `{base}` runs backwards"
    return None
