"""Start-up wiring of the write path: the domains above customers register on tidings.engine.customers.on_write.

Every process that opens a database calls `wire()` once, before its first write: the API
(api/app.py), the CLI and worker (engine/ops/), the journey test harness (tidings.engine.journeys.testing) and
the test suite (tests/conftest.py). Wiring twice is harmless. The order is the order listeners hear a
write in: the ledger indexes send events first (feedback and metrics find messages by id), then
segment memberships follow, then journeys queue entries (they read the memberships just written).
"""
from __future__ import annotations

from tidings.engine.customers import on_write
from tidings.engine.journeys.runtime import entries
from tidings.engine.messaging import ledger
from tidings.engine.segments import membership


def wire() -> None:
    on_write.register(on_write.Listener("messaging.ledger", events_recorded=ledger.index_sends))
    on_write.register(on_write.Listener(
        "segments.membership", customers_changed=membership.customers_changed,
        customers_erased=membership.customers_erased, events_recorded=membership.events_recorded))
    on_write.register(on_write.Listener(
        "journeys.entries", events_recorded=entries.enqueue_matching, own_events_recorded=entries.enqueue_matching,
        listens=entries.listens))
    on_write.register_memberships(membership.memberships_of)
