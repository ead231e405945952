"""PostgreSQL: two first evaluations of one rule at once both want its scan index; the second waits for the
first and uses the index it made, instead of failing on the catalog's unique index name when the first commits."""
from __future__ import annotations

import threading
import time

import pytest

from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.segments import typed_index
from tidings.engine.workspaces.service import ensure_workspace


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_second_evaluation_waits_for_the_scan_index_the_first_is_making(database_url):
    db = make_engine(database_url)
    try:
        migrate(db)
        workspace_id = ensure_workspace(db, "acme").id
        with db.begin() as conn:
            typed_index.register(conn, workspace_id, {("u", "attributes.plan")}, {})
        wanted = {"needed": {"k0", "t0"}, "lead": ["t0"], "seekable": {"t0"}, "path_of_slot": {0: "attributes.plan"}}
        second: dict = {}

        def evaluate_too() -> None:
            try:
                with db.begin() as conn:
                    second["name"] = typed_index.ensure_scan_index(conn, workspace_id, **wanted)
            except Exception as exc:  # what the user's request would have answered
                second["error"] = exc

        first = db.connect()
        transaction = first.begin()
        name = typed_index.ensure_scan_index(first, workspace_id, **wanted)  # made, not yet committed
        assert name is not None
        other = threading.Thread(target=evaluate_too)
        other.start()
        time.sleep(1.0)  # the second is now waiting on the first
        assert other.is_alive()
        transaction.commit()
        first.close()
        other.join(30)
        assert second == {"name": name}
    finally:
        db.dispose()
