"""Ingest throughput: the API path against a raw SQLite executemany of the same rows, in one run.

    .venv/bin/python tests/benchmarks/bench_ingest.py [--batches 5]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from api.app import create_app  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.devstack import free_port  # noqa: E402
from engine.workspaces import create_key  # noqa: E402

BATCH = 10_000


def users_batch(b: int) -> list[dict]:
    return [{"user_id": f"b{b}-u{i}", "attributes": {"plan": "pro" if i % 3 else "free", "city": f"c{i % 50}"},
             "metrics": {"ltv": i * 1.5}, "timezone": "UTC"} for i in range(BATCH)]


def events_batch(b: int) -> list[dict]:
    return [{"id": f"b{b}-e{i}", "user_id": f"b{b}-u{i % 2000}", "name": "purchase",
             "timestamp": "2026-11-01T10:00:00Z", "attributes": {"sku": f"s{i % 100}"}, "metrics": {"price": 9.5}}
            for i in range(BATCH)]


def raw_sqlite(batches: int) -> tuple[float, float]:
    """The baseline: plain executemany of the same rows into equivalent tables, one transaction per batch."""
    path = Path(tempfile.mkdtemp()) / "raw.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, workspace_id INT, user_id TEXT, attributes JSON, "
                "metrics JSON, timezone TEXT, locale TEXT, created_at INT, updated_at INT, UNIQUE(workspace_id, user_id))")
    con.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, workspace_id INT, event_id TEXT, user_pk INT, name TEXT, "
                "ts INT, attributes JSON, metrics JSON, received_at INT, UNIQUE(workspace_id, event_id))")
    con.execute("CREATE INDEX ix_ev ON event(user_pk, name, ts)")
    users_s = events_s = 0.0
    for b in range(batches):
        rows = [(1, u["user_id"], json.dumps(u["attributes"]), json.dumps(u["metrics"]), "UTC", None, 0, 0)
                for u in users_batch(b)]
        t = time.perf_counter()
        con.execute("BEGIN")
        con.executemany("INSERT INTO users (workspace_id, user_id, attributes, metrics, timezone, locale, created_at, "
                        "updated_at) VALUES (?,?,?,?,?,?,?,?)", rows)
        con.execute("COMMIT")
        users_s += time.perf_counter() - t
        rows = [(1, e["id"], i % 2000 + 1, e["name"], 0, json.dumps(e["attributes"]), json.dumps(e["metrics"]), 0)
                for i, e in enumerate(events_batch(b))]
        t = time.perf_counter()
        con.execute("BEGIN")
        con.executemany("INSERT INTO event (workspace_id, event_id, user_pk, name, ts, attributes, metrics, "
                        "received_at) VALUES (?,?,?,?,?,?,?,?)", rows)
        con.execute("COMMIT")
        events_s += time.perf_counter() - t
    return batches * BATCH / users_s, batches * BATCH / events_s


async def api_path(batches: int) -> tuple[float, float]:
    home = Path(tempfile.mkdtemp())
    settings = Settings.from_env(TIDINGS_HOME=str(home), TIDINGS_DATABASE_URL=f"sqlite:///{home / 'tidings.db'}")
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    _, key = create_key(app.state.db, "bench")
    users_s = events_s = 0.0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        for b in range(batches):
            body = json.dumps({"items": users_batch(b)}).encode()
            t = time.perf_counter()
            r = await client.post("/v1/users/batch", content=body, headers={"Content-Type": "application/json"})
            users_s += time.perf_counter() - t
            assert r.status_code == 200 and r.json()["written"] == BATCH, r.text[:300]
            body = json.dumps({"events": events_batch(b)}).encode()
            t = time.perf_counter()
            r = await client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
            events_s += time.perf_counter() - t
            assert r.status_code == 202 and r.json()["stored"] == BATCH, r.text[:300]
    server.should_exit = True
    await task
    return batches * BATCH / users_s, batches * BATCH / events_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    raw_u, raw_e = raw_sqlite(args.batches)
    api_u, api_e = asyncio.run(api_path(args.batches))
    print(f"users : API {api_u:10,.0f}/s   raw executemany {raw_u:10,.0f}/s   ratio {api_u / raw_u:6.1%}  (target >= 25%)")
    print(f"events: API {api_e:10,.0f}/s   raw executemany {raw_e:10,.0f}/s   ratio {api_e / raw_e:6.1%}  (target >= 25%)")


if __name__ == "__main__":
    main()
