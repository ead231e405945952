"""IANA time zones by name: the one cache of them and the one check of a name."""
from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone, or None for a name this machine does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def is_timezone(name: str) -> bool:
    """Whether `name` is an IANA zone (Europe/Paris) or UTC."""
    return zone(name) is not None
