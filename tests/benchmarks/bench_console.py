"""The web console's server time per page and the segment builder's size answer, at N customers.

    PYTHONPATH=. python tests/benchmarks/bench_console.py [N] [--events-per-customer K] [--database-url URL]
        [--builder-only [--exact-runs R] [--fill]]

SQLite by default; `--database-url postgresql://...` runs on PostgreSQL (in a schema of its own, dropped at
the end). Customers (with an email endpoint each) and K events each are generated in SQL, and the welcome
journey's history as the runtime leaves it: a run per customer that took its `hello` step, and that step's
`_email.send` and `_email.delivered` message events (so the journey page and the overview count real rows).
The journeys/ folder is applied (templates, segments, journeys; nothing activated). Then, in the same run:

- the builder's answer for an unsaved 3-condition rule (tidings.engine.segments.estimate.estimate_rule, what
  POST /console/segments/preview calls), p50/p95 of 20: exact (N at most the threshold), and estimated from
  a sample (the threshold set below N), next to the full evaluation of the same rule saved as a segment
  (tidings.engine.segments.evaluate.full_members): target < 1 s;
- each page's time in-process through Litestar's TestClient, signed in, p50/p95 of 30, next to GET /health
  through the same client (the baseline: what the client and the app's plumbing cost): target p95 <= 200 ms.

`--builder-only`: the builder's part alone, over N customers and nothing else (no endpoints, events, journey
history or journeys/ applied: those are the pages' data, and 10 events each at 1,000,000 customers take
longer to generate than the builder's part to run); the exact answer p50/p95 of R (`--exact-runs`, default
20: at 1,000,000 each is a scan of every customer), the estimate p50/p95 of 20, the save's first answer,
then the saved rule's full evaluation p50/p95 of 5 as the segment is then (its paths being indexed: the
direct evaluation) and, with `--fill`, again once the typed index is filled.
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from litestar.testing import TestClient
from sqlalchemy import text

from tests.benchmarks.bench_database import add_database_argument, bench_database

from tidings.api.app import create_app
from tidings.engine.journeys.apply import apply
from tidings.engine.platform.clock import now_ms
from tidings.engine.platform.config import Settings
from tidings.engine.segments import backfill, service as segments
from tidings.engine.segments.evaluate import compile_segment, full_members
from tidings.engine.segments.estimate import estimate_rule
from tidings.engine.workspaces.service import create_key

RULE = {"and": [
    {"==": [{"var": "attributes.plan"}, "pro"]},
    {">": [{"var": "metrics.spend"}, 50]},
    {"in": [{"var": "attributes.country"}, ["US", "CA", "GB"]]},
]}
# SQLite and PostgreSQL spell the generators differently: {rand_n} is a random integer in [0, n).
SQL = {
    "sqlite": {"rand": "(abs(random()) % {n})", "obj": "json_object", "false": "0",
               "series_users": "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < :n) ",
               "from_users": "FROM c",
               "series_events": "WITH RECURSIVE k(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM k WHERE j < :k) ",
               "from_events": "FROM users u, k"},
    "postgresql": {"rand": "(floor(random() * {n})::bigint)", "obj": "json_build_object", "false": "false",
                   "series_users": "", "from_users": "FROM generate_series(1, :n) c(i)",
                   "series_events": "", "from_events": "FROM users u, generate_series(1, :k) k(j)"},
}


def generators(dialect: str) -> list[str]:
    d = SQL[dialect]

    def rand(n: int) -> str:
        return d["rand"].format(n=n)

    obj = d["obj"]
    users = (d["series_users"] + "INSERT INTO users (workspace_id, user_id, attributes, metrics, timezone, locale, "
             f"created_at, updated_at) SELECT :ws, 'u' || i, {obj}('plan', CASE {rand(3)} WHEN 0 THEN 'free' "
             f"WHEN 1 THEN 'pro' ELSE 'team' END, 'country', CASE {rand(6)} WHEN 0 THEN 'US' WHEN 1 THEN 'FR' "
             "WHEN 2 THEN 'DE' WHEN 3 THEN 'CA' WHEN 4 THEN 'GB' ELSE 'JP' END, 'first_name', 'n' || i), "
             f"{obj}('spend', {rand(201)}), 'UTC', 'en', :now, :now " + d["from_users"])
    endpoints = ("INSERT INTO endpoint (workspace_id, endpoint_id, user_pk, channel, address, attributes, metrics, "
                 "opt_out, demographic, location, created_at, updated_at) SELECT :ws, user_id || '-email', id, "
                 f"'EMAIL', user_id || '@example.com', '{{}}', '{{}}', {d['false']}, '{{}}', '{{}}', :now, :now "
                 "FROM users WHERE workspace_id = :ws")
    events = (d["series_events"] + "INSERT INTO event (workspace_id, event_id, user_pk, name, ts, attributes, "
              f"metrics, received_at) SELECT :ws, u.user_id || '-' || k.j, u.id, CASE {rand(4)} WHEN 0 THEN "
              "'app_open' WHEN 1 THEN 'view_item' WHEN 2 THEN 'add_to_cart' ELSE 'purchase' END, "
              f"(:now - {rand(7776000000)}), '{{}}', '{{}}', :now " + d["from_events"] + " WHERE u.workspace_id = :ws")
    # the welcome journey's history: a run per customer at its hello step, its send and delivery events
    runs = ("INSERT INTO journey_run (workspace_id, journey_id, version, user_pk, cohort, workflow_id, current_step, "
            "status, entered_at, updated_at, steps, entry) SELECT :ws, 'welcome', 1, id, 1, 'bench', 'hello', "
            "'completed', :now - 3600000, :now - 3600000, '[{\"step\": \"hello\", \"hop\": 0, \"at\": 1, "
            "\"outcome\": \"sent\"}]', '{}' FROM users WHERE workspace_id = :ws")
    message_events = [
        "INSERT INTO event (workspace_id, event_id, user_pk, name, ts, attributes, metrics, received_at) "
        f"SELECT :ws, 'm' || id || '{suffix}', id, '{name}', :now - {rand(86400000)}, "
        f"{obj}('journey_id', 'welcome', 'journey_version', 1, 'step_id', 'hello', 'channel', 'smtp', "
        "'message_id', 'm' || id), '{}', :now FROM users WHERE workspace_id = :ws"
        for name, suffix in (("_email.send", "-send"), ("_email.delivered", "-delivered"))]
    return [users, endpoints, events, runs, *message_events]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(n: int, per_customer: int, database_url: str | None, builder_only: bool = False, exact_runs: int = 20,
         fill: bool = False) -> None:
    with bench_database(database_url, Path(tempfile.mkdtemp()), "bench.db") as url:
        if builder_only:
            run_builder(n, url, exact_runs, fill)
        else:
            run(n, per_customer, url)


def run_builder(n: int, url: str, exact_runs: int, fill: bool) -> None:
    """The builder's answer for RULE over n customers (users rows only), next to the saved rule's evaluation."""
    backfill.IN_PROCESS = False  # the index is filled below, when asked, not by a thread competing for the CPU
    settings = Settings.from_env(TIDINGS_HOME=str(Path(tempfile.mkdtemp())), TIDINGS_DATABASE_URL=url)
    with TestClient(create_app(settings)) as client:
        db = client.app.state.db
        workspace, _ = create_key(db, "bench")
        t = time.perf_counter()
        with db.begin() as conn:
            conn.execute(text(generators(conn.dialect.name)[0]), {"n": n, "ws": workspace.id, "now": now_ms()})
        print(f"{db.dialect.name}: generated {n:,} customers in {time.perf_counter() - t:.1f}s (nothing else)", flush=True)
        first = timed(lambda: estimate_rule(db, workspace, RULE, exact_up_to=n), 1)[0]
        answers = timed(lambda: estimate_rule(db, workspace, RULE, exact_up_to=n), exact_runs)
        exact = estimate_rule(db, workspace, RULE, exact_up_to=n)
        (a50, a95) = percentiles(answers)
        print(f"unsaved 3-condition rule ({exact.size:,} members): exact first {first * 1000:.0f} ms, p50 "
              f"{a50 * 1000:.0f} ms, p95 {a95 * 1000:.0f} ms of {exact_runs} (target < 1000 ms at 100,000)", flush=True)
        estimates = timed(lambda: estimate_rule(db, workspace, RULE, exact_up_to=0), 20)
        guess = estimate_rule(db, workspace, RULE, exact_up_to=0)
        (e50, e95) = percentiles(estimates)
        inside = "inside" if guess.low <= exact.size <= guess.high else "OUTSIDE"
        print(f"estimated from {guess.evaluated:,} sampled: {guess.size:,} ({guess.low:,}-{guess.high:,}, true "
              f"{exact.size:,}: {inside} the interval, error {100 * (guess.size - exact.size) / exact.size:+.2f}%) "
              f"p50 {e50 * 1000:.0f} ms, p95 {e95 * 1000:.0f} ms (target < 1000 ms at 1,000,000); "
              f"estimate / exact x{e50 / a50:.3f}", flush=True)
        saved, t_save = timed_once(lambda: segments.create_segment(
            db, workspace, segments.SegmentIn(name="bench", rule=RULE, id="bench")))
        assert saved.size == exact.size, (saved.size, exact.size)
        seg = compile_segment("bench", "dynamic", RULE)
        with db.connect() as conn:
            fulls = timed(lambda: full_members(conn, workspace.id, seg, now_ms()), 5)
        (f50, f95) = percentiles(fulls)
        print(f"saved: first answer {t_save * 1000:.0f} ms (state {saved.state}); its full evaluation then p50 "
              f"{f50 * 1000:.0f} ms, p95 {f95 * 1000:.0f} ms; exact answer / full evaluation x{a50 / f50:.2f}", flush=True)
        if fill:
            t = time.perf_counter()
            backfill.fill(db, workspace.id)
            print(f"typed index filled in {time.perf_counter() - t:.1f}s", flush=True)
            with db.connect() as conn:
                full_members(conn, workspace.id, seg, now_ms())  # builds its scan index (SQLite)
                fulls = timed(lambda: full_members(conn, workspace.id, seg, now_ms()), 5)
            answers = timed(lambda: estimate_rule(db, workspace, RULE, exact_up_to=n), min(exact_runs, 5))
            (f50, f95), (a50, a95) = percentiles(fulls), percentiles(answers)
            print(f"filled: full evaluation p50 {f50 * 1000:.0f} ms, p95 {f95 * 1000:.0f} ms; the builder's exact "
                  f"answer p50 {a50 * 1000:.0f} ms, p95 {a95 * 1000:.0f} ms", flush=True)


def timed_once(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run(n: int, per_customer: int, url: str) -> None:
    settings = Settings.from_env(TIDINGS_HOME=str(Path(tempfile.mkdtemp())), TIDINGS_DATABASE_URL=url)
    with TestClient(create_app(settings)) as client:
        db = client.app.state.db
        workspace, key = create_key(db, "bench")
        t = time.perf_counter()
        with db.begin() as conn:
            params = {"n": n, "ws": workspace.id, "now": now_ms(), "k": per_customer}
            for sql in generators(conn.dialect.name):
                conn.execute(text(sql), params)
        # no ANALYZE: Tidings never runs it, and with statistics of 4 event names over 1,000,000 events SQLite
        # scans the table for the metrics' 48-name IN list instead of searching (workspace, name, ts)
        print(f"{db.dialect.name}: generated {n:,} customers, {n:,} endpoints, {n * per_customer:,} events, {n:,} "
              f"welcome runs and {2 * n:,} message events in {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        apply(db, workspace, Path(__file__).resolve().parents[2] / "journeys")
        print(f"applied journeys/ (segments evaluated over every customer) in {time.perf_counter() - t:.1f}s")

        # ---- the builder's answer vs the saved rule's full evaluation ----
        first = timed(lambda: estimate_rule(db, workspace, RULE, exact_up_to=n), 1)[0]  # builds the rule's path indexes
        answers = timed(lambda: estimate_rule(db, workspace, RULE, exact_up_to=n), 20)
        estimates = timed(lambda: estimate_rule(db, workspace, RULE, exact_up_to=0), 20)
        saved = segments.create_segment(db, workspace, segments.SegmentIn(name="bench", rule=RULE, id="bench"))
        seg = compile_segment("bench", "dynamic", RULE)
        with db.connect() as conn:
            fulls = timed(lambda: full_members(conn, workspace.id, seg, now_ms()), 20)
        assert estimate_rule(db, workspace, RULE, exact_up_to=n).size == saved.size
        guess = estimate_rule(db, workspace, RULE, exact_up_to=0)
        (a50, a95), (e50, e95), (f50, f95) = percentiles(answers), percentiles(estimates), percentiles(fulls)
        print(f"unsaved 3-condition rule ({saved.size:,} members): first answer {first * 1000:.0f} ms; "
              f"exact p50 {a50 * 1000:.0f} ms, p95 {a95 * 1000:.0f} ms (target < 1000 ms); "
              f"full evaluation of the saved rule p50 {f50 * 1000:.0f} ms, p95 {f95 * 1000:.0f} ms; "
              f"answer / full evaluation x{a50 / f50:.2f}")
        print(f"estimated from {guess.evaluated:,} sampled: {guess.size:,} ({guess.low:,}-{guess.high:,}, true "
              f"{saved.size:,}) p50 {e50 * 1000:.0f} ms, p95 {e95 * 1000:.0f} ms; estimate / exact x{e50 / a50:.2f}")

        # ---- pages ----
        token = re.search(r'name="_csrf_token" value="([^"]+)"', client.get("/console/sign-in").text).group(1)
        assert client.post("/console/sign-in", data={"key": key, "_csrf_token": token}).status_code == 200
        pages = {
            "health (baseline)": "/health",
            "overview": "/console/",
            "find by address": f"/console/customers?q=u{n // 2}@example.com",
            "customer profile": f"/console/customers/u{n // 2}",
            "segments": "/console/segments",
            "segment": "/console/segments/trial-users",
            "journeys": "/console/journeys",
            "journey": "/console/journeys/welcome",
            "messages": "/console/messages",
            "templates": "/console/templates",
            "template preview": f"/console/templates/welcome-email?user_id=u{n // 2}",
        }
        base50 = None
        for name, path in pages.items():
            assert client.get(path).status_code == 200, path
            p50, p95 = percentiles(timed(lambda path=path: client.get(path), 30))
            base50 = base50 or p50
            verdict = "" if path == "/health" else ("  ok" if p95 <= 0.2 else "  OVER 200 ms")
            print(f"{name:<18} p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  x{p50 / base50:6.1f} health{verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=100_000)
    parser.add_argument("--events-per-customer", type=int, default=10)
    add_database_argument(parser)
    parser.add_argument("--builder-only", action="store_true", help="the segment builder's part alone, over "
                        "customers only (no events, journeys or pages)")
    parser.add_argument("--exact-runs", type=int, default=20, help="with --builder-only: exact answers timed")
    parser.add_argument("--fill", action="store_true", help="with --builder-only: fill the typed index after the "
                        "save and time the full evaluation again")
    args = parser.parse_args()
    main(args.n, args.events_per_customer, args.database_url, args.builder_only, args.exact_runs, args.fill)
