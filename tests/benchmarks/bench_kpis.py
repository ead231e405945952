"""Pinpoint KPIs (tidings.engine.analytics.kpis.compute, what GetApplicationDateRangeKpi and
GetJourneyDateRangeKpi call) over N customers' message events.

    PYTHONPATH=. python tests/benchmarks/bench_kpis.py [N] [--database-url URL]

SQLite by default; `--database-url postgresql://...` runs in a schema of its own, dropped at the end. Each
customer gets a journey email (`_email.send`, `_email.delivered`, a third `_email.open`) and a transactional
email (`_email.send`, `_email.delivered`) over the last 30 days, generated in SQL; then each KPI is timed over
the 31 days before now, p50/p95 of 10, next to the same events counted by name alone (the index, no JSON read). The values are checked against the counts generated.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select, text

from tests.benchmarks.bench_console import percentiles, timed
from tests.benchmarks.bench_database import add_database_argument, bench_database
from tidings.engine.analytics import kpis
from tidings.engine.customers.tables import events
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.workspaces.service import create_key

SQL = {
    "sqlite": {"obj": "json_object", "true": "json('true')", "rand": "(abs(random()) % {n})",
               "series": "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < :n) ",
               "from": "FROM c"},
    "postgresql": {"obj": "json_build_object", "true": "true", "rand": "(floor(random() * {n})::bigint)",
                   "series": "", "from": "FROM generate_series(1, :n) c(i)"},
}
KPIS = [("application", "email-open-rate"), ("application", "unique-deliveries-grouped-by-date"),
        ("application", "txn-emails-sent"), ("journey", "journey-emails-opened"),
        ("journey", "emails-opened-grouped-by-journey-activity"),
        # the journey "sale" counted as a campaign (api/pinpoint/kpis.py passes the application's campaign ids)
        ("application", "email-open-rate-grouped-by-campaign"),
        ("application", "attempted-deliveries-grouped-by-campaign-activity")]


def fill(db, workspace_id: int, n: int) -> None:
    d = SQL[db.dialect.name]
    rand = d["rand"].format(n=30 * 86_400_000)
    users = (d["series"] + "INSERT INTO users (workspace_id, user_id, attributes, metrics, timezone, locale, "
             "created_at, updated_at) SELECT :ws, 'u' || i, '{}', '{}', 'UTC', 'en', :now, :now " + d["from"])
    journey = f"{d['obj']}('journey_id', 'sale', 'journey_version', 1, 'step_id', 'mail', 'channel', 'smtp', " \
              "'message_id', 'j' || id, 'endpoint_id', user_id || '-email')"
    txn = f"{d['obj']}('transactional', {d['true']}, 'channel', 'smtp', 'message_id', 't' || id, " \
          "'endpoint_id', user_id || '-email')"
    inserts = [users] + [
        "INSERT INTO event (workspace_id, event_id, user_pk, name, ts, attributes, metrics, received_at) "
        f"SELECT :ws, '{prefix}' || id || '-{kind}', id, '_email.{kind}', :now - {rand}, {attrs}, '{{}}', :now "
        f"FROM users WHERE workspace_id = :ws {where}"
        for prefix, attrs in (("j", journey), ("t", txn))
        for kind, where in (("send", ""), ("delivered", ""), ("open", "AND id % 3 = 0" if prefix == "j" else "AND 0 = 1"))]
    with db.begin() as conn:
        for sql in inserts:
            conn.execute(text(sql), {"ws": workspace_id, "n": n, "now": now_ms()})


def main(n: int, database_url: str | None) -> None:
    with bench_database(database_url, Path(tempfile.mkdtemp()), "bench.db") as url:
        db = make_engine(url)
        migrate(db)
        workspace, _ = create_key(db, "bench")
        t = time.perf_counter()
        fill(db, workspace.id, n)
        print(f"{db.dialect.name}: {n} customers, {5 * n + n // 3} message events made in {time.perf_counter() - t:.1f} s")
        until = now_ms() + 1000
        since = until - 31 * 86_400_000

        def baseline():  # the same events counted by name alone: the index, no JSON read
            with db.connect() as conn:
                return conn.execute(select(events.c.name, func.count()).where(
                    events.c.workspace_id == workspace.id, events.c.name.like("\\_email.%", escape="\\"),
                    events.c.ts >= since, events.c.ts < until).group_by(events.c.name)).all()
        b50, b95 = percentiles(timed(baseline, 10))
        print(f"  baseline: the events counted by name (no JSON)      p50 {b50 * 1000:7.0f} ms  p95 {b95 * 1000:7.0f} ms")
        for context, name in KPIS:
            journey_id = "sale" if context == "journey" else None

            def once(name=name, journey_id=journey_id):
                return kpis.compute(db, workspace, name, since_ms=since, until_ms=until, journey_id=journey_id,
                                    campaign_ids=["sale"])
            rows = once()
            expected = {"email-open-rate": (n // 3) / n, "txn-emails-sent": n, "journey-emails-opened": n // 3,
                        "emails-opened-grouped-by-journey-activity": n // 3,
                        "email-open-rate-grouped-by-campaign": (n // 3) / n,
                        "attempted-deliveries-grouped-by-campaign-activity": n,
                        "unique-deliveries-grouped-by-date": None}[name]
            total = sum(v for row in rows for _, v in row.values)
            assert expected is None and total <= n or total == expected, (name, rows, expected)
            p50, p95 = percentiles(timed(once, 10))
            print(f"  {context:11} {name:50} rows {len(rows):3}  first {rows[0].values if rows else None}  "
                  f"p50 {p50 * 1000:7.0f} ms  p95 {p95 * 1000:7.0f} ms  ({p50 / b50:.0f}x the baseline)")
        db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=100_000)
    add_database_argument(parser)
    args = parser.parse_args()
    main(args.n, args.database_url)
