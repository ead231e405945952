"""What `timezone: customer` broadcasts and the journey customer document cost, vs baselines in the same run.

    PYTHONPATH=. python tests/benchmarks/bench_customer_zones.py [N] [--database-url URL]     (default 100,000)

SQLite by default; `--database-url postgresql://...` runs in a fresh schema of that server, dropped at the end.

N customers in 24 zones (generated in SQL), one EMAIL endpoint each, all in one segment. Measures
1. an idle firing (nobody's 09:00 is due: the distinct-zone scan and the window math), and a due firing
   (Tokyo's customers paged out of the segment 1,000 at a time, filtered by zone in SQL), against paging
   the whole segment unfiltered (what a plain broadcast reads);
2. the `customer` document of a 500-customer batch (split rules, entry filters): the segments' builder
   (profile + endpoints + memberships) against the former users-only query.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import text

from tests.benchmarks.bench_database import add_database_argument, bench_database, store_name
from tidings.engine.platform.db import make_engine, migrate, rows_where_in
from tidings.engine.wiring import wire
from tidings.engine.journeys.runtime import audience
from tidings.engine.journeys import ir
from tidings.engine.journeys.runtime.localtime import firing_filter, local_schedule
from tidings.engine.customers.tables import users
from tidings.engine.segments.documents import documents
from tidings.engine.workspaces.service import ensure_workspace

ZONES = ["Asia/Tokyo", "America/New_York", "Europe/Paris", "Europe/London", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Sydney", "America/Los_Angeles", "America/Chicago", "America/Sao_Paulo", "Africa/Lagos",
         "Asia/Shanghai", "Asia/Singapore", "Europe/Berlin", "Europe/Madrid", "America/Mexico_City",
         "America/Toronto", "Asia/Dubai", "Asia/Jakarta", "Pacific/Auckland", "Asia/Seoul", "Europe/Moscow",
         "America/St_Johns", "Pacific/Honolulu"]
LOAD_SQLITE = """WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < :n)
INSERT INTO users (workspace_id, user_id, attributes, metrics, timezone, locale, created_at, updated_at)
SELECT :ws, 'u' || i, json_object('plan', 'pro'), json_object('spend', i % 200),
  CASE WHEN i % 25 = 0 THEN NULL ELSE json_extract(:zones, '$[' || (i % 24) || ']') END, NULL, 0, 0 FROM c"""
LOAD_POSTGRESQL = """INSERT INTO users (workspace_id, user_id, attributes, metrics, timezone, locale, created_at,
  updated_at)
SELECT :ws, 'u' || i, jsonb_build_object('plan', 'pro'), jsonb_build_object('spend', i % 200),
  CASE WHEN i % 25 = 0 THEN NULL ELSE CAST(:zones AS jsonb) ->> (i % 24) END, NULL, 0, 0 FROM generate_series(1, :n) c(i)"""
ENDPOINTS = """INSERT INTO endpoint (workspace_id, endpoint_id, user_pk, channel, address, attributes, metrics, opt_out,
  demographic, location, effective_date, created_at, updated_at)
SELECT workspace_id, user_id || '-email', id, 'EMAIL', user_id || '@example.com', '{}', '{}', :no, '{}', '{}', NULL, 0, 0
FROM users WHERE workspace_id = :ws"""
MEMBERS = "INSERT INTO segment_member (workspace_id, segment_id, user_pk, since) SELECT :ws, 'all', id, 0 FROM users WHERE workspace_id = :ws"


def best(fn, rounds=5):
    out, times = None, []
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)


def page_all(db, workspace, zones):
    with db.connect() as conn:
        after, total = 0, 0
        while True:
            pks = audience.members_page(conn, workspace, "all", after, 1000, zones)
            total += len(pks)
            if len(pks) < 1000:
                return total
            after = pks[-1]


def main(n: int, database_url: str | None) -> None:
    with bench_database(database_url, Path(tempfile.mkdtemp()), "bench.db") as url:
        run(n, url)


def run(n: int, url: str) -> None:
    import json

    wire()
    db = make_engine(url)
    migrate(db)
    print(store_name(url))
    workspace = ensure_workspace(db, "bench").id
    load = LOAD_POSTGRESQL if db.dialect.name == "postgresql" else LOAD_SQLITE
    with db.begin() as conn:
        conn.execute(text(load), {"n": n, "ws": workspace, "zones": json.dumps(ZONES)})
        conn.execute(text(ENDPOINTS), {"ws": workspace, "no": False})
        conn.execute(text(MEMBERS), {"ws": workspace})
    schedule = local_schedule(ir.BroadcastEntry(segment="all", cron="0 9 * * *", timezone="customer"))
    idle_at = int(datetime(2026, 1, 15, 0, 15, tzinfo=timezone.utc).timestamp() * 1000)
    tokyo_at = int(datetime(2026, 1, 15, 0, 0, tzinfo=timezone.utc).timestamp() * 1000)

    def firing(at):
        with db.connect() as conn:
            return firing_filter(schedule, at, audience.stored_zones(conn, workspace), "UTC")

    idle, t_idle = best(lambda: firing(idle_at))
    due, t_filter = best(lambda: firing(tokyo_at))
    assert idle.empty and due.names == ("Asia/Seoul", "Asia/Tokyo"), (idle, due)
    admitted, t_due = best(lambda: page_all(db, workspace, due), 3)
    everyone, t_all = best(lambda: page_all(db, workspace, None), 3)
    print(f"N={n}: idle firing {t_idle * 1000:.1f} ms; due firing: zone filter {t_filter * 1000:.1f} ms + "
          f"{admitted} customers paged in {t_due * 1000:.0f} ms; unfiltered page-through of {everyone}: "
          f"{t_all * 1000:.0f} ms (due firing = {(t_filter + t_due) / t_all:.2f}x the unfiltered read)")

    with db.connect() as conn:
        batch = list(conn.execute(text("SELECT id FROM users WHERE workspace_id = :ws ORDER BY id LIMIT 500"),
                                  {"ws": workspace}).scalars())
        _, t_old = best(lambda: rows_where_in(conn, users, ["id", "user_id", "attributes", "metrics", "timezone",
                                                            "locale"], "id", batch), 20)
        docs, t_new = best(lambda: documents(conn, workspace, batch, {}, 0), 20)
    assert len(docs) == 500 and all(d["endpoints"] for d in docs.values())
    print(f"customer documents, 500 customers: segments' builder {t_new * 1000:.1f} ms vs users-only "
          f"{t_old * 1000:.1f} ms ({t_new / t_old:.1f}x)")
    db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=100_000)
    add_database_argument(parser)
    args = parser.parse_args()
    main(args.n, args.database_url)
