"""A journey worker in its own process (the exactly-once test kills it with SIGKILL mid-send).

    python tests/journeys/worker_proc.py <temporal address> <database url> <task queue>

The real worker parts: JourneyActivities with the installed channel plugins, nothing stubbed.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys


async def main(address: str, url: str, queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from tidings.engine.platform.db import make_engine
    from tidings.engine.journeys.runtime.activities import JourneyActivities
    from tidings.engine.journeys.runtime.workflows import JourneyCohortWorkflow
    from tidings.engine.platform.temporal import DATA_CONVERTER

    from tidings.engine.wiring import wire

    wire()
    client = await Client.connect(address, data_converter=DATA_CONVERTER)
    db = make_engine(url)
    worker = Worker(client, task_queue=queue, workflows=[JourneyCohortWorkflow],
                    activities=JourneyActivities(db).all(),
                    activity_executor=concurrent.futures.ThreadPoolExecutor(4))
    print("ready", flush=True)
    await worker.run()


if __name__ == "__main__":
    address, url, queue = sys.argv[1:4]
    sys.path.insert(0, os.getcwd())
    asyncio.run(main(address, url, queue))
