"""Garbage-collector settings of long-running processes (the API, the worker): one helper for both."""
from __future__ import annotations

import gc


def tune_collector() -> None:
    """Call once start-up has loaded everything. Start-up objects (Temporal, SQLAlchemy, plugins: 160,000 of
    them) live as long as the process: frozen out of the collector's sight, whose full passes walking them
    stopped the worker's event loop for 70-180 ms every ~2 s under event entry (measured) and cost the API
    more than decoding a 10,000-item batch. Batches allocate their objects together and drop them together
    (~100,000 for a 10,000-item batch, a cohort's members): young passes every 50,000 allocations instead
    of 700, not hundreds per request for nothing."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
