"""Ingest throughput: the API path against a raw executemany of the same rows, in one run.

    PYTHONPATH=. python tests/benchmarks/bench_ingest.py [--batches 10] [--database-url URL]

SQLite by default (the raw baseline in a SQLite file of its own); `--database-url postgresql://...` runs the
API on a fresh schema of that server and the raw baseline (psycopg executemany) into tables beside it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.benchmarks.bench_database import add_database_argument, bench_database, store_name  # noqa: E402
from tidings.engine.ops.devstack import free_port  # noqa: E402

BATCH = 10_000


def users_batch(b: int) -> list[dict]:
    return [{"user_id": f"b{b}-u{i}", "attributes": {"plan": "pro" if i % 3 else "free", "city": f"c{i % 50}"},
             "metrics": {"ltv": i * 1.5}, "timezone": "UTC"} for i in range(BATCH)]


def events_batch(b: int) -> list[dict]:
    return [{"id": f"b{b}-e{i}", "user_id": f"b{b}-u{i % 2000}", "name": "purchase",
             "timestamp": "2026-11-01T10:00:00Z", "attributes": {"sku": f"s{i % 100}"}, "metrics": {"price": 9.5}}
            for i in range(BATCH)]


class Raw:
    """The baseline: plain executemany of the same rows into equivalent tables, one transaction per batch, on
    the same database as the API: a SQLite file of its own, or tables raw_* beside Tidings' in its schema."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            import psycopg

            self.con = psycopg.connect(url, autocommit=True)
            key, json_type = "id BIGSERIAL PRIMARY KEY", "JSONB"
        else:
            self.con = sqlite3.connect(Path(tempfile.mkdtemp()) / "raw.db", isolation_level=None)
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=NORMAL")
            key, json_type = "id INTEGER PRIMARY KEY", "JSON"
        self.con.execute(f"CREATE TABLE raw_users ({key}, workspace_id INT, user_id TEXT, attributes {json_type}, "
                         f"metrics {json_type}, timezone TEXT, locale TEXT, created_at BIGINT, updated_at BIGINT, "
                         "UNIQUE(workspace_id, user_id))")
        self.con.execute(f"CREATE TABLE raw_event ({key}, workspace_id INT, event_id TEXT, user_pk INT, name TEXT, "
                         f"ts BIGINT, attributes {json_type}, metrics {json_type}, received_at BIGINT, "
                         "UNIQUE(workspace_id, event_id))")
        self.con.execute("CREATE INDEX ix_raw_ev ON raw_event(user_pk, name, ts)")

    def _timed(self, sql: str, rows: list[tuple]) -> float:
        if self.postgres:
            sql = sql.replace("?", "%s")
            t = time.perf_counter()
            with self.con.transaction(), self.con.cursor() as cur:
                cur.executemany(sql, rows)
            return time.perf_counter() - t
        t = time.perf_counter()
        self.con.execute("BEGIN")
        self.con.executemany(sql, rows)
        self.con.execute("COMMIT")
        return time.perf_counter() - t

    def users(self, b: int) -> float:
        rows = [(1, u["user_id"], json.dumps(u["attributes"]), json.dumps(u["metrics"]), "UTC", None, 0, 0)
                for u in users_batch(b)]
        return self._timed("INSERT INTO raw_users (workspace_id, user_id, attributes, metrics, timezone, locale, "
                           "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)", rows)

    def events(self, b: int) -> float:
        rows = [(1, e["id"], i % 2000 + 1, e["name"], 0, json.dumps(e["attributes"]), json.dumps(e["metrics"]), 0)
                for i, e in enumerate(events_batch(b))]
        return self._timed("INSERT INTO raw_event (workspace_id, event_id, user_pk, name, ts, attributes, metrics, "
                           "received_at) VALUES (?,?,?,?,?,?,?,?)", rows)


async def run(batches: int, home: Path, url: str) -> dict[str, list[tuple[float, float]]]:
    """Alternate baseline and API batch by batch, so both see the same machine conditions."""
    env = {**os.environ, "TIDINGS_HOME": str(home), "TIDINGS_DATABASE_URL": url}
    tidings = str(Path(sys.executable).parent / "tidings")
    key = subprocess.run([tidings, "keys", "create", "--workspace", "bench"], env=env, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    port = free_port()
    # The API in a process of its own, as deployed: the client's payloads do not share its heap.
    server = subprocess.Popen([tidings, "api", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health")
            break
        except httpx.ConnectError:
            await asyncio.sleep(0.05)
    raw = Raw(url)
    timings: dict[str, list[tuple[float, float]]] = {"users": [], "events": []}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}) as client:
        for b in range(batches):
            body = json.dumps({"items": users_batch(b)}).encode()
            t = time.perf_counter()
            r = await client.post("/v1/users/batch", content=body)
            api_s = time.perf_counter() - t
            assert r.status_code == 200 and r.json()["written"] == BATCH, r.text[:300]
            timings["users"].append((api_s, raw.users(b)))
            body = json.dumps({"events": events_batch(b)}).encode()
            t = time.perf_counter()
            r = await client.post("/v1/events", content=body)
            api_s = time.perf_counter() - t
            assert r.status_code == 202 and r.json()["stored"] == BATCH, r.text[:300]
            timings["events"].append((api_s, raw.events(b)))
    server.terminate()
    server.wait(10)
    raw.con.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=10)
    add_database_argument(parser)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp())
    with bench_database(args.database_url, home) as url:
        timings = asyncio.run(run(args.batches, home, url))
    print(store_name(url))
    for kind, pairs in timings.items():
        api_rate = len(pairs) * BATCH / sum(a for a, _ in pairs)
        raw_rate = len(pairs) * BATCH / sum(r for _, r in pairs)
        median_ratio = statistics.median(r / a for a, r in pairs)
        print(f"{kind:6}: API {api_rate:9,.0f}/s   raw executemany {raw_rate:9,.0f}/s   "
              f"ratio {api_rate / raw_rate:6.1%} overall, {median_ratio:6.1%} median of {len(pairs)} rounds  (target >= 25%)")


if __name__ == "__main__":
    main()
