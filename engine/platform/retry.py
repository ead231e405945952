"""Backoff with jitter, shared by every retry loop (a channel's retries within one send, a message's retry
rounds, an event stream's batches), and the retry window of messages failing transiently."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

WINDOW_VARS = {"hours": "TIDINGS_DELIVERY_RETRY_HOURS", "min_seconds": "TIDINGS_DELIVERY_RETRY_MIN_SECONDS",
               "max_seconds": "TIDINGS_DELIVERY_RETRY_MAX_SECONDS"}


def backoff(attempt: int, base: float, cap: float, *, floor: float = 0.5, rng: random.Random | None = None) -> float:
    """The delay after the `attempt`-th failure (1-based): ``base * 2 ** (attempt - 1)`` capped at `cap`, drawn
    uniformly from [floor * that, that] (jitter, so what failed together does not come back together;
    floor 0 is full jitter, 1 none)."""
    bound = min(cap, base * 2 ** (attempt - 1))
    return (rng or random).uniform(bound * floor, bound)


@dataclass(frozen=True)
class RetryWindow:
    """How long and how often a message failing transiently is tried again: attempt rounds spaced by
    ``min_seconds * 2 ** (round - 1)`` capped at ``max_seconds``, each drawn in [half, whole] of it
    (jitter, so messages of one outage do not return together), until ``hours`` after it was queued."""

    hours: float = 8.0
    min_seconds: float = 60.0
    max_seconds: float = 1800.0

    @classmethod
    def from_env(cls, env=None) -> "RetryWindow":
        """From TIDINGS_DELIVERY_RETRY_*; ValueError naming the variable that is not a positive number."""
        env = os.environ if env is None else env
        values = {}
        for field_name, var in WINDOW_VARS.items():
            raw = env.get(var)
            if not raw:
                continue
            try:
                values[field_name] = float(raw)
            except ValueError:
                values[field_name] = -1.0
            if not values[field_name] > 0 or values[field_name] == float("inf"):
                raise ValueError(f"{var}: {raw!r} is not a positive number")
        return cls(**values)

    @classmethod
    def current(cls) -> "RetryWindow":
        """The process's window, parsed again only when the variables change (Settings.from_env has checked
        them at start-up, so a send does not fail on them)."""
        global _cached
        values = tuple(os.environ.get(var) for var in WINDOW_VARS.values())
        if _cached is None or _cached[0] != values:
            _cached = (values, cls.from_env())
        return _cached[1]

    def next_attempt(self, created_at: int, rounds: int, now: int) -> int | None:
        """Epoch ms of the next attempt after `rounds` failed rounds, or None when the window is over."""
        at = now + int(backoff(max(1, rounds), self.min_seconds, self.max_seconds) * 1000)
        return at if at <= created_at + self.hours * 3_600_000 else None


_cached: tuple[tuple, RetryWindow] | None = None
