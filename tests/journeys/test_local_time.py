"""`timezone: customer` broadcasts: which customers each firing of the UTC grid schedule admits.

Pure time math (engine/journeys/runtime/localtime.py); the schedule and the admission on a real Temporal dev
server are in test_runtime_devserver.py."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from tidings.engine.journeys import ir
from tidings.engine.journeys.language.formats import expand_cron
from tidings.engine.journeys.runtime.localtime import (
    ZoneFilter, firing_filter, grid_minutes, local_schedule, previous_grid_instant, schedule_bounds,
    schedule_cron,
)

UTC = timezone.utc


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def iso(at_ms: int, zone: str = "UTC") -> str:
    return datetime.fromtimestamp(at_ms / 1000, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def cron(expr: str):
    return local_schedule(ir.BroadcastEntry(segment="s", cron=expr, timezone="customer"))


def firings(schedule, start: str, end: str):
    """Every instant the Temporal Schedule fires in [start, end) (its UTC cron is the grid)."""
    grid = set(grid_minutes(schedule))
    t, stop = ms(start), ms(end)
    while t < stop:
        if (t // 60_000) % 60 in grid:
            yield t
        t += 60_000


def admitted(schedule, zones, start, end, default="UTC") -> dict[str | None, list[int]]:
    """zone -> the firings that admit its customers (None: customers without a zone)."""
    out: dict[str | None, list[int]] = defaultdict(list)
    for t in firings(schedule, start, end):
        f = firing_filter(schedule, t, zones, default)
        for z in f.names:
            out[z].append(t)
        if f.unset:
            out[None].append(t)
    return out


def test_each_zone_enters_at_its_own_nine_oclock_once_a_day():
    zones = ["Asia/Tokyo", "America/New_York", "Asia/Kathmandu", "Europe/Paris", None]
    got = admitted(cron("0 9 * * *"), zones, "2026-01-15T00:00", "2026-01-16T00:00", default="America/Los_Angeles")
    assert {z: [iso(t) for t in ts] for z, ts in got.items()} == {
        "Asia/Tokyo": ["2026-01-15 00:00 UTC"],        # 09:00 JST
        "Asia/Kathmandu": ["2026-01-15 03:15 UTC"],    # 09:00 +0545
        "Europe/Paris": ["2026-01-15 08:00 UTC"],      # 09:00 CET
        "America/New_York": ["2026-01-15 14:00 UTC"],  # 09:00 EST
        None: ["2026-01-15 17:00 UTC"],                # no zone: settings.default_timezone, 09:00 PST
    }


def test_the_schedule_is_a_utc_grid_that_holds_every_zones_local_minute():
    assert schedule_cron(cron("0 9 * * MON")) == "0,15,30,45 * * * *"
    assert schedule_cron(cron("7 9 * * *")) == "7,22,37,52 * * * *"
    assert schedule_cron(cron("*/20 9 * * *")) == "0,5,10,15,20,25,30,35,40,45,50,55 * * * *"
    # 09:07 in Kathmandu (+05:45) is 03:22 UTC, on the grid
    got = admitted(cron("7 9 * * *"), ["Asia/Kathmandu"], "2026-06-01T00:00", "2026-06-02T00:00")
    assert [iso(t) for t in got["Asia/Kathmandu"]] == ["2026-06-01 03:22 UTC"]
    grid = grid_minutes(cron("7 9 * * *"))
    assert previous_grid_instant(ms("2026-06-01T03:22"), grid) == ms("2026-06-01T03:07")
    assert previous_grid_instant(ms("2026-06-01T03:22:30"), grid) == ms("2026-06-01T03:22")


def test_day_of_week_is_the_customers_own_day():
    zones = ["Asia/Tokyo", "Pacific/Kiritimati", "Pacific/Honolulu"]
    got = admitted(cron("0 9 * * MON"), zones, "2026-03-01T00:00", "2026-03-04T00:00")
    assert {z: [iso(t) for t in ts] for z, ts in got.items()} == {
        "Pacific/Kiritimati": ["2026-03-01 19:00 UTC"],  # Monday 09:00 at UTC+14 is Sunday in UTC
        "Asia/Tokyo": ["2026-03-02 00:00 UTC"],
        "Pacific/Honolulu": ["2026-03-02 19:00 UTC"],
        None: ["2026-03-02 09:00 UTC"],  # customers without a zone: default_timezone, UTC by default
    }


def test_spring_forward_gap_fires_once_shifted_and_fall_back_repeat_fires_once():
    ny = "America/New_York"
    # 2026-03-08: clocks jump 02:00 -> 03:00, so 02:30 does not exist: shifted by the gap to 03:30 EDT
    got = admitted(cron("30 2 * * *"), [ny], "2026-03-07T00:00", "2026-03-10T00:00")
    assert [iso(t, ny) for t in got[ny]] == ["2026-03-07 02:30 EST", "2026-03-08 03:30 EDT", "2026-03-09 02:30 EDT"]
    # 2026-11-01: 01:00-02:00 happens twice; 01:30 fires once, the first time
    got = admitted(cron("30 1 * * *"), [ny], "2026-10-31T00:00", "2026-11-03T00:00")
    assert [iso(t, ny) for t in got[ny]] == ["2026-10-31 01:30 EDT", "2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"]
    # a time just after the repeated hour is unaffected and also once
    got = admitted(cron("15 2 * * *"), [ny], "2026-10-31T12:00", "2026-11-01T12:00")
    assert [iso(t, ny) for t in got[ny]] == ["2026-11-01 02:15 EST"]


# zones with daylight saving: a 30-minute DST (Lord Howe), odd offsets
# (St John's -03:30, Chatham +12:45), the southern hemisphere (Santiago, Lord Howe, Chatham)
ZONES = ["America/New_York", "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago", "America/St_Johns"]


def test_a_year_of_firings_admits_every_zone_once_per_local_day():
    """Every local date of 2026 gets exactly one entry, at its local time (or, on a spring-forward day
    that skips it, shifted forward by the gap); no firing is missed or doubled across DST changes."""
    schedule, hour, minute = cron("0 3 * * *"), 3, 0  # Chatham skips 03:00 in September and repeats it in April
    got = admitted(schedule, ZONES, "2025-12-30T00:00", "2027-01-02T00:00")
    shifted = []
    for name in ZONES:
        tz = ZoneInfo(name)
        local = [datetime.fromtimestamp(t / 1000, tz) for t in got[name]]
        days = [d.date() for d in local if d.year == 2026]
        assert len(days) == len(set(days)) == 365, name
        for d in local:
            wall = datetime(d.year, d.month, d.day, hour, minute)
            if d.replace(tzinfo=None) != wall:  # only where the wall time was skipped: moved by the gap
                assert d.astimezone(UTC) == wall.replace(tzinfo=tz).astimezone(UTC), (name, d)
                assert wall.replace(tzinfo=tz, fold=0).utcoffset() != wall.replace(tzinfo=tz, fold=1).utcoffset()
                shifted.append((name, str(d)))
    assert shifted == [("Pacific/Chatham", "2026-09-27 04:00:00+13:45")]
    chatham = [datetime.fromtimestamp(t / 1000, ZoneInfo("Pacific/Chatham")) for t in got["Pacific/Chatham"]]
    assert [str(d) for d in chatham if d.date().isoformat() == "2026-04-05"] == ["2026-04-05 03:00:00+13:45"]


def test_local_at_is_one_wall_time_met_in_every_zone():
    entry = ir.BroadcastEntry(segment="s", at="2026-12-01T09:00", timezone="customer")
    schedule = local_schedule(entry)
    start, end = schedule_bounds(schedule)
    assert (start, end) == (datetime(2026, 11, 30, 18, 45, tzinfo=UTC), datetime(2026, 12, 1, 21, 15, tzinfo=UTC))
    got = admitted(schedule, ["Pacific/Kiritimati", "Asia/Tokyo", "Europe/Paris", "Etc/GMT+12"],
                   "2026-11-29T00:00", "2026-12-03T00:00")
    assert {z: [iso(t) for t in ts] for z, ts in got.items()} == {
        "Pacific/Kiritimati": ["2026-11-30 19:00 UTC"], "Asia/Tokyo": ["2026-12-01 00:00 UTC"],
        "Europe/Paris": ["2026-12-01 08:00 UTC"], "Etc/GMT+12": ["2026-12-01 21:00 UTC"], None: ["2026-12-01 09:00 UTC"]}
    # every one of them inside the schedule's bounds
    assert all(start.timestamp() * 1000 <= t <= end.timestamp() * 1000 for ts in got.values() for t in ts)


def test_unknown_and_unset_zones_follow_the_default_timezone():
    schedule = cron("0 9 * * *")
    stored = ["Asia/Tokyo", None, "Not/AZone"]
    at_tokyo_nine = firing_filter(schedule, ms("2026-01-15T00:00"), stored, "Asia/Seoul")  # Seoul = Tokyo's offset
    assert at_tokyo_nine == ZoneFilter(names=("Asia/Tokyo", "Not/AZone"), unset=True)
    assert firing_filter(schedule, ms("2026-01-15T00:00"), stored, "UTC") == ZoneFilter(names=("Asia/Tokyo",), unset=False)
    nobody = firing_filter(schedule, ms("2026-01-15T00:15"), stored, "UTC")
    assert nobody.empty


def test_cron_expansion():
    t = expand_cron("*/15 9-17/4 1,15 JAN-MAR SUN,7")
    assert (sorted(t.minutes), sorted(t.hours), sorted(t.days), sorted(t.months), sorted(t.weekdays)) == \
        ([0, 15, 30, 45], [9, 13, 17], [1, 15], [1, 2, 3], [0])
    assert expand_cron("@weekly") == expand_cron("0 0 * * 0")
    assert sorted(expand_cron("5/20 * * * *").minutes) == [5, 25, 45]
    # day of month and day of week both restricted: both must match, as in Temporal's own schedules
    got = admitted(cron("0 9 1 * MON"), ["UTC"], "2026-01-01T00:00", "2026-07-01T00:00")
    assert [iso(t) for t in got["UTC"]] == ["2026-06-01 09:00 UTC"]


def _ms(text: str, zone_name: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone_name)).timestamp() * 1000)


def _local(ms: int | None, zone_name: str) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, ZoneInfo(zone_name)).strftime("%a %Y-%m-%d %H:%M")


def test_sending_hours_give_the_next_open_minute_in_the_zone():
    from tidings.engine.journeys.runtime.localtime import next_open

    days = {"monday": [ir.OpenRange(start="09:00", end="12:00"), ir.OpenRange(start="13:00", end="17:00")],
            "friday": [ir.OpenRange(start="22:00", end="24:00")]}
    christmas = [ir.ClosedDays(name="Christmas", start="2026-12-25T00:00", end="2026-12-29T10:00")]
    paris = "Europe/Paris"
    # Monday 7 December 2026
    assert next_open(_ms("2026-12-07T10:00", paris), paris, days, []) is None  # open
    assert _local(next_open(_ms("2026-12-07T12:30", paris), paris, days, []), paris) == "Mon 2026-12-07 13:00"
    assert _local(next_open(_ms("2026-12-07T17:00", paris), paris, days, []), paris) == "Fri 2026-12-11 22:00"
    assert next_open(_ms("2026-12-11T23:59", paris), paris, days, []) is None  # 24:00 closes the day
    assert _local(next_open(_ms("2026-12-12T00:00", paris), paris, days, []), paris) == "Mon 2026-12-14 09:00"
    # Friday 25 December is closed, and the closed range runs into Tuesday 10:00: the next open minute is
    # Friday 1 January 22:00, not Monday 28 December
    assert _local(next_open(_ms("2026-12-25T22:30", paris), paris, days, christmas), paris) == "Fri 2027-01-01 22:00"
    # closed days alone: open again at the end of the range; the zone's own wall clock is what counts
    assert _local(next_open(_ms("2026-12-26T08:00", "Asia/Tokyo"), "Asia/Tokyo", None, christmas),
                  "Asia/Tokyo") == "Tue 2026-12-29 10:00"
    assert next_open(_ms("2026-12-29T10:00", paris), paris, None, christmas) is None
    # across the spring-forward gap (New York, 8 March 2026: 02:00 -> 03:00) a 02:30 opening comes at 03:30
    sunday = {"sunday": [ir.OpenRange(start="02:30", end="05:00")]}
    ny = "America/New_York"
    assert _local(next_open(_ms("2026-03-08T01:00", ny), ny, sunday, []), ny) == "Sun 2026-03-08 03:30"
