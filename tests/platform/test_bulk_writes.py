"""Batch writes keep every value and the order of their answers whichever way they reach the database: on
PostgreSQL a batch of COPY_FROM_ROWS rows or more goes through COPY (no RETURNING or ON CONFLICT) or as one
array per column (with them), a smaller one as a VALUES list; SQLite always takes VALUES lists."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DataError

from tidings.engine.customers.tables import endpoints, users
from tidings.engine.messaging.tables import messages
from tidings.engine.platform.db import COPY_FROM_ROWS, bulk_insert, bulk_update_where_in, make_engine, migrate, writing
from tidings.engine.segments.tables import customer_values
from tidings.engine.workspaces.service import create_workspace

# what COPY's text format has to escape, and what JSON has to keep
AWKWARD = ["tab\there", "new\nline", "back\\slash", "\\N", "quote ' and \"", "émoji 🎉", "", "comma, {brace}"]


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("n", [COPY_FROM_ROWS - 1, COPY_FROM_ROWS, 3 * COPY_FROM_ROWS + 7])
def test_a_batch_of_users_comes_back_as_written_and_its_ids_in_the_batch_order(db, n):
    workspace = create_workspace(db, "bulk")
    rows = [{"workspace_id": workspace.id, "user_id": f"u{(i * 7919) % n}-{AWKWARD[i % len(AWKWARD)]}",
             "attributes": {"name": AWKWARD[i % len(AWKWARD)], "n": i, "nested": {"list": [i, None, True]}},
             "metrics": {"spend": i + 0.5} if i % 2 else {}, "timezone": None if i % 3 else "Asia/Tokyo",
             "locale": None, "created_at": 10**12 + i, "updated_at": 10**12 + i} for i in range(n)]
    with writing(db) as conn:
        ids = bulk_insert(conn, users, rows, returning=["id"])
    with db.connect() as conn:
        stored = {r.id: r for r in conn.execute(select(users).where(users.c.workspace_id == workspace.id))}
    assert len(ids) == n == len(stored)
    for (pk,), row in zip(ids, rows):  # the i-th id answers the i-th row
        got = stored[pk]
        assert (got.user_id, got.attributes, got.metrics, got.timezone, got.created_at) == (
            row["user_id"], row["attributes"], row["metrics"], row["timezone"], row["created_at"])


@pytest.mark.parametrize("n", [COPY_FROM_ROWS - 1, 2 * COPY_FROM_ROWS])
def test_a_batch_that_meets_existing_rows_inserts_only_the_new_ones(db, n):
    workspace = create_workspace(db, "bulk")
    first = [{"workspace_id": workspace.id, "user_id": f"u{i}", "attributes": {}, "metrics": {}, "timezone": None,
              "locale": None, "created_at": 1, "updated_at": 1} for i in range(0, n, 2)]
    with writing(db) as conn:
        bulk_insert(conn, users, first)
    again = [{**r, "user_id": f"u{i}", "created_at": 2} for i, r in enumerate(first * 2)][:n]
    with writing(db) as conn:
        made = bulk_insert(conn, users, again, ignore_conflicts_on=["workspace_id", "user_id"], returning=["user_id"])
    with db.connect() as conn:
        stored = dict(conn.execute(select(users.c.user_id, users.c.created_at)
                                   .where(users.c.workspace_id == workspace.id)).all())
    assert [u for (u,) in made] == [f"u{i}" for i in range(1, n, 2)]  # the odd ones were new, in batch order
    assert stored == {f"u{i}": 1 if i % 2 == 0 else 2 for i in range(n)}


def test_numbers_mixing_integers_and_fractions_and_flags_as_integers_are_stored(db):
    workspace = create_workspace(db, "bulk")
    n = 2 * COPY_FROM_ROWS
    with writing(db) as conn:
        (pk,), = bulk_insert(conn, users, [{"workspace_id": workspace.id, "user_id": "u", "attributes": {},
                                            "metrics": {}, "timezone": None, "locale": None, "created_at": 1,
                                            "updated_at": 1}], returning=["id"])
        values = [{"workspace_id": workspace.id, "user_pk": pk, "ep": 0, "path": f"p{i}", "kind": "n",
                   "txt": None, "num": [i, i + 0.25, None, 2**53][i % 4], "ts": None} for i in range(n)]
        bulk_insert(conn, customer_values, values)
        bulk_insert(conn, customer_values, values[:3], ignore_conflicts_on=["id"])  # the array path, small
        bulk_insert(conn, customer_values, [{**v, "path": "q" + v["path"]} for v in values],
                    ignore_conflicts_on=["id"])  # the array path: int and float in one column
        eps = [{"workspace_id": workspace.id, "endpoint_id": f"e{i}", "user_pk": pk, "channel": "EMAIL",
                "address": f"e{i}@example.com", "opt_out": [0, 1, True, False][i % 4], "attributes": {},
                "metrics": {}, "demographic": {}, "location": {}, "effective_date": None, "created_at": 1,
                "updated_at": 1} for i in range(n)]
        bulk_insert(conn, endpoints, eps, ignore_conflicts_on=["workspace_id", "endpoint_id"])
    with db.connect() as conn:
        nums = dict(conn.execute(select(customer_values.c.path, customer_values.c.num)).all())
        opt_outs = dict(conn.execute(select(endpoints.c.endpoint_id, endpoints.c.opt_out)).all())
    assert {p: nums[p] for p in ("p0", "p1", "p2", "p3", "qp1", "qp3")} == {
        "p0": 0, "p1": 1.25, "p2": None, "p3": 2**53, "qp1": 1.25, "qp3": 2**53}
    assert len(nums) == 2 * n
    assert opt_outs == {f"e{i}": bool([0, 1, True, False][i % 4]) for i in range(n)}


@pytest.mark.parametrize("n, options", [(COPY_FROM_ROWS - 1, {"ignore_conflicts_on": ["workspace_id", "user_id"]}),
                                        (COPY_FROM_ROWS, {"ignore_conflicts_on": ["workspace_id", "user_id"]}),
                                        (COPY_FROM_ROWS, {"returning": ["id"]}), (COPY_FROM_ROWS, {})])
def test_a_value_longer_than_its_column_is_never_stored_cut(db, n, options):
    """PostgreSQL refuses a 256-character user id in the 255-character column on every path (an explicit cast
    of the array path's values to varchar(255) used to cut them silently, merging ids that share a prefix);
    SQLite does not enforce lengths and keeps the ids whole."""
    workspace = create_workspace(db, "bulk")
    rows = [{"workspace_id": workspace.id, "user_id": "x" * 255 + str(i % 10), "attributes": {}, "metrics": {},
             "timezone": None, "locale": None, "created_at": 1, "updated_at": 1} for i in range(n)]
    rows = rows[:10] + [{**r, "user_id": f"short{i}"} for i, r in enumerate(rows[10:])]
    postgres = db.dialect.name == "postgresql"
    try:
        with writing(db) as conn:
            bulk_insert(conn, users, rows, **options)
    except Exception as exc:
        assert postgres, exc
        assert "too long" in str(exc)
    else:
        assert not postgres, "PostgreSQL stored a value longer than its column"
    with db.connect() as conn:
        stored = {u for (u,) in conn.execute(select(users.c.user_id).where(users.c.workspace_id == workspace.id))}
    assert stored == (set() if postgres else {r["user_id"] for r in rows})


@pytest.mark.parametrize("n", [1, 120])
def test_an_update_where_in_changes_only_the_rows_whose_status_allows_it(db, n):
    """tidings.engine.messaging.dispatch records a send's results this way: a row another attempt finished
    keeps what that attempt recorded."""
    workspace = create_workspace(db, "bulk")
    rows = [{"workspace_id": workspace.id, "message_id": f"m{i}", "idempotency_key": f"k{i}", "endpoint": "e",
             "channel": "smtp", "channel_type": "EMAIL", "address": f"a{i}@example.com", "transactional": True,
             "status": "sent" if i % 3 == 0 else "queued", "attempts": 0, "created_at": 1, "updated_at": 1,
             "content": {"subject": "old"}} for i in range(n)]
    with writing(db) as conn:
        ids = [pk for (pk,) in bulk_insert(conn, messages, rows, returning=["id"])]
    changes = [{"status": "failed", "error": AWKWARD[i % len(AWKWARD)], "permanent": [True, False, None][i % 3],
                "attempts": 3, "updated_at": 2, "next_attempt_at": None if i % 2 else 10**12 + i,
                "content": {"subject": AWKWARD[i % len(AWKWARD)], "n": i} if i % 2 else None, "id": pk}
               for i, pk in enumerate(ids)]
    with writing(db) as conn:
        updated = bulk_update_where_in(conn, messages, changes, "id", "status", ("queued", "retrying"))
    assert updated == {pk for i, pk in enumerate(ids) if i % 3 != 0}
    with db.connect() as conn:
        stored = {r.id: r for r in conn.execute(select(messages).where(messages.c.workspace_id == workspace.id))}
    for i, (pk, change) in enumerate(zip(ids, changes)):
        got = stored[pk]
        if i % 3 == 0:
            assert (got.status, got.attempts, got.error, got.content) == ("sent", 0, None, {"subject": "old"})
        else:
            assert (got.status, got.error, got.permanent, got.attempts, got.next_attempt_at, got.content) == (
                "failed", change["error"], change["permanent"], 3, change["next_attempt_at"], change["content"])


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite does not enforce lengths
def test_an_update_where_in_refuses_a_value_longer_than_its_column(db):
    workspace = create_workspace(db, "bulk")
    with writing(db) as conn:
        (pk,), = bulk_insert(conn, messages, [{
            "workspace_id": workspace.id, "message_id": "m", "idempotency_key": "k", "endpoint": "e", "channel": "smtp",
            "channel_type": "EMAIL", "address": "a@example.com", "transactional": True, "status": "queued",
            "attempts": 0, "created_at": 1, "updated_at": 1}], returning=["id"])
    with pytest.raises(DataError), writing(db) as conn:
        bulk_update_where_in(conn, messages, [{"status": "sent", "provider_message_id": "x" * 513, "id": pk}],
                             "id", "status", ("queued",))
