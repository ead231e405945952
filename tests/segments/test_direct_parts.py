"""A new segment's first answer, the direct evaluation of the users' JSON, is the reference evaluator's: with
the shortcuts its SQL takes (a string compared alike whatever its kind is not classified; an equality reads the
value json_extract gives), and on SQLite when the scan runs in user pk ranges at once, on connections of
their own, while the saving transaction holds the write lock."""
from __future__ import annotations

import pytest
from sqlalchemy import insert, text

from tidings.engine.customers.tables import users
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import writing
from tidings.engine.segments import backfill, evaluate
from tidings.engine.segments.documents import documents
from tidings.engine.segments.evaluate import compile_segment, full_evaluation_query, full_members, python_member
from tidings.engine.segments.service import SegmentIn, create_segment
from tidings.engine.workspaces.service import create_key
from tests.segments.test_backfill import ODD

A, M, K = {"var": "attributes.a"}, {"var": "metrics.m"}, {"var": 'attributes.q"k'}
RULES = [
    {"and": [{"==": [A, "abc"]}, {"!=": [M, "x"]}]},
    {"and": [{"in": [A, ["abc", "5", "[1]", "{}", "[]"]]}, {">": [M, 0]}]},
    {"and": [{"==": [A, "[]"]}, {"!": {"var": "locale"}}]},  # an empty array's JSON text is "[]" too
    {"and": [{"==": [A, '{"x":1}']}, {"==": [M, 5]}]},
    {"and": [{"!=": [A, "abc"]}, {"<": [M, 5]}]},
    {"and": [{"in": ["a", A]}, {">=": [M, "5"]}]},
    {"and": [{"==": [A, "\u0130nf"]}, {"!=": [M, "inf"]}]},  # strings whose kind SQL leaves to Python
    {"and": [{"==": [A, "1" * 17]}, {"==": [M, 5]}]},
    {"and": [{"==": [A, "1" * 17]}, {">": [M, 0]}]},  # a number's string SQL leaves to Python (17 digits)
    {"and": [{"==": [A, "1e3"]}, {"<": [M, 5000]}]},
    {"and": [{"==": [K, "abc"]}, {">": [M, 0]}]},  # a key SQLite's JSON path cannot quote
    {"and": [{"==": [{"var": "user_id"}, "u7"]}, {"!": [M]}]},
    {"and": [{"in": [A, [5, "abc", True]]}, {"!==": [M, None]}, {"<=": [A, "zzz"]}]},
]


@pytest.fixture
def many_parts(monkeypatch):
    """Scan in parts from the first customer (the workspace here is far below the size that otherwise takes it)."""
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(evaluate, "SCAN_PARTS", 3)
    monkeypatch.setattr(backfill, "IN_PROCESS", False)  # the first answer alone, not the index filling after
    monkeypatch.setattr(backfill, "SYNC_FILL_ROWS", 0)  # (a workspace this small is otherwise filled at once)


def test_the_direct_evaluation_answers_as_the_reference_evaluator(db, many_parts):
    workspace, _ = create_key(db, "direct")
    others = [5, "abc", None, 0.5]
    with writing(db) as conn:
        conn.execute(insert(users), [
            {"workspace_id": workspace.id, "user_id": f"u{i}", "created_at": 0, "updated_at": 0,
             "attributes": {"a": v, 'q"k': v}, "metrics": {} if m is None else {"m": m},
             "locale": v if isinstance(v, str) and i % 2 else None}
            for i, (v, m) in enumerate((v, m) for v in ODD for m in [v, *others])])
        pks = list(conn.execute(text("SELECT id FROM users WHERE workspace_id = :w"), {"w": workspace.id}).scalars())
    sizes = []
    for n, rule in enumerate(RULES):
        seg = compile_segment(f"s{n}", "dynamic", rule)
        with writing(db) as conn:
            docs = documents(conn, workspace.id, pks, seg.facts, now_ms())
            expected = {pk for pk, d in docs.items() if python_member(seg, d)}
            _, params, _ = full_evaluation_query(conn, workspace.id, seg, 0, register=False, direct=True)
            parts = evaluate._scan_parts(conn, seg, params)
            assert len(parts) == (3 if db.dialect.name == "sqlite" else 0)
            assert full_members(conn, workspace.id, seg, now_ms(), register=False, direct=True) == expected, rule
        # saved: its members come from the same evaluation, in the saving transaction
        out = create_segment(db, workspace, SegmentIn(name=f"s{n}", rule=rule, id=f"s{n}"))
        assert out.state == "evaluating"
        with db.connect() as conn:
            members = set(conn.execute(text("SELECT user_pk FROM segment_member WHERE workspace_id = :w AND "
                                            "segment_id = :s"), {"w": workspace.id, "s": f"s{n}"}).scalars())
        assert members == expected, rule
        sizes.append(len(expected))
    assert sum(1 for size in sizes if size) >= len(RULES) // 2, sizes  # most rules have members to find
