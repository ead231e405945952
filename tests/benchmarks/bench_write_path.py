"""Per-write latency with 100 active dynamic segments (p50/p99), vs the same write with none, same run.

    PYTHONPATH=. python tests/benchmarks/bench_write_path.py [--database-url URL]

SQLite by default; `--database-url postgresql://...` runs in a fresh schema of that server, dropped at the end.

The writes run under the collector settings of the API process (api/app.py: start-up objects frozen,
young-generation threshold 50,000), where these writes run in production.
"""
from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from tests.benchmarks.bench_database import add_database_argument, bench_database, store_name
from tidings.engine.customers.users import upsert_user, upsert_users
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.wiring import wire
from tidings.engine.customers.schemas import UserBatchItem, UserFields
from tidings.engine.segments.service import SegmentIn, create_segment
from tidings.engine.workspaces.service import ensure_workspace


def timed(db, workspace, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        upsert_user(db, workspace, f"w{i % 50}", UserFields(attributes={"plan": ["free", "pro"][i % 2], "n": i % 40}))
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


def main(database_url: str | None) -> None:
    with bench_database(database_url, Path(tempfile.mkdtemp()), "w.db") as url:
        run(url)


def run(url: str) -> None:
    wire()
    db = make_engine(url)
    print(store_name(url))
    migrate(db)
    workspace = ensure_workspace(db, "bench")
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    base = timed(db, workspace, 300)
    for i in range(100):
        create_segment(db, workspace, SegmentIn(id=f"s{i}", name=f"s{i}", rule={"and": [
            {"==": [{"var": "attributes.plan"}, "pro"]}, {">": [{"var": "attributes.n"}, i % 40]}]}))
    ours = timed(db, workspace, 300)
    pct = lambda xs, p: xs[int(len(xs) * p) - 1]
    print(f"single write, 0 segments: p50 {pct(base, .5):.2f} ms p99 {pct(base, .99):.2f} ms")
    print(f"single write, 100 segments: p50 {pct(ours, .5):.2f} ms p99 {pct(ours, .99):.2f} ms")
    items = [UserBatchItem(user_id=f"b{i}", attributes={"plan": "pro", "n": i % 40}) for i in range(5000)]
    t = time.perf_counter()
    for k in range(4):
        upsert_users(db, workspace, items[k * 1250:(k + 1) * 1250])
    print(f"batched writes with 100 segments: {5000 / (time.perf_counter() - t):,.0f} customers/s")
    db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_database_argument(parser)
    main(parser.parse_args().database_url)
