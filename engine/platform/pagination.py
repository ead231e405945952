"""Opaque cursors: the caller pages by handing back `next_cursor`; we key pages on row ids."""
from __future__ import annotations

import base64

from tidings.engine.platform.errors import InvalidInput
from tidings.engine.platform.limits import is_int64

MAX_LIMIT = 1000


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"i{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("i"):
            raise ValueError
        last_id = int(raw[1:])
        if last_id < 0 or not is_int64(last_id):  # row ids are 64-bit: anything else was not made here
            raise ValueError
        return last_id
    except ValueError:
        raise InvalidInput("cursor is not one this API returned", field="cursor") from None


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    return limit


def next_cursor(rows: list, limit: int, key=lambda r: r.id) -> str | None:
    return encode_cursor(key(rows[-1])) if len(rows) == limit else None
