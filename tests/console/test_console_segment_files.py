"""Segment files in a real browser: export a segment's members as CSV (the engine's export), import a CSV
as a static segment, and a file with bad rows refused with each row's problem and nothing written; another
workspace cannot export this one's segment."""
from __future__ import annotations

import csv
import io
import re

from playwright.async_api import expect

from tidings.engine.ops import demo
from tests.console.conftest import shot, sign_in

CUSTOMERS = demo.sample_customers()[0]


async def test_export_a_segment_as_csv(page, stack):
    await sign_in(page, stack)
    await page.goto(stack.url + "/segments/all-users")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Export CSV").click()
    got = await download.value
    assert got.suggested_filename == "all-users.csv"
    rows = list(csv.DictReader(io.StringIO((await got.path()).read_text(encoding="utf-8"))))
    assert len(rows) == len(CUSTOMERS)
    demo_003 = next(r for r in rows if r["user_id"] == "demo-003")
    assert "demo-003@example.com" in demo_003["addresses"].split(";")
    assert CUSTOMERS[3]["attributes"]["plan"] in demo_003["attributes"]


async def test_import_a_csv_and_see_bad_rows(page, stack):
    await sign_in(page, stack)
    await page.goto(stack.url + "/segments")
    await page.get_by_label("Name").fill("Gold list")
    await page.get_by_label("File").set_input_files(files=[{
        "name": "gold.csv", "mimeType": "text/csv", "buffer": b"user_id,tier\nvip-1,gold\nvip-2,gold\n"}])
    await page.get_by_role("button", name="Import").click()
    await expect(page).to_have_url(re.compile(re.escape(stack.url) + "/segments/[^/]+$"))
    await expect(page.get_by_text("2 members now")).to_be_visible()
    async with stack.api() as api:
        assert (await api.get("/v1/users/vip-1")).json()["attributes"]["tier"] == "gold"

    await page.goto(stack.url + "/segments")
    await page.get_by_label("Name").fill("Broken list")
    await page.get_by_label("File").set_input_files(files=[{
        "name": "broken.csv", "mimeType": "text/csv", "buffer": b"user_id,tier\nvip-3,gold\n,gold\nvip-4,gold\n"}])
    async with page.expect_response(lambda r: r.url.endswith("/segments/import")) as answer:
        await page.get_by_role("button", name="Import").click()
    assert (await answer.value).status == 400
    await expect(page.locator("#import-error")).to_contain_text("1 of 3 rows are invalid; nothing was written")
    bad = page.locator("#import-rows tbody tr")
    await expect(bad).to_have_count(1)
    await expect(bad.first).to_contain_text("user_id is required")
    await expect(bad.first.locator("th")).to_have_text("3")  # the header is row 1
    await shot(page, "segment-import")
    async with stack.api() as api:
        assert (await api.get("/v1/users/vip-3")).status_code == 404  # nothing written

    refused = await page.request.post(stack.url + "/segments/import", multipart={
        "name": "no token", "file": {"name": "t.csv", "mimeType": "text/csv", "buffer": b"user_id\nvip-5\n"}})
    assert refused.status == 403  # an upload needs its CSRF token too


async def test_another_workspace_cannot_export_it(page, stack):
    await sign_in(page, stack, stack.other_key)
    answer = await page.request.get(stack.url + "/segments/all-users/export.csv")
    assert answer.status == 404 and "vip-1" not in await answer.text() and "demo-003" not in await answer.text()
