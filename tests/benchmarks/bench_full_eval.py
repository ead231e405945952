"""Full evaluation of a 5-condition rule over N customers vs a plain SQLite json_extract scan, same run.

    PYTHONPATH=. python tests/benchmarks/bench_full_eval.py [N]
"""
from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, text

from engine.db import make_engine, migrate
from engine.models import users
from engine.segment_models import customer_values
from engine.segments.documents import value_rows
from engine.segments.evaluate import compile_segment, full_members
from engine.workspaces import ensure_workspace

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


class Row:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def load(db, ws_id: int, n: int) -> None:
    rnd = random.Random(7)
    with db.begin() as conn:
        for start in range(0, n, 20_000):
            batch, cvs = [], []
            for i in range(start, min(n, start + 20_000)):
                u = Row(id=i + 1, user_id=f"u{i}", timezone=None, locale=None,
                        attributes={"plan": rnd.choice(["free", "pro", "team"]), "country": rnd.choice(["US", "FR", "DE", "CA", "GB", "JP"]),
                                    "status": rnd.choice(["active", "churned", "trial"]), "name": f"n{i}"},
                        metrics={"spend": rnd.randint(0, 200), "age": rnd.randint(10, 80)})
                batch.append({"id": u.id, "workspace_id": ws_id, "user_id": u.user_id, "attributes": u.attributes,
                              "metrics": u.metrics, "timezone": None, "locale": None, "created_at": 0, "updated_at": 0})
                cvs += value_rows(ws_id, u, [])
            conn.execute(insert(users), batch)
            conn.execute(insert(customer_values), cvs)


def main(n: int) -> None:
    path = Path(tempfile.mkdtemp()) / "bench.db"
    db = make_engine(f"sqlite:///{path}")
    migrate(db)
    ws = ensure_workspace(db, "bench")
    t = time.perf_counter()
    load(db, ws.id, n)
    print(f"loaded {n:,} customers in {time.perf_counter() - t:.1f}s")
    with db.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        t = time.perf_counter()
        base = set(conn.execute(text(BASELINE), {"ws": ws.id}).scalars())
        t_base = time.perf_counter() - t
        seg = compile_segment("bench", "dynamic", RULE)
        t = time.perf_counter()
        ours = full_members(conn, ws.id, seg, 0)
        t_ours = time.perf_counter() - t
    assert ours == base, (len(ours), len(base))
    print(f"members {len(ours):,}; json_extract scan {t_base:.2f}s; Tidings full evaluation {t_ours:.2f}s; "
          f"speed-up x{t_base / t_ours:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
