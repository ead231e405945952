"""What uvicorn's HTTP parser and event loop cost the API: two API processes on one SQLite file, one on
h11 + asyncio, one on httptools + uvloop (what `tidings api` takes when they are installed, as they are with
Tidings), measured alternately round by round: API CPU per request (from /proc) of GET /health and of a
single PUT /v1/users/{id} (no segments), median of the rounds.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_http_stack.py [--rounds 5 --requests 300]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: tests/ helpers from the repository

from tests.processes import tidings_env  # noqa: E402
from tests.benchmarks.bench_single_calls import cpu_seconds  # noqa: E402
from tidings.engine.ops.devstack import free_port  # noqa: E402
from tidings.engine.platform.db import make_engine, migrate  # noqa: E402
from tidings.engine.workspaces.service import create_key  # noqa: E402

SERVE = """
import sys, uvicorn
from tidings.api.app import create_app
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), http=sys.argv[2], loop=sys.argv[3],
            log_level="warning")
"""
STACKS = (("h11", "asyncio"), ("httptools", "uvloop"))


def start(env: dict[str, str], http: str, loop: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(port), http, loop], env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the {http}/{loop} API exited"
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the {http}/{loop} API did not answer in 90 s")


async def round_of(proc: subprocess.Popen, port: int, key: str, requests: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                                 timeout=60) as client:
        calls = {"GET /health": lambda i: client.get("/health"),
                 "PUT /v1/users/{id}": lambda i: client.put(f"/v1/users/u{i % 200}", json={
                     "attributes": {"plan": ["free", "pro"][i % 2], "n": i % 40}})}
        out = {}
        for label, call in calls.items():
            (await call(0)).raise_for_status()
            before = cpu_seconds(proc.pid)
            for i in range(requests):
                (await call(i)).raise_for_status()
            out[label] = (cpu_seconds(proc.pid) - before) * 1000 / requests
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-http-stack-"))
    database_url = f"sqlite:///{home / 'tidings.db'}"
    env = tidings_env(home, database_url, TIDINGS_API_MAX_IN_FLIGHT="0")
    db = make_engine(database_url)
    migrate(db)
    _, key = create_key(db, "bench")
    db.dispose()
    servers = {f"{http} + {loop}": start(env, http, loop) for http, loop in STACKS}
    try:
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (proc, port) in servers.items():
                rounds[name].append(asyncio.run(round_of(proc, port, key, args.requests)))
        baseline = next(iter(rounds))
        print(f"API CPU per request, median of {args.rounds} alternating rounds of {args.requests}")
        for name, figures in rounds.items():
            cells = []
            for label in figures[0]:
                value = statistics.median(f[label] for f in figures)
                base = statistics.median(f[label] for f in rounds[baseline])
                cells.append(f"{label} {value:.2f} ms (x{value / base:.2f})")
            print(f"  {name:20} " + ", ".join(cells))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
