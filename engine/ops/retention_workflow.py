"""The daily schedule that prunes what is past retention (engine/ops/retention.py).

Deterministic workflow code only: no database imports here; the activity does the work.
"""
from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

ACTIVITY = "prune_retention"
SCHEDULE_ID = "tidings-retention-prune"


@workflow.defn(name="PruneRetention")
class PruneRetention:
    @workflow.run
    async def run(self) -> int:
        now_ms = int(workflow.now().timestamp() * 1000)
        # a first prune of a large backlog takes a while; each batch heartbeats, so a dead worker is noticed
        return await workflow.execute_activity(ACTIVITY, now_ms, start_to_close_timeout=timedelta(hours=6),
                                               heartbeat_timeout=timedelta(minutes=5), result_type=int)
