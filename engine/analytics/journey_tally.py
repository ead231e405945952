"""A journey's message counts from journey_message_tally (kept by triggers on message_fact, migration
0020_pagefast_journey_tallies): what tidings.engine.analytics.metrics.journey_metrics counts with
COUNT(DISTINCT) over every message event of the journey, read from a few rows when the report covers
every version and all time."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from sqlalchemy import Connection, func, select

from tidings.engine.analytics.tables import journey_message_tallies as tally

NONE = "\x01"  # what the tally's key columns hold for NULL (and for a column the grouping does not use)
FINE, JOURNEY, STEP, VARIANT, CHANNEL = range(5)


def _value(key: str) -> str | None:
    return None if key == NONE else key


class Tallied:
    """The journey's groups as metrics._fine and metrics._grouped give them."""

    def __init__(self, fine: list[tuple[str, tuple, dict[str, int], int, int]],
                 groups: dict[int, dict[tuple, dict[str, dict[str, int]]]], bounds_exact: bool) -> None:
        self.fine = fine
        self.groups = groups
        self.bounds_exact = bounds_exact  # each fine group's first and last time is exact (else a bound)


def tallied(conn: Connection, workspace_id: int, journey_id: str, empty: Callable[[], dict[str, dict[str, int]]],
            metrics: tuple[str, ...]) -> Tallied:
    q = (select(tally.c.grouped_by, tally.c.metric, tally.c.step_key, tally.c.variant_key, tally.c.channel_key,
                func.sum(tally.c.events).label("events"), func.sum(tally.c.customers).label("customers"),
                func.sum(tally.c.messages).label("messages"), func.min(tally.c.min_ts).label("first"),
                func.max(tally.c.max_ts).label("last"),
                func.count().filter(tally.c.bounds_exact.is_(False)).label("inexact"))
         .where(tally.c.workspace_id == workspace_id, tally.c.journey_id == journey_id)
         .group_by(tally.c.grouped_by, tally.c.metric, tally.c.step_key, tally.c.variant_key, tally.c.channel_key))
    fine: list[tuple[str, tuple, dict[str, int], int, int]] = []
    groups: dict[int, dict[tuple, dict[str, dict[str, int]]]] = {g: defaultdict(empty) for g in range(5)}
    exact = True
    for r in conn.execute(q):
        if not r.events or r.metric not in metrics:  # every fact of the group was deleted
            continue
        counts = {"total": int(r.events), "customers": int(r.customers), "messages": int(r.messages)}
        step, variant, channel = _value(r.step_key), _value(r.variant_key), _value(r.channel_key)
        key: tuple[Any, ...] = {FINE: (step, variant, channel), JOURNEY: (), STEP: (step,), VARIANT: (variant,),
                                CHANNEL: (channel,)}[r.grouped_by]
        groups[r.grouped_by][key][r.metric] = counts
        if r.grouped_by == FINE:
            fine.append((r.metric, key, counts, int(r.first), int(r.last)))
            exact = exact and not r.inexact
    return Tallied(fine, groups, exact)
