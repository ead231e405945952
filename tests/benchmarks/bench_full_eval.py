"""A new segment over N customers whose attribute paths were never indexed, then its full evaluation vs a
plain JSON scan of the same rows, same run; SQLite, or a fresh schema of `--database-url` (PostgreSQL).

    PYTHONPATH=. python tests/benchmarks/bench_full_eval.py [N] [--database-url postgresql://...]   (N: 1,000,000)

Customers are generated in SQL (a recursive counter on SQLite, generate_series on PostgreSQL). Then:
1. the segment is saved through the service (`create_segment`, the API's path) with the 5-condition rule:
   the save registers the rule's paths and answers from a direct evaluation of the users' JSON: "first
   answer" is that call's wall time, its size checked against the plain scan's count;
2. the typed index is filled by the set-based backfill (segments/backfill.py), batch by batch as the
   saving process's thread would (timed: "backfill");
3. full evaluation from the filled index vs the plain scan (SQLite json_extract, PostgreSQL ->>), best of
   3 each, alternating, member sets compared.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from tests.benchmarks.bench_database import add_database_argument, bench_database

from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.wiring import wire
from tidings.engine.segments import backfill, typed_index as paths
from tidings.engine.segments.evaluate import compile_segment, ensure_indexed, full_members
from tidings.engine.segments.service import SegmentIn, create_segment
from tidings.engine.workspaces.service import ensure_workspace

RULE = {"and": [
    {"==": [{"var": "attributes.plan"}, "pro"]},
    {">": [{"var": "metrics.spend"}, 50]},
    {"in": [{"var": "attributes.country"}, ["US", "CA", "GB"]]},
    {">=": [{"var": "metrics.age"}, 18]},
    {"!=": [{"var": "attributes.status"}, "churned"]},
]}
BASELINE = {
    "sqlite": """SELECT id FROM users WHERE workspace_id = :ws
  AND json_extract(attributes, '$.plan') = 'pro' AND json_extract(metrics, '$.spend') > 50
  AND json_extract(attributes, '$.country') IN ('US', 'CA', 'GB') AND json_extract(metrics, '$.age') >= 18
  AND coalesce(json_extract(attributes, '$.status'), '') <> 'churned'""",
    "postgresql": """SELECT id FROM users WHERE workspace_id = :ws
  AND attributes ->> 'plan' = 'pro' AND (metrics ->> 'spend')::float8 > 50
  AND attributes ->> 'country' IN ('US', 'CA', 'GB') AND (metrics ->> 'age')::float8 >= 18
  AND coalesce(attributes ->> 'status', '') <> 'churned'""",
}
LOAD = {
    "sqlite": """WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < :n)
INSERT INTO users (workspace_id, user_id, attributes, metrics, timezone, locale, created_at, updated_at)
SELECT :ws, 'u' || i,
  json_object('plan', CASE abs(random()) % 3 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' ELSE 'team' END,
              'country', CASE abs(random()) % 6 WHEN 0 THEN 'US' WHEN 1 THEN 'FR' WHEN 2 THEN 'DE' WHEN 3 THEN 'CA'
                                                  WHEN 4 THEN 'GB' ELSE 'JP' END,
              'status', CASE abs(random()) % 3 WHEN 0 THEN 'active' WHEN 1 THEN 'churned' ELSE 'trial' END,
              'name', 'n' || i),
  json_object('spend', abs(random()) % 201, 'age', 10 + abs(random()) % 71),
  NULL, NULL, 0, 0
FROM c""",
    "postgresql": """INSERT INTO users (workspace_id, user_id, attributes, metrics, timezone, locale, created_at, updated_at)
SELECT :ws, 'u' || i,
  jsonb_build_object('plan', (ARRAY['free', 'pro', 'team'])[1 + floor(random() * 3)::int],
                    'country', (ARRAY['US', 'FR', 'DE', 'CA', 'GB', 'JP'])[1 + floor(random() * 6)::int],
                    'status', (ARRAY['active', 'churned', 'trial'])[1 + floor(random() * 3)::int], 'name', 'n' || i),
  jsonb_build_object('spend', floor(random() * 201)::int, 'age', 10 + floor(random() * 71)::int),
  NULL, NULL, 0, 0
FROM generate_series(1, :n) i""",
}


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


@contextmanager
def database(url: str | None):
    """A SQLite file in a temporary folder, or a fresh schema of the PostgreSQL at `url` (dropped after)."""
    with bench_database(url, Path(tempfile.mkdtemp()), "bench.db") as url:
        db = make_engine(url)
        try:
            migrate(db)
            yield db
        finally:
            db.dispose()


def analyze(db, tables: list[str]) -> None:
    if db.dialect.name == "postgresql":  # VACUUM needs autocommit; it also sets the visibility map
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for t in tables:
                conn.exec_driver_sql(f"VACUUM ANALYZE {t}")
    else:
        with db.begin() as conn:
            conn.exec_driver_sql("ANALYZE")


def main(n: int, url: str | None) -> None:
    wire()
    backfill.IN_PROCESS = False  # the benchmark runs the batches itself, timed
    with database(url) as db:
        dialect = db.dialect.name
        workspace = ensure_workspace(db, "bench")
        with db.begin() as conn:
            _, t_load = timed(lambda: conn.execute(text(LOAD[dialect]), {"n": n, "ws": workspace.id}))
        analyze(db, ["users"])
        with db.connect() as conn:
            base_count = len(conn.execute(text(BASELINE[dialect]), {"ws": workspace.id}).all())
        out, t_first = timed(lambda: create_segment(db, workspace, SegmentIn(name="bench", rule=RULE, id="bench")))
        assert out.size == base_count, (out.size, base_count)
        print(f"{dialect}: generated {n:,} customers in {t_load:.1f}s")
        print(f"new segment: first answer {t_first:.2f}s (size {out.size:,}, state {out.state}, "
              f"progress {out.progress})")
        batches, t_fill = timed(lambda: backfill.fill(db, workspace.id))
        seg = compile_segment("bench", "dynamic", RULE)
        with db.begin() as conn:
            ensure_indexed(conn, workspace.id, seg)  # the scan index (SQLite), as the first full evaluation would
        analyze(db, ["users", paths.wide_table(workspace.id), "customer_value"])
        print(f"backfill of the rule's 5 paths: {t_fill:.1f}s in {batches} batches of {backfill.BATCH:,} "
              f"({n * 5 / t_fill:,.0f} values/s)")
        with db.connect() as conn:
            runs = []
            for _ in range(3):  # best of three for both, alternating
                base, t_base = timed(lambda: set(conn.execute(text(BASELINE[dialect]), {"ws": workspace.id}).scalars()))
                ours, t_ours = timed(lambda: full_members(conn, workspace.id, seg, 0))
                assert ours == base, (len(ours), len(base))
                runs.append((t_base, t_ours))
            direct, t_direct = timed(lambda: full_members(conn, workspace.id, seg, 0, register=False, direct=True))
            assert direct == base
        t_base, t_ours = min(b for b, _ in runs), min(o for _, o in runs)
        scan = "->>" if dialect == "postgresql" else "json_extract"
        print(f"members {len(ours):,}; plain {scan} scan {t_base:.3f}s; Tidings full evaluation {t_ours:.3f}s; "
              f"speed-up x{t_base / t_ours:.2f}  (target >= 4); direct evaluation (no index) {t_direct:.3f}s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    add_database_argument(ap)
    args = ap.parse_args()
    sys.exit(main(args.n, args.database_url))
