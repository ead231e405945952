"""Step latency of one journey with 1 and with 200 more active journeys in the same workspace, on the
`tidings dev --worker-process` stack (Temporal dev server, API process, worker process), the step an email
to an aiosmtpd sink in its own process.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_many_journeys.py [--journeys 200] [--samples 30]
        [--database-url postgresql://postgres@127.0.0.1:5432/bench]

One journey (`ping`: entry event `ping`, one email) is measured first alone, then after --journeys more are
activated (nine in ten event-triggered on events nobody sends, one in ten on entering a segment): their
admission workflows sit idle, which is what a workspace with many journeys mostly does. Each phase posts
--samples `ping` events through POST /v1/events, one every --every s, each for its own customer, and takes
the time from the post to the SMTP sink accepting that customer's mail. Reported: p50/p95/max per phase and
the ratios crowded/alone (target: p95 ratio near 1; before the entry watch 20 idle journeys took a step
from under a second to 20-33 s).
"""
from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import httpx

from journey_stack import TEMPLATE, Sink, bulk_customers, dev_stack  # noqa: E402
from tests.benchmarks.bench_database import add_database_argument, bench_database  # noqa: E402

PING = """apiVersion: tidings/v1
kind: Journey
id: ping
entry: {event: ping}
steps:
  - {id: pong, send: {channel: EMAIL, template: offer}}
"""

IDLE_EVENT = """apiVersion: tidings/v1
kind: Journey
id: idle-{i}
entry: {{event: never-{i}}}
steps:
  - {{id: hello, send: {{channel: EMAIL, template: offer}}}}
"""

IDLE_SEGMENT = """apiVersion: tidings/v1
kind: Journey
id: idle-{i}
entry: {{segment_entry: vip}}
steps:
  - {{id: hello, send: {{channel: EMAIL, template: offer}}}}
"""


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def activate(c: httpx.AsyncClient, jid: str, source: str) -> None:
    r = await c.put(f"/v1/journeys/{jid}", content=source, headers={"Content-Type": "application/yaml"})
    assert r.status_code in (200, 201), r.text
    r = await c.post(f"/v1/journeys/{jid}/activate")
    assert r.status_code == 200, r.text


async def phase(c: httpx.AsyncClient, sink: Sink, users: list[str], every: float) -> list[float]:
    """Seconds from posting each user's `ping` to the sink accepting their mail."""
    posted: dict[str, float] = {}
    for u in users:
        posted[u] = time.time()
        r = await c.post("/v1/events", json={"events": [{"user_id": u, "name": "ping"}]})
        assert r.status_code in (200, 202), r.text[:300]
        await asyncio.sleep(every)
    give_up = time.time() + 120
    while True:
        first = {}
        for rcpt, at in sink.accepted():
            first.setdefault(rcpt.split("@")[0], at)
        if all(u in first for u in users) or time.time() > give_up:
            break
        await asyncio.sleep(0.2)
    missing = [u for u in users if u not in first]
    assert not missing, f"no mail within 120 s for {len(missing)} customers"
    return [first[u] - posted[u] for u in users]


def line(name: str, lat: list[float]) -> str:
    return f"  {name:<28} p50 {pct(lat, .5):6.2f} s   p95 {pct(lat, .95):6.2f} s   max {max(lat):6.2f} s"


async def main(args) -> None:
    import tempfile

    from tidings.engine.ops.devstack import free_port

    port = free_port()
    sink = Sink(port)
    with bench_database(args.database_url, Path(tempfile.mkdtemp())) as url:
        await run(args, port, sink, url)


async def run(args, port, sink, url: str) -> None:
    from sqlalchemy import text

    from tidings.engine.platform.db import make_engine
    from tidings.engine.wiring import wire

    stack = await dev_stack(port, url)
    try:
        wire()
        db = make_engine(stack.settings.database_url)
        with db.connect() as conn:
            workspace_id = conn.execute(text("select id from workspace where name = 'dev'")).scalar_one()
        bulk_customers(db, workspace_id, 2 * args.samples + 20)
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=120,
                                     headers={"Authorization": f"Bearer {stack.dev_key}"}) as c:
            assert (await c.put("/v1/templates/offer", json=TEMPLATE)).status_code in (200, 201)
            r = await c.post("/v1/segments", json={"id": "vip", "name": "VIP", "rule": {"==": [1, 0]}})
            assert r.status_code == 201, r.text
            await activate(c, "ping", PING)
            await asyncio.sleep(2)
            await phase(c, sink, ["c0"], 0)  # warm-up: first sandbox, first connections
            alone = await phase(c, sink, [f"c{i}" for i in range(1, 1 + args.samples)], args.every)
            started = time.perf_counter()
            sem = asyncio.Semaphore(8)

            async def one(i: int) -> None:
                async with sem:
                    await activate(c, f"idle-{i}", (IDLE_SEGMENT if i % 10 == 9 else IDLE_EVENT).format(i=i))

            await asyncio.gather(*(one(i) for i in range(args.journeys)))
            activation_s = time.perf_counter() - started
            await asyncio.sleep(args.settle)  # every admission workflow has made its first call and idles
            base = 1 + args.samples
            crowded = await phase(c, sink, [f"c{i}" for i in range(base, base + args.samples)], args.every)
    finally:
        await stack.stop()
        sink.close()
    print(f"one journey's step (event post -> mail accepted by the SMTP sink), {args.samples} samples per phase, "
          f"one every {args.every:g} s; {stack.settings.database_url.split(':')[0]}")
    print(line("1 active journey", alone))
    print(line(f"{args.journeys + 1} active journeys", crowded))
    print(f"  ratio crowded/alone: p50 {pct(crowded, .5) / pct(alone, .5):.2f}   "
          f"p95 {pct(crowded, .95) / pct(alone, .95):.2f}   (activating {args.journeys} took {activation_s:.1f} s, "
          f"then {args.settle:g} s to settle)")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--journeys", type=int, default=200)
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--every", type=float, default=0.5)
    p.add_argument("--settle", type=float, default=10)
    add_database_argument(p)
    asyncio.run(main(p.parse_args()))
