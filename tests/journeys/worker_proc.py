"""A journey worker in its own process (the idempotency test kills it with SIGKILL mid-send).

    python tests/journeys/worker_proc.py <temporal address> <database url> <task queue> <log file>

Its sender records one customer at a time, slowly, and logs `key status` for every attempt.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys

LOG = os.environ.get("TIDINGS_TEST_SEND_LOG", "")


async def slow_sender(db, settings, workspace_id, *, sends, **kw):
    from engine.journeys.sending import record_sends

    out = []
    for s in sends:
        [o] = await record_sends(db, settings, workspace_id, sends=[s], **kw)
        with open(LOG, "a") as f:
            f.write(f"{os.getpid()} {s.idempotency_key} {o.status}\n")
        out.append(o)
        await asyncio.sleep(0.05)
    return out


async def main(address: str, url: str, queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from engine.db import make_engine
    from engine.journeys.activities import JourneyActivities
    from engine.journeys.workflows import JourneyCohortWorkflow
    from engine.temporal import DATA_CONVERTER

    client = await Client.connect(address, data_converter=DATA_CONVERTER)
    db = make_engine(url)
    worker = Worker(client, task_queue=queue, workflows=[JourneyCohortWorkflow],
                    activities=JourneyActivities(db, sender=slow_sender).all(),
                    activity_executor=concurrent.futures.ThreadPoolExecutor(4))
    print("ready", flush=True)
    await worker.run()


if __name__ == "__main__":
    address, url, queue, LOG = sys.argv[1:5]
    sys.path.insert(0, os.getcwd())
    asyncio.run(main(address, url, queue))
