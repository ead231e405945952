"""Garbage-collector settings of long-running processes (the API, the worker): one helper for both."""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time

log = logging.getLogger("tidings.collector")


def tune_collector() -> None:
    """Call once start-up has loaded everything. Start-up objects (Temporal, SQLAlchemy, plugins: 160,000 of
    them) live as long as the process: frozen out of the collector's sight, whose full passes walking them
    stopped the worker's event loop for 70-180 ms every ~2 s under event entry (measured) and cost the API
    more than decoding a 10,000-item batch. Batches allocate their objects together and drop them together
    (~100,000 for a 10,000-item batch, a cohort's members): young passes every 50,000 allocations instead
    of 700, not hundreds per request for nothing."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


# With the thresholds above a full pass comes only every 20 x 20 x 50,000 allocations. A finished workflow
# run (its sandboxed instance, event loop, tasks, the cohort's 1,000 members and decoded payloads) is a
# graph of reference cycles that only a full pass frees, and under a broadcast the worker finishes one per
# 1,000 customers: between full passes they piled up, and the memory they had spread over Python's arenas
# and malloc's stayed taken. A broadcast to 1,000,000 customers grew the worker ~0.4-0.6 MB per 1,000 mails
# to 739 MB (tests/benchmarks/README.md, "Worker memory"). A full pass every few seconds walks only what
# is not frozen (the cohorts in flight): it frees each finished run's cycles while their memory is reused.
FULL_COLLECTION_EVERY = 10.0


def release_free_memory() -> bool:
    """Hand the free pages at the top and inside of malloc's arenas back to the system (glibc's
    malloc_trim); False where there is no glibc (musl, macOS): nothing to do there."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


_trim_fn: list = []


def _malloc_trim():
    if not _trim_fn:
        fn = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            fn = getattr(libc, "malloc_trim", None)
        except OSError:
            pass
        if fn is not None:
            fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
        _trim_fn.append(fn)
    return _trim_fn[0]


async def collect_forever(every: float = FULL_COLLECTION_EVERY) -> None:
    """A full collection every `every` seconds on this event loop (finalizers run where the objects
    lived), then the freed memory back to the system in a thread (malloc_trim releases the GIL)."""
    while True:
        await asyncio.sleep(every)
        started = time.perf_counter()
        freed = gc.collect()
        took = time.perf_counter() - started
        if took > 0.5:
            log.info("full collection took %.0f ms (%d objects freed)", took * 1000, freed)
        await asyncio.to_thread(release_free_memory)
