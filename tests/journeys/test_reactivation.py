"""Activating a journey again never sends again: a second `tidings apply --activate` of an unchanged folder,
or activating a finished one-off broadcast again, leaves every customer with the one mail they got and
their runs and messages as they were (counted in a real SMTP server). A second broadcast is a new version."""
from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter

from sqlalchemy import text

from tidings.engine.journeys import store
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers
from tests.processes import TIDINGS

FOLDER = {
    "segments.yaml": "apiVersion: tidings/v1\nkind: Segment\nid: everyone\nname: Everyone\nrule: true\n",
    "templates.yaml": ("apiVersion: tidings/v1\nkind: Template\nid: news\nchannel: EMAIL\n"
                       "subject: \"News for {{ customer.user_id }}\"\ntext: \"Hello\"\n"),
    "launch.yaml": ("apiVersion: tidings/v1\nkind: Journey\nid: launch\nname: Launch\n"
                    "entry:\n  broadcast: {segment: everyone}\nsteps:\n"
                    "  - {id: announce, send: {channel: EMAIL, template: news}}\n"),
}
CUSTOMERS = [f"c{i}" for i in range(6)]


def _apply(runtime_db, temporal_dev, queue, folder):
    env = {**os.environ, "TIDINGS_DATABASE_URL": runtime_db.test_url, "TIDINGS_HOME": str(folder.parent / "home"),
           "TIDINGS_TEMPORAL_ADDRESS": temporal_dev.client.service_client.config.target_host,
           # the dev worker polls one queue: the journey's send steps go there too (not to `<queue>-send`)
           "TIDINGS_TASK_QUEUE": queue, "TIDINGS_SEND_TASK_QUEUE": queue}
    out = subprocess.run([TIDINGS, "apply", str(folder), "--workspace", "shop", "--activate"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _per_recipient(inbox) -> Counter:
    return Counter(r for _, rcpts, _ in inbox.mails for r in rcpts)


def _outcomes(db):
    with db.connect() as conn:
        runs = conn.execute(text("SELECT id, status, updated_at FROM journey_run ORDER BY id")).all()
        messages = conn.execute(text("SELECT id, status FROM message ORDER BY id")).all()
    return [tuple(r) for r in runs], [tuple(m) for m in messages]


async def _settle(inbox, expected: int, seconds: float) -> None:
    """Wait until `expected` mails arrived, then `seconds` more for any that should not."""
    for _ in range(1800):  # bounded: breaks as soon as they are in
        if len(inbox.mails) >= expected:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(seconds)


async def test_activating_a_finished_broadcast_again_sends_nothing(temporal_dev, runtime_db, dev_worker, smtp_sink,
                                                                  tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, body in FOLDER.items():
        (folder / name).write_text(body)
    workspace = ensure_workspace(runtime_db, "shop")
    add_customers(runtime_db, workspace, CUSTOMERS)

    first = await asyncio.to_thread(_apply, runtime_db, temporal_dev, dev_worker, folder)
    assert "journey launch active on v1" in first
    await _settle(smtp_sink, len(CUSTOMERS), 2)
    assert _per_recipient(smtp_sink) == {f"{c}@example.com": 1 for c in CUSTOMERS}
    for _ in range(100):  # the cohort finishes its runs after the sends
        runs, messages = _outcomes(runtime_db)
        if all(r[1] != "active" for r in runs):
            break
        await asyncio.sleep(0.1)
    before = _outcomes(runtime_db)

    again = await asyncio.to_thread(_apply, runtime_db, temporal_dev, dev_worker, folder)  # unchanged folder
    assert "journey launch active on v1" in again
    await store.activate(temporal_dev.client, runtime_db, workspace, "launch", task_queue=dev_worker)  # the API's way
    await _settle(smtp_sink, len(CUSTOMERS), 5)  # the mails are in: 5 s more for any that should not come
    assert _per_recipient(smtp_sink) == {f"{c}@example.com": 1 for c in CUSTOMERS}
    assert _outcomes(runtime_db) == before

    # A second broadcast is a new version (letting customers enter again: max_entries is 1 by default).
    (folder / "launch.yaml").write_text(FOLDER["launch.yaml"].replace(
        "steps:", "settings:\n  entry: {max_entries: unlimited}\nsteps:"))
    third = await asyncio.to_thread(_apply, runtime_db, temporal_dev, dev_worker, folder)
    assert "journey launch active on v2" in third
    await _settle(smtp_sink, 2 * len(CUSTOMERS), 2)
    assert _per_recipient(smtp_sink) == {f"{c}@example.com": 2 for c in CUSTOMERS}
