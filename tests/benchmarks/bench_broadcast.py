"""Broadcast journey to an N-customer segment (default 100,000) whose first step emails them, on the
`tidings dev` stack (Temporal dev server, API and worker in one process), to an aiosmtpd sink in its own
process; next to a plain aiosmtplib loop sending the same N mails to the same sink in the same run.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_broadcast.py [N]

Customers/s end to end: from POST /v1/journeys/{id}/activate to the last mail received. Target >= 50%
of the plain loop.
"""
from __future__ import annotations

import asyncio
import sys
import time

import httpx

from journey_stack import TEMPLATE, Sink, bulk_customers, dev_stack, plain_loop  # noqa: E402

JOURNEY = """apiVersion: tidings/v1
kind: Journey
id: promo
entry: {broadcast: {segment: everyone}}
steps:
  - {id: offer, send: {channel: EMAIL, template: offer}}
"""


async def main(n: int) -> None:
    from tidings.engine.platform.db import make_engine
    from tidings.engine.wiring import wire
    from tidings.engine.ops.devstack import free_port

    port = free_port()
    sink = Sink(port)
    stack = await dev_stack(port)
    try:
        wire()
        db = make_engine(stack.settings.database_url)
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=600,
                                     headers={"Authorization": f"Bearer {stack.dev_key}"}) as c:
            from sqlalchemy import text
            with db.connect() as conn:
                workspace_id = conn.execute(text("select id from workspace where name = 'dev'")).scalar_one()
            t = time.perf_counter()
            bulk_customers(db, workspace_id, n)
            print(f"{n:,} customers + endpoints written in {time.perf_counter() - t:.1f} s (bulk SQL)")
            r = await c.put("/v1/templates/offer", json=TEMPLATE)
            assert r.status_code in (200, 201), r.text
            t = time.perf_counter()
            r = await c.post("/v1/segments", json={"id": "everyone", "name": "Everyone", "rule": True})
            assert r.status_code in (200, 201), r.text
            print(f"segment 'everyone' created in {time.perf_counter() - t:.1f} s")
            r = await c.put("/v1/journeys/promo", content=JOURNEY, headers={"Content-Type": "application/yaml"})
            assert r.status_code == 200, r.text
            before, _, _ = sink.stats()
            start = time.time()
            r = await c.post("/v1/journeys/promo/activate")
            assert r.status_code == 200, r.text
            last_report = time.time()
            while True:
                got, _, last = sink.stats()
                if got - before >= n:
                    break
                if time.time() - last_report > 15:
                    print(f"  ... {got - before:,} mails after {time.time() - start:.0f} s", flush=True)
                    last_report = time.time()
                assert time.time() - start < 3600, "gave up"
                await asyncio.sleep(0.2)
            journey_s = last - start
        # the last cohort's outcomes are recorded just after its mails are accepted: wait for them (not timed)
        for _ in range(300):
            with db.connect() as conn:
                sent = conn.execute(text("select count(*) from message where status = 'sent'")).scalar()
                rcpts = conn.execute(text("select count(distinct address) from message")).scalar()
            if sent >= n:
                break
            await asyncio.sleep(0.1)
    finally:
        await stack.stop()
    plain_s = await plain_loop(port, n)
    total, _, _ = sink.stats()
    sink.close()
    jr, pr = n / journey_s, n / plain_s
    print(f"broadcast of {n:,} customers, one email each ({sent:,} message rows sent, {rcpts:,} addresses; "
          f"sink total {total:,} = 2 x {n:,})")
    print(f"  journey (activate -> last mail)  {journey_s:7.1f} s  {jr:8,.0f} customers/s")
    print(f"  plain aiosmtplib loop            {plain_s:7.1f} s  {pr:8,.0f} mails/s")
    print(f"  ratio                            {jr / pr:6.1%}   (target >= 50%)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
