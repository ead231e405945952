"""PutEvents and SendMessages through boto3 vs the native API doing the same work, in the same run.

A `tidings api` process on loopback; 100 endpoints exist; its EMAIL channel is an aiosmtpd sink on loopback.
Each round sends the same shape both ways, `--requests` requests, alternating native and Pinpoint round by
round: PutEvents of 100 endpoints x 10 events (1,000 new events) vs POST /v1/events of the same events, and
SendMessages to 100 addresses vs POST /v1/messages to the same 100 addresses (same inline content). The
Pinpoint path includes what a Pinpoint user pays: botocore's validation, serialization and SigV4 signing in
the client, verification and model decoding on the server, per-item results. Prints the median rate of each,
the ratio (target: Pinpoint >= 70% of native), the API process's CPU per request and the client's (this
process's) CPU per request, which separates what the server costs from what boto3 itself costs.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_pinpoint.py [--rounds 5 --requests 10 --database-url URL]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
import httpx
from aiosmtpd.controller import Controller
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: tests/ helpers from the repository

from tests.processes import ApiProcess, tidings_env  # noqa: E402
from tidings.engine.channels.secrets import keyring, new_key
from tidings.engine.ops.devstack import free_port
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.workspaces.access_keys import create_access_key
from tidings.engine.workspaces.service import create_key


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += len(envelope.rcpt_tos)
        return "250 OK"

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
    sink, smtp_port = Sink(), free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    env.update(TIDINGS_SMTP_HOST="127.0.0.1", TIDINGS_SMTP_PORT=str(smtp_port), TIDINGS_SMTP_SECURITY="none",
               TIDINGS_SMTP_FROM="bench@example.com", TIDINGS_SMTP_RATE_LIMIT="100000")
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
        client_cpu: dict[str, list[float]] = {"native": [], "pinpoint": []}

        def measured(kind: str, round_fn) -> float:
            before, client_before = cpu_seconds(pid), time.process_time()
            rate = round_fn()
            server_cpu[kind].append((cpu_seconds(pid) - before) * 1000 / args.requests)
            client_cpu[kind].append((time.process_time() - client_before) * 1000 / args.requests)
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

        subject = {"Data": "Your code"}
        text = {"Data": "Hello {{Address}}, your code is 1234."}

        def native_send_round() -> float:
            start = time.perf_counter()
            for r in range(args.requests):
                native.post("/v1/messages", json={"channel": "EMAIL", "content": {
                    "subject": subject["Data"], "text": text["Data"]}, "recipients": [
                    {"address": f"n{r}-{i}@example.com"} for i in range(100)]}).raise_for_status()
            return args.requests * 100 / (time.perf_counter() - start)

        def pinpoint_send_round() -> float:
            start = time.perf_counter()
            for r in range(args.requests):
                answer = pinpoint.send_messages(ApplicationId="bench", MessageRequest={
                    "Addresses": {f"p{r}-{i}@example.com": {"ChannelType": "EMAIL"} for i in range(100)},
                    "MessageConfiguration": {"EmailMessage": {"SimpleEmail": {"Subject": subject, "TextPart": text}}}})
                assert all(v["DeliveryStatus"] == "SUCCESSFUL" for v in answer["MessageResponse"]["Result"].values())
            return args.requests * 100 / (time.perf_counter() - start)

        label = "PostgreSQL" if args.database_url else "SQLite"
        for title, unit, pair in (
                (f"PutEvents ({ENDPOINTS} endpoints x {EVENTS_EACH} events per request)", "events/s",
                 (native_round, pinpoint_round)),
                ("SendMessages (100 addresses per request, to the SMTP sink)", "messages/s",
                 (native_send_round, pinpoint_send_round))):
            for figures in (*server_cpu.values(), *client_cpu.values()):
                figures.clear()
            pair[0](), pair[1]()  # warm both paths
            natives, pinpoints = [], []
            for _ in range(args.rounds):
                natives.append(measured("native", pair[0]))
                pinpoints.append(measured("pinpoint", pair[1]))
            n, p = statistics.median(natives), statistics.median(pinpoints)
            print(f"{title}, {args.requests} requests per round, median of {args.rounds} rounds, {label}")
            print(f"  native:             {n:,.0f} {unit}  (rounds: {', '.join(f'{x:,.0f}' for x in natives)})")
            print(f"  Pinpoint via boto3: {p:,.0f} {unit}  (rounds: {', '.join(f'{x:,.0f}' for x in pinpoints)})")
            print(f"  Pinpoint / native: {p / n:.1%}  (target >= 70%)")
            cn, cp = statistics.median(server_cpu["native"]), statistics.median(server_cpu["pinpoint"])
            print(f"  API server CPU per request: native {cn:.0f} ms, Pinpoint {cp:.0f} ms; native / Pinpoint "
                  f"{cn / cp:.1%}")
            # The client's own CPU (this process: httpx vs botocore's validation, serialization, signing and
            # parsing of the per-item results), which no server can change.
            kn, kp = statistics.median(client_cpu["native"]), statistics.median(client_cpu["pinpoint"])
            print(f"  client CPU per request: native (httpx) {kn:.0f} ms, Pinpoint (boto3) {kp:.0f} ms")
            # One client at a time, so a request's wall time is its client's CPU plus the server's answer: taking
            # each round's own client CPU out of its wall time leaves what the server made the caller wait, the
            # part of "the Pinpoint path" that is Tidings'. `bound` is the end-to-end ratio Pinpoint would reach
            # if its server side cost no more than native's: boto3's own work alone caps the end-to-end figure.
            items = {"events/s": ENDPOINTS * EVENTS_EACH, "messages/s": 100}[unit]
            wall_n = [items * 1000 / rate for rate in natives]
            wall_p = [items * 1000 / rate for rate in pinpoints]
            served_n = statistics.median(w - k for w, k in zip(wall_n, client_cpu["native"]))
            served_p = statistics.median(w - k for w, k in zip(wall_p, client_cpu["pinpoint"]))
            print(f"  server time per request (wall minus the client's CPU): native {served_n:.0f} ms, Pinpoint "
                  f"{served_p:.0f} ms; native / Pinpoint {served_n / served_p:.1%}")
            bound = statistics.median(wall_n) / (statistics.median(wall_n) - kn + kp)
            print(f"  end-to-end ceiling with boto3's client cost and a free translation: {bound:.1%}")
        print(f"mails accepted by the sink: {sink.count}")
    finally:
        api.stop()
        smtp.stop()


if __name__ == "__main__":
    main()
