"""PostgreSQL: a new segment's first answer (the direct evaluation over the customers' jsonb, while its paths
are indexed) can run as a parallel scan. A correlated subquery in its prefilters (the kind of an array used to
test its items with EXISTS over jsonb_array_elements) makes PostgreSQL plan the whole scan serially: at
1,000,000 customers that scan was the largest part of a 19 s first answer."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from sqlalchemy import insert

from tidings.engine.customers.tables import users
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.segments.documents import documents
from tidings.engine.segments.evaluate import compile_segment, full_evaluation_query, full_members, python_member
from tidings.engine.workspaces.service import ensure_workspace

RULE = {"and": [{"==": [{"var": "attributes.plan"}, "pro"]}, {">": [{"var": "metrics.spend"}, 50]},
                {"in": ["vip", {"var": "attributes.tags"}]}]}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_direct_evaluation_of_a_new_rule_can_use_parallel_workers(database_url):
    db = make_engine(database_url)
    try:
        migrate(db)
        workspace = ensure_workspace(db, "acme")
        # (lists of other than strings come from imports and older data: the API takes lists of strings)
        with db.begin() as conn:
            conn.execute(insert(users), [{"workspace_id": workspace.id, "user_id": f"u{i}", "created_at": 0, "updated_at": 0,
                                          "attributes": {"plan": ["pro", "free"][i % 2],
                                                         "tags": [["vip"], ["vip", 1], [["vip"]]][i % 3]},
                                          "metrics": {"spend": i}} for i in range(300)])
        seg = compile_segment("new", "dynamic", RULE)
        with db.begin() as conn:
            query, params, _ = full_evaluation_query(conn, workspace.id, seg, 0, register=False, direct=True)
            for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
                conn.exec_driver_sql(f"SET LOCAL {setting} = 0")  # parallel wherever it is allowed at all
            plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {query}"), params))
            assert re.search(r"Parallel [A-Za-z ]*Scan on users", plan), plan
            # and it answers as the reference evaluator does, lists of every sort included
            pks = list(conn.execute(text("SELECT id FROM users")).scalars())
            want = {pk for pk, doc in documents(conn, workspace.id, pks, seg.facts, 0).items() if python_member(seg, doc)}
            assert 0 < len(want) < 300
            assert full_members(conn, workspace.id, seg, 0, register=False, direct=True) == want
    finally:
        db.dispose()
