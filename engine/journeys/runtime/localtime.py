"""Broadcasts in each customer's own time zone (`timezone: customer`): the time math, pure functions.

A cron of `0 9 * * MON` with `timezone: customer` means 09:00 on Monday wherever each customer is, so
the same campaign fires at many instants: 00:00 UTC for Tokyo, 14:00 UTC (13:00 in summer) for New
York, 03:15 UTC for Kathmandu. One Temporal Schedule (UTC) fires on a fixed grid that contains every
such instant, and each firing admits only the customers whose own local time came due since the
previous grid instant:

- The grid. Every time zone in use today is a whole number of quarter hours away from UTC (+05:45,
  -03:30, +12:45 ...), so a local minute `m` always falls on a UTC minute `m + 15k`. The grid is those
  minutes of every hour (`0,15,30,45 * * * *` for `0 9 ...`); the cron's hours and days cannot narrow
  it, because offsets span 26 hours (-12 to +14). Firings where nobody's local time is due cost one
  small query and admit nobody.
- The window. A firing at instant T admits the zones with a local occurrence in (previous grid
  instant, T]. The windows tile time, so each local occurrence belongs to exactly one firing: a
  customer gets one entry per local occurrence, and an offset off the grid (none exists today)
  would still fire once, at the next grid instant.
- Daylight saving. A local time is resolved with `fold=0` (PEP 495), the way Python and java.time
  do: a time skipped by a spring-forward (02:30 when clocks jump from 02:00 to 03:00) is shifted
  forward by the length of the gap and fires once at 03:30 new time; a time repeated by a fall-back
  (01:30 twice) fires once, at its first occurrence.
- `at` with `timezone: customer` is one wall-clock time (2026-12-01T09:00) met in each zone: the
  same grid, bounded to the 26 hours in which that wall time occurs somewhere on Earth.
- Day-of-month and day-of-week must both match when both are restricted, as in Temporal's own
  schedules (Vixie cron would take either).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, NamedTuple
from zoneinfo import ZoneInfo

from tidings.engine.journeys.language.formats import CronTimes, expand_cron, parse_wall_time
from tidings.engine.journeys.ir import WEEKDAYS, BroadcastEntry, ClosedDays, OpenRange
from tidings.engine.platform.timezones import zone

_UTC = ZoneInfo("UTC")

GRID_MINUTES = 15  # every zone's offset from UTC is a multiple of this
AHEAD = timedelta(hours=14)  # the earliest zone (Pacific/Kiritimati, UTC+14) ...
BEHIND = timedelta(hours=12)  # ... and the latest (Etc/GMT+12, UTC-12)
_WIDEST_GAP = timedelta(hours=3)  # how far a skipped local time may be shifted (1 h in practice)
_MINUTE_MS = 60_000


class WallTime(NamedTuple):
    """One local wall-clock time (a broadcast's `at` with `timezone: customer`)."""

    wall: datetime  # naive

    @property
    def minutes(self) -> frozenset[int]:
        return frozenset({self.wall.minute})

    def walls_between(self, lo: datetime, hi: datetime) -> Iterator[datetime]:
        if lo <= self.wall <= hi:
            yield self.wall


class LocalCron(NamedTuple):
    """A cron expression read as local wall-clock times."""

    times: CronTimes

    @property
    def minutes(self) -> frozenset[int]:
        return self.times.minutes

    def walls_between(self, lo: datetime, hi: datetime) -> Iterator[datetime]:
        """The matching wall times in [lo, hi] (naive), in order."""
        t = self.times
        hour = lo.replace(minute=0, second=0, microsecond=0)
        minutes = sorted(t.minutes)
        while hour <= hi:
            if (hour.hour in t.hours and hour.day in t.days and hour.month in t.months
                    and (hour.weekday() + 1) % 7 in t.weekdays):
                for m in minutes:
                    wall = hour.replace(minute=m)
                    if lo <= wall <= hi:
                        yield wall
            hour += timedelta(hours=1)


LocalSchedule = LocalCron | WallTime


def local_schedule(entry: BroadcastEntry) -> LocalSchedule | None:
    """The broadcast's schedule in customers' own zones, or None when it is not `timezone: customer`
    (or, stored before the compiler refused them, `customer` with `every`, nothing or an `at` with offset)."""
    if entry.timezone != "customer":
        return None
    if entry.cron is not None:
        return LocalCron(expand_cron(entry.cron))
    if entry.at is not None and entry.at_epoch is None:
        return WallTime(parse_wall_time(entry.at))
    return None


def grid_minutes(schedule: LocalSchedule) -> tuple[int, ...]:
    """The UTC minutes of each hour at which some zone's local time can match the schedule."""
    return tuple(sorted({(m + k) % 60 for m in schedule.minutes for k in range(0, 60, GRID_MINUTES)}))


def schedule_cron(schedule: LocalSchedule) -> str:
    """The UTC cron expression of the Temporal Schedule that fires on the grid."""
    return f"{','.join(map(str, grid_minutes(schedule)))} * * * *"


def schedule_bounds(schedule: LocalSchedule) -> tuple[datetime, datetime] | None:
    """For a single wall time: the UTC span in which it occurs in some zone (one grid step of margin)."""
    if not isinstance(schedule, WallTime):
        return None
    as_utc = schedule.wall.replace(tzinfo=timezone.utc)
    margin = timedelta(minutes=GRID_MINUTES)
    return as_utc - AHEAD - margin, as_utc + BEHIND + margin


def previous_grid_instant(at_ms: int, grid: Iterable[int]) -> int:
    """The last grid instant strictly before `at_ms` (epoch ms): where this firing's window opens."""
    allowed = set(grid)
    t = at_ms - at_ms % _MINUTE_MS
    if t == at_ms:
        t -= _MINUTE_MS
    for _ in range(60):
        if (t // _MINUTE_MS) % 60 in allowed:
            return t
        t -= _MINUTE_MS
    raise ValueError("empty grid")


def zone_or_utc(name: str) -> ZoneInfo:
    """The IANA zone, or UTC for a name this machine does not know."""
    return zone(name) or _UTC


def next_local(now: int, zone_name: str, hhmm: str, *, inclusive: bool = False) -> int:
    """The next HH:MM (strictly after `now`, or at it when inclusive) in `zone_name`, as epoch ms."""
    tz = zone_or_utc(zone_name)
    local = datetime.fromtimestamp(now / 1000, tz)
    h, m = map(int, hhmm.split(":"))
    cand = local.replace(hour=h, minute=m, second=0, microsecond=0)
    if cand < local or (cand == local and not inclusive):
        cand = (local + timedelta(days=1)).replace(hour=h, minute=m, second=0, microsecond=0)
    return int(cand.timestamp() * 1000)


def in_quiet_hours(now: int, zone_name: str, start: str, end: str) -> bool:
    """Whether `now` falls between the local times HH:MM `start` and `end` (across midnight when end < start)."""
    local = datetime.fromtimestamp(now / 1000, zone_or_utc(zone_name))
    t = local.hour * 60 + local.minute
    s, e = (int(x[:2]) * 60 + int(x[3:]) for x in (start, end))
    return s <= t < e if s < e else (t >= s or t < e)


def resolve(wall: datetime, tz: ZoneInfo) -> int:
    """Epoch ms of a local wall time; a skipped time moves forward by the gap, a repeated one is the first."""
    return int(wall.replace(tzinfo=tz, fold=0).timestamp() * 1000)


def _naive_local(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz).replace(tzinfo=None)


def occurrences(schedule: LocalSchedule, tz: ZoneInfo, after_ms: int, until_ms: int) -> list[int]:
    """The instants (epoch ms) in (after_ms, until_ms] at which the schedule's local time occurs in `tz`."""
    a, b = _naive_local(after_ms, tz), _naive_local(until_ms, tz)
    lo, hi = min(a, b) - _WIDEST_GAP, max(a, b)  # a fall-back turns the wall clock back inside the window
    found = {t for wall in schedule.walls_between(lo, hi) if after_ms < (t := resolve(wall, tz)) <= until_ms}
    return sorted(found)


def zones_due(schedule: LocalSchedule, zone_names: Iterable[str], after_ms: int, until_ms: int) -> set[str]:
    """The names among `zone_names` whose local schedule occurs in (after_ms, until_ms]; unknown names never."""
    out = set()
    for name in zone_names:
        tz = zone(name)
        if tz is not None and occurrences(schedule, tz, after_ms, until_ms):
            out.add(name)
    return out


class ZoneFilter(NamedTuple):
    """Which customers a firing admits, by their stored `timezone`: one of `names`, or none / an unknown
    one when `unset` (they live in the journey's `default_timezone`, which is due)."""

    names: tuple[str, ...]
    unset: bool

    @property
    def empty(self) -> bool:
        return not self.names and not self.unset


def firing_filter(schedule: LocalSchedule, fire_at_ms: int, stored_zones: Iterable[str | None],
                  default_timezone: str) -> ZoneFilter:
    """Who enters at the firing at `fire_at_ms`, given the distinct `timezone` values customers have."""
    after = previous_grid_instant(fire_at_ms, grid_minutes(schedule))
    stored = {z for z in stored_zones if z is not None}
    unknown = {z for z in stored if zone(z) is None}
    due = zones_due(schedule, (stored - unknown) | {default_timezone}, after, fire_at_ms)
    unset = default_timezone in due
    names = (due & stored) | (unknown if unset else set())
    return ZoneFilter(names=tuple(sorted(names)), unset=unset)


def next_open(now: int, zone_name: str, days: dict[str, list[OpenRange]] | None,
              closed: list[ClosedDays]) -> int | None:
    """None when a channel may send at `now` (epoch ms) in `zone_name`; else the next minute it may (epoch ms),
    given its open hours per weekday (None: open every day all day; a weekday not listed is closed) and its
    closed local date-time ranges. Ranges are local wall times, resolved like broadcasts (fold=0)."""
    tz = zone_or_utc(zone_name)
    at = now
    for _ in range(400):  # every step moves to a later boundary: a year of closed days and weekly hours at most
        local = _naive_local(at, tz)
        shut = next((c for c in closed if datetime.fromisoformat(c.start) <= local < datetime.fromisoformat(c.end)),
                    None)
        if shut is not None:
            at = max(at + 1, resolve(datetime.fromisoformat(shut.end), tz))
            continue
        if days is None:
            return None if at == now else at
        opens = _next_open_hour(local, days)
        if opens is None:
            return None  # no weekday is open: treated as no hours at all (the compiler never emits it)
        if opens == local:
            return None if at == now else at
        at = max(at + 1, resolve(opens, tz))
    return at


def _next_open_hour(local: datetime, days: dict[str, list[OpenRange]]) -> datetime | None:
    """`local` itself when it is within the open hours of its weekday, else the start of the next open range."""
    for ahead in range(8):
        day = (local + timedelta(days=ahead)).date()
        for r in days.get(WEEKDAYS[day.weekday()], []):
            start = datetime.combine(day, datetime.strptime(r.start, "%H:%M").time())
            end = datetime.combine(day, datetime.min.time()) + timedelta(hours=int(r.end[:2]), minutes=int(r.end[3:]))
            if ahead == 0 and start <= local < end:
                return local
            if start > local:
                return start
    return None
