"""Event-triggered journey under a sustained event rate, on the `tidings dev --worker-process` stack
(Temporal dev server, the API process, the worker process), first step an email to an aiosmtpd sink in
its own process.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_event_entry.py [--rate 1000] [--seconds 60] [--batch 100]
        [--database-url URL]

SQLite by default; `--database-url postgresql://...` runs the stack on a fresh schema of that server (dropped after).

Events are posted through POST /v1/events at --rate events/s (a batch of --batch every batch/rate s),
each for a distinct customer (created beforehand with an EMAIL endpoint). Reported, headline first:
p50/p95/max from the post of an event to the moment the SMTP sink accepted its customer's mail (the
sink stamps every accepted recipient; same host clock), then to the message row (the claim), whether
every customer got exactly one message and mail, and the CPU seconds each process of the stack used
(per delivered mail). Targets: p95 event -> sent <= 2 s, nothing dropped.
"""
from __future__ import annotations

import argparse
import asyncio
import time

import httpx

from journey_stack import TEMPLATE, CpuMeter, Sink, bulk_customers, dev_stack  # noqa: E402
from tests.benchmarks.bench_database import add_database_argument, bench_database, store_name  # noqa: E402

JOURNEY = """apiVersion: tidings/v1
kind: Journey
id: on-order
entry: {event: ordered}
steps:
  - {id: thanks, send: {channel: EMAIL, template: offer}}
"""


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def main(args) -> None:
    import tempfile
    from pathlib import Path

    with bench_database(args.database_url, Path(tempfile.mkdtemp())) as url:
        await run(args, url)


async def run(args, url: str) -> None:
    from sqlalchemy import text

    from tidings.engine.platform.db import make_engine
    from tidings.engine.wiring import wire
    from tidings.engine.ops.devstack import free_port

    n = int(args.rate * args.seconds)
    port = free_port()
    sink = Sink(port)
    stack = await dev_stack(port, url)
    posted: dict[str, float] = {}
    late_posts = 0
    try:
        wire()
        db = make_engine(stack.settings.database_url)
        with db.connect() as conn:
            workspace_id = conn.execute(text("select id from workspace where name = 'dev'")).scalar_one()
        bulk_customers(db, workspace_id, n)
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=120,
                                     headers={"Authorization": f"Bearer {stack.dev_key}"}) as c:
            assert (await c.put("/v1/templates/offer", json=TEMPLATE)).status_code in (200, 201)
            r = await c.put("/v1/journeys/on-order", content=JOURNEY, headers={"Content-Type": "application/yaml"})
            assert r.status_code == 200, r.text
            r = await c.post("/v1/journeys/on-order/activate")
            assert r.status_code == 200, r.text
            await asyncio.sleep(1)
            import os
            meter = CpuMeter({**stack.processes(), "SMTP sink": sink.proc.pid, "load generator (bench)": os.getpid()})
            meter.start()
            print("posting events", flush=True)  # a profiler may attach now (see the README)
            every = args.batch / args.rate
            start = time.perf_counter()
            tasks = []

            async def post(b: int):
                ids = [f"c{i}" for i in range(b * args.batch, min(n, (b + 1) * args.batch))]
                at = time.time()
                for u in ids:
                    posted[u] = at
                r = await c.post("/v1/events", json={"events": [
                    {"user_id": u, "name": "ordered", "attributes": {"order": u}} for u in ids]})
                assert r.status_code in (200, 202), r.text[:300]

            for b in range((n + args.batch - 1) // args.batch):
                delay = start + b * every - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -every:
                    late_posts += 1
                tasks.append(asyncio.create_task(post(b)))  # open loop: a slow post does not slow the next
            await asyncio.gather(*tasks)
            post_s = time.perf_counter() - start
            give_up = time.time() + 600
            while True:
                got, _, _ = sink.stats()
                if got >= n or time.time() > give_up:
                    break
                await asyncio.sleep(0.2)
            meter.stop()
            await asyncio.sleep(2)
        with db.connect() as conn:
            rows = conn.execute(text(
                "select u.user_id, min(m.created_at), count(*), min(case when m.status = 'sent' then m.updated_at end) "
                "from message m join users u on u.id = m.user_pk where m.journey_id = 'on-order' group by u.user_id")).all()
            sent = conn.execute(text("select count(*) from message where status = 'sent'")).scalar()
        mails, _, _ = sink.stats()
        accepted = sink.accepted()
    finally:
        await stack.stop()
        sink.close()
        if "db" in locals():
            db.dispose()
    lat = [first / 1000 - posted[u] for u, first, _, _ in rows]
    # `recorded` is when the batch's outcome was written, after the SMTP server accepted the mail.
    recorded_lat = [at / 1000 - posted[u] for u, _, _, at in rows if at is not None]
    first_mail: dict[str, float] = {}
    for rcpt, at in accepted:
        first_mail.setdefault(rcpt.split("@")[0], at)
    sent_lat = [first_mail[u] - posted[u] for u in posted if u in first_mail]
    extra_mails = len(accepted) - len(first_mail)
    dup = sum(1 for _, _, k, _ in rows if k != 1)
    if args.timeline:  # every customer's post, claim, SMTP acceptance and recorded outcome, for analysis
        import json
        with open(args.timeline, "w") as f:
            json.dump({u: [posted[u], first / 1000, first_mail.get(u), at and at / 1000]
                       for u, first, _, at in rows}, f)
    print(f"{store_name(url)}: {n:,} events at {args.rate:g}/s in batches of {args.batch} (posting took {post_s:.1f} s, "
          f"{late_posts} batches started late)")
    print(f"  customers with a message {len(rows):,} / {n:,}   with more than one: {dup}   "
          f"message rows sent {sent:,}   mails received {mails:,} ({len(first_mail):,} customers, "
          f"{extra_mails} second mails)")
    print(f"  EVENT POST -> MAIL SENT (accepted by the SMTP sink): p50 {pct(sent_lat, .5):.2f} s   "
          f"p95 {pct(sent_lat, .95):.2f} s   max {max(sent_lat):.2f} s   ({len(sent_lat):,} customers; "
          f"target p95 <= 2 s)")
    print(f"  event post -> message claimed:  p50 {pct(lat, .5):.2f} s   p95 {pct(lat, .95):.2f} s   "
          f"max {max(lat):.2f} s")
    print(f"  event post -> outcome recorded: p50 {pct(recorded_lat, .5):.2f} s   "
          f"p95 {pct(recorded_lat, .95):.2f} s   max {max(recorded_lat):.2f} s")
    print(meter.report(len(first_mail)))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--timeline", help="write each customer's [posted, claimed, sent, recorded] (epoch s) as JSON here")
    add_database_argument(p)
    asyncio.run(main(p.parse_args()))
