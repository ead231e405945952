"""The worker's full collection every few seconds (engine/platform/collector.py). Under the tuned collector
(tune_collector: full passes only every 20 x 20 x 50,000 allocations) a finished workflow run, a graph of
reference cycles that lived through young passes while it ran, stayed in memory for minutes; a broadcast
finishes one per 1,000 customers, and the worker grew to 739 MB over 1,000,000 of them."""
from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from tidings.engine.platform.collector import collect_forever, release_free_memory, tune_collector


class FinishedRun:
    """Stands for a finished cohort workflow run: it refers to itself (instance, loop, tasks do) and holds
    its cohort's members."""

    def __init__(self) -> None:
        self.itself = self
        self.members = [{"user_pk": pk, "entry": {}, "trail": []} for pk in range(1_000)]


@pytest.fixture
def tuned_collector():
    threshold = gc.get_threshold()
    tune_collector()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def finished_run_that_lived_a_while() -> weakref.ref:
    run = FinishedRun()
    gc.collect(1)  # it lived through young passes while it ran: now in the oldest generation
    return weakref.ref(run)


def churn() -> None:
    """What a worker allocates meanwhile: enough for young passes, not for a full one."""
    for _ in range(40):
        garbage = [[i] for i in range(10_000)]
        del garbage


async def test_the_tuned_collector_alone_keeps_a_finished_run(tuned_collector):
    run = finished_run_that_lived_a_while()
    churn()
    await asyncio.sleep(0.3)
    assert run() is not None  # what the worker did before: kept until a rare full pass


async def test_the_worker_frees_a_finished_run_within_its_period(tuned_collector):
    collector = asyncio.create_task(collect_forever(every=0.05))
    try:
        run = finished_run_that_lived_a_while()
        churn()
        for _ in range(40):
            if run() is None:
                break
            await asyncio.sleep(0.05)
        assert run() is None, "a finished run's cycles outlived several periods of the full collection"
        assert not collector.done()  # it goes on collecting
    finally:
        collector.cancel()


def test_free_memory_goes_back_to_the_system_where_glibc_is():
    assert release_free_memory() is True  # this box runs glibc; elsewhere it says False and does nothing
