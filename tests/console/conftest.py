"""The console against the real stack: `tidings dev`'s DevStack (Temporal dev server, API, worker, SMTP
sink) seeded as `tidings demo` seeds it, and Debian's Chromium driven by Playwright. One stack per
database backend for the module; a second workspace ('globex') with a customer of its own."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tidings.engine.ops import demo
from tidings.engine.ops.devstack import DevStack, Ports
from tidings.engine.platform.config import Settings
from tidings.engine.platform.db import make_engine
from tidings.engine.workspaces.service import create_key
from tests.conftest import BACKENDS, POSTGRES_URL

CHROMIUM = "/usr/bin/chromium"
# Set to a folder to keep a screenshot of each page (docs/console/ holds the ones in docs/console.md).
SCREENSHOTS = os.environ.get("TIDINGS_CONSOLE_SCREENSHOTS")


def _database(backend: str, home: Path):
    if backend == "sqlite":
        return f"sqlite:///{home / 'tidings.db'}", None
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}", (admin, schema)


class Stack:
    def __init__(self, dev: DevStack, other_key: str):
        self.dev, self.other_key = dev, other_key
        self.url = dev.api_url + "/console"
        self.key = dev.dev_key

    def api(self) -> httpx.AsyncClient:
        """The JSON API with the dev key (async: the API serves from this test's event loop)."""
        return httpx.AsyncClient(base_url=self.dev.api_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)


@pytest.fixture(scope="module", params=BACKENDS)
async def stack(request, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"console-{request.param}")
    url, pg = _database(request.param, home)
    settings = Settings.from_env(TIDINGS_HOME=str(home), TIDINGS_DATABASE_URL=url)
    dev = DevStack(settings, Ports.free())
    # DevStack points email at its sink through the environment, keeping values already set: a previous
    # module's stack (another backend) must not leave its sink's port behind.
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("TIDINGS_SMTP_") or k == "TIDINGS_PUBLIC_URL"}
    await dev.start()
    try:
        async with httpx.AsyncClient(base_url=dev.api_url, headers={"Authorization": f"Bearer {dev.dev_key}"},
                                     timeout=60) as client:
            # as `tidings demo` does: customers, the journeys/ folder applied and activated, sign-ups
            await demo.seed(client)
            await demo.apply_examples(client, dev.settings)
            everyone = (await client.get("/v1/segments/all-users")).json()["size"]
            signups = demo.sample_signups(wave=0)
            (await client.post("/v1/events", json={"events": signups})).raise_for_status()
            trials = sum(1 for e in signups if e["attributes"]["plan"] == "trial")
            got = await demo.wait_for_mail(dev.mail_folder, everyone + trials)
            assert got == everyone + trials, f"{got} mails, expected {everyone + trials}"
        db = make_engine(dev.settings.database_url)
        _, other_key = create_key(db, "globex", label="console tests")
        db.dispose()
        async with httpx.AsyncClient(base_url=dev.api_url, headers={"Authorization": f"Bearer {other_key}"}) as c:
            (await c.put("/v1/users/globex-1", json={"attributes": {"plan": "enterprise"}})).raise_for_status()
        yield Stack(dev, other_key)
    finally:
        await dev.stop()
        for k in [k for k in os.environ if k.startswith("TIDINGS_SMTP_") or k == "TIDINGS_PUBLIC_URL"]:
            del os.environ[k]
        os.environ.update(saved)
        if pg:
            admin, schema = pg
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()


@pytest.fixture(scope="module")
async def browser():
    from playwright.async_api import async_playwright

    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        pytest.fail("Chromium is not installed: run scripts/ensure-chromium (apt-get install -y chromium)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"))
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def page(browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    tab = await context.new_page()
    try:
        yield tab
    finally:
        await context.close()


async def shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


async def sign_in(page, stack: Stack, key: str | None = None) -> None:
    await page.goto(stack.url + "/")
    await page.get_by_label("Workspace API key").fill(key or stack.key)
    await page.get_by_label("Workspace API key").press("Enter")  # the keyboard alone signs in
    await page.wait_for_url(stack.url + "/")
