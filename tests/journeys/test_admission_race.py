"""PostgreSQL: two admissions of one journey at once (a broadcast page and the joiners' queue of an `on_join`
broadcast, say) queue on the journey's row before reading its runs, so a customer both would admit enters once:
the second reads the run the first recorded and refuses the customer, where it used to read the runs before the
first committed, take the same cohort number and fail on the cohort's unique key (its activity then retried)."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, update

from tidings.engine.journeys import store
from tidings.engine.journeys.runtime.activities import JourneyActivities
from tidings.engine.journeys.tables import journey_runs, journeys
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template
from tests.journeys.test_many_journeys import ON_EVENT


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_customer_two_admissions_take_at_once_enters_once(runtime_db):
    db = runtime_db
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    (pk,) = add_customers(db, workspace, ["a"])
    store.put_journey(db, workspace, ON_EVENT.format(id="hello", event="signed_up"))
    with db.begin() as conn:  # active in the store: admitting needs no Temporal side
        conn.execute(update(journeys).where(journeys.c.journey_id == "hello").values(status="active",
                                                                                     active_version=1))
    acts = JourneyActivities(db)
    second: dict = {}

    def admit_too() -> None:
        try:
            with db.begin() as conn:
                second["members"] = acts._admit_rows(conn, workspace.id, "hello", 1, "race/2", [(pk, {})]).members
        except Exception as exc:  # noqa: BLE001  (what the activity would have failed with)
            second["error"] = exc

    first = db.connect()
    transaction = first.begin()
    admitted = acts._admit_rows(first, workspace.id, "hello", 1, "race/1", [(pk, {})])  # recorded, not committed
    assert [m.user_pk for m in admitted.members] == [pk]
    other = threading.Thread(target=admit_too)
    other.start()
    time.sleep(1.0)  # the second admission is now waiting for the first
    assert other.is_alive()
    transaction.commit()
    first.close()
    other.join(30)
    assert second == {"members": []}  # refused: already in the journey
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(journey_runs).where(
            journey_runs.c.user_pk == pk)).scalar() == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_attempts_of_one_admission_at_once_answer_the_same_cohort(runtime_db):
    """A Temporal retry of an admission while its first attempt still runs: the retry queues on the journey's
    row, then finds the first attempt's cohort under the same claim key and answers it (it used to fail on
    the cohort's unique key and be retried once more)."""
    db = runtime_db
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    (pk,) = add_customers(db, workspace, ["a"])
    store.put_journey(db, workspace, ON_EVENT.format(id="hello", event="signed_up"))
    with db.begin() as conn:
        conn.execute(update(journeys).where(journeys.c.journey_id == "hello").values(status="active",
                                                                                     active_version=1))
    acts = JourneyActivities(db)
    second: dict = {}

    def retry() -> None:
        try:
            with db.begin() as conn:
                again = acts._admit_rows(conn, workspace.id, "hello", 1, "page/1", [(pk, {})])
                second["answer"] = (again.cohort, [m.run_id for m in again.members])
        except Exception as exc:  # noqa: BLE001  (what the activity would have failed with)
            second["error"] = exc

    first = db.connect()
    transaction = first.begin()
    admitted = acts._admit_rows(first, workspace.id, "hello", 1, "page/1", [(pk, {})])
    other = threading.Thread(target=retry)
    other.start()
    time.sleep(1.0)
    assert other.is_alive()  # waiting for the first attempt
    transaction.commit()
    first.close()
    other.join(30)
    assert second == {"answer": (admitted.cohort, [m.run_id for m in admitted.members])}
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(journey_runs).where(
            journey_runs.c.user_pk == pk)).scalar() == 1
