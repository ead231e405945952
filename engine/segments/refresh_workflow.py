"""The schedule that keeps clock-dependent segments current (windows, recency, relative dates).

Deterministic workflow code only: no database imports here; the activity does the work.
"""
from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

ACTIVITY = "refresh_clock_segments"
SCHEDULE_ID = "tidings-segment-clock"


@workflow.defn(name="RefreshClockSegments")
class RefreshClockSegments:
    @workflow.run
    async def run(self) -> int:
        now_ms = int(workflow.now().timestamp() * 1000)
        return await workflow.execute_activity(ACTIVITY, now_ms, start_to_close_timeout=timedelta(minutes=30),
                                               result_type=int)
