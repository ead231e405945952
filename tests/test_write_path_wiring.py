"""A process that writes customers without wiring the write path (tidings.engine.wiring.wire) is told so, and
nothing is written: segments never silently go stale (docs/architecture.md, the write path)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from sqlalchemy import text
from tidings.engine.customers.on_write import NotWired
from tidings.engine.customers.schemas import UserBatchItem
from tidings.engine.customers.users import upsert_users
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.workspaces.service import ensure_workspace

db = make_engine(sys.argv[1])
migrate(db)
ws = ensure_workspace(db, "acme")
try:
    upsert_users(db, ws, [UserBatchItem(user_id="u1")])
except NotWired as exc:
    print("refused:", exc)
if len(sys.argv) > 2:
    from tidings.engine.wiring import wire
    wire()
    upsert_users(db, ws, [UserBatchItem(user_id="u2")])
with db.connect() as conn:
    print("users:", sorted(conn.execute(text("select user_id from users")).scalars()))
"""


def run(database_url: str, *extra: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT, database_url, *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_write_before_wiring_is_refused_and_writes_nothing(database_url):
    out = run(database_url)
    assert "refused: the customer write path is not wired: call tidings.engine.wiring.wire() at start-up" in out
    assert "users: []" in out


def test_after_wiring_the_same_write_goes_through(database_url):
    out = run(database_url, "wire")
    assert "users: ['u2']" in out
