"""Transactional email through the API to an aiosmtpd sink, each figure next to a plain aiosmtplib loop to
the same sink in the same run. Three processes, so none shares a GIL with another (the box has 2 cores):
the API (uvicorn, uvloop + httptools when installed), the SMTP sink, and this one (the load generator and
the plain loop).

    .venv/bin/python tests/benchmarks/bench_transactional.py [--rate 200] [--seconds 10] [--batch 500 --batches 10]
                                                             [--concurrency 16] [--database-url URL]

SQLite by default; `--database-url postgresql://...` runs the API on a fresh schema of that server (dropped after).

1. latency: POST /v1/messages (one recipient, stored template, personalised data) fired open-loop at
   --rate requests/s for --seconds; p50/p99 of the full request (render, message rows, SMTP, events).
   Baseline: aiosmtplib.send of the same kind of message, one connection each, at the same rate.
   Then the capacity: the same requests in a closed loop, --concurrency in flight, for --seconds. The
   API server's CPU time per request (from /proc) is printed too: unlike latency, it hardly moves with
   the load the rest of the machine is under.
2. throughput: POST /v1/messages/batch of --batch personalised messages, --batches times in a row.
   Baseline: one aiosmtplib connection sending the same number of messages in a loop.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.benchmarks.bench_database import add_database_argument, bench_database, store_name  # noqa: E402
from tidings.engine.platform.db import make_engine, migrate  # noqa: E402
from tidings.engine.wiring import wire  # noqa: E402
from tidings.engine.ops.devstack import free_port  # noqa: E402
from tidings.engine.workspaces.service import create_key  # noqa: E402

SERVER = """
import uvicorn
from tidings.api.app import create_app
uvicorn.run(create_app(), host="127.0.0.1", port={port}, log_level="warning", access_log=False)
"""


class Sink:
    def __init__(self, counter):
        self.counter = counter

    async def handle_DATA(self, server, session, envelope):
        self.counter.value += 1
        return "250 OK"


def run_sink(port: int, counter, ready, stop) -> None:
    """The SMTP sink, in a process of its own."""
    gc.freeze()  # what the imports made lives as long as the process: keep it out of full collections
    controller = Controller(Sink(counter), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class SinkProcess:
    def __init__(self, port: int):
        ctx = multiprocessing.get_context("spawn")
        self.counter = ctx.Value("q", 0, lock=False)
        self.ready, self.stop = ctx.Event(), ctx.Event()
        self.process = ctx.Process(target=run_sink, args=(port, self.counter, self.ready, self.stop), daemon=True)
        self.process.start()
        if not self.ready.wait(30):
            raise RuntimeError("SMTP sink did not start")

    @property
    def count(self) -> int:
        return self.counter.value

    def close(self) -> None:
        self.stop.set()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used: per request, it does not depend on what else runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


async def open_loop(rate: float, seconds: float, one) -> list[float]:
    """Start one call every 1/rate s whatever the previous ones do; the latency of each call."""
    latencies: list[float] = []
    tasks = []
    start = time.perf_counter()

    async def timed(i):
        t = time.perf_counter()
        await one(i)
        latencies.append(time.perf_counter() - t)

    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(i)))
    await asyncio.gather(*tasks)
    return latencies


def mail(i: int) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Bench <bench@acme.example>", f"r{i}@example.com", f"Your code, N{i}"
    m.set_content(f"Code {i}")
    m.add_alternative(f"<p>Code <b>{i}</b></p>", subtype="html")
    return m


async def main(args) -> None:
    with bench_database(args.database_url, Path(tempfile.mkdtemp())) as url:
        await run(args, url)


async def run(args, url: str) -> None:
    gc.freeze()
    smtp_port = free_port()
    sink = SinkProcess(smtp_port)
    home = Path(tempfile.mkdtemp())
    env = {**os.environ, "TIDINGS_HOME": str(home), "TIDINGS_DATABASE_URL": url,
           "PYTHONPATH": str(ROOT),
           # the sink listens on loopback: allowed the way an operator would (tidings.engine.platform.egress)
           "TIDINGS_ALLOW_PRIVATE_DESTINATIONS": f"127.0.0.1:{smtp_port}"}
    for k in [k for k in env if k.startswith("TIDINGS_SMTP_")]:
        del env[k]
    wire()
    db = make_engine(env["TIDINGS_DATABASE_URL"])
    migrate(db)
    _, key = create_key(db, "bench")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(port=port)], env=env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                     headers={"Authorization": f"Bearer {key}"},
                                     limits=httpx.Limits(max_connections=200, max_keepalive_connections=200)) as c:
            for _ in range(1200):  # up to a minute: at load 12-16 the API's start-up took more than 10 s
                try:
                    if (await c.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            r = await c.put("/v1/channels/smtp", json={"rate_limit": 100000, "config": {
                "host": "127.0.0.1", "port": smtp_port, "security": "none", "from_address": "Bench <bench@acme.example>"}})
            assert r.status_code == 200, r.text
            r = await c.put("/v1/templates/code", json={"channel": "EMAIL", "subject": "Your code, {{ data.name }}",
                                                         "text": "Code {{ data.code }}",
                                                         "html": "<p>Code <b>{{ data.code }}</b></p>"})
            assert r.status_code == 200, r.text

            errors: list[str] = []

            async def api_one(i):
                try:
                    await api_post(i)
                except httpx.TransportError as exc:  # counted and shown, not hidden
                    errors.append(type(exc).__name__)

            async def api_post(i):
                r = await c.post("/v1/messages", json={"channel": "EMAIL", "template_id": "code", "recipients": [
                    {"address": f"r{i}@example.com", "data": {"name": f"N{i}", "code": str(i)}}]})
                assert r.status_code == 200 and r.json()["results"][0]["status"] == "sent", r.text

            async def smtp_one(i):
                await aiosmtplib.send(mail(i), hostname="127.0.0.1", port=smtp_port)

            await open_loop(args.rate, 1, api_one)  # warm-up
            before, cpu_before = sink.count, cpu_seconds(server.pid)
            api_lat = await open_loop(args.rate, args.seconds, api_one)
            api_cpu = (cpu_seconds(server.pid) - cpu_before) / len(api_lat)
            assert sink.count - before == len(api_lat) - len(errors), (sink.count - before, len(errors))
            raw_lat = await open_loop(args.rate, args.seconds, smtp_one)

            closed = 0
            if args.concurrency:  # capacity: as many requests as the server answers, N in flight
                async def client_loop(until):
                    nonlocal closed
                    while time.perf_counter() < until:
                        closed += 1
                        await api_post(1_000_000 + closed)
                cpu_before, t = cpu_seconds(server.pid), time.perf_counter()
                await asyncio.gather(*(client_loop(t + args.seconds) for _ in range(args.concurrency)))
                closed_rate = closed / (time.perf_counter() - t)
                closed_cpu = (cpu_seconds(server.pid) - cpu_before) / closed

            n = args.batch * args.batches
            t = time.perf_counter()
            for b in range(args.batches):
                r = await c.post("/v1/messages/batch", json={"messages": [
                    {"channel": "EMAIL", "template_id": "code", "data": {"name": f"N{i}", "code": str(i)},
                     "recipients": [{"address": f"b{b}-{i}@example.com"}]} for i in range(args.batch)]})
                assert r.status_code == 200, r.text[:300]
                assert all(m["results"][0]["status"] == "sent" for m in r.json()["messages"])
            api_tput = n / (time.perf_counter() - t)
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port)
            t = time.perf_counter()
            await client.connect()
            for i in range(n):
                await client.send_message(mail(i))
            await client.quit()
            raw_tput = n / (time.perf_counter() - t)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:  # uvicorn waits for open connections; do not hang the run
            server.kill()
        sink.close()
        db.dispose()

    print(store_name(url))
    print(f"latency @ {args.rate:g} req/s for {args.seconds:g} s ({len(api_lat)} requests, "
          f"{len(errors)} transport errors)")
    print(f"  API POST /v1/messages  p50 {pct(api_lat, .5):6.1f} ms   p99 {pct(api_lat, .99):6.1f} ms"
          f"   mean {statistics.mean(api_lat) * 1000:6.1f} ms   (target p99 <= 50 ms)")
    print(f"  plain aiosmtplib.send  p50 {pct(raw_lat, .5):6.1f} ms   p99 {pct(raw_lat, .99):6.1f} ms")
    print(f"  ratio API/plain        p50 {pct(api_lat, .5) / pct(raw_lat, .5):6.1f}x    p99 "
          f"{pct(api_lat, .99) / pct(raw_lat, .99):6.1f}x")
    print(f"  API server CPU per request {api_cpu * 1000:.2f} ms")
    if args.concurrency:
        print(f"capacity, closed loop with {args.concurrency} requests in flight for {args.seconds:g} s")
        print(f"  API POST /v1/messages {closed_rate:6.0f} req/s   server CPU {closed_cpu * 1000:.2f} ms/request")
    print(f"throughput, {args.batches} batches of {args.batch} personalised messages")
    print(f"  API /v1/messages/batch {api_tput:8,.0f} msg/s   (target >= 1,000)")
    print(f"  plain aiosmtplib loop  {raw_tput:8,.0f} msg/s   ratio {api_tput / raw_tput:6.1%}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop capacity run (0: skip)")
    add_database_argument(p)
    asyncio.run(main(p.parse_args()))
