"""Several worker processes: `tidings worker --processes 3` (the real CLI, its supervisor and three children)
on the session's Temporal dev server, a broadcast to 300 customers through a real SMTP server, and one child
SIGKILLed in the middle of handing a mail over. Every customer receives exactly one mail.

Exactly one, not "at most the group in flight twice" (tests/faults/test_delivery_faults.py, where the kill
lands anywhere): here it lands as the child starts handing over a group of mails (every mail it got accepted
before is recorded `sent` in the store, which the sink checks), while the SMTP server holds its reply to
that DATA. So the mail on the wire was never accepted (SMTP: a message is the server's once it answered 250;
this one's client is dead by then), and the sink holds every other DATA reply during the kill, so no other
connection of the dying child slips a mail of that group through meanwhile. A kill inside a group can still
resend the mails of that group accepted before it (one group: RECORD_GROUP or the rate limit's burst).
Counted: mails per recipient as the server accepted them."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.eventually import aeventually
from tests.faults.harness import MailCounter, open_messages, runs_started, seed_broadcast, tally, worker_env

N, RATE, PAGE, PROCESSES, MAX_COHORTS = 300, 40.0, 25, 3, 2
KILL_AT = 0.35  # share of the mails accepted when the kill lands


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _owner_of(port: int, pids: list[int]) -> int | None:
    """The process (among `pids`) whose socket has local port `port` on 127.0.0.1 (read from /proc)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) == port:
            inode = cols[9]
            break
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except (FileNotFoundError, PermissionError):
            continue
    return None


class KillingSink(MailCounter):
    """A counting SMTP server that, once `kill_at` mails are in, SIGKILLs the child worker sending the next
    one while holding every DATA reply, then lets the held mails through whose client is still there."""

    def __init__(self, port: int, kill_at: int, db):
        super().__init__(port)
        self.db = db
        self.accepted: dict[int | None, list[str]] = {}  # worker pid -> recipients of its accepted mails
        self.kill_at, self.supervisor = kill_at, 0
        self.killed: int | None = None
        self.dropped = 0  # mails on the wire of the killed child: never acknowledged, not counted
        self.senders: dict[int, int | None] = {}  # client port -> worker pid
        self.held: asyncio.Event | None = None

    def _sender(self, port: int) -> int | None:
        if port not in self.senders:
            self.senders[port] = _owner_of(port, _children(self.supervisor))
        return self.senders[port]

    async def handle_DATA(self, server, session, envelope):
        pid = self._sender(session.peer[1])
        try:
            if self.held is not None:
                await self.held.wait()
            elif self.killed is None and self.count() >= self.kill_at and pid is not None and self._between_groups(pid):
                self.held, self.killed = asyncio.Event(), pid
                # its own task: this handler is cancelled when the dead child's connection closes
                await asyncio.shield(asyncio.get_running_loop().create_task(self._kill(pid, self.held)))
        except asyncio.CancelledError:  # the client died before the reply: the mail was never accepted
            self.dropped += 1
            raise
        if server.transport is None or server.transport.is_closing():
            self.dropped += 1
            return "451 the client went away"
        answer = await super().handle_DATA(server, session, envelope)
        self.accepted.setdefault(pid, []).extend(envelope.rcpt_tos)
        return answer

    def _between_groups(self, pid: int) -> bool:
        """Every mail this child got accepted is recorded `sent`: the mail now arriving starts its next group
        (a child records each group of mails it handed over before it sends the next one)."""
        from sqlalchemy import bindparam, text

        mine = self.accepted.get(pid, [])
        if not mine:
            return False
        with self.db.connect() as conn:
            open_rows = conn.execute(text("select count(*) from message where status <> 'sent' and address in :a")
                                     .bindparams(bindparam("a", expanding=True)), {"a": mine}).scalar()
        return open_rows == 0

    async def _kill(self, pid: int, held: asyncio.Event) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)  # the dead child's connections close; their held DATA are cancelled
        finally:
            self.held = None
            held.set()


def _alive(pid: int) -> bool:
    """Running (not a zombie, not reaped by the supervisor yet)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


async def sample_sends(client, queue: str, peak: dict[str, int]) -> None:
    """Every 0.3 s until cancelled: the sends (`journey.send` activities) each worker process runs at that
    moment, read from Temporal (a pending activity's last worker identity is `pid@host`); keeps each
    identity's peak."""
    from temporalio.api.enums.v1 import PendingActivityState

    while True:
        now: dict[str, int] = {}
        async for wf in client.list_workflows(f"TaskQueue = '{queue}' AND ExecutionStatus = 'Running' "
                                              f"AND WorkflowType = 'JourneyCohort'"):
            d = await client.get_workflow_handle(wf.id).describe()
            for a in d.raw_description.pending_activities:
                if a.activity_type.name == "journey.send" and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                    now[a.last_worker_identity] = now.get(a.last_worker_identity, 0) + 1
        for who, n in now.items():
            peak[who] = max(peak.get(who, 0), n)
        await asyncio.sleep(0.3)


@pytest.fixture
def pg_db(database_url):
    from tidings.engine.platform.db import make_engine, migrate

    db = make_engine(database_url)
    migrate(db)
    yield db
    db.dispose()


# Several worker processes are a PostgreSQL deployment: this test runs on PostgreSQL only, and fails (never
# skips) where none is configured (tests/conftest.py's database_url).
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_three_worker_processes_one_killed_mid_broadcast_every_customer_gets_exactly_one(
        pg_db, database_url, temporal_dev, tmp_path):
    from tidings.engine.journeys import store
    from tidings.engine.ops.devstack import free_port

    db = pg_db
    workspace = seed_broadcast(db, N)
    sink = KillingSink(free_port(), int(N * KILL_AT), db)
    sink.start()
    queue = f"procs-{uuid.uuid4().hex[:6]}"
    address = SimpleNamespace(address=temporal_dev.client.service_client.config.target_host)
    env = worker_env(database_url=database_url, temporal=address, smtp_port=sink.port, rate=RATE,
                     home=tmp_path / "home", queue=queue, TIDINGS_WORKER_MAX_COHORTS=str(MAX_COHORTS),
                     TIDINGS_SHUTDOWN_TIMEOUT="5")
    log = open(tmp_path / "supervisor.log", "w+b")
    sup = subprocess.Popen([str(Path(sys.executable).parent / "tidings"), "worker", "--processes", str(PROCESSES)],
                           env=env, stdout=log, stderr=subprocess.STDOUT)
    sink.supervisor = sup.pid
    try:
        await aeventually(lambda: len(_children(sup.pid)) == PROCESSES and log_has(log, "worker ready") >= PROCESSES,
                          60, "three workers ready")
        first = set(_children(sup.pid))
        peak: dict[str, int] = {}
        sampler = asyncio.create_task(sample_sends(temporal_dev.client, queue, peak))
        await store.activate(temporal_dev.client, db, workspace, "promo", task_queue=queue, send_queue=f"{queue}-send",
                             page_size=PAGE)
        await aeventually(lambda: sink.killed is not None, 60, "the kill mid-broadcast")
        sampler.cancel()
        assert sink.killed in first
        try:
            await aeventually(lambda: runs_started(db) >= N and open_messages(db) == 0, 90, "every message final",
                              every=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {sink.count()} mails, {runs_started(db)} runs, {open_messages(db)} open; "
                                 f"workers: {log_text(log)[-3000:]}") from None
        await asyncio.sleep(0.5)  # a late duplicate would land now
        t = tally(sink, db, N)
        # the supervisor replaced the killed child with a new process
        children = set(_children(sup.pid))
        assert len(children) == PROCESSES and sink.killed not in children, (children, sink.killed)
        assert f"(pid {sink.killed}) died (signal 9)" in log_text(log)
        senders = {pid for pid in sink.senders.values() if pid is not None}

        sup.send_signal(signal.SIGTERM)  # a clean stop: forwarded to the children, which drain and exit
        assert sup.wait(30) == 0, log_text(log)[-3000:]
        assert all(not Path(f"/proc/{pid}").exists() for pid in children)
    finally:
        if sup.poll() is None:
            for pid in _children(sup.pid):
                os.kill(pid, signal.SIGKILL)
            sup.kill()
            sup.wait()
        sink.stop()
    assert sink.dropped >= 1  # the kill landed while that child had a mail on the wire
    assert t.lost == 0 and t.duplicated == 0 and t.extra_mails == 0, t  # exactly one mail per customer
    assert t.statuses == {"sent": N}, t
    assert len(senders) >= 2, senders  # the broadcast's sends were spread over the processes
    # 12 cohorts, and no process ever ran more than its bound of sends at once (seen from Temporal)
    assert peak and max(peak.values()) <= MAX_COHORTS and len(peak) >= 2, peak


def log_text(log) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")


def log_has(log, needle: str) -> int:
    return log_text(log).count(needle)
