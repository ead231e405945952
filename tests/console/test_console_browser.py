"""The console in a real browser against the real stack, seeded like `tidings demo`: sign in, find a
customer, build a segment and watch its size follow the rule, read a journey's step counts after its
broadcast, filter the messages feed, sign out; another workspace's ids show nothing; forms without
their CSRF token are refused."""
from __future__ import annotations

import asyncio
import re
from collections import Counter

from playwright.async_api import expect

from tidings.engine.ops import demo
from tests.console.conftest import shot, sign_in

CUSTOMERS = demo.sample_customers()[0]
PLANS = Counter(u["attributes"]["plan"] for u in CUSTOMERS)


async def test_sign_in_overview_and_sign_out(page, stack):
    await page.goto(stack.url + "/customers")
    await expect(page).to_have_url(stack.url + "/sign-in")  # nothing without a session
    await shot(page, "sign-in")
    await page.get_by_label("Workspace API key").fill("tk_not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That key is unknown or revoked.")
    await sign_in(page, stack)
    cookie = next(c for c in await page.context.cookies() if c["name"] == "tidings_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert stack.key not in cookie["value"]
    await expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    # the same figures as the JSON API's metrics for the same days
    async with stack.api() as api:
        since = await page.get_by_label("From").input_value()
        until = await page.get_by_label("To").input_value()
        channels = (await api.get("/v1/metrics/messages", params={"since": f"{since}T00:00:00Z"})).json()["channels"]
    email = next(c for c in channels if c["channel"] == "smtp")  # the demo's mail goes out through the SMTP channel
    assert until and email["metrics"]["sent"]["messages"] >= len(CUSTOMERS)
    row = page.get_by_role("row", name=re.compile("^smtp"))
    await expect(row.locator('td[data-metric="sent"]')).to_contain_text(str(email["metrics"]["sent"]["messages"]))
    await shot(page, "overview")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(stack.url + "/sign-in")
    await page.goto(stack.url + "/journeys")
    await expect(page).to_have_url(stack.url + "/sign-in")


async def test_find_a_customer_by_address_and_read_the_profile(page, stack):
    await sign_in(page, stack)
    await page.get_by_role("link", name="Customers").click()
    await page.get_by_label("User id, endpoint id or address").fill("demo-003@example.com")
    await page.get_by_role("button", name="Find").click()
    await expect(page).to_have_url(stack.url + "/customers/demo-003")
    user = CUSTOMERS[3]
    await expect(page.get_by_role("heading", level=1)).to_have_text("Customer demo-003")
    attributes = page.get_by_role("region", name="Attributes")
    await expect(attributes).to_contain_text(user["attributes"]["first_name"])
    await expect(attributes).to_contain_text(user["attributes"]["plan"])
    endpoints = page.get_by_role("region", name="Endpoints")
    await expect(endpoints.get_by_role("row")).to_have_count(1 + 2)  # demo-003 has email and SMS endpoints
    await expect(endpoints.get_by_role("row", name=re.compile("demo-003-email"))).to_contain_text("no")
    await expect(page.get_by_role("region", name="Current segments")).to_contain_text("all-users")
    runs = page.get_by_role("region", name="Journey runs")
    await expect(runs.get_by_role("row", name=re.compile("launch-announcement"))).to_contain_text("completed")
    messages = page.get_by_role("region", name="Messages")
    await expect(messages.get_by_role("row", name=re.compile("launch-announcement"))).to_contain_text("sent")
    await expect(page.get_by_role("region", name="Events").get_by_role("row").first).to_be_visible()
    await shot(page, "customer")
    await page.goto(stack.url + "/customers?q=nobody%40example.com")
    await expect(page.get_by_role("status")).to_contain_text("No customer in workspace dev")


async def test_segment_builder_shows_the_size_as_the_rule_is_typed(page, stack):
    await sign_in(page, stack)
    await page.goto(stack.url + "/segments")
    await expect(page.locator('td[data-size="all-users"]')).to_have_text(str(len(CUSTOMERS)))
    await shot(page, "segments")
    await page.get_by_role("link", name="New segment").click()
    rule = page.get_by_label(re.compile("^Rule"))
    size = page.locator("#preview-size")
    await rule.fill('{"==": [{"var": "attributes.plan"}, "pro"]}')
    await expect(size).to_have_text(str(PLANS["pro"]))
    await rule.fill('{"==": [{"var": "attributes.plan"}, "trial"]}')
    await expect(size).to_have_text(str(PLANS["trial"]))
    await rule.fill('{"==": [{"var": "attributes.plan"}, ')  # half-typed: explained, not a size
    await expect(page.locator("#size")).to_contain_text("not JSON")
    await rule.fill('{"and": [{"==": [{"var": "attributes.plan"}, "trial"]}, {"in_segment": "all-users"}]}')
    await expect(size).to_have_text(str(PLANS["trial"]))
    await page.get_by_label(re.compile("^Id")).fill("console-trials")
    await page.get_by_label("Name", exact=True).fill("Trials (console)")
    await shot(page, "segment-builder")
    await page.get_by_role("button", name="Save segment").click()
    await expect(page).to_have_url(stack.url + "/segments/console-trials")
    await expect(page.get_by_role("region", name="Some members").get_by_role("listitem")).to_have_count(
        min(10, PLANS["trial"]))
    async with stack.api() as api:
        assert (await api.get("/v1/segments/console-trials")).json()["size"] == PLANS["trial"]


async def test_journey_graph_counts_after_the_broadcast_and_lifecycle(page, stack):
    await sign_in(page, stack)
    await page.get_by_role("link", name="Journeys").click()
    await expect(page.get_by_role("row", name=re.compile("^launch-announcement"))).to_contain_text("active")
    await shot(page, "journeys")
    await page.get_by_role("link", name="launch-announcement").click()
    announce = page.locator('#step-counts tr[data-step="announce"]')
    await expect(announce.locator('[data-count="entered"]')).to_have_text(str(len(CUSTOMERS)))
    await expect(announce.locator('[data-count="sent"]')).to_have_text(str(len(CUSTOMERS)))
    await expect(page.locator('svg.journey g[data-step="announce"]')).to_contain_text(f"sent {len(CUSTOMERS)}")
    await expect(page.locator('#send-outcomes tr[data-step="announce"][data-outcome="sent"] td').last).to_have_text(
        str(len(CUSTOMERS)))
    await page.goto(stack.url + "/journeys/welcome")
    trials = sum(1 for e in demo.sample_signups(0) if e["attributes"]["plan"] == "trial")
    await expect(page.locator('#step-counts tr[data-step="hello"] [data-count="sent"]')).to_have_text(str(trials))
    await expect(page.locator('#step-counts tr[data-step="wait-a-day"] [data-count="waiting"]')).to_have_text(str(trials))
    await expect(page.locator("svg.journey text.edge-label").first).to_be_visible()  # the split's branches
    await shot(page, "journey")
    await page.get_by_role("button", name="Pause").click()
    await expect(page.locator("#journey-status")).to_have_text("paused")
    await page.get_by_role("button", name="Resume").click()
    await expect(page.locator("#journey-status")).to_have_text("active")
    async with stack.api() as api:
        assert (await api.get("/v1/journeys/welcome")).json()["status"] == "active"


async def test_messages_feed_filters(page, stack):
    await sign_in(page, stack)
    await page.get_by_role("link", name="Messages").click()
    await page.get_by_label("Journey").select_option("welcome")
    await page.get_by_role("button", name="Filter").click()
    trials = sum(1 for e in demo.sample_signups(0) if e["attributes"]["plan"] == "trial")
    rows = page.locator("table.messages tbody tr")
    await expect(rows).to_have_count(trials)
    for text in await rows.all_inner_texts():
        assert "welcome / hello" in text and "sent" in text
    await shot(page, "messages")
    await page.get_by_label("Customer").fill("demo-000")
    await page.get_by_label("Journey").select_option("")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows.first).to_contain_text("demo-000")
    assert all("demo-000" in t for t in await rows.all_inner_texts())
    await page.get_by_label("Status").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("status")).to_contain_text("No messages match these filters")


async def test_another_workspace_sees_nothing_of_the_first(page, stack):
    async with stack.api() as api:
        events = (await api.get("/v1/events", params={"user_id": "demo-000", "limit": 1000})).json()["items"]
    message_id = next(e["attributes"]["message_id"] for e in events if e["name"] == "_email.send")
    await sign_in(page, stack, stack.other_key)
    await expect(page.locator(".ws")).to_contain_text("globex")
    for path in ("/customers/demo-000", "/segments/all-users", "/journeys/welcome", "/templates/launch-email",
                 f"/messages/{message_id}"):
        response = await page.goto(stack.url + path)
        assert response.status == 404, path
        await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
        await expect(page.locator("main")).not_to_contain_text("Ana")
    await page.goto(stack.url + "/customers?q=demo-000%40example.com")
    await expect(page.get_by_role("status")).to_contain_text("No customer in workspace globex")
    await page.goto(stack.url + "/messages")
    await expect(page.get_by_role("status")).to_contain_text("No messages yet")
    await page.goto(stack.url + "/segments")
    await expect(page.locator("main")).not_to_contain_text("all-users")
    await page.goto(stack.url + "/customers/globex-1")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Customer globex-1")


async def test_posts_without_the_csrf_token_are_refused(page, stack):
    await sign_in(page, stack)
    rule = '{"==": [{"var": "attributes.plan"}, "pro"]}'
    refused = await page.request.post(stack.url + "/segments", form={"segment_id": "forged", "name": "x", "rule": rule})
    assert refused.status == 403 and "CSRF" in await refused.text()
    stop = await page.request.post(stack.url + "/journeys/welcome/stop", form={})
    assert stop.status == 403
    async with stack.api() as api:
        assert (await api.get("/v1/segments/forged")).status_code == 404
        assert (await api.get("/v1/journeys/welcome")).json()["status"] == "active"


async def test_pages_read_on_a_narrow_screen(browser, stack):
    context = await browser.new_context(viewport={"width": 360, "height": 740})
    page = await context.new_page()
    try:
        await sign_in(page, stack)
        for path in ("/", "/customers/demo-003", "/segments", "/journeys/welcome", "/messages"):
            await page.goto(stack.url + path)
            # tables and the journey drawing scroll inside their own boxes; the page itself does not
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, (path, width)
        await shot(page, "narrow-customer")
    finally:
        await context.close()


async def test_template_preview_with_a_chosen_customer(page, stack):
    await sign_in(page, stack)
    await page.get_by_role("link", name="Templates").click()
    await page.get_by_role("link", name="launch-email").click()
    await page.get_by_label("Preview for customer").fill("demo-003")
    await page.get_by_role("button", name="Preview").click()
    name = CUSTOMERS[3]["attributes"]["first_name"]
    await expect(page.locator('[data-part="subject"]')).to_have_text(f"Something new at Example, {name}")
    frame = page.frame_locator("iframe.mail")
    await expect(frame.get_by_role("heading", level=1)).to_have_text("It's here")
    await shot(page, "template")
    await page.get_by_label("Preview for customer").fill("nobody")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.get_by_role("alert")).to_contain_text("no user 'nobody'")


async def test_a_message_shows_its_status_timeline(page, stack):
    await sign_in(page, stack)
    await page.goto(stack.url + "/messages?journey_id=launch-announcement&user_id=demo-000")
    await page.locator("table.messages tbody tr").first.get_by_role("link").first.click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Message")
    await expect(page.locator("#message-facts")).to_contain_text("launch-announcement")
    await expect(page.locator("#message-events")).to_contain_text("_email.send")
    await shot(page, "message")


async def test_segment_builder_condition_list(page, stack):
    await sign_in(page, stack)
    await page.goto(stack.url + "/segments/new")
    await page.get_by_label(re.compile("^Rule")).fill("")
    size = page.locator("#preview-size")

    async def add(kind: str, name: str, op: str, value: str) -> None:
        await page.get_by_label("Kind").select_option(kind)
        await page.get_by_label(re.compile("^Condition name")).fill(name)
        await page.get_by_label("Operator").select_option(op)
        await page.get_by_label(re.compile("^Value")).fill(value)
        await page.get_by_role("button", name="Add condition").click()

    await add("attribute", "plan", "==", "pro")
    await expect(size).to_have_text(str(PLANS["pro"]))
    rich = [u for u in CUSTOMERS if u["attributes"]["plan"] == "pro" and u["metrics"]["lifetime_value"] > 250]
    await add("metric", "lifetime_value", ">", "250")
    await expect(size).to_have_text(str(len(rich)))
    buyers = {e["user_id"] for e in demo.sample_customers()[2] if e["name"] == "purchase"}
    await add("performed", "purchase", "==", "30d")
    await expect(size).to_have_text(str(len([u for u in rich if u["user_id"] in buyers])))
    rule = await page.get_by_label(re.compile("^Rule")).input_value()
    assert '"performed"' in rule and '"metrics.lifetime_value"' in rule and rule.count('"and"') == 1
    await add("metric", "lifetime_value", ">", "lots")
    await expect(page.locator("#rule-field [role=alert]")).to_have_text("'lots' is not a number")


async def test_the_address_tidings_dev_prints_opens_the_console(page, stack):
    line = next(x for x in stack.dev.banner().splitlines() if x.startswith("Web console"))
    await page.goto(line.split()[2])
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to the Tidings console")


async def test_journey_report_funnel_channels_and_refusals(page, stack):
    """The welcome journey's report after the demo's sign-ups: entered, sent, refused by the entry filter."""
    signups = demo.sample_signups(0)
    trials = sum(1 for e in signups if e["attributes"]["plan"] == "trial")
    await sign_in(page, stack)
    await page.goto(stack.url + "/journeys/welcome")
    funnel = page.locator("#funnel-table")
    await expect(funnel.locator('tr[data-stage="entered"] [data-count="customers"]')).to_have_text(str(trials))
    await expect(funnel.locator('tr[data-stage="sent:hello"] [data-count="customers"]')).to_have_text(str(trials))
    await expect(funnel.locator('tr[data-stage="goal"] [data-count="customers"]')).to_have_text("0")
    # the sign-ups that are not on trial never began a run: the journey's entry filter turned them away
    await expect(page.locator('#refused tr[data-reason="entry_filter"] td')).to_have_text(str(len(signups) - trials))
    await expect(page.locator('#per-channel-table tr[data-channel="smtp"] [data-metric="sent"]')).to_have_text(
        str(trials))
    await expect(page.locator('#per-step-table tr[data-step="hello"] [data-metric="sent"]')).to_have_text(str(trials))
    async with stack.api() as api:
        report = (await api.get("/v1/journeys/welcome/report")).json()
    assert report["entered"] == trials and report["refused_at_admission"] == {"entry_filter": len(signups) - trials}
    assert [(f["stage"], f["step_id"], f["customers"]) for f in report["funnel"]] == [
        ("entered", None, trials), ("sent", "hello", trials), ("sent", "reminder", 0), ("goal", None, 0)]
    await shot(page, "journey-report")


HOLDOUT_JOURNEY = """apiVersion: tidings/v1
kind: Journey
id: console-holdout
name: Holdout (console test)
entry: {event: console_signal}
settings:
  goal: {event: console_bought, within: 1d}
steps:
  - {id: control, holdout: {percent: 40}}
  - {id: mail, send: {channel: EMAIL, template: launch-email}}
"""


async def test_journey_holdout_rate_and_lift(page, stack):
    """A journey with a holdout, run on 20 demo customers; two of each group then buy: the page shows the
    held-out share, both conversion rates and the lift, as GET /v1/journeys/{id}/report computes them."""
    users = [u["user_id"] for u in CUSTOMERS[:20]]
    async with stack.api() as api:
        (await api.put("/v1/journeys/console-holdout", content=HOLDOUT_JOURNEY)).raise_for_status()
        (await api.post("/v1/journeys/console-holdout/activate")).raise_for_status()
        (await api.post("/v1/events", json={"events": [{"id": f"signal-{u}", "user_id": u, "name": "console_signal"}
                                                       for u in users]})).raise_for_status()
        for _ in range(240):  # admission, then the cohort's steps
            report = (await api.get("/v1/journeys/console-holdout/report")).json()
            if report["entered"] == len(users) and report["active"] == 0:
                break
            await asyncio.sleep(0.25)
        assert report["entered"] == len(users) and report["active"] == 0, report
        runs = (await api.get("/v1/journeys/console-holdout/runs", params={"limit": 100})).json()
        held = sorted(r["user_id"] for r in runs if r["status"] == "held_out")
        sent = sorted(r["user_id"] for r in runs if r["status"] == "completed")
        assert len(held) >= 2 and len(sent) >= 2, runs
        buyers = held[:1] + sent[:2]
        (await api.post("/v1/events", json={"events": [{"id": f"bought-{u}", "user_id": u, "name": "console_bought"}
                                                       for u in buyers]})).raise_for_status()
        report = (await api.get("/v1/journeys/console-holdout/report")).json()
    h = report["holdout"]
    assert (h["customers"], h["converted"], h["treated_converted"]) == (len(held), 1, 2)
    assert h["rate"] == round(len(held) / len(users), 4) and h["lift"] is not None
    await sign_in(page, stack)
    await page.goto(stack.url + "/journeys/console-holdout")
    facts = page.locator("#holdout-facts")
    await expect(facts.locator('[data-fact="held-out"]')).to_have_text(
        f"{len(held)} of {len(users)} ({h['rate'] * 100:.1f}%)")
    await expect(facts.locator('[data-fact="control"]')).to_have_text(
        f"1 converted ({h['conversion_rate'] * 100:.1f}%)")
    await expect(facts.locator('[data-fact="treated"]')).to_have_text(
        f"2 of {h['treated']} sent ({h['treated_conversion_rate'] * 100:.1f}%)")
    await expect(facts.locator('[data-fact="lift"]')).to_have_text(f"{h['lift'] * 100:+.1f}%")
    await expect(page.locator('#funnel-table tr[data-stage="goal"] [data-count="customers"]')).to_have_text("2")
    await shot(page, "journey-holdout")


async def test_why_not_sent_counts_an_opted_out_customer(page, stack):
    """Runs last: it adds a welcome run (the journey test reads the demo's counts)."""
    async with stack.api() as api:
        (await api.put("/v1/users/opted-out-1", json={"attributes": {"plan": "trial"},
                                                            # daytime there: the journey's quiet hours hold no one
                                                            "timezone": demo.daytime_zone()})).raise_for_status()
        (await api.put("/v1/endpoints/opted-out-1-email", json={"user_id": "opted-out-1", "channel": "EMAIL",
                                                                "address": "out@example.com", "opt_out": True})
         ).raise_for_status()
        (await api.post("/v1/events", json={"events": [{"id": "opted-out-1-signup", "user_id": "opted-out-1",
                                                         "name": "signed_up", "attributes": {"plan": "trial"}}]})
         ).raise_for_status()
    await sign_in(page, stack)
    row = page.locator('#send-outcomes tr[data-step="hello"][data-outcome="opted_out"] td').last
    for _ in range(60):  # the workflow records the step within moments
        await page.goto(stack.url + "/journeys/welcome")
        if await row.count():
            break
        await page.wait_for_timeout(500)
    assert await row.count(), await page.locator("#send-outcomes").inner_text()
    await expect(row).to_have_text("1")
    await expect(page.locator('#send-outcomes tr[data-step="hello"][data-outcome="sent"] td').last).to_have_text(
        str(sum(1 for e in demo.sample_signups(0) if e["attributes"]["plan"] == "trial")))
