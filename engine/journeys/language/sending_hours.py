"""`settings.sending_hours` (Pinpoint's SendingSchedule: OpenHours and ClosedDays) -> ir.SendingHours.

    sending_hours:
      timezone: customer            # or an IANA zone; the zone the hours and dates are read in
      open:                         # per channel: the only hours it sends; a weekday not listed is closed
        EMAIL: {monday: ["09:00-17:00"], saturday: ["10:00-12:00", "14:00-16:00"]}
      closed:                       # per channel: named local date-time ranges when it sends nothing
        EMAIL: [{name: Christmas, start: "2026-12-25T00:00", end: "2026-12-27T00:00"}]
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from tidings.engine.journeys import ir
from tidings.engine.journeys.language.formats import check_timezone
from tidings.engine.journeys.language.issues import Pos
from tidings.engine.journeys.language.yaml_loader import LList
from tidings.engine.journeys.language.yaml_view import View, typename

CHANNELS = ("EMAIL", "SMS", "PUSH", "VOICE", "CUSTOM")
_RANGE = re.compile(r"^((?:[01]\d|2[0-3]):[0-5]\d)-((?:[01]\d|2[0-3]):[0-5]\d|24:00)$")
_WALL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")


def _channels(view: View, key: str) -> list[tuple[str, Any, Pos]]:
    """(channel, value, where) of the mapping at `key`, reporting keys that are no channel."""
    sub = view.map(key, f"`settings.sending_hours.{key}`")
    if sub is None:
        return []
    sub.keys(optional=CHANNELS)
    return [(ch, sub.raw(ch), sub.pos(ch)) for ch in CHANNELS if sub.has(ch)]


def _open_day(view: View, day: str) -> list[ir.OpenRange]:
    value, pos = view.raw(day), view.pos(day)
    if not isinstance(value, LList):
        view.ctx.error(pos, f"`{day}` in {view.what} must be a list of ranges like [\"09:00-17:00\"], "
                       f"got {typename(value)}")
        return []
    ranges: list[tuple[str, str, Pos]] = []
    for item, item_pos in zip(value, value.item_pos):
        found = _RANGE.match(item) if isinstance(item, str) else None
        if found is None:
            view.ctx.error(item_pos, f"`{item}` in `{day}` of {view.what} is not a range of the day like \"09:00-17:00\"")
        elif found[1] >= found[2]:
            view.ctx.error(item_pos, f"`{item}` in `{day}` of {view.what}: the end must be after the start "
                           "(a range does not cross midnight; split it over two days)")
        else:
            ranges.append((found[1], found[2], item_pos))
    ranges.sort()
    for (_, end, _p), (start, _e, later) in zip(ranges, ranges[1:]):
        if start < end:
            view.ctx.error(later, f"`{start}-{_e}` in `{day}` of {view.what} overlaps the range ending at {end}")
    return [ir.OpenRange(start=s, end=e) for s, e, _ in ranges]


def _open(view: View) -> dict[str, dict[str, list[ir.OpenRange]]]:
    out: dict[str, dict[str, list[ir.OpenRange]]] = {}
    for channel, value, pos in _channels(view, "open"):
        days = View.of(view.ctx, value, pos, f"`settings.sending_hours.open.{channel}`")
        if days is None:
            continue
        days.keys(optional=ir.WEEKDAYS)
        out[channel] = {day: _open_day(days, day) for day in ir.WEEKDAYS if days.has(day)}
    return out


def _wall(view: View, key: str) -> datetime | None:
    text = view.raw(key)
    if not isinstance(text, str) or not _WALL.match(text):
        view.ctx.error(view.pos(key), f"`{key}` in {view.what} must be a local date-time without offset, to the "
                       f"minute, like \"2026-12-25T00:00\", got {text!r}")
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        view.ctx.error(view.pos(key), f"`{key}` in {view.what}: `{text}` is not a date")
        return None


def _closed_list(view: View, channel: str, value: Any, pos: Pos) -> list[ir.ClosedDays]:
    what = f"`settings.sending_hours.closed.{channel}`"
    if not isinstance(value, LList):
        view.ctx.error(pos, f"{what} must be a list of {{name, start, end}}, got {typename(value)}")
        return []
    found: list[tuple[datetime, datetime, str, Pos]] = []
    for item, item_pos in zip(value, value.item_pos):
        rule = View.of(view.ctx, item, item_pos, f"a range of {what}")
        if rule is None:
            continue
        rule.keys(required=("name", "start", "end"))
        name = rule.str("name")
        start, end = _wall(rule, "start") if rule.has("start") else None, _wall(rule, "end") if rule.has("end") else None
        if name is None or start is None or end is None:
            continue
        if end <= start:
            view.ctx.error(rule.pos("end"), f"`end` of closed range `{name}` must be after its start")
            continue
        found.append((start, end, name, item_pos))
    found.sort(key=lambda f: (f[0], f[1]))
    for earlier, later in zip(found, found[1:]):
        if later[0] < earlier[1]:
            view.ctx.error(later[3], f"closed range `{later[2]}` of {channel} overlaps `{earlier[2]}`")
    return [ir.ClosedDays(name=n, start=s.isoformat(timespec="minutes"), end=e.isoformat(timespec="minutes"))
            for s, e, n, _ in found]


def parse_sending_hours(view: View) -> ir.SendingHours | None:
    view.keys(optional=("timezone", "open", "closed"))
    timezone = view.str("timezone", "customer") or "customer"
    if timezone != "customer" and (problem := check_timezone(timezone)):
        view.ctx.error(view.pos("timezone"), f"{problem}, or `customer` for each customer's own zone")
    opened = _open(view) if view.has("open") else {}
    closed = {ch: _closed_list(view, ch, value, pos) for ch, value, pos in _channels(view, "closed")} \
        if view.has("closed") else {}
    if not view.has("open") and not view.has("closed"):
        view.ctx.error(view.data.pos, "`settings.sending_hours` needs `open` hours or `closed` ranges for a channel")
        return None
    if not opened and not closed:
        return None
    return ir.SendingHours(timezone=timezone, open=opened, closed=closed)

