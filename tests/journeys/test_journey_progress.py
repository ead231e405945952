"""`tidings journeys stats JOURNEY --progress / --watch` (the real CLI, a subprocess) while a broadcast runs on
the dev server: 150 customers through the outbox channel at 30 messages/s (5 s of sending, 3 cohorts)."""
from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from tidings.engine.channels.config import ChannelPut, load_plugins, put_channel
from tidings.engine.channels.contract import ChannelType
from tidings.engine.journeys import store
from tidings.engine.segments.service import SegmentIn, create_segment
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers, put_template

N, RATE = 150, 30
BROADCAST = """apiVersion: tidings/v1
kind: Journey
id: promo
entry: {broadcast: {segment: everyone}}
steps:
  - {id: offer, send: {channel: EMAIL, template: t}}
"""
LINE = re.compile(r"^promo v1 \[([#-]{30})\] +([\d.]+)%  sent ([\d,]+)  pending ([\d,]+) of ([\d,]+).*  "
                  r"([\d,.]+)/s  (ETA \S+|done)$")


async def _start(db, tmp_path: Path, *args: str):
    env = {**os.environ, "TIDINGS_DATABASE_URL": db.test_url, "TIDINGS_HOME": str(tmp_path / "home")}
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "tidings"), "journeys", "stats", "promo", "--workspace", "acme", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def _stats(db, tmp_path: Path, *args: str) -> tuple[int, str]:
    proc = await _start(db, tmp_path, *args)
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, out.decode()


def _n(s: str) -> int:
    return int(s.replace(",", ""))


async def test_watch_shows_sent_pending_rate_eta_and_a_bar_while_a_broadcast_runs(temporal_dev, runtime_db,
                                                                                 dev_worker, tmp_path):
    db = runtime_db
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    put_channel(db, load_plugins(), workspace, "outbox", ChannelPut(rate_limit=RATE, channel_types=[ChannelType.EMAIL]))
    add_customers(db, workspace, [f"p{i}" for i in range(N)])
    create_segment(db, workspace, SegmentIn(id="everyone", name="Everyone", rule=True))
    store.put_journey(db, workspace, BROADCAST)

    code, out = await _stats(db, tmp_path, "--progress")  # before it starts: everyone pending, no rate yet
    assert code == 0, out
    m = LINE.match(out.strip())
    assert m, out
    assert m.group(1) == "-" * 30 and (_n(m.group(3)), _n(m.group(4)), _n(m.group(5))) == (0, N, N), out
    assert m.group(7) == "ETA –", out

    watch = await _start(db, tmp_path, "--watch", "0.5")  # returns by itself once the broadcast is done
    assert watch.stdout is not None
    first = (await asyncio.wait_for(watch.stdout.readline(), 60)).decode()  # watching before it starts
    await store.activate(temporal_dev.client, db, workspace, "promo", task_queue=dev_worker, page_size=50)
    rest, _ = await asyncio.wait_for(watch.communicate(), 90)
    out = first + rest.decode()
    assert await watch.wait() == 0, out
    readings = [LINE.match(line) for line in out.splitlines()]
    assert readings and all(readings), out
    sent = [_n(r.group(3)) for r in readings if r]
    assert sent == sorted(sent), out  # it only moves forward
    last = readings[-1]
    assert last and last.group(1) == "#" * 30 and last.group(2) == "100.0" and last.group(7) == "done", out
    assert (_n(last.group(3)), _n(last.group(4)), _n(last.group(5))) == (N, 0, N), out
    # mid-way readings: some sent and some pending, a rate near the channel's limit, and an ETA in seconds
    middle = [r for r in readings if r and 0 < _n(r.group(3)) < N]
    assert len(middle) >= 3, out
    assert any(0 < float(r.group(6)) <= RATE * 1.5 and re.fullmatch(r"ETA \d+s", r.group(7)) for r in middle), out
    bars = [r.group(1).count("#") for r in readings if r]
    assert bars == sorted(bars) and any(0 < b < 30 for b in bars), out  # the bar fills as mails go

    code, out = await _stats(db, tmp_path, "--progress", "--json")
    p = json.loads(out)
    assert (p["total"], p["entered"], p["finished"], p["sent"], p["pending"], p["done"]) == (N, N, N, N, 0, True), p


async def test_a_paced_broadcast_counts_its_whole_audience_while_a_cohort_sends_longer_than_ten_seconds(
        temporal_dev, runtime_db, dev_worker):
    """A broadcast whose cohorts only send pages as they finish (one cohort in flight here): its first cohort
    of 20 sends at 1 message/s, so for 20 s no new cohort appears. Progress still counts all 40 customers,
    not only the 20 admitted (a pause in new cohorts used to read as "admitted in full" after 10 s)."""
    from tidings.engine.journeys.counts import SETTLED_MS, progress

    db = runtime_db
    workspace = ensure_workspace(db, "acme")
    put_template(db, workspace)
    put_channel(db, load_plugins(), workspace, "outbox", ChannelPut(rate_limit=1, channel_types=[ChannelType.EMAIL]))
    add_customers(db, workspace, [f"q{i}" for i in range(40)])
    create_segment(db, workspace, SegmentIn(id="everyone", name="Everyone", rule=True))
    store.put_journey(db, workspace, BROADCAST)
    await store.activate(temporal_dev.client, db, workspace, "promo", task_queue=dev_worker, page_size=20,
                         broadcast={"cohorts_in_flight": 1})
    try:
        for _ in range(200):
            p = progress(db, workspace, "promo")
            if p.entered:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(SETTLED_MS / 1000 + 2)  # the first cohort is older than SETTLED_MS, still sending
        p = progress(db, workspace, "promo")
        assert p.entered == 20 and 0 < p.sent < 20, p
        assert p.total == 40 and p.pending >= 20 and not p.done, p
    finally:
        await store.stop(temporal_dev.client, db, workspace, "promo")
        for _ in range(600):  # the cohort in flight finishes its send (<= 20 s) before the database goes
            p = progress(db, workspace, "promo")
            if p.entered == p.finished:
                break
            await asyncio.sleep(0.1)
