"""Faults during a broadcast: N customers (default 10,000) emailed through a real SMTP server (aiosmtpd,
counting mails per recipient), with one fault injected once `--at` of them got their mail:

* worker: `tidings worker` SIGKILLed, a new one started 1 s later;
* temporal: the Temporal dev server SIGKILLed, restarted on its state `--outage` s later (default 30);
* smtp: the SMTP server down (connection refused) for `--outage` s, then back.

Prints delivered / lost / duplicated per fault (duplicates: customers who got more than one mail; every
copy must carry the first one's Message-ID). Counts, not speed: a loaded box changes nothing but the time.

    PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_faults.py [--n 10000] [--rate 200] [--outage 30]
        [--faults worker,temporal,smtp] [--database-url postgresql://postgres@127.0.0.1:5432/test]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_database import bench_database  # noqa: E402
from tests.faults.harness import run_fault  # noqa: E402


@contextmanager
def database(url: str | None, folder: Path):
    """A fresh database per fault: a SQLite file, or a schema of its own in the given PostgreSQL."""
    from tidings.engine.platform.db import make_engine, migrate
    from tidings.engine.wiring import wire

    with bench_database(url, folder) as url:
        wire()
        db = make_engine(url)
        migrate(db)
        try:
            yield db, url
        finally:
            db.dispose()


async def main(args) -> None:
    rows = []
    for fault in args.faults.split(","):
        with tempfile.TemporaryDirectory() as tmp, database(args.database_url, Path(tmp)) as (db, url):
            t = time.perf_counter()
            tally = await run_fault(fault, db=db, database_url=url, folder=Path(tmp), n=args.n, rate=args.rate,
                                    at=args.at, outage=args.outage, timeout=args.timeout,
                                    extra_env={"TIDINGS_DELIVERY_RETRY_MIN_SECONDS": "5",
                                               "TIDINGS_DELIVERY_RETRY_MAX_SECONDS": "15"})
            rows.append((fault, tally, time.perf_counter() - t))
            print(f"{fault}: {tally} ({rows[-1][2]:.0f} s)", flush=True)
    kind = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\n{args.n:,} customers at {args.rate:g} mails/s, fault at {args.at:.0%}, outage {args.outage:g} s, {kind}")
    print("| fault | delivered | lost | duplicated (extra mails) | same Message-ID | message rows | time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for fault, t, secs in rows:
        print(f"| {fault} | {t.delivered:,} | {t.lost:,} | {t.duplicated:,} ({t.extra_mails:,}) | "
              f"{'yes' if t.same_message_id else 'NO'} | {t.statuses} | {secs:.0f} s |")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--at", type=float, default=0.4)
    p.add_argument("--outage", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--faults", default="worker,temporal,smtp")
    p.add_argument("--database-url", default=None)
    asyncio.run(main(p.parse_args()))
