"""Limits every domain shares: 64-bit integers (what SQL stores) and the size of a batch."""
from __future__ import annotations

from tidings.engine.platform.errors import InvalidInput, LimitExceeded

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_BATCH = 10_000


def is_int64(value: int) -> bool:
    """Whether an integer fits the 64 bits SQL stores (the one bounds check)."""
    return INT64_MIN <= value <= INT64_MAX


def check_int64(value: int | None, field: str) -> int | None:
    """Integers go to SQL as 64-bit: a larger one is the caller's mistake, not an overflow of ours."""
    if value is not None and not is_int64(value):
        raise InvalidInput(f"{field} is out of range (a 64-bit integer), got {value}", field=field)
    return value


def check_batch_size(n: int, field: str = "items") -> None:
    if n == 0:
        raise InvalidInput("the batch is empty", field=field)
    if n > MAX_BATCH:
        raise LimitExceeded(f"a batch holds at most {MAX_BATCH} items, got {n}", field=field)
