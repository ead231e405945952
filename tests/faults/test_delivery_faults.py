"""Faults of an ordinary day during a broadcast, on the real parts: a Temporal dev server in its own process,
`tidings worker` processes, a real SMTP server counting mails per recipient (tests/faults/harness.py).

300 customers at 30 mails/s (10 s of sending); the fault lands once 40% got their mail. Every customer
must get the mail (0 lost), and only what was literally in flight at the fault may go twice, under the
same Message-ID. In flight here: one chunk handed to the SMTP server (the rate limit's burst, 3 mails at
30/s), so a few duplicates at most; before per-chunk recording every mail sent before the fault went
twice (worker kill, Temporal down) or none after it arrived (SMTP down)."""
from __future__ import annotations

import pytest

from tests.faults.harness import run_fault

N, RATE = 300, 30.0
# Short backoff so the SMTP outage test sees several retry rounds; the default window is hours.
FAST_RETRY = {"TIDINGS_DELIVERY_RETRY_MIN_SECONDS": "1", "TIDINGS_DELIVERY_RETRY_MAX_SECONDS": "3"}


@pytest.fixture
def fault_db(database_url):
    from tidings.engine.platform.db import make_engine, migrate

    db = make_engine(database_url)
    migrate(db)
    yield db
    db.dispose()


def _check(t, n: int = N, rate: float = RATE) -> None:
    assert t.lost == 0, t
    assert t.extra_mails <= 2 * max(1, int(rate / 10)), t  # the chunk being sent, and one reserved next to it
    assert t.same_message_id, t
    assert t.statuses == {"sent": n}, t


async def test_worker_killed_mid_broadcast_loses_nothing_and_resends_only_in_flight(fault_db, database_url, tmp_path):
    _check(await run_fault("worker", db=fault_db, database_url=database_url, folder=tmp_path, n=N, rate=RATE,
                           extra_env=FAST_RETRY))


async def test_temporal_down_mid_broadcast_loses_nothing_and_resends_only_in_flight(fault_db, database_url, tmp_path):
    # Down 12 s, longer than the send activity's 10 s heartbeat timeout, so its attempt times out meanwhile,
    # and back before the send is over (500 at 20/s: 25 s), so the attempt still running learns it then.
    _check(await run_fault("temporal", db=fault_db, database_url=database_url, folder=tmp_path, n=500, rate=20.0,
                           at=0.3, outage=12.0, extra_env=FAST_RETRY), n=500, rate=20.0)


async def test_smtp_down_mid_broadcast_retries_until_delivered(fault_db, database_url, tmp_path):
    _check(await run_fault("smtp", db=fault_db, database_url=database_url, folder=tmp_path, n=N, rate=RATE,
                           outage=15.0, extra_env=FAST_RETRY))
