"""Full evaluation of a 5-condition rule over N customers vs a plain SQLite json_extract scan, same run.

    PYTHONPATH=. python tests/benchmarks/bench_full_eval.py [N]      (default 1,000,000)

Customers are generated in SQL (one INSERT ... SELECT over a recursive counter); the typed index for the
rule's paths, its wide-table slots and the rule's scan index (a covering index, see docs/segments.md) are
then built by the same backfill a new segment triggers (timed separately, reported as "indexed").
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.wiring import wire
from tidings.engine.segments import typed_index as paths
from tidings.engine.segments.evaluate import compile_segment, ensure_indexed, full_members
from tidings.engine.workspaces.service import ensure_workspace

RULE = {"and": [
    {"==": [{"var": "attributes.plan"}, "pro"]},
    {">": [{"var": "metrics.spend"}, 50]},
    {"in": [{"var": "attributes.country"}, ["US", "CA", "GB"]]},
    {">=": [{"var": "metrics.age"}, 18]},
    {"!=": [{"var": "attributes.status"}, "churned"]},
]}
BASELINE = """SELECT id FROM users WHERE workspace_id = :ws
  AND json_extract(attributes, '$.plan') = 'pro' AND json_extract(metrics, '$.spend') > 50
  AND json_extract(attributes, '$.country') IN ('US', 'CA', 'GB') AND json_extract(metrics, '$.age') >= 18
  AND coalesce(json_extract(attributes, '$.status'), '') <> 'churned'"""
LOAD = """WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < :n)
INSERT INTO users (workspace_id, user_id, attributes, metrics, timezone, locale, created_at, updated_at)
SELECT :ws, 'u' || i,
  json_object('plan', CASE abs(random()) % 3 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' ELSE 'team' END,
              'country', CASE abs(random()) % 6 WHEN 0 THEN 'US' WHEN 1 THEN 'FR' WHEN 2 THEN 'DE' WHEN 3 THEN 'CA'
                                                  WHEN 4 THEN 'GB' ELSE 'JP' END,
              'status', CASE abs(random()) % 3 WHEN 0 THEN 'active' WHEN 1 THEN 'churned' ELSE 'trial' END,
              'name', 'n' || i),
  json_object('spend', abs(random()) % 201, 'age', 10 + abs(random()) % 71),
  NULL, NULL, 0, 0
FROM c"""


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main(n: int) -> None:
    path = Path(tempfile.mkdtemp()) / "bench.db"
    wire()
    db = make_engine(f"sqlite:///{path}")
    migrate(db)
    ws = ensure_workspace(db, "bench")
    seg = compile_segment("bench", "dynamic", RULE)
    with db.begin() as conn:
        _, t_load = timed(lambda: conn.execute(text(LOAD), {"n": n, "ws": ws.id}))
    with db.begin() as conn:
        _, t_index = timed(lambda: ensure_indexed(conn, ws.id, seg))
        conn.exec_driver_sql("ANALYZE")
    with db.connect() as conn:
        scan = ", ".join(paths.scan_indexes(conn, ws.id)) or "none"
    print(f"generated {n:,} customers in {t_load:.1f}s; indexed the rule's 5 paths in {t_index:.1f}s "
          f"(scan index: {scan})")
    with db.connect() as conn:
        runs = []
        for _ in range(3):  # best of three for both, alternating
            base, t_base = timed(lambda: set(conn.execute(text(BASELINE), {"ws": ws.id}).scalars()))
            ours, t_ours = timed(lambda: full_members(conn, ws.id, seg, 0))
            assert ours == base, (len(ours), len(base))
            runs.append((t_base, t_ours))
    t_base, t_ours = min(b for b, _ in runs), min(o for _, o in runs)
    print(f"members {len(ours):,}; json_extract scan {t_base:.3f}s; Tidings full evaluation {t_ours:.3f}s; "
          f"speed-up x{t_base / t_ours:.2f}  (target >= 4)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
