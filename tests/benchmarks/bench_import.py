"""Import of an N-row Pinpoint CSV through `tidings segments import` in a process of its own: wall time
and that process's peak RSS (resource.getrusage of the child). Targets at 1,000,000 rows: <= 60 s, <= 300 MB.

    PYTHONPATH=. python tests/benchmarks/bench_import.py [N] [--segments K] [--database-url URL]

SQLite by default; `--database-url postgresql://...` imports into a fresh schema of that server (dropped after).

With --segments K, K dynamic segments exist before the import (their memberships are kept current).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.bench_database import add_database_argument, bench_database, store_name  # noqa: E402

HEADER = ("ChannelType,Address,Id,User.UserId,User.UserAttributes.plan,Attributes.interest,Attributes.interest,"
          "Metrics.score,Demographic.Platform,Location.Country,OptOut,EffectiveDate\n")


def write_csv(path: Path, n: int) -> None:
    plans, countries = ("free", "pro", "team"), ("US", "FR", "DE", "CA")
    with open(path, "w") as f:
        f.write(HEADER)
        for i in range(n):
            f.write(f"EMAIL,user{i}@example.com,ep{i},u{i},{plans[i % 3]},golf,tennis,{i % 100},"
                    f"{'ios' if i % 2 else 'android'},{countries[i % 4]},{'ALL' if i % 10 == 0 else 'NONE'},"
                    f"2024-05-01T00:00:00Z\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--segments", type=int, default=0)
    add_database_argument(parser)
    args = parser.parse_args()
    with bench_database(args.database_url, Path(tempfile.mkdtemp())) as url:
        run(args, url)


def run(args, url: str) -> None:
    home = Path(tempfile.mkdtemp())
    csv_path = home / "import.csv"
    t = time.perf_counter()
    write_csv(csv_path, args.n)
    print(f"wrote {args.n:,} rows ({csv_path.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t:.1f}s")
    env = {**os.environ, "TIDINGS_HOME": str(home), "TIDINGS_DATABASE_URL": url,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    tidings = [sys.executable, "-m", "tidings.engine.ops.cli"]
    if args.segments:
        setup = ("from tidings.engine.platform.db import make_engine, migrate\nfrom tidings.engine.workspaces.service import ensure_workspace\n"
                 "from tidings.engine.segments.service import SegmentIn, create_segment\nimport os\n"
                 "from tidings.engine.wiring import wire; wire()\n"
                 "db = make_engine(os.environ['TIDINGS_DATABASE_URL']); migrate(db); ws = ensure_workspace(db, 'bench')\n"
                 f"for i in range({args.segments}):\n"
                 "    create_segment(db, ws, SegmentIn(id=f's{i}', name=f's{i}', rule={'and': [\n"
                 "        {'==': [{'var': 'attributes.plan'}, 'pro']}, {'>': [{'var': 'metrics.score'}, i]}]}))\n")
        subprocess.run([sys.executable, "-c", setup], env=env, check=True)
    t = time.perf_counter()
    proc = subprocess.run([*tidings, "segments", "import", str(csv_path), "--workspace", "bench", "--name", "bench",
                           "--id", "imported"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(proc.stdout.strip().splitlines()[-1])
    print(f"{store_name(url)} import of {args.n:,} rows: {wall:.1f}s ({args.n / wall:,.0f} rows/s), peak RSS {rss_mb:.0f} MB  "
          f"(targets <= 60 s, <= 300 MB at 1,000,000)")


if __name__ == "__main__":
    main()
