"""Overload: a closed loop of N clients, each sending 200-user batches back to back, against a real
`tidings api` process (two processes: the API and this load generator). First at --base clients, then at
--factor times that; prints the accepted requests' latency, how many were refused (503 + Retry-After), and
/health's latency while it lasts. With the in-flight bound the accepted latency stays near the base figure
instead of growing with the queue (before it, requests at twice the capacity waited 47-71 s).

    .venv/bin/python tests/benchmarks/bench_overload.py [--base 32] [--factor 4] [--seconds 10]
                                                        [--max-in-flight 64] [--database-url URL]

SQLite by default; `--database-url postgresql://...` runs the API on a fresh schema of that server (dropped after).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.benchmarks.bench_database import add_database_argument, bench_database, store_name  # noqa: E402
from tidings.engine.platform.db import make_engine, migrate  # noqa: E402
from tidings.engine.wiring import wire  # noqa: E402
from tidings.engine.ops.devstack import free_port  # noqa: E402
from tidings.engine.workspaces.service import create_key  # noqa: E402

BATCH = 200
TIDINGS = str(Path(sys.executable).with_name("tidings"))


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


async def run(client: httpx.AsyncClient, clients: int, seconds: float) -> dict:
    accepted: list[float] = []
    refused: list[float] = []
    health: list[float] = []
    errors = 0
    until = time.perf_counter() + seconds

    async def one_client(n: int) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < until:
            i += 1
            # encoded with msgspec: the load generator shares the box and must not be the bottleneck
            body = msgspec.json.encode({"items": [{"user_id": f"c{n}-{i}-{k}", "attributes": {"plan": "trial"}}
                                                  for k in range(BATCH)]})
            t = time.perf_counter()
            try:
                r = await client.post("/v1/users/batch", content=body, headers={"Content-Type": "application/json"})
            except httpx.TransportError:
                errors += 1
                continue
            took = time.perf_counter() - t
            if r.status_code == 503:
                refused.append(took)
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            else:
                assert r.status_code == 200, r.text
                accepted.append(took)

    async def probe_health() -> None:
        while time.perf_counter() < until:
            t = time.perf_counter()
            await client.get("/health")
            health.append(time.perf_counter() - t)
            await asyncio.sleep(0.25)

    await asyncio.gather(probe_health(), *(one_client(n) for n in range(clients)))
    return {"clients": clients, "accepted": len(accepted), "refused": len(refused), "errors": errors,
            "p50": statistics.median(accepted) if accepted else float("nan"), "p99": pct(accepted, 0.99),
            "max": max(accepted, default=float("nan")), "refused_p99": pct(refused, 0.99),
            "health_max": max(health, default=float("nan"))}


async def main(args) -> None:
    home = Path(tempfile.mkdtemp())
    with bench_database(args.database_url, home) as url:
        await run_api(args, home, url)


async def run_api(args, home: Path, url: str) -> None:
    wire()
    db = make_engine(url)
    migrate(db)
    _, key = create_key(db, "bench")
    db.dispose()
    port = free_port()
    env = {**os.environ, "TIDINGS_HOME": str(home), "TIDINGS_DATABASE_URL": url, "TIDINGS_STREAM_WORKER": "0",
           "TIDINGS_API_MAX_IN_FLIGHT": str(args.max_in_flight)}
    server = subprocess.Popen([TIDINGS, "api", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        limits = httpx.Limits(max_connections=args.base * args.factor + 8)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(300):
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            print(f"{store_name(url)}, TIDINGS_API_MAX_IN_FLIGHT={args.max_in_flight}, POST /v1/users/batch of {BATCH} users, "
                  f"closed loop for {args.seconds:g} s")
            print("clients  accepted  refused  p50 s   p99 s   max s   503 p99 s  /health max s")
            for clients in (args.base, args.base * args.factor):
                r = await run(client, clients, args.seconds)
                print(f"{r['clients']:>7}  {r['accepted']:>8}  {r['refused']:>7}  {r['p50']:6.2f}  {r['p99']:6.2f}  "
                      f"{r['max']:6.2f}  {r['refused_p99']:9.3f}  {r['health_max']:13.3f}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--max-in-flight", type=int, default=64)
    add_database_argument(p)
    asyncio.run(main(p.parse_args()))
