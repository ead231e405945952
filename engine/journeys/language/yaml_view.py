"""Typed, position-aware reading of one YAML mapping.

Every getter reports a problem at the offending key or value and returns a fallback instead
of raising, so one compile run finds all mistakes in a file.
"""
from __future__ import annotations

import builtins
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import datalogic_py

from tidings.engine.journeys.language.durations import MAX_WAIT, format_duration, parse_duration
from tidings.engine.journeys.language.issues import Issues, Pos
from tidings.engine.journeys.language.yaml_loader import LList, LMap, plain

ID_RE = re.compile(r"^[a-z0-9_-]+$")
ID_HINT = "use lowercase letters, digits, `-` and `_`"


class Catalog(Protocol):
    """What the compiler may check references against; the CLI/API back it with the database."""

    def has_segment(self, id: str) -> bool: ...
    def has_template(self, id: str) -> bool: ...
    def has_channel(self, name: str) -> bool: ...


@dataclass
class StepRef:
    """A `next`-like reference to a step, checked once every step id is known."""

    target: str
    pos: Pos
    source: str  # id of the step holding the reference
    key: str  # the YAML key, for messages: next, on_event, else, ...


@dataclass
class MessageRef:
    """A message_event's `step:`, which must name a send step that comes earlier."""

    step: str
    pos: Pos
    source: str


@dataclass
class Ctx:
    issues: Issues
    catalog: Catalog | None = None
    step_refs: list[StepRef] = field(default_factory=list)
    message_refs: list[MessageRef] = field(default_factory=list)
    entry_kind: str | None = None
    engine: Any = field(default_factory=datalogic_py.Engine)

    def error(self, pos: Pos | None, message: str) -> None:
        self.issues.add(pos, message)

    def check_ref(self, kind: str, value: str | None, pos: Pos) -> None:
        """Ask the catalog whether the segment/template/channel `value` exists."""
        if self.catalog is None or value is None:
            return
        known = {"segment": self.catalog.has_segment, "template": self.catalog.has_template,
                 "channel": self.catalog.has_channel}[kind](value)
        if not known:
            self.error(pos, f"unknown {kind} `{value}`")

    def check_rule(self, rule: Any, pos: Pos, where: str) -> Any:
        """Validate a JsonLogic rule with datalogic; report each diagnostic at its own line."""
        if not isinstance(rule, (LMap, bool)):
            self.error(pos, f"{where} must be a JsonLogic rule (a mapping like {{\"==\": [{{\"var\": \"event.plan\"}}, \"pro\"]}}), got {typename(rule)}")
            return None
        value = plain(rule)
        try:
            self.engine.compile_checked(value)
        except datalogic_py.CompileError as exc:
            for diag in exc.diagnostics:
                pointer = _diag(diag, "pointer") or ""
                self.error(locate(rule, pointer, pos), f"invalid JsonLogic in {where} at `{pointer or '/'}`: {_diag(diag, 'message')}")
        return value


def _diag(diag: Any, name: str) -> Any:
    # datalogic-py 5.9 hands out dicts; later releases may use objects with attributes
    return diag.get(name) if isinstance(diag, dict) else getattr(diag, name, None)


def locate(value: Any, pointer: str, pos: Pos) -> Pos:
    """Position of the JSON pointer `pointer` inside a located value (the deepest part that exists)."""
    for token in [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]:
        if isinstance(value, LMap) and token in value:
            pos, value = value.value_pos[token], value[token]
        elif isinstance(value, LList) and token.isdigit() and int(token) < len(value):
            pos, value = value.item_pos[int(token)], value[int(token)]
        else:
            break
    return pos


def typename(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


class View:
    """One mapping of the journey plus where it came from; `what` names it in messages."""

    def __init__(self, ctx: Ctx, data: LMap, what: str):
        self.ctx, self.data, self.what = ctx, data, what

    @classmethod
    def of(cls, ctx: Ctx, value: Any, pos: Pos, what: str) -> View | None:
        if isinstance(value, LMap):
            return cls(ctx, value, what)
        ctx.error(pos, f"{what} must be a mapping, got {typename(value)}")
        return None

    # -- structure ---------------------------------------------------------------------------

    def keys(self, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> None:
        allowed = list(required) + list(optional)
        for key in self.data:
            if key not in allowed:
                self.ctx.error(self.data.key_pos[key], f"unknown key `{key}` in {self.what}{did_you_mean(str(key), allowed)} "
                               f"(allowed: {', '.join(allowed)})")
        for key in required:
            if key not in self.data:
                self.ctx.error(self.data.pos, f"{self.what} is missing required key `{key}`")

    def has(self, key: str) -> bool:
        return key in self.data

    def pos(self, key: str) -> Pos:
        """Where the value of `key` is (or the mapping itself when the key is absent)."""
        return self.data.value_pos.get(key, self.data.pos)

    def key_pos(self, key: str) -> Pos:
        return self.data.key_pos.get(key, self.data.pos)

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def _wrong(self, key: str, expected: str) -> None:
        self.ctx.error(self.pos(key), f"`{key}` in {self.what} must be {expected}, got {typename(self.data[key])}")

    # -- typed getters -----------------------------------------------------------------------

    def str(self, key: str, default: str | None = None, *, pattern: re.Pattern | None = None,
            hint: str = "", choices: tuple[str, ...] = ()) -> str | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str) or not value:
            self._wrong(key, "a non-empty string")
            return default
        if choices and value not in choices:
            self.ctx.error(self.pos(key), f"`{key}` in {self.what} must be one of {', '.join(choices)}, got `{value}`")
            return default
        if pattern is not None and not pattern.match(value):
            self.ctx.error(self.pos(key), f"`{key}` in {self.what} is `{value}`: {hint}")
            return default
        return value

    def id(self, key: builtins.str, default: builtins.str | None = None) -> builtins.str | None:
        return self.str(key, default, pattern=ID_RE, hint=ID_HINT)

    def number(self, key: builtins.str, default: float | None = None, *, integer: bool = False,
               low: float | None = None, high: float | None = None, low_open: bool = False,
               high_open: bool = False) -> Any:
        """A number within [low, high] (an end is excluded when its *_open flag is set)."""
        if key not in self.data:
            return default
        value = self.data[key]
        ok_types = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            self._wrong(key, "a whole number" if integer else "a number")
            return default
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            self.ctx.error(self.pos(key), f"`{key}` in {self.what} must be {' and '.join(p for p in (lo, hi) if p)}, got {value:g}")
            return default
        return value

    def duration(self, key: builtins.str, default: int | None = None, *, low: int = 1, high: int = MAX_WAIT) -> int | None:
        if key not in self.data:
            return default
        return check_duration(self.ctx, self.data[key], self.pos(key), f"`{key}` in {self.what}", low=low, high=high)

    def bool(self, key: builtins.str, default: bool) -> bool:
        if key not in self.data:
            return default
        if not isinstance(self.data[key], bool):
            self._wrong(key, "true or false")
            return default
        return self.data[key]

    def map(self, key: builtins.str, what: builtins.str) -> View | None:
        if key not in self.data:
            return None
        return View.of(self.ctx, self.data[key], self.pos(key), what)

    def rule(self, key: builtins.str) -> Any:
        if key not in self.data:
            return None
        return self.ctx.check_rule(self.data[key], self.pos(key), f"`{key}` in {self.what}")

    def catalog(self, kind: builtins.str, key: builtins.str) -> builtins.str | None:
        """An id that must exist in the catalog as a `kind` (segment/template/channel)."""
        value = self.str(key) if kind == "channel" else self.id(key)
        self.ctx.check_ref(kind, value, self.pos(key))
        return value


def check_duration(ctx: Ctx, value: Any, pos: Pos, where: str, *, low: int = 1, high: int = MAX_WAIT) -> int | None:
    if not isinstance(value, str):
        ctx.error(pos, f"{where} must be a duration with a unit like 30s, 15m, 2h, 7d or 2w, got {typename(value)}")
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        ctx.error(pos, f"{where}: {exc}")
        return None
    if seconds < low:
        ctx.error(pos, f"{where} must be at least {_human(low)}, got `{value}`")
        return None
    if seconds > high:
        ctx.error(pos, f"{where} must be at most {_human(high)}, got `{value}`")
        return None
    return seconds


def _human(seconds: int) -> str:
    # "365d" reads better than "52w1d" in a limit
    return f"{seconds // 86400}d" if seconds >= 86400 and seconds % 86400 == 0 else format_duration(seconds)
