"""Wall-clock helpers for storage (never used in workflow code, which uses workflow.now())."""
from __future__ import annotations

import time
from datetime import datetime, timezone


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def iso_to_ms(value: str) -> int:
    """Parse an ISO-8601 timestamp; a value without an offset is taken as UTC."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def datetime_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(value: int | str) -> int:
    """`3600`, `"3600"`, `"90m"`, `"12h"`, `"7d"`, `"2w"` -> seconds (positive); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int):
        n = value
    else:
        text = value.strip()
        n = int(text[:-1]) * _UNITS[text[-1]] if text and text[-1] in _UNITS else int(text)
    if n <= 0:
        raise ValueError(f"a duration is positive, got {value!r}")
    return n
