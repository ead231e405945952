"""Parsing of a journey's `entry` and `settings` sections into IR structs."""
from __future__ import annotations

from typing import Any, Callable

from tidings.engine.journeys import ir
from tidings.engine.journeys.language.formats import (
    check_clock, check_cron, check_timezone, parse_instant, parse_wall_time,
)
from tidings.engine.journeys.language.issues import Pos
from tidings.engine.journeys.language.sending_hours import parse_sending_hours
from tidings.engine.journeys.language.yaml_view import Ctx, View, typename
from tidings.engine.journeys.language.yaml_loader import LList

MIN_EVERY = 3600  # recurring broadcasts more often than hourly would be a firehose, not a campaign

# ---- entry -----------------------------------------------------------------------------------


def _event_entry(ctx: Ctx, value: Any, pos: Pos) -> ir.EventEntry | None:
    if isinstance(value, str):  # `event: signed_up` is short for `event: {name: signed_up}`
        return ir.EventEntry(event=value)
    view = View.of(ctx, value, pos, "entry `event`")
    if view is None:
        return None
    view.keys(required=("name",), optional=("filter",))
    return ir.EventEntry(event=view.str("name") or "", filter=view.rule("filter"))


def _segment_entry(ctx: Ctx, value: Any, pos: Pos) -> ir.SegmentEntry | None:
    if isinstance(value, str):  # `segment_entry: trial-users`
        ctx.check_ref("segment", value, pos)
        return ir.SegmentEntry(segment=value)
    view = View.of(ctx, value, pos, "entry `segment_entry`")
    if view is None:
        return None
    view.keys(required=("segment",))
    return ir.SegmentEntry(segment=view.catalog("segment", "segment") or "")


def _broadcast_entry(ctx: Ctx, value: Any, pos: Pos) -> ir.BroadcastEntry | None:
    view = View.of(ctx, value, pos, "entry `broadcast`")
    if view is None:
        return None
    view.keys(required=("segment",), optional=("at", "cron", "every", "refresh", "timezone", "on_join"))
    schedules = [k for k in ("at", "cron", "every", "refresh") if view.has(k)]
    if len(schedules) > 1:
        ctx.error(view.key_pos(schedules[1]), f"a broadcast has one schedule; `{schedules[0]}` and `{schedules[1]}` "
                  "are both given (leave all out to send now)")
    timezone = view.str("timezone", "UTC")
    local = timezone == "customer"
    if timezone != "customer" and (problem := check_timezone(timezone)):
        ctx.error(view.pos("timezone"), f"{problem}, or `customer` for each customer's own zone")
    if local and not (view.has("cron") or view.has("at")):
        repeat = "every" if view.has("every") else "refresh" if view.has("refresh") else None
        why = f"`{repeat}` repeats at the same instants for everyone" if repeat else \
            "without a schedule the broadcast goes out now, at one instant for everyone"
        ctx.error(view.pos("timezone"), f"`timezone: customer` needs `cron` or `at` (a time of day in each customer's "
                  f"own zone); {why}")
    at = at_epoch = cron = None
    if view.has("at"):
        at, at_epoch = _wall_time(view, "at") if local else _instant(view, "at", hint=(
            "; or set `timezone: customer` to send at this local time in each customer's own zone"))
    if view.has("cron") and (cron := view.str("cron")) is not None:
        problem = check_cron(cron)
        if problem:
            ctx.error(view.pos("cron"), problem)
            cron = None
    every = view.duration("refresh" if view.has("refresh") else "every", low=MIN_EVERY)
    on_join = view.bool("on_join", False)
    if on_join and (clash := next((k for k in ("at", "cron", "every") if view.has(k)), None)):
        ctx.error(view.key_pos(clash), f"`on_join` admits whoever joins the segment from the activation on, so the "
                  f"broadcast goes out then too; `{clash}` would send the members at another time (leave it out, "
                  "or use `refresh`)")
    return ir.BroadcastEntry(segment=view.catalog("segment", "segment") or "", at=at, at_epoch=at_epoch, cron=cron,
                             every_seconds=every, refresh=view.has("refresh"), on_join=on_join, timezone=timezone)


def _wall_time(view: View, key: str) -> tuple[str | None, None]:
    """A local date-time without offset (`timezone: customer`) -> (text, no epoch: it is many instants)."""
    text = view.str(key)
    if text is None:
        return None, None
    try:
        parse_wall_time(text)
    except ValueError as exc:
        view.ctx.error(view.pos(key), f"`{key}` in {view.what}: {exc}")
        return None, None
    return text, None


def _instant(view: View, key: str, hint: str = "") -> tuple[str | None, int | None]:
    """An ISO date-time with offset -> (text, epoch seconds)."""
    text = view.str(key)
    if text is None:
        return None, None
    try:
        return text, int(parse_instant(text).timestamp())
    except ValueError as exc:
        view.ctx.error(view.pos(key), f"`{key}` in {view.what}: {exc}{hint if 'time zone' in str(exc) else ''}")
        return None, None


ENTRY_PARSERS: dict[str, Callable[[Ctx, Any, Pos], Any]] = {
    "event": _event_entry,
    "segment_entry": _segment_entry,
    "broadcast": _broadcast_entry,
}


def parse_entry(ctx: Ctx, value: Any, pos: Pos) -> ir.Entry | None:
    view = View.of(ctx, value, pos, "`entry`")
    if view is None:
        return None
    view.keys(optional=tuple(ENTRY_PARSERS))
    kinds = [k for k in view.data if k in ENTRY_PARSERS]
    if len(kinds) != 1:
        found = f"got {', '.join(kinds)}" if kinds else "got none"
        ctx.error(view.data.pos, f"`entry` needs exactly one of {', '.join(ENTRY_PARSERS)}; {found}")
        if not kinds:
            return None
    ctx.entry_kind = kinds[0]
    return ENTRY_PARSERS[kinds[0]](ctx, view.raw(kinds[0]), view.pos(kinds[0]))


# ---- settings --------------------------------------------------------------------------------


def _quiet_hours(view: View) -> ir.QuietHours | None:
    view.keys(required=("start", "end"), optional=("action",))
    times = {}
    for key in ("start", "end"):
        value = view.raw(key)
        if key not in view.data:
            continue
        if not isinstance(value, str):
            view.ctx.error(view.pos(key), f"`{key}` in {view.what} must be a time like \"21:00\", got {typename(value)}")
        elif problem := check_clock(value):
            view.ctx.error(view.pos(key), f"`{key}` in {view.what}: {problem}")
        else:
            times[key] = value
    action = view.str("action", "hold", choices=("hold", "skip"))
    if len(times) == 2 and times["start"] == times["end"]:
        view.ctx.error(view.pos("end"), "quiet hours `start` and `end` are the same time; that window is empty")
        return None
    if len(times) < 2:
        return None
    return ir.QuietHours(start=times["start"], end=times["end"], action="skip" if action == "skip" else "hold")


def _frequency_cap(view: View) -> ir.FrequencyCap | None:
    view.keys(required=("messages", "per"))
    messages = view.number("messages", integer=True, low=1)
    per = view.duration("per")
    return ir.FrequencyCap(messages=messages, per_seconds=per) if messages and per else None


def _entry_limits(view: View) -> ir.EntryLimits:
    view.keys(optional=("max_entries", "min_interval"))
    max_entries: int | None = 1
    if view.raw("max_entries") == "unlimited":
        max_entries = None
    elif view.has("max_entries"):
        if isinstance(view.raw("max_entries"), str):
            view.ctx.error(view.pos("max_entries"), "`max_entries` must be a whole number >= 1 or `unlimited`")
        else:
            max_entries = view.number("max_entries", 1, integer=True, low=1)
    return ir.EntryLimits(max_entries=max_entries, min_interval_seconds=view.duration("min_interval"))


def _exit_criterion(ctx: Ctx, value: Any, pos: Pos) -> ir.ExitCriterion | None:
    view = View.of(ctx, value, pos, "an `exit` criterion")
    if view is None:
        return None
    view.keys(optional=("event", "filter", "left_segment"))
    if view.has("event") == view.has("left_segment"):
        ctx.error(view.data.pos, "an `exit` criterion needs exactly one of `event` or `left_segment`")
        return None
    if view.has("event"):
        return ir.EventExit(event=view.str("event") or "", filter=view.rule("filter"))
    if view.has("filter"):
        ctx.error(view.key_pos("filter"), "`filter` only applies to an `event` exit criterion")
    return ir.SegmentExit(segment=view.catalog("segment", "left_segment") or "")


def _exits(ctx: Ctx, value: Any, pos: Pos) -> list[ir.ExitCriterion]:
    if isinstance(value, LList):  # several criteria; any one of them takes the customer out
        found = [_exit_criterion(ctx, item, p) for item, p in zip(value, value.item_pos)]
    else:
        found = [_exit_criterion(ctx, value, pos)]
    return [c for c in found if c is not None]


def _goal(view: View) -> ir.Goal:
    view.keys(required=("event",), optional=("within", "filter"))
    return ir.Goal(event=view.str("event") or "", within_seconds=view.duration("within"), filter=view.rule("filter"))


SETTING_PARSERS: dict[str, Callable[[View], Any]] = {
    "quiet_hours": _quiet_hours,
    "sending_hours": parse_sending_hours,
    "frequency_cap": _frequency_cap,
    "entry": _entry_limits,
    "goal": _goal,
}


def _ends_at(view: View, entry: ir.Entry | None) -> dict[str, Any]:
    """`ends_at`: the instant from which nobody enters (a one-off broadcast must go out before it)."""
    text, epoch = _instant(view, "ends_at")
    if text is None or epoch is None:
        return {}
    if isinstance(entry, ir.BroadcastEntry) and entry.at_epoch is not None and entry.at_epoch >= epoch:
        view.ctx.error(view.pos("ends_at"), f"`ends_at` {text} is not after the broadcast's `at` {entry.at}: "
                       "nobody would enter")
        return {}
    return {"ends_at": text, "ends_at_epoch": epoch}


def parse_settings(ctx: Ctx, value: Any, pos: Pos, entry: ir.Entry | None = None) -> ir.Settings:
    view = View.of(ctx, value, pos, "`settings`")
    if view is None:
        return ir.Settings()
    view.keys(optional=(*SETTING_PARSERS, "exit", "default_timezone", "ends_at"))
    out: dict[str, Any] = {}
    for key, parse in SETTING_PARSERS.items():
        sub = view.map(key, f"`settings.{key}`")
        if sub is not None and (parsed := parse(sub)) is not None:
            out[key] = parsed
    if view.has("exit"):
        out["exit"] = _exits(ctx, view.raw("exit"), view.pos("exit"))
    tz = view.str("default_timezone")
    if tz is not None:
        if problem := check_timezone(tz):
            ctx.error(view.pos("default_timezone"), problem)
        else:
            out["default_timezone"] = tz
    if view.has("ends_at"):
        out.update(_ends_at(view, entry))
    return ir.Settings(**out)
