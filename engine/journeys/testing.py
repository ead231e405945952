"""Test your own journeys under Temporal's time-skipping test server: a 3-day wait takes milliseconds.

Enable the fixtures in your conftest.py:

    pytest_plugins = ["tidings.engine.journeys.testing"]

and write tests like:

    async def test_welcome(journey_test):
        journey_test.load("journeys/")                  # templates, segments and journeys of the folder
        alice = journey_test.customer("alice", attributes={"plan": "trial"})   # + alice@example.com
        await journey_test.run("welcome", [alice], entry={"name": "signed_up", "attributes": {"plan": "trial"}})
        assert journey_test.sends("welcome") == [("alice", "hello", None)]
        assert journey_test.outbox("welcome")[0]["subject"].startswith("Welcome")

Sends take the real messaging path (templates rendered, opt-outs, idempotency, message rows and
`_{channel}.send` events) and land in the **outbox** channel, the default when no channel is
configured: `sends()` and `outbox()` read what was delivered there.
`journey_test.start(...)` starts the cohort without waiting, so a test can move time with
`await journey_test.sleep(seconds)` and record events in between (`journey_test.event(...)`).
"""
from __future__ import annotations

import concurrent.futures
import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tidings.engine.platform.db import make_engine, migrate, reading
from tidings.engine.wiring import wire
from tidings.engine.segments.service import put_static_segment
from tidings.engine.journeys import store
from tidings.engine.journeys.runtime.activities import JourneyActivities
from tidings.engine.messaging.tables import messages, outbox_messages
from tidings.engine.customers.tables import users

TEST_SERVER = os.environ.get("TIDINGS_TEMPORAL_TEST_SERVER")


def _test_server_path() -> str | None:
    if TEST_SERVER:
        return TEST_SERVER
    import sys

    beside = Path(sys.executable).parent / "temporal-test-server"
    return str(beside) if beside.exists() else None


class AnyCatalog:
    """Accepts every segment, template and channel (pass a StaticCatalog to check references)."""

    def has_segment(self, id: str) -> bool:
        return True

    has_template = has_channel = has_segment


class JourneyTest:
    """A database, a workspace, and a worker on the time-skipping server for one test."""

    def __init__(self, env: WorkflowEnvironment, db: Engine, *, plugins=None):
        from tidings.engine.journeys.runtime.workflows import (
            JourneyAdmissionWorkflow, JourneyBroadcastWorkflow, JourneyCohortWorkflow,
        )
        from tidings.engine.workspaces.service import ensure_workspace

        wire()  # the harness writes customers and events: the write path must tell segments and journeys
        self.env, self.db = env, db
        self.workspace = ensure_workspace(db, f"test-{uuid.uuid4().hex[:8]}")
        self.task_queue = f"journeys-{uuid.uuid4().hex[:8]}"
        self.activities = JourneyActivities(db, plugins=plugins)
        self.worker = Worker(env.client, task_queue=self.task_queue,
                             workflows=[JourneyCohortWorkflow, JourneyAdmissionWorkflow, JourneyBroadcastWorkflow],
                             activities=self.activities.all(),
                             activity_executor=concurrent.futures.ThreadPoolExecutor(8),
                             workflow_failure_exception_types=[Exception])

    async def __aenter__(self) -> "JourneyTest":
        await self.worker.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.worker.__aexit__(*exc)

    # ---- set-up ---------------------------------------------------------------------------

    async def put(self, yaml_text: str, catalog=None) -> store.JourneyInfo:
        """Compile and store a journey; its references are checked only against `catalog` when given."""
        info, _ = store.put_journey(self.db, self.workspace, yaml_text, catalog or AnyCatalog())
        return info

    async def put_file(self, path: str | Path) -> store.JourneyInfo:
        return await self.put(Path(path).read_text())

    def load(self, path: str | Path) -> list:
        """Apply a folder (or file) of resources as `tidings apply` does: templates, segments, journeys,
        every reference checked. Returns the changes."""
        from tidings.engine.journeys.apply import apply

        return apply(self.db, self.workspace, path)

    def template(self, template_id: str, *, channel: str = "EMAIL", **parts: Any) -> None:
        """Store a template: `subject=`, `text=`, `html=`, `body=` (SMS), `title=`, `data=`, `defaults=`."""
        from tidings.engine.messaging.template_store import TemplateBody, put_template

        put_template(self.db, self.workspace, template_id, TemplateBody(channel=channel, **parts))  # type: ignore[arg-type]  # checked on store

    def customer(self, user_id: str, *, attributes: dict | None = None, metrics: dict | None = None,
                 timezone: str | None = None, email: str | None = "", phone: str | None = None,
                 opt_out: bool = False) -> int:
        """Create or update a customer with an EMAIL endpoint (`{user_id}@example.com` unless `email=`
        says otherwise; `email=None` for none) and an SMS endpoint when `phone=` is given; returns its user_pk."""
        from tidings.engine.customers.users import upsert_users
        from tidings.engine.customers.endpoints import upsert_endpoints
        from tidings.engine.customers.schemas import EndpointBatchItem, UserBatchItem

        extra = {"timezone": timezone} if timezone else {}
        upsert_users(self.db, self.workspace, [UserBatchItem(user_id=user_id, attributes=attributes or {},
                                                      metrics=metrics or {}, **extra)])
        eps = []
        if email is not None:
            eps.append(EndpointBatchItem(endpoint_id=f"{user_id}-email", channel="EMAIL", user_id=user_id,
                                         address=email or f"{user_id}@example.com", opt_out=opt_out))
        if phone:
            eps.append(EndpointBatchItem(endpoint_id=f"{user_id}-sms", channel="SMS", user_id=user_id,
                                         address=phone, opt_out=opt_out))
        if eps:
            upsert_endpoints(self.db, self.workspace, eps)
        with reading(self.db) as conn:
            return conn.execute(select(users.c.id).where(users.c.workspace_id == self.workspace.id,
                                                         users.c.user_id == user_id)).scalar_one()

    def segment(self, segment_id: str, user_pks: list[int]) -> None:
        """A static segment of exactly these customers (created, or its members replaced)."""
        put_static_segment(self.db, self.workspace, segment_id, user_pks)

    def event(self, user_id: str, name: str, attributes: dict | None = None) -> None:
        from tidings.engine.customers.events import ingest
        from tidings.engine.customers.schemas import EventIn

        ingest(self.db, self.workspace, [EventIn(name=name, user_id=user_id, attributes=attributes or {})], allow_reserved=True)

    # ---- running --------------------------------------------------------------------------

    async def start(self, journey_id: str, user_pks: list[int], *, entry: dict | None = None, **cohort_options: Any):
        opts = {"visibility": False, **cohort_options}
        return await store.enter(self.env.client, self.db, self.workspace, journey_id, user_pks, task_queue=self.task_queue,
                                 entry=entry, cohort_options=opts)

    async def run(self, journey_id: str, user_pks: list[int], *, entry: dict | None = None, **cohort_options: Any):
        handle = await self.start(journey_id, user_pks, entry=entry, **cohort_options)
        return None if handle is None else await handle.result()

    async def sleep(self, seconds: float) -> None:
        await self.env.sleep(timedelta(seconds=seconds))

    # ---- assertions -----------------------------------------------------------------------

    def outbox(self, journey_id: str | None = None) -> list[dict[str, Any]]:
        """What the outbox channel delivered, in order: user_id, step_id, variant, channel_type, address,
        the rendered content (subject, text, html, body...) and message_id."""
        with reading(self.db) as conn:
            rows = conn.execute(
                select(users.c.user_id, messages.c.journey_id, messages.c.step_id, messages.c.variant,
                       outbox_messages.c.message_id, outbox_messages.c.channel_type, outbox_messages.c.address,
                       outbox_messages.c.content)
                .join(messages, messages.c.message_id == outbox_messages.c.message_id)
                .join(users, users.c.id == messages.c.user_pk, isouter=True)
                .where(outbox_messages.c.workspace_id == self.workspace.id).order_by(outbox_messages.c.id)).all()
        return [{"user_id": r.user_id, "journey_id": r.journey_id, "step_id": r.step_id, "variant": r.variant,
                 "message_id": r.message_id, "channel_type": r.channel_type, "address": r.address, **r.content}
                for r in rows if journey_id is None or r.journey_id == journey_id]

    def sends(self, journey_id: str | None = None) -> list[tuple[str, str, str | None]]:
        """(user_id, step_id, variant) of every message delivered (to the outbox), in order."""
        return [(m["user_id"], m["step_id"], m["variant"]) for m in self.outbox(journey_id)]

    def messages(self, journey_id: str | None = None) -> list[dict[str, Any]]:
        """Every message row (any channel) with its status: queued | sent | failed."""
        with reading(self.db) as conn:
            q = select(users.c.user_id, messages.c.message_id, messages.c.step_id, messages.c.status, messages.c.channel,
                       messages.c.address, messages.c.error).join(users, users.c.id == messages.c.user_pk) \
                .where(messages.c.workspace_id == self.workspace.id).order_by(messages.c.id)
            if journey_id is not None:
                q = q.where(messages.c.journey_id == journey_id)
            return [dict(r._mapping) for r in conn.execute(q)]

    def runs(self, journey_id: str) -> dict[str, store.RunInfo]:
        """The latest run of each customer, by user_id."""
        out: dict[str, store.RunInfo] = {}
        for r in reversed(store.list_runs(self.db, self.workspace, journey_id, limit=100_000)):
            out[r.user_id] = r
        return out


@pytest.fixture(scope="session")
async def journey_env():
    """The time-skipping Temporal test server (started once per session)."""
    from tidings.engine.platform.temporal import DATA_CONVERTER

    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_test_server_path(),
                                                        data_converter=DATA_CONVERTER)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def journey_test(journey_env, tmp_path):
    """A fresh SQLite database and workspace with a running journey worker; see JourneyTest."""
    db = make_engine(f"sqlite:///{tmp_path / 'journeys.db'}")
    migrate(db)
    async with JourneyTest(journey_env, db) as jt:
        yield jt
    db.dispose()
