"""A template's test send in a real browser: the mail reaches the SMTP sink, rendered, and is recorded as
a message whose page the answer links; a malformed address is a 400 naming it; no CSRF token, no send."""
from __future__ import annotations

import asyncio
from email import message_from_bytes, policy

from playwright.async_api import expect

from tests.console.conftest import shot, sign_in

TESTER = "tester@qa.example"


async def _mail_to(folder, address: str, timeout: float = 30):
    for _ in range(int(timeout / 0.25)):
        for f in folder.glob("*.eml"):
            mail = message_from_bytes(f.read_bytes(), policy=policy.default)
            if address in str(mail["To"]):
                return mail
        await asyncio.sleep(0.25)
    raise AssertionError(f"no mail to {address} reached the sink in {timeout} s")


async def test_send_a_test_of_a_template_to_an_address(page, stack):
    await sign_in(page, stack)
    await page.goto(stack.url + "/templates/welcome-email")
    await page.get_by_label("Send a test to").fill(TESTER)
    await page.get_by_role("button", name="Send test").click()
    result = page.locator("#test-result")
    await expect(result).to_contain_text(f"Test to {TESTER}: sent")
    mail = await _mail_to(stack.dev.mail_folder, TESTER)
    assert mail["Subject"] == "Welcome to Example, there!"  # no customer: the template's default
    await shot(page, "template-test-send")
    await result.get_by_role("link").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Message")
    await expect(page.locator("#message-facts")).to_contain_text(TESTER)
    await expect(page.locator("#message-facts")).to_contain_text("a transactional send")

    await page.goto(stack.url + "/templates/welcome-email")
    await page.get_by_label("Send a test to").fill("not an address")
    async with page.expect_response(lambda r: r.url.endswith("/test-send")) as answer:
        await page.get_by_role("button", name="Send test").click()
    assert (await answer.value).status == 400
    await expect(page.locator("#test-error")).to_contain_text("address")

    refused = await page.request.post(stack.url + "/templates/welcome-email/test-send", form={"address": "x@qa.example"})
    assert refused.status == 403
    missing = await page.request.post(stack.url + "/templates/no-such-template/test-send", form={
        "address": TESTER, "_csrf_token": await page.locator('input[name="_csrf_token"]').first.input_value()})
    assert missing.status == 404
