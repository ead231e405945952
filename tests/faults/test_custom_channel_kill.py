"""A journey's `custom_channel` step (Pinpoint's custom-channel payload, up to 50 endpoints a POST, sent by
the webhook channel) to 450 endpoints of 150 customers, and its `tidings worker` process (the real CLI)
SIGKILLed while one POST is in flight; a new worker takes over. Counted: the endpoint ids a real HTTP receiver on loopback got, per
POST and per endpoint.

The receiver holds the third POST until the test has killed the worker that sent it, so the kill lands in
the middle of a batch: the receiver has that request's body, the worker never got the answer. Every endpoint
must arrive at least once, and the only ones that arrive twice are those of that one POST in flight (its
endpoints were never acknowledged, so they are sent again: at-least-once, as for every channel). Every POST
answered before the kill was recorded `sent` as it completed, and is not sent again. The repeated POST is
the same batch (the same endpoints, message ids and Idempotency-Key), so a receiver that drops a request
whose Idempotency-Key it already took gets each endpoint exactly once."""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from tests.eventually import aeventually
from tests.faults.harness import Workers, open_messages, runs_started, worker_env

# Each with two EMAIL endpoints and an SMS one: 450 endpoints in 9 POSTs, and a POST's 50 endpoints end in
# the middle of a customer's (50 is not a multiple of 3), so the customer split by the POST in flight must be
# resumed without its endpoints already sent.
CUSTOMERS = 150
KINDS = (("mail", "EMAIL", "c{i:03d}@example.com"), ("sms", "SMS", "+1415555{i:04d}"),
         ("work", "EMAIL", "c{i:03d}@work.example"))
ENDPOINTS = sorted(f"c{i:03d}-{kind}" for i in range(CUSTOMERS) for kind, _, _ in KINDS)
PER_POST = 50  # Pinpoint's batch size (engine/channels/custom_payload.py)
# 500 messages/s is a burst of 50 (engine/channels/rate_limit.py): one chunk of the send is one POST of 50,
# and the send's chunks go one after the other, so exactly one POST is in flight at any moment.
RATE = 500.0
HOLD_AT = 3  # the receiver holds this POST (1-based) until the worker that sent it is dead
DATA = '{"offer": "SPRING20"}'


@dataclass
class Post:
    endpoint_ids: list[str]
    idempotency_key: str
    message_ids: list[str]


@dataclass
class Receiver:
    """A custom-channel receiver on loopback (a ThreadingHTTPServer in its own thread): records every POST
    as it arrives (its body is the receiver's from then on), answers 200 after `delay` seconds, and holds
    POST number `hold_at` until `release` is set."""

    hold_at: int
    delay: float = 0.05
    posts: list[Post] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                post = Post(list(body["Endpoints"]), self.headers["Idempotency-Key"],
                            self.headers["X-Tidings-Message-Id"].split(","))
                with receiver.lock:
                    receiver.posts.append(post)
                    held = len(receiver.posts) == receiver.hold_at
                if held:
                    receiver.holding.set()
                    receiver.release.wait(120)
                else:
                    threading.Event().wait(receiver.delay)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:  # the held POST's sender is dead: nobody reads this answer
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/pinpoint-hook"

    def received(self) -> Counter:
        with self.lock:
            return Counter(eid for p in self.posts for eid in p.endpoint_ids)

    def snapshot(self) -> list[Post]:
        with self.lock:
            return list(self.posts)


def journey_yaml(url: str) -> str:
    return ("apiVersion: tidings/v1\nkind: Journey\nid: partner\nname: Partner\n"
            "entry: {broadcast: {segment: everyone}}\nsteps:\n  - id: notify\n    custom_channel:\n"
            f"      url: \"{url}\"\n      endpoint_types: [EMAIL, SMS]\n      data: '{DATA}'\n")


def seed(db, url: str):
    """CUSTOMERS customers with the endpoints of KINDS, a segment of everyone, the workspace's
    webhook channel at RATE and the custom-channel journey (not yet active)."""
    from sqlalchemy import select

    from tidings.engine.channels.config import ChannelPut, load_plugins, put_channel
    from tidings.engine.customers.tables import endpoints, users
    from tidings.engine.journeys import store
    from tidings.engine.platform.clock import now_ms
    from tidings.engine.platform.db import bulk_insert
    from tidings.engine.segments.service import SegmentIn, create_segment
    from tidings.engine.workspaces.service import ensure_workspace

    workspace = ensure_workspace(db, "acme")
    now = now_ms()
    with db.begin() as conn:
        bulk_insert(conn, users, [{"workspace_id": workspace.id, "user_id": f"c{i:03d}", "attributes": {},
                                   "metrics": {}, "timezone": None, "locale": None, "created_at": now,
                                   "updated_at": now} for i in range(CUSTOMERS)])
        pks = dict(conn.execute(select(users.c.user_id, users.c.id).where(users.c.workspace_id == workspace.id)).all())
        bulk_insert(conn, endpoints, [
            {"workspace_id": workspace.id, "endpoint_id": f"c{i:03d}-{kind}", "user_pk": pks[f"c{i:03d}"],
             "channel": channel, "address": address.format(i=i), "opt_out": False, "attributes": {}, "metrics": {},
             "demographic": {}, "location": {}, "effective_date": None, "created_at": now, "updated_at": now}
            for i in range(CUSTOMERS)
            for kind, channel, address in KINDS])
    create_segment(db, workspace, SegmentIn(id="everyone", name="Everyone", rule=True))
    put_channel(db, load_plugins(), workspace, "webhook", ChannelPut(rate_limit=RATE))
    store.put_journey(db, workspace, journey_yaml(url))
    return workspace


def statuses(db) -> dict:
    from sqlalchemy import text

    with db.connect() as conn:
        return dict(conn.execute(text("select status, count(*) from message group by status")).all())


@pytest.fixture
def fault_db(database_url):
    from tidings.engine.platform.db import make_engine, migrate

    db = make_engine(database_url)
    migrate(db)
    yield db
    db.dispose()


async def test_worker_killed_mid_custom_channel_post_resends_only_that_post(fault_db, database_url, temporal_dev,
                                                                           tmp_path):
    from tidings.engine.journeys import store

    db = fault_db
    receiver = Receiver(hold_at=HOLD_AT)
    receiver.start()
    workspace = seed(db, receiver.url)
    queue = f"custom-kill-{uuid.uuid4().hex[:6]}"
    address = SimpleNamespace(address=temporal_dev.client.service_client.config.target_host)
    workers = Workers(worker_env(database_url=database_url, temporal=address, smtp_port=9, rate=1.0,
                                 home=tmp_path / "home", queue=queue), tmp_path)
    try:
        first = workers.start()
        # one cohort of everyone: one send activity, its POSTs one after the other
        await store.activate(temporal_dev.client, db, workspace, "partner", task_queue=queue, page_size=CUSTOMERS)
        await aeventually(receiver.holding.is_set, 90, "the third POST to reach the receiver")
        first.kill()  # SIGKILL, while its POST is held by the receiver
        first.wait()
        receiver.release.set()  # the held request is answered into a closed connection
        in_flight = receiver.snapshot()[HOLD_AT - 1]
        sent_before = receiver.snapshot()[:HOLD_AT - 1]
        workers.start()  # the send activity's retry (after its heartbeat timeout) runs here
        try:
            await aeventually(lambda: runs_started(db) >= CUSTOMERS and open_messages(db) == 0, 120,
                              "every message to be final", every=0.5)
        except AssertionError as exc:
            logs = "".join((tmp_path / f"worker-{i}.log").read_text(errors="replace")[-2000:] for i in range(2))
            raise AssertionError(f"{exc}: {len(receiver.snapshot())} POSTs, {statuses(db)}; workers: {logs}") from None
        await asyncio.sleep(1.0)  # a late duplicate would land now
    finally:
        workers.kill()
        receiver.stop()

    posts = receiver.snapshot()
    got = receiver.received()
    assert sorted(got) == ENDPOINTS, "an endpoint never arrived"  # lost: none
    assert all(1 <= len(p.endpoint_ids) <= PER_POST for p in posts), [len(p.endpoint_ids) for p in posts]
    assert len(in_flight.endpoint_ids) == PER_POST
    assert not set(in_flight.endpoint_ids) & {e for p in sent_before for e in p.endpoint_ids}
    # Twice: exactly the endpoints of the one POST in flight at the kill (never acknowledged, so resent);
    # every other endpoint exactly once (the POSTs answered before the kill were recorded as they completed).
    twice = {eid for eid, n in got.items() if n > 1}
    assert twice == set(in_flight.endpoint_ids), sorted(twice ^ set(in_flight.endpoint_ids))
    assert max(got.values()) == 2
    assert len(posts) == len(ENDPOINTS) // PER_POST + 1  # 9 batches and the in-flight one again
    # a customer with endpoints both in a POST answered before the kill and in the one in flight
    owners = {e.split("-")[0] for e in in_flight.endpoint_ids}
    assert owners & {e.split("-")[0] for p in sent_before for e in p.endpoint_ids}, owners
    # The repeat is the same batch: same endpoints, same message ids, same Idempotency-Key. A receiver that
    # drops a request whose key it already took ends with each endpoint exactly once.
    [repeat] = [p for p in posts[HOLD_AT:] if set(p.endpoint_ids) & set(in_flight.endpoint_ids)]
    assert (repeat.endpoint_ids, repeat.message_ids, repeat.idempotency_key) == \
        (in_flight.endpoint_ids, in_flight.message_ids, in_flight.idempotency_key)
    assert len({p.idempotency_key for p in posts}) == len(posts) - 1
    # X-Tidings-Message-Id lists the message ids in the order of Endpoints, and an endpoint keeps its message
    # id however it is retried (docs/pinpoint.md): a receiver can also drop repeats endpoint by endpoint.
    ids_of: dict[str, set[str]] = {}
    for p in posts:
        assert len(p.message_ids) == len(p.endpoint_ids)
        for eid, mid in zip(p.endpoint_ids, p.message_ids):
            ids_of.setdefault(eid, set()).add(mid)
    assert all(len(mids) == 1 for mids in ids_of.values())
    kept: dict[str, Post] = {}
    for p in posts:
        kept.setdefault(p.idempotency_key, p)
    assert sorted(e for p in kept.values() for e in p.endpoint_ids) == ENDPOINTS
    assert statuses(db) == {"sent": len(ENDPOINTS)}
