"""The settings page in a real browser: a channel's config with its secrets redacted, an event stream
whose webhook is down and its dead letters, API keys created (shown once) and revoked; another
workspace's channel, stream and keys are neither shown nor revocable; forms need their CSRF token."""
from __future__ import annotations

import asyncio
import re
import socket

import httpx
from playwright.async_api import expect

from tests.console.conftest import shot, sign_in

PASSWORD = "smtp-pass-do-not-show-1"
FEEDBACK_SECRET = "feedback-secret-do-not-show-2"
HOOK_SECRET = "hook-secret-do-not-show-3"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _configure(stack) -> None:
    async with stack.api() as api:
        smtp = {"host": "127.0.0.1", "port": stack.dev.ports.smtp, "security": "none", "username": "tidings",
                "password": PASSWORD, "from_address": "Tidings Dev <dev@tidings.localhost>"}
        r = await api.put("/v1/channels/smtp", json={"config": smtp, "feedback_secret": FEEDBACK_SECRET})
        assert r.status_code == 200, r.text
        hook = {"kind": "webhook", "config": {"url": f"http://127.0.0.1:{_closed_port()}/", "secret": HOOK_SECRET},
                "start": "beginning", "max_attempts": 1, "filter": {"event_types": ["crm.*"]}}
        r = await api.put("/v1/event-streams/crm-hook", json=hook)
        assert r.status_code == 201, r.text
        r = await api.post("/v1/events", json={"events": [{"user_id": "demo-001", "name": "crm.lead", "id": "lead-1"}]})
        assert r.status_code == 202, r.text
        for _ in range(120):  # the API's stream runner tries, fails and sets the batch aside
            if (await api.get("/v1/event-streams/crm-hook")).json()["dead_letters"]:
                return
            await asyncio.sleep(0.5)
    raise AssertionError("the stream to a closed port wrote no dead letter in 60 s")


async def _status(stack, key: str) -> int:
    async with httpx.AsyncClient(base_url=stack.dev.api_url, headers={"Authorization": f"Bearer {key}"}) as c:
        return (await c.get("/v1/segments")).status_code


async def test_channels_streams_and_keys(page, stack):
    await _configure(stack)
    await sign_in(page, stack)
    await page.get_by_role("link", name="Settings").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Settings")
    channel = page.get_by_role("region", name="Channel smtp")
    await expect(channel.locator("pre.config")).to_contain_text('"password": "***"')
    await expect(channel).to_contain_text("/feedback/dev/smtp")
    await expect(page.locator("#routes").get_by_role("row", name=re.compile("^EMAIL"))).to_contain_text("smtp")
    await expect(page.locator('td[data-dead="crm-hook"]')).to_have_text("1")
    dead = page.get_by_role("region", name="Dead letters of crm-hook")
    await expect(dead.locator("tbody tr")).to_have_count(1)
    await expect(dead.locator("tbody tr td").nth(2)).to_have_text("1")  # events in the batch: the one crm.lead
    await expect(dead.locator("td.error")).to_contain_text("ConnectError")
    html = await page.content()
    assert PASSWORD not in html and FEEDBACK_SECRET not in html and HOOK_SECRET not in html

    await page.get_by_label("Label").fill("ci deploys")
    await page.get_by_role("button", name="Create key").click()
    new_key = await page.locator("#new-key").inner_text()
    assert new_key.startswith("tk_") and await _status(stack, new_key) == 200
    await shot(page, "settings")
    await page.goto(stack.url + "/settings")
    assert new_key not in await page.content()  # shown once
    row = page.locator("#keys-table").get_by_role("row", name=re.compile("ci deploys"))
    await row.get_by_role("button", name="Revoke").click()
    await expect(page).to_have_url(stack.url + "/settings")
    await expect(row).to_contain_text("revoked")
    assert await _status(stack, new_key) == 401

    refused = await page.request.post(stack.url + "/settings/keys", form={"label": "no token"})
    assert refused.status == 403  # no CSRF token
    await page.goto(stack.url + "/settings")
    await expect(page.locator("#keys-table").get_by_role("row", name=re.compile("no token"))).to_have_count(0)

    too_long = await page.request.post(stack.url + "/settings/keys", form={
        "label": "x" * 101, "_csrf_token": await page.locator('input[name="_csrf_token"]').first.input_value()})
    assert too_long.status == 400 and "label" in await too_long.text()


async def test_another_workspace_sees_and_revokes_nothing_here(page, stack):
    await sign_in(page, stack, stack.other_key)
    await page.goto(stack.url + "/settings")
    await expect(page.get_by_role("region", name="Channel smtp")).to_have_count(0)
    await expect(page.locator("#streams-table")).to_have_count(0)
    html = await page.content()
    dev_prefix = stack.key[:11]
    assert dev_prefix not in html and stack.other_key[:11] in html
    # its own revoke form pointed at the dev workspace's key: 404, and the key still works
    await page.evaluate(f"document.querySelector('#keys-table form').action = '/console/settings/keys/{dev_prefix}/revoke'")
    async with page.expect_response(re.compile("/revoke$")) as answer:
        await page.locator("#keys-table").get_by_role("button", name="Revoke").first.click()
    assert (await answer.value).status == 404
    assert await _status(stack, stack.key) == 200
