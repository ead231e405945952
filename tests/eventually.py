"""The one polling helper of the tests: wait for real work to finish, not for time to pass.

`eventually(check, timeout)` calls `check()` until it returns something truthy and returns that; when
`timeout` seconds pass first it fails the test naming `what` and the last value seen. `check` is called
once more at the deadline, so a slow machine fails only if the condition really does not hold.
`aeventually` is the same for async tests (the event loop keeps running between checks); with
`threaded=True` each check runs in a thread, for checks that block (a boto3 call) while the test's own loop
runs a worker.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable


def _failure(what: str, timeout: float, last: Any) -> AssertionError:
    return AssertionError(f"{what} did not hold within {timeout:g} s (last check gave {last!r})")


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "the condition", *,
               every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        last_chance = time.monotonic() >= deadline
        if value := check():
            return value
        if last_chance:
            raise _failure(what, timeout, value)
        time.sleep(every)


async def aeventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "the condition", *,
                      every: float = 0.05, threaded: bool = False) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        last_chance = time.monotonic() >= deadline
        if value := (await asyncio.to_thread(check) if threaded else check()):
            return value
        if last_chance:
            raise _failure(what, timeout, value)
        await asyncio.sleep(every)
