"""Real parts for fault tests and the fault benchmark: a counting SMTP server that can go down and come
back on its port, a Temporal dev server in its own process that can be SIGKILLed and restarted on its
state, and `tidings worker` processes (the real CLI) that can be SIGKILLed.

A broadcast journey emails every customer of a segment through the environment's SMTP channel, paced by
TIDINGS_SMTP_RATE_LIMIT so that a fault lands mid-way. Counted: mails per recipient as the SMTP server
received them (not outbox rows or message rows), and the Message-ID of each."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from tests.eventually import aeventually

ROOT = Path(__file__).resolve().parents[2]
BROADCAST = """apiVersion: tidings/v1
kind: Journey
id: promo
entry: {broadcast: {segment: everyone}}
steps:
  - {id: offer, send: {channel: EMAIL, template: t}}
"""
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.MULTILINE | re.IGNORECASE)


class MailCounter:
    """An aiosmtpd server on a fixed loopback port recording (recipient, Message-ID) of every mail."""

    def __init__(self, port: int):
        self.port = port
        self.mails: list[tuple[str, str]] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):
        found = _MESSAGE_ID.search(envelope.original_content or envelope.content)
        mid = found.group(1).decode() if found else ""
        self.mails.extend((rcpt, mid) for rcpt in envelope.rcpt_tos)
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        """Down: new connections are refused, open ones are dropped."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def count(self) -> int:
        return len(self.mails)


class TemporalDev:
    """`temporal server start-dev` on a fixed port and state file; kill() is a SIGKILL, start() reuses the state."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from tidings.engine.ops.devstack import SEARCH_ATTRIBUTES, TEMPORAL_TUNING, binary, free_port

        cmd = [binary("temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port),
               "--headless", "--ui-port", str(free_port()), "--db-filename", str(self.folder / "temporal.db"),
               "--log-level", "error", *TEMPORAL_TUNING]
        for attr in SEARCH_ATTRIBUTES:
            cmd += ["--search-attribute", attr]
        log = open(self.folder / "temporal.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    async def connect(self, timeout: float = 60.0):
        from temporalio.client import Client

        from tidings.engine.platform.temporal import DATA_CONVERTER

        give_up = time.monotonic() + timeout
        while True:
            try:
                return await Client.connect(self.address, data_converter=DATA_CONVERTER)
            except Exception:
                if time.monotonic() > give_up or (self.proc and self.proc.poll() is not None):
                    raise
                await asyncio.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@dataclass
class Workers:
    """`tidings worker` processes (the real CLI) with the given environment; SIGKILLed, never asked."""

    env: dict
    folder: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> subprocess.Popen:
        tidings = Path(sys.executable).parent / "tidings"
        log = open(self.folder / f"worker-{len(self.procs)}.log", "ab")
        proc = subprocess.Popen([str(tidings), "worker"], env=self.env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def worker_env(*, database_url: str, temporal: TemporalDev, smtp_port: int, rate: float, home: Path,
               queue: str, **extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TIDINGS_DATABASE_URL": database_url,
            "TIDINGS_HOME": str(home), "TIDINGS_TEMPORAL_ADDRESS": temporal.address, "TIDINGS_TASK_QUEUE": queue,
            "TIDINGS_SMTP_HOST": "127.0.0.1", "TIDINGS_SMTP_PORT": str(smtp_port), "TIDINGS_SMTP_SECURITY": "none",
            "TIDINGS_SMTP_FROM": "Acme <news@acme.example>", "TIDINGS_SMTP_RATE_LIMIT": str(rate),
            "TIDINGS_STREAM_WORKER": "0", **extra}


def seed_broadcast(db, n: int):
    """A workspace with n customers (one EMAIL endpoint each), a template, a segment of everyone and the
    broadcast journey (not yet active). Returns (workspace, {address: user_pk})."""
    from sqlalchemy import select

    from tidings.engine.platform.clock import now_ms
    from tidings.engine.platform.db import bulk_insert
    from tidings.engine.journeys import store
    from tidings.engine.customers.tables import endpoints, users
    from tidings.engine.segments.service import SegmentIn, create_segment
    from tidings.engine.messaging.template_store import TemplateBody, put_template
    from tidings.engine.workspaces.service import ensure_workspace

    workspace = ensure_workspace(db, "acme")
    now = now_ms()
    for start in range(0, n, 5000):
        ids = range(start, min(n, start + 5000))
        with db.begin() as conn:
            bulk_insert(conn, users, [{"workspace_id": workspace.id, "user_id": f"c{i}", "attributes": {}, "metrics": {},
                                       "timezone": None, "locale": None, "created_at": now, "updated_at": now}
                                      for i in ids])
            pks = dict(conn.execute(select(users.c.user_id, users.c.id).where(
                users.c.workspace_id == workspace.id, users.c.user_id.in_([f"c{i}" for i in ids]))).all())
            bulk_insert(conn, endpoints, [
                {"workspace_id": workspace.id, "endpoint_id": f"c{i}-email", "user_pk": pks[f"c{i}"], "channel": "EMAIL",
                 "address": f"c{i}@example.com", "opt_out": False, "attributes": {}, "metrics": {},
                 "demographic": {}, "location": {}, "effective_date": None, "created_at": now, "updated_at": now} for i in ids])
    put_template(db, workspace, "t", TemplateBody(channel="EMAIL", subject="Hi {{ user.user_id }}",
                                           text="Hello {{ user.user_id }}"))
    create_segment(db, workspace, SegmentIn(id="everyone", name="Everyone", rule=True))
    store.put_journey(db, workspace, BROADCAST)
    return workspace


@dataclass
class Tally:
    customers: int
    delivered: int  # customers who got the mail at least once
    lost: int  # customers who never got it
    duplicated: int  # customers who got it more than once
    extra_mails: int  # mails beyond one per customer
    same_message_id: bool  # every duplicate repeats its first copy's Message-ID
    statuses: dict


def tally(counter: MailCounter, db, n: int) -> Tally:
    from sqlalchemy import text

    per: dict[str, list[str]] = defaultdict(list)
    for rcpt, mid in counter.mails:
        per[rcpt].append(mid)
    counts = Counter({f"c{i}@example.com": len(per.get(f"c{i}@example.com", [])) for i in range(n)})
    with db.connect() as conn:
        statuses = dict(conn.execute(text("select status, count(*) from message group by status")).all())
    return Tally(customers=n, delivered=sum(1 for c in counts.values() if c),
                 lost=sum(1 for c in counts.values() if not c), duplicated=sum(1 for c in counts.values() if c > 1),
                 extra_mails=sum(max(0, c - 1) for c in counts.values()),
                 same_message_id=all(len(set(ids)) == 1 for ids in per.values()), statuses=statuses)


def open_messages(db) -> int:
    """Messages not yet final (queued or retrying) plus journey runs still active."""
    from sqlalchemy import text

    with db.connect() as conn:
        return conn.execute(text("select count(*) from message where status not in ('sent', 'failed')")).scalar() + \
            conn.execute(text("select count(*) from journey_run where status = 'active'")).scalar()


def runs_started(db) -> int:
    from sqlalchemy import text

    with db.connect() as conn:
        return conn.execute(text("select count(*) from journey_run")).scalar()




async def run_fault(fault: str, *, db, database_url: str, folder: Path, n: int, rate: float, at: float = 0.4,
                    outage: float = 15.0, timeout: float = 120.0, extra_env: dict | None = None) -> Tally:
    """Broadcast to n customers at `rate` mails/s; inject `fault` when `at` of them got their mail:
    'worker' (SIGKILL, restart 1 s later), 'temporal' (SIGKILL, restart on its state after `outage` s),
    'smtp' (down for `outage` s) or 'none'. Waits until every message is final and every run ended."""
    from tidings.engine.ops.devstack import free_port
    from tidings.engine.journeys import store

    workspace = seed_broadcast(db, n)
    counter = MailCounter(free_port())
    counter.start()
    temporal = TemporalDev(folder, free_port())
    temporal.start()
    queue = "faults"
    workers = Workers(worker_env(database_url=database_url, temporal=temporal, smtp_port=counter.port, rate=rate,
                                 home=folder / "home", queue=queue, **(extra_env or {})), folder)
    try:
        client = await temporal.connect()
        workers.start()
        await store.activate(client, db, workspace, "promo", task_queue=queue)
        await aeventually(lambda: counter.count() >= n * at, timeout, f"{at:.0%} of the mails")
        if fault == "worker":
            workers.kill()
            await asyncio.sleep(1.0)
            workers.start()
        elif fault == "temporal":
            temporal.kill()
            await asyncio.sleep(outage)
            temporal.start()
        elif fault == "smtp":
            counter.stop()
            await asyncio.sleep(outage)
            counter.start()
        await aeventually(lambda: runs_started(db) >= n and open_messages(db) == 0, timeout, "every message to be final")
        await asyncio.sleep(0.5)  # a late duplicate would land now
        return tally(counter, db, n)
    finally:
        workers.kill()
        temporal.kill()
        counter.stop()
