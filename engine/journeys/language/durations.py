"""Durations as people write them in journeys: `30s`, `15m`, `2h`, `7d`, `2w`, or combined like `1d12h`."""
from __future__ import annotations

import re

UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_WAIT = 365 * 86400  # Pinpoint's wait activity caps at a year; so do we for every duration

_WHOLE = re.compile(r"^(?:\d+[wdhms])+$")
_PART = re.compile(r"(\d+)([wdhms])")


def parse_duration(text: str) -> int:
    """Seconds in `text`; ValueError with a user-facing message when it is not a duration."""
    compact = text.strip()
    if not _WHOLE.match(compact):
        raise ValueError(f"`{text}` is not a duration; write a number and a unit: 30s, 15m, 2h, 7d, 2w (or 1d12h)")
    return sum(int(n) * UNITS[u] for n, u in _PART.findall(compact))


def format_duration(seconds: int) -> str:
    """The shortest text that parses back to `seconds` (for messages and graph labels)."""
    if seconds == 0:
        return "0s"
    out = []
    for unit, size in UNITS.items():
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
