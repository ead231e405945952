"""Broadcast journey to an N-customer segment (default 100,000) whose first step emails them, on the
`tidings dev --worker-process` stack (Temporal dev server, API, worker), to an aiosmtpd sink in its own
process; next to a plain aiosmtplib loop sending mails to the same sink in the same run.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_broadcast.py [N] [--plain M] [--database-url URL]

Customers/s end to end: from POST /v1/journeys/{id}/activate to the last mail received. Target >= 50%
of the plain loop (which sends min(N, 100,000) mails by default: its rate does not depend on N). Also
printed: the peak RSS of every process (API, worker, Temporal dev server, the sink; target < 500 MB each
at 1,000,000), the wall time, `tidings journeys stats --progress` read every 30 s while it runs, and
whether every customer got exactly one mail (the sink counts per recipient).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
from pathlib import Path

import httpx

from journey_stack import TEMPLATE, RssMeter, Sink, bulk_customers, dev_stack, plain_loop  # noqa: E402
from tests.benchmarks.bench_database import add_database_argument, bench_database  # noqa: E402

JOURNEY = """apiVersion: tidings/v1
kind: Journey
id: promo
entry: {broadcast: {segment: everyone}}
steps:
  - {id: offer, send: {channel: EMAIL, template: offer}}
"""
LIMIT_MB = 500


def progress_line(stack) -> tuple[str, float]:
    """`tidings journeys stats promo --progress` as an operator runs it, and the seconds it took."""
    from tidings.engine.ops.devstack import binary

    env = {**os.environ, "TIDINGS_HOME": str(stack.home), "TIDINGS_DATABASE_URL": stack.settings.database_url}
    t = time.perf_counter()
    out = subprocess.run([binary("tidings"), "journeys", "stats", "promo", "--workspace", "dev", "--progress"],
                         env=env, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - t
    return (out.stdout.strip() or out.stderr.strip().splitlines()[-1]), took


async def main(n: int, plain_n: int, database_url: str | None) -> None:
    import tempfile

    with bench_database(database_url, Path(tempfile.mkdtemp())) as url:
        await run(n, plain_n, url)


async def run(n: int, plain_n: int, database_url: str) -> None:
    from sqlalchemy import text

    from tidings.engine.ops.devstack import free_port
    from tidings.engine.platform.db import make_engine
    from tidings.engine.wiring import wire

    wall0 = time.perf_counter()
    port = free_port()
    sink = Sink(port)
    stack = await dev_stack(port, database_url)
    rss = RssMeter(lambda: {**stack.processes(), "smtp sink": sink.proc.pid, "benchmark (this process)": os.getpid()},
                   alone=frozenset({"benchmark (this process)", "tidings dev (API)"}))
    rss.start()
    stats_lines: list[tuple[float, str, float]] = []
    try:
        wire()
        db = make_engine(stack.settings.database_url)
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=600,
                                     headers={"Authorization": f"Bearer {stack.dev_key}"}) as c:
            with db.connect() as conn:
                workspace_id = conn.execute(text("select id from workspace where name = 'dev'")).scalar_one()
            t = time.perf_counter()
            bulk_customers(db, workspace_id, n)
            print(f"{n:,} customers + endpoints written in {time.perf_counter() - t:.1f} s (bulk SQL)", flush=True)
            r = await c.put("/v1/templates/offer", json=TEMPLATE)
            assert r.status_code in (200, 201), r.text
            t = time.perf_counter()
            r = await c.post("/v1/segments", json={"id": "everyone", "name": "Everyone", "rule": True})
            assert r.status_code in (200, 201), r.text
            print(f"segment 'everyone' created in {time.perf_counter() - t:.1f} s", flush=True)
            r = await c.put("/v1/journeys/promo", content=JOURNEY, headers={"Content-Type": "application/yaml"})
            assert r.status_code == 200, r.text
            before, _, _ = sink.stats()
            start = time.time()
            r = await c.post("/v1/journeys/promo/activate")
            assert r.status_code == 200, r.text
            last_report = last_stats = time.time()
            while True:
                got, _, last = sink.stats()
                if got - before >= n:
                    break
                now = time.time()
                if now - last_report > 15:
                    tree = rss.samples[-1][1] if rss.samples else {}
                    mem = "  ".join(f"{k.split(' (')[0]} {v / 1024:.0f} MB" for k, v in tree.items())
                    print(f"  ... {got - before:,} mails after {now - start:.0f} s   RSS: {mem}", flush=True)
                    last_report = now
                if now - last_stats > 30:
                    line, took = await asyncio.to_thread(progress_line, stack)
                    stats_lines.append((time.time() - start, line, took))
                    print(f"  stats at {time.time() - start:.0f} s ({took:.1f} s): {line}", flush=True)
                    last_stats = time.time()
                assert time.time() - start < 3 * 3600, "gave up"
                await asyncio.sleep(0.5)
            journey_s = last - start
        # the last cohort's outcomes are recorded just after its mails are accepted: wait for them (not timed)
        for _ in range(600):
            with db.connect() as conn:
                sent = conn.execute(text("select count(*) from message where status = 'sent'")).scalar()
            if sent >= n:
                break
            await asyncio.sleep(0.2)
        with db.connect() as conn:
            rows, rcpts = conn.execute(text("select count(*), count(distinct address) from message")).one()
        line, took = progress_line(stack)
        stats_lines.append((time.time() - start, line, took))
        await asyncio.sleep(2)  # one more RSS sample of the idle stack
    finally:
        rss.stop()
        await stack.stop()
    per_customer = sink.per_customer(n)
    plain_s = await plain_loop(port, plain_n)
    sink.close()
    wall = time.perf_counter() - wall0
    jr, pr = n / journey_s, plain_n / plain_s
    print(f"broadcast of {n:,} customers, one email each ({sent:,} message rows sent of {rows:,}, "
          f"{rcpts:,} addresses)")
    print(f"  sink, per customer c0..c{n - 1}: {per_customer['once']:,} got one mail, {per_customer['none']:,} none, "
          f"{per_customer['more']:,} more than one; {per_customer['others']:,} mails to other addresses")
    print(f"  journey (activate -> last mail)  {journey_s:7.1f} s  {jr:8,.0f} customers/s")
    print(f"  plain aiosmtplib loop ({plain_n:,})  {plain_s:7.1f} s  {pr:8,.0f} mails/s")
    print(f"  ratio                            {jr / pr:6.1%}   (target >= 50%)")
    print(f"  wall time of the whole benchmark {wall:7.1f} s")
    print("  `tidings journeys stats promo --progress` while it ran (seconds after activate, time the command took):")
    for at, line, took in stats_lines:
        print(f"    {at:6.0f} s ({took:4.1f} s)  {line}")
    print(rss.report())
    over = {k: v for k, v in rss.peak_hwm.items() if v / 1024 >= LIMIT_MB and not k.startswith("benchmark")}
    print(f"  every process under {LIMIT_MB} MB: {'yes' if not over else 'NO: ' + ', '.join(over)}")
    ok = per_customer["once"] == n
    print(f"  every customer exactly one mail: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=100_000)
    ap.add_argument("--plain", type=int, help="mails the plain loop sends (default min(N, 100,000))")
    add_database_argument(ap)
    a = ap.parse_args()
    asyncio.run(main(a.n, a.plain or min(a.n, 100_000), a.database_url))
