"""The deliverability page in a real browser: a provider reports hard bounces, a complaint and an
unsubscribe through the feedback endpoint; the page shows today's rates against the thresholds and the
marked addresses with their reasons; another workspace sees none of them; a bad date is a 400 naming it."""
from __future__ import annotations

import re
from datetime import UTC, datetime

from playwright.async_api import expect

from tidings.engine.analytics.deliverability import BOUNCE_THRESHOLD, COMPLAINT_THRESHOLD
from tidings.engine.messaging.feed import list_messages
from tidings.engine.platform.db import make_engine
from tidings.engine.workspaces.sessions import key_hash, workspace_of_key_hash
from tests.console.conftest import shot, sign_in

SECRET = "console-feedback-secret-0123456789"


def _smtp_messages(stack) -> list[dict]:
    db = make_engine(stack.dev.settings.database_url)
    try:
        workspace = workspace_of_key_hash(db, key_hash(stack.key))
        return [m for m in list_messages(db, workspace, limit=200)["items"] if m["user_id"] and m["channel"] == "smtp"]
    finally:
        db.dispose()


async def test_bounces_and_complaints_against_thresholds_and_suppressed_addresses(page, stack):
    async with stack.api() as api:
        # the dev stack's SMTP sink, now configured in the workspace to have a feedback secret
        smtp = {"host": "127.0.0.1", "port": stack.dev.ports.smtp, "security": "none",
                "from_address": "Tidings Dev <dev@tidings.localhost>"}
        r = await api.put("/v1/channels/smtp", json={"config": smtp, "feedback_secret": SECRET})
        assert r.status_code == 200, r.text
        sent = (await api.get("/v1/metrics/messages", params={"since": datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")})).json()
    sent_today = next(c for c in sent["channels"] if c["channel"] == "smtp")["metrics"]["sent"]["messages"]
    mails = _smtp_messages(stack)
    by_user = {}
    for m in mails:
        by_user.setdefault(m["user_id"], m)
    over_the_line = int(sent_today * BOUNCE_THRESHOLD) + 1  # the fewest hard bounces past the threshold
    *bounced, complained, unsubscribed = list(by_user.values())[:over_the_line + 2]
    feedback = [{"event_type": "hard_bounce", "message_id": m["message_id"], "permanent": True} for m in bounced]
    feedback += [{"event_type": "complaint", "message_id": complained["message_id"]},
                 {"event_type": "unsubscribed", "message_id": unsubscribed["message_id"]}]
    async with stack.api() as api:
        r = await api.post("/feedback/dev/smtp", json={"events": feedback},
                           headers={"Authorization": f"Bearer {SECRET}"})
        assert r.status_code == 200 and r.json()["recorded"] == len(feedback), r.text

    await sign_in(page, stack)
    await page.get_by_role("link", name="Deliverability").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Deliverability")
    today = page.get_by_role("region", name="Channel smtp").locator(f'tr[data-day="{datetime.now(UTC).date()}"]')
    bounce_rate, complaint_rate = len(bounced) / sent_today, 1 / sent_today
    assert (len(bounced) - 1) / sent_today <= BOUNCE_THRESHOLD < bounce_rate and complaint_rate > COMPLAINT_THRESHOLD
    await expect(today.locator('td[data-rate="bounce"]')).to_have_text(f"{bounce_rate * 100:.2f}% over")
    await expect(page.locator("svg.chart rect.over")).to_have_count(1)  # today's bar, marked past the line
    await expect(today.locator('td[data-rate="complaint"]')).to_have_text(f"{complaint_rate * 100:.2f}% over")
    table = page.locator("#suppressed-table")
    for m in bounced:
        row = table.get_by_role("row", name=re.compile("^" + re.escape(m["address"])))
        await expect(row.locator("td[data-reason]")).to_have_text("hard bounce")
        await expect(row.locator("td").last).to_have_text("yes")  # a hard bounce opts the endpoint out
    complaint_row = table.get_by_role("row", name=re.compile("^" + re.escape(complained["address"])))
    await expect(complaint_row.locator("td[data-reason]")).to_have_text("complaint")
    await expect(complaint_row.locator("td").last).to_have_text("yes")
    unsub = table.get_by_role("row", name=re.compile("^" + re.escape(unsubscribed["address"])))
    await expect(unsub.locator("td[data-reason]")).to_have_text("unsubscribe")
    await expect(unsub.locator("td").last).to_have_text("yes")  # the unsubscribe opted the endpoint out
    await expect(table.locator("tbody tr")).to_have_count(len(feedback))
    await shot(page, "deliverability")

    response = await page.goto(stack.url + "/deliverability?since=yesterday")
    assert response.status == 400
    await expect(page.get_by_role("alert")).to_contain_text("since")


async def test_another_workspace_sees_none_of_it(page, stack):
    await sign_in(page, stack, stack.other_key)
    await page.goto(stack.url + "/deliverability")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Deliverability")
    await expect(page.locator("#suppressed-table")).to_have_count(0)
    await expect(page.get_by_text("No address is opted out")).to_be_visible()
    await expect(page.get_by_role("region", name="Channel smtp")).to_have_count(0)
