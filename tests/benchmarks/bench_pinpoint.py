"""PutEvents through boto3 vs the native POST /v1/events doing the same work, in the same run.

A `tidings api` process on loopback; 100 endpoints exist. Each round sends the same shape both ways:
100 endpoints x 10 events (1,000 new events) per request, `--requests` requests, alternating native and
Pinpoint round by round. The Pinpoint path includes what a Pinpoint user pays: botocore's serialization and
SigV4 signing in the client, verification, model validation and the per-event results on the server.
Prints the median events/s of each and the ratio (target: Pinpoint >= 70% of native).

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_pinpoint.py [--rounds 5 --requests 10 --database-url URL]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
import httpx
from botocore.config import Config

from engine.channels.secrets import keyring, new_key
from engine.platform.db import make_engine, migrate
from engine.workspaces.access_keys import create_access_key
from engine.workspaces.service import create_key
from tests.processes import ApiProcess, tidings_env

ENDPOINTS, EVENTS_EACH = 100, 10
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-pinpoint-"))
    database_url = args.database_url or f"sqlite:///{home / 'tidings.db'}"
    env = tidings_env(home, database_url)
    env.setdefault("TIDINGS_ENCRYPTION_KEYS", new_key())  # Pinpoint secrets are sealed: the API needs a key
    db = make_engine(database_url)
    migrate(db)
    _, bearer = create_key(db, "bench")
    _, key_id, secret = create_access_key(db, "bench", keyring(env).seal)
    db.dispose()
    api = ApiProcess(env, home / "api.log").start()
    try:
        native = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {bearer}"}, timeout=120)
        native.post("/v1/endpoints/batch", json={"items": [
            {"endpoint_id": f"ep{i}", "channel": "EMAIL", "address": f"ep{i}@example.com"} for i in range(ENDPOINTS)]}
        ).raise_for_status()
        pinpoint = boto3.session.Session().client(
            "pinpoint", endpoint_url=api.url + "/pinpoint", region_name="us-east-1", aws_access_key_id=key_id,
            aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))
        stamp = datetime.now(UTC).isoformat()

        pid = api.proc.pid
        server_cpu: dict[str, list[float]] = {"native": [], "pinpoint": []}

        def measured(kind: str, round_fn) -> float:
            before = cpu_seconds(pid)
            rate = round_fn()
            server_cpu[kind].append((cpu_seconds(pid) - before) * 1000 / args.requests)
            return rate

        def native_round() -> float:
            start = time.perf_counter()
            for _ in range(args.requests):
                run = uuid.uuid4().hex[:8]
                native.post("/v1/events", json={"events": [
                    {"id": f"{run}-{i}-{j}", "endpoint_id": f"ep{i}", "name": "view", "timestamp": stamp,
                     "attributes": {"page": "home"}, "metrics": {"ms": 12.0}}
                    for i in range(ENDPOINTS) for j in range(EVENTS_EACH)]}).raise_for_status()
            return args.requests * ENDPOINTS * EVENTS_EACH / (time.perf_counter() - start)

        def pinpoint_round() -> float:
            start = time.perf_counter()
            for _ in range(args.requests):
                run = uuid.uuid4().hex[:8]
                answer = pinpoint.put_events(ApplicationId="bench", EventsRequest={"BatchItem": {
                    f"ep{i}": {"Endpoint": {}, "Events": {
                        f"{run}-{i}-{j}": {"EventType": "view", "Timestamp": stamp, "Attributes": {"page": "home"},
                                           "Metrics": {"ms": 12.0}} for j in range(EVENTS_EACH)}}
                    for i in range(ENDPOINTS)}})
                assert all(e["StatusCode"] == 202 for r in answer["EventsResponse"]["Results"].values()
                           for e in r["EventsItemResponse"].values())
            return args.requests * ENDPOINTS * EVENTS_EACH / (time.perf_counter() - start)

        native_round(), pinpoint_round()  # warm both paths
        natives, pinpoints = [], []
        for _ in range(args.rounds):
            natives.append(measured("native", native_round))
            pinpoints.append(measured("pinpoint", pinpoint_round))
        n, p = statistics.median(natives), statistics.median(pinpoints)
        print(f"PutEvents ({ENDPOINTS} endpoints x {EVENTS_EACH} events per request, {args.requests} requests "
              f"per round, median of {args.rounds} rounds, {'PostgreSQL' if args.database_url else 'SQLite'})")
        print(f"  native POST /v1/events: {n:,.0f} events/s  (rounds: {', '.join(f'{x:,.0f}' for x in natives)})")
        print(f"  Pinpoint via boto3:     {p:,.0f} events/s  (rounds: {', '.join(f'{x:,.0f}' for x in pinpoints)})")
        print(f"  Pinpoint / native: {p / n:.1%}  (target >= 70%)")
        cn, cp = statistics.median(server_cpu["native"]), statistics.median(server_cpu["pinpoint"])
        print(f"  API server CPU per request: native {cn:.0f} ms, Pinpoint {cp:.0f} ms; native / Pinpoint {cn / cp:.1%}")
    finally:
        api.stop()


if __name__ == "__main__":
    main()
