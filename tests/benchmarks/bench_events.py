"""Message events: feedback-webhook ingestion and the event stream to a local webhook receiver, next to raw
inserts of the same events in the same run.

    .venv/bin/python tests/benchmarks/bench_events.py [--messages 20000] [--database-url URL]

SQLite by default (the raw baseline in a SQLite file of its own); `--database-url postgresql://...` runs the API
on a fresh schema of that server and the raw baseline (psycopg executemany) into a table raw_event beside it.

* feedback, generic format: signed JSON batches of 1,000 `delivered` events to POST /feedback/bench/smtp
* feedback, Twilio: one signed form callback per event (what Twilio sends), 16 in flight
* raw: executemany of the same event rows into an equivalent table (same indexes), 1,000 per transaction
* stream: POST /v1/events in batches of 1,000 while the API's delivery loop sends them (batches of 500) to a
  webhook receiver on 127.0.0.1; events/s from the first POST to the last record received, lag = received
  at the receiver - stored by the API
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import httpx
import uvicorn

# The webhook receiver listens on loopback: allowed the way an operator would (tidings.engine.platform.egress).
os.environ.setdefault("TIDINGS_ALLOW_PRIVATE_DESTINATIONS", "127.0.0.1")

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.benchmarks.bench_database import add_database_argument, bench_database, store_name  # noqa: E402
from tidings.api.app import create_app  # noqa: E402
from tidings.engine.customers import on_write as changes  # noqa: E402
from tidings.engine.platform.config import Settings  # noqa: E402
from tidings.engine.ops.devstack import free_port  # noqa: E402
from tidings.engine.customers.events import record  # noqa: E402
from tidings.engine.customers.schemas import EventIn  # noqa: E402
from tidings.engine.workspaces.service import create_key  # noqa: E402
from tidings.plugins.twilio import twilio_signature  # noqa: E402
from tidings.plugins.webhook import sign  # noqa: E402

BATCH = 1000
TWILIO = {"account_sid": "AC1", "auth_token": "tok", "from_number": "+15550000000"}
SMTP = {"host": "127.0.0.1", "from_address": "Bench <bench@example.com>"}
FEEDBACK_SECRET = "bench-feedback-secret-0123"


class Receiver:
    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self.count = 0
        self.last_at = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                for rec in json.loads(body)["records"]:
                    stored = datetime.fromisoformat(rec["arrival_timestamp"].replace("Z", "+00:00")).timestamp()
                    outer.lags_ms.append((now - stored) * 1000)
                    outer.count += 1
                outer.last_at = time.perf_counter()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/in"


def seed(db, workspace_id: int, n: int) -> None:
    """n email messages (provider ids p<i>) and n/10 SMS messages (SM<i>), as messaging records them."""
    with db.begin() as conn:
        batch = []
        for i in range(n):
            batch.append(EventIn(name="_email.send", id=f"m{i}:send", user_id=f"u{i % 2000}",
                                 attributes={"message_id": f"m{i}", "channel": "email", "provider_message_id": f"p{i}",
                                             "journey_id": "j", "journey_version": 1, "step_id": "s1"}))
        for i in range(n // 10):
            batch.append(EventIn(name="_sms.send", id=f"s{i}:send", user_id=f"u{i % 2000}",
                                 attributes={"message_id": f"s{i}", "channel": "sms", "provider_message_id": f"SM{i}",
                                             "transactional": True}))
        for start in range(0, len(batch), 5000):
            _, rows, _ = record(conn, workspace_id, batch[start:start + 5000])
            changes.events_recorded(conn, workspace_id, rows)


def raw_inserts(n: int, url: str) -> float:
    """events/s of plain executemany into an event table of the same shape: SQLite, or PostgreSQL beside Tidings."""
    postgres = url.startswith("postgresql")
    if postgres:
        import psycopg

        con = psycopg.connect(url, autocommit=True)
        key, json_type, mark = "id BIGSERIAL PRIMARY KEY", "JSONB", "%s"
    else:
        con = sqlite3.connect(Path(tempfile.mkdtemp()) / "raw.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        key, json_type, mark = "id INTEGER PRIMARY KEY", "JSON", "?"
    con.execute(f"CREATE TABLE raw_event ({key}, workspace_id INT, event_id TEXT, user_pk INT, "
                f"endpoint_pk INT, name TEXT, ts BIGINT, attributes {json_type}, metrics {json_type}, received_at BIGINT, "
                "UNIQUE(workspace_id, event_id))")
    con.execute("CREATE INDEX raw_a ON raw_event(user_pk, name, ts)")
    con.execute("CREATE INDEX raw_b ON raw_event(workspace_id, ts)")
    con.execute("CREATE INDEX raw_c ON raw_event(workspace_id, name, ts)")
    sql = ("INSERT INTO raw_event (workspace_id, event_id, user_pk, endpoint_pk, name, ts, attributes, metrics, "
           f"received_at) VALUES ({', '.join([mark] * 9)})")
    rows = [(1, f"m{i}:delivered", i % 2000 + 1, None, "_email.delivered", 0,
             json.dumps({"message_id": f"m{i}", "channel": "email", "provider_message_id": f"p{i}", "journey_id": "j",
                         "journey_version": 1, "step_id": "s1", "provider_status": "250 ok"}), "{}", 0)
            for i in range(n)]
    t = time.perf_counter()
    for start in range(0, n, BATCH):
        if postgres:
            with con.transaction(), con.cursor() as cur:
                cur.executemany(sql, rows[start:start + BATCH])
        else:
            con.execute("BEGIN")
            con.executemany(sql, rows[start:start + BATCH])
            con.execute("COMMIT")
    rate = n / (time.perf_counter() - t)
    con.close()
    return rate


async def run(n: int, home: Path, url: str) -> dict[str, float]:
    from cryptography.fernet import Fernet

    # the channels' feedback secrets are stored sealed: a deployment without an encryption key refuses them
    os.environ.setdefault("TIDINGS_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    settings = Settings.from_env(TIDINGS_HOME=str(home), TIDINGS_DATABASE_URL=url)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    workspace, key = create_key(app.state.db, "bench")
    seed(app.state.db, workspace.id, n)
    out: dict[str, float] = {}
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        # feedback is verified with the channel's own config (docs/channels.md: the former /v1/feedback-settings)
        r = await client.put("/v1/channels/smtp", json={"config": SMTP, "feedback_secret": FEEDBACK_SECRET})
        assert r.status_code == 200, r.text
        r = await client.put("/v1/channels/twilio-sms", json={"config": TWILIO})
        assert r.status_code == 200, r.text

        # generic signed batches
        t = time.perf_counter()
        for start in range(0, n, BATCH):
            body = json.dumps({"events": [{"event_type": "delivered", "provider_message_id": f"p{i}",
                                           "details": {"status": "250 ok"}}
                                          for i in range(start, min(n, start + BATCH))]}).encode()
            r = await client.post("/feedback/bench/smtp", content=body, headers={"X-Tidings-Signature": sign(FEEDBACK_SECRET, body)})
            assert r.status_code == 200 and r.json()["recorded"] == min(BATCH, n - start), r.text[:300]
        out["feedback_batch"] = n / (time.perf_counter() - t)

        # Twilio: one callback per event
        m = n // 10
        sem = asyncio.Semaphore(16)
        url = f"{base}/feedback/bench/twilio-sms"

        async def one(i: int) -> None:
            form = {"MessageSid": f"SM{i}", "MessageStatus": "delivered", "To": "+15550001111"}
            async with sem:
                r = await client.post("/feedback/bench/twilio-sms", content=urlencode(form), headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": twilio_signature(TWILIO["auth_token"], url, form)})
            assert r.status_code == 200 and r.json()["recorded"] == 1, r.text[:300]

        t = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(m)))
        out["feedback_twilio"] = m / (time.perf_counter() - t)

        # the stream
        rcv = Receiver()
        r = await client.put("/v1/event-streams/bench", json={
            "kind": "webhook", "config": {"url": rcv.url, "secret": "k"},
            "batch_size": 500})
        assert r.status_code == 201, r.text
        t = time.perf_counter()
        for b in range(n // BATCH):
            r = await client.post("/v1/events", json={"events": [
                {"id": f"x{b}-{i}", "user_id": f"u{i % 2000}", "name": "purchase", "attributes": {"sku": f"s{i % 50}"}}
                for i in range(BATCH)]})
            assert r.status_code == 202
        total = (n // BATCH) * BATCH
        deadline = time.perf_counter() + 120
        while rcv.count < total and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        assert rcv.count == total, f"stream delivered {rcv.count} of {total}"
        out["stream"] = total / (rcv.last_at - t)
        lags = sorted(rcv.lags_ms)
        out["lag_p50"] = statistics.median(lags)
        out["lag_p95"] = lags[int(len(lags) * 0.95) - 1]
        rcv.server.shutdown()
    server.should_exit = True
    await task
    app.state.db.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    add_database_argument(parser)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp())
    with bench_database(args.database_url, home) as url:
        raw = raw_inserts(args.messages, url)
        r = asyncio.run(run(args.messages, home, url))
    print(f"raw {store_name(url)} executemany of the same event rows : {raw:10,.0f} events/s")
    print(f"feedback, signed JSON batches of {BATCH}       : {r['feedback_batch']:10,.0f} events/s "
          f"({r['feedback_batch'] / raw:.1%} of raw)")
    print(f"feedback, Twilio callbacks (1 per request)    : {r['feedback_twilio']:10,.0f} events/s "
          f"({r['feedback_twilio'] / raw:.1%} of raw)")
    print(f"event stream to a local webhook receiver      : {r['stream']:10,.0f} events/s "
          f"({r['stream'] / raw:.1%} of raw), lag p50 {r['lag_p50']:.0f} ms, p95 {r['lag_p95']:.0f} ms")


if __name__ == "__main__":
    main()
