"""Several worker processes: one broadcast of N customers (default 3,000) emailed through a counting SMTP sink
(its own process) by `tidings worker --processes P` for P = 1, 2, 3, each on a fresh database and its own
task queues of one Temporal dev server. Cohorts of `--page-size` customers (default 100), at most
`--max-cohorts` sends per process at once (TIDINGS_WORKER_MAX_COHORTS), no rate limit.

Reported per P: wall time from activation to the last mail at the sink, mails/s, mails/s per process, the
ratio to P = 1 (the baseline, measured in the same run), CPU seconds of the worker processes per 1,000 mails
and their peak RSS. On a 2-core box a third process has no core of its own: the figures are reported, with
no target. A plain aiosmtplib loop into the same sink is printed for scale.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_workers.py [--n 3000] [--processes 1,2,3]
        [--page-size 100] [--max-cohorts 8] [--database-url postgresql://postgres@127.0.0.1:5432/test]
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_faults import database  # noqa: E402
from tests.benchmarks.journey_stack import Sink, cpu_seconds, plain_loop  # noqa: E402
from tests.faults.harness import TemporalDev, seed_broadcast, worker_env  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def worker_pids(supervisor: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()]
    except OSError:
        return []


async def one_run(temporal: TemporalDev, processes: int, args, folder: Path) -> dict:
    from tidings.engine.journeys import store
    from tidings.engine.ops.devstack import free_port

    with database(args.database_url, folder) as (db, url):
        workspace = seed_broadcast(db, args.n)
        sink = Sink(free_port())
        queue = f"bench-{uuid.uuid4().hex[:6]}"
        env = worker_env(database_url=url, temporal=temporal, smtp_port=sink.port, rate=1_000_000.0,
                         home=folder / "home", queue=queue, TIDINGS_WORKER_MAX_COHORTS=str(args.max_cohorts))
        log = open(folder / f"workers-{processes}.log", "w+b")
        cmd = [str(Path(sys.executable).parent / "tidings"), "worker", "--processes", str(processes)]
        sup = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            give_up = time.monotonic() + 180
            while (folder / f"workers-{processes}.log").read_text(errors="replace").count("worker ready") < processes:
                assert time.monotonic() < give_up and sup.poll() is None, "the workers did not start"
                await asyncio.sleep(0.2)
            pids = worker_pids(sup.pid) or [sup.pid]  # --processes 1 runs in the process itself
            cpu0 = sum(cpu_seconds(p) for p in pids)
            client = await temporal.connect()
            t0 = time.time()
            await store.activate(client, db, workspace, "promo", task_queue=queue, send_queue=f"{queue}-send",
                                 page_size=args.page_size)
            while sink.stats()[0] < args.n:
                assert time.monotonic() < give_up + args.timeout, f"only {sink.stats()[0]} mails"
                await asyncio.sleep(0.1)
            n, _, last = sink.stats()
            cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            rss = max(peak_rss_mb(p) for p in pids)
        finally:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(60)
            except subprocess.TimeoutExpired:
                sup.kill()
            sink.close()
    wall = last - t0
    return {"processes": processes, "mails": n, "wall": wall, "rate": n / wall, "cpu": cpu, "rss": rss}


async def main(args) -> None:
    from tidings.engine.ops.devstack import free_port

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        temporal = TemporalDev(folder, free_port())
        temporal.start()
        try:
            await temporal.connect()
            sink = Sink(free_port())
            plain = await plain_loop(sink.port, min(args.n, 2000))
            sink.close()
            for p in [int(x) for x in args.processes.split(",")]:
                run_folder = folder / f"p{p}"
                run_folder.mkdir()
                rows.append(await one_run(temporal, p, args, run_folder))
                r = rows[-1]
                print(f"{p} process(es): {r['mails']:,} mails in {r['wall']:.1f} s, {r['rate']:.0f}/s", flush=True)
        finally:
            temporal.kill()
    kind = "PostgreSQL" if args.database_url else "SQLite"
    base = rows[0]["rate"]
    print(f"\n{args.n:,} customers, cohorts of {args.page_size}, at most {args.max_cohorts} sends per process, {kind}; "
          f"plain aiosmtplib loop into the same sink: {min(args.n, 2000) / plain:.0f} mails/s")
    print("| processes | wall | mails/s | per process | vs 1 process | worker CPU s / 1,000 mails | peak RSS per process |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['processes']} | {r['wall']:.1f} s | {r['rate']:.0f} | {r['rate'] / r['processes']:.0f} | "
              f"x{r['rate'] / base:.2f} | {r['cpu'] / r['mails'] * 1000:.2f} | {r['rss']:.0f} MB |")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--processes", default="1,2,3")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--max-cohorts", type=int, default=8)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--database-url", default=None)
    asyncio.run(main(p.parse_args()))
