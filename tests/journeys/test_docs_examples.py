"""The examples of the docs, run as a user would run them: the YAML is taken from the page itself, applied
like `tidings apply`, activated and fed events on the Temporal dev server; the mail is what the page says."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

from sqlalchemy import select

from tidings.engine.journeys.apply import apply
from tidings.engine.customers.events import ingest
from tidings.engine.journeys import store
from tidings.engine.messaging.tables import outbox_messages
from tidings.engine.customers.schemas import EventIn
from tidings.engine.workspaces.service import ensure_workspace
from tests.journeys.conftest import add_customers
from tests.eventually import aeventually
from tests.journeys.test_runtime_devserver import count

DOCS = Path(__file__).resolve().parents[2] / "docs"


def yaml_example(page: str, heading: str) -> str:
    """The first ```yaml block after `heading` in docs/<page>."""
    text = (DOCS / page).read_text()
    section = text[text.index(heading):]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


async def test_templates_in_journeys_example(temporal_dev, runtime_db, dev_worker, tmp_path):
    db = runtime_db
    workspace = ensure_workspace(db, "acme")
    # a journey id of its own: admission workflows are named per (workspace, journey), and every test
    # database numbers its workspace 1
    jid = f"cart-nudge-{uuid.uuid4().hex[:6]}"
    example = yaml_example("templates.md", "## Templates in journeys")
    (tmp_path / "cart-nudge.yaml").write_text(example.replace("id: cart-nudge\nentry:", f"id: {jid}\nentry:"))
    kinds = {(c.kind, c.id) for c in apply(db, workspace, tmp_path)}
    assert kinds == {("Template", "cart-nudge"), ("Journey", jid)}
    await store.activate(temporal_dev.client, db, workspace, jid, task_queue=dev_worker)
    add_customers(db, workspace, ["ann", "bo", "cy"])
    from tidings.engine.customers.users import upsert_users
    from tidings.engine.customers.schemas import UserBatchItem

    upsert_users(db, workspace, [UserBatchItem(user_id="ann", attributes={"first_name": "Ann"})])
    ingest(db, workspace, [EventIn(name="cart_updated", user_id="ann", attributes={"item": "red scarf", "total": 30}),
                    EventIn(name="cart_updated", user_id="bo", attributes={"item": "hat", "total": 12}),
                    EventIn(name="cart_updated", user_id="cy", attributes={"item": "gloves", "total": 0})])
    await aeventually(lambda: count(db, "select count(*) from journey_run where journey_id = :j and status = 'completed'",
                              j=jid) == 2)
    with db.connect() as conn:
        mails = {r.address: r.content for r in conn.execute(select(outbox_messages.c.address, outbox_messages.c.content))}
    assert set(mails) == {"ann@example.com", "bo@example.com"}  # cy's total of 0 fails the entry filter
    assert mails["ann@example.com"]["subject"] == "Hi Ann, your red scarf is waiting"
    assert mails["ann@example.com"]["text"] == "Finish at https://example.com/cart with code SAVE10."
    assert mails["bo@example.com"]["subject"] == "Hi there, your hat is waiting"
    await store.stop(temporal_dev.client, db, workspace, jid)
