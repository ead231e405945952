"""What one small call costs the API: CPU time of the `tidings api` process per request (from /proc), each
figure next to GET /health measured in the same run, and closed-loop single upserts per second.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_single_calls.py [--requests 400] [--seconds 5]
        [--concurrency 8] [--database-url postgresql://...] [--api-workers N]

Two processes: `tidings api` (uvicorn) and this one, the load generator. The calls go one at a time (so the
CPU per request is the API's own, not a queue's), then --concurrency clients in a closed loop for --seconds:
1. GET /health (the floor: HTTP parsing, routing, the guard layer, JSON out);
2. PUT /v1/users/{id}, no segments (a write that changes two attributes of one of 200 users);
3. the same PUT with 100 dynamic segments whose rules read those attributes (read-your-writes membership);
4. POST /v1/events of 10 events for one user (with the 100 segments present).
With --api-workers N the API runs N processes (`tidings api --workers N`); the CPU is summed over them.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: tests/ helpers from the repository

from tests.processes import TIDINGS, tidings_env  # noqa: E402
from tidings.engine.ops.devstack import free_port  # noqa: E402
from tidings.engine.platform.db import make_engine, migrate  # noqa: E402
from tidings.engine.workspaces.service import create_key  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
USERS = 200


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children that ended (/proc/PID/stat fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS


def tree_cpu(pid: int) -> float:
    """CPU of a process and its live children (`--workers N`: uvicorn's supervisor and its workers)."""
    total = cpu_seconds(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            total += cpu_seconds(int(child))
        except FileNotFoundError:
            pass
    return total


def start_api(env: dict[str, str], workers: int, log: Path):
    import subprocess

    port = free_port()
    command = [TIDINGS, "api", "--port", str(port)] + (["--workers", str(workers)] if workers > 1 else [])
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tidings api exited: {log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("tidings api did not answer in 90 s")


async def main(args) -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-single-"))
    database_url = args.database_url or f"sqlite:///{home / 'tidings.db'}"
    env = tidings_env(home, database_url, TIDINGS_API_MAX_IN_FLIGHT="0")
    db = make_engine(database_url)
    migrate(db)
    _, key = create_key(db, f"bench-{os.getpid()}")
    db.dispose()
    proc, port = start_api(env, args.api_workers, home / "api.log")
    figures: dict[str, float] = {}
    rates: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                     headers={"Authorization": f"Bearer {key}"}) as c:
            counter = iter(range(10**9))

            async def health():
                r = await c.get("/health")
                assert r.status_code == 200, r.text

            async def put_user():
                i = next(counter)
                r = await c.put(f"/v1/users/u{i % USERS}", json={"attributes": {"plan": ["free", "pro"][i % 2],
                                                                                 "n": i % 40}})
                assert r.status_code == 200, r.text

            async def post_events():
                i = next(counter)
                r = await c.post("/v1/events", json={"events": [
                    {"user_id": f"u{i % USERS}", "name": "viewed", "attributes": {"k": str(k)}, "metrics": {"i": i}}
                    for k in range(10)]})
                assert r.status_code == 202, r.text

            async def sequential(name: str, one) -> None:
                for _ in range(args.requests // 10):  # warm-up: caches, connection pool, code paths
                    await one()
                before = tree_cpu(proc.pid)
                for _ in range(args.requests):
                    await one()
                figures[name] = (tree_cpu(proc.pid) - before) / args.requests

            async def closed_loop(name: str, one) -> None:
                done = 0

                async def client(until: float) -> None:
                    nonlocal done
                    while time.perf_counter() < until:
                        await one()
                        done += 1
                t = time.perf_counter()
                await asyncio.gather(*(client(t + args.seconds) for _ in range(args.concurrency)))
                rates[name] = done / (time.perf_counter() - t)

            for _ in range(USERS):
                await put_user()
            # what the API burns with nothing to answer (its stream loop polls): part of every figure below
            before, t = tree_cpu(proc.pid), time.perf_counter()
            await asyncio.sleep(2)
            idle = (tree_cpu(proc.pid) - before) / (time.perf_counter() - t)
            await sequential("GET /health", health)
            await sequential("PUT /v1/users/{id}, 0 segments", put_user)
            await closed_loop("PUT /v1/users/{id}, 0 segments", put_user)
            for s in range(100):
                r = await c.post("/v1/segments", json={"id": f"s{s}", "name": f"s{s}", "rule": {"and": [
                    {"==": [{"var": "attributes.plan"}, "pro"]}, {">": [{"var": "attributes.n"}, s % 40]}]}})
                assert r.status_code in (200, 201), r.text
            await sequential("PUT /v1/users/{id}, 100 segments", put_user)
            await closed_loop("PUT /v1/users/{id}, 100 segments", put_user)
            await sequential("POST /v1/events (10 events), 100 segments", post_events)
            # read-your-writes: the answer of the write already shows the membership it implies
            r = await c.put("/v1/users/ryw", json={"attributes": {"plan": "pro", "n": 39}})
            assert len(r.json()["segments"]) == sum(39 > s % 40 for s in range(100)), r.json()["segments"]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except Exception:
            proc.kill()
    backend = database_url.split(":", 1)[0]
    print(f"{backend}, API processes: {args.api_workers}, {args.requests} sequential requests each; "
          f"idle API CPU {idle * 1000:.1f} ms/s")
    floor = figures["GET /health"]
    for name, cpu in figures.items():
        print(f"  {name:44s} API CPU {cpu * 1000:6.2f} ms/request  ({cpu / floor:5.1f}x /health)")
    print(f"closed loop, {args.concurrency} clients for {args.seconds:g} s")
    for name, rate in rates.items():
        print(f"  {name:44s} {rate:7.0f} requests/s")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--database-url")
    p.add_argument("--api-workers", type=int, default=1)
    asyncio.run(main(p.parse_args()))
