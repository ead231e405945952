"""Overload is answered, not queued: a real `tidings api` process on loopback, flooded with slow requests
past its in-flight bound, refuses the excess at once (503 + Retry-After) while /health stays fast."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tidings.engine.platform.db import make_engine
from tidings.engine.workspaces.service import create_key

MAX_IN_FLIGHT = 4
FLOOD = 24
# Each of these takes the render budget (1 s here) in a worker thread: it is refused when saved, slowly.
SLOW_TEMPLATE = {"channel": "EMAIL", "subject": "s",
                 "text": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api_process(settings, tmp_path):
    port = _free_port()
    env = {**os.environ, "TIDINGS_HOME": str(settings.home), "TIDINGS_DATABASE_URL": settings.database_url,
           "TIDINGS_API_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT), "TIDINGS_API_RETRY_AFTER": "2",
           "TIDINGS_TEMPLATE_MAX_SECONDS": "1", "TIDINGS_STREAM_WORKER": "0"}
    tidings = str(Path(sys.executable).with_name("tidings"))
    proc = subprocess.Popen([tidings, "api", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def test_flood_gets_503_with_retry_after_and_health_stays_fast(api_process, settings):
    db = make_engine(settings.database_url)
    _, key = create_key(db, "acme")
    db.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=FLOOD + 4)
    async with httpx.AsyncClient(base_url=api_process, headers=headers, limits=limits, timeout=30) as client:
        async def slow(i: int) -> tuple[httpx.Response, float]:
            t = time.monotonic()
            r = await client.put(f"/v1/templates/slow-{i}", json=SLOW_TEMPLATE)
            return r, time.monotonic() - t

        async def health_probes() -> list[float]:
            times = []
            await asyncio.sleep(0.3)  # while the flood is in flight
            for _ in range(5):
                t = time.monotonic()
                assert (await client.get("/health")).status_code == 200
                times.append(time.monotonic() - t)
                # what recipients and providers send is never refused for load: a click or a one-click
                # unsubscribe is not sent again (a bad token is a 404, a bad callback a 4xx, never a 503)
                assert (await client.get("/t/c/not-a-token", follow_redirects=False)).status_code == 404
                assert (await client.post("/t/u/not-a-token")).status_code == 404
                assert (await client.post("/feedback/1/smtp", content=b"{}")).status_code not in (500, 503)
                await asyncio.sleep(0.1)
            return times

        started = time.monotonic()
        results, health = await asyncio.gather(asyncio.gather(*(slow(i) for i in range(FLOOD))), health_probes())
        elapsed = time.monotonic() - started

    refused = [(r, t) for r, t in results if r.status_code == 503]
    accepted = [(r, t) for r, t in results if r.status_code != 503]
    assert refused and accepted, [r.status_code for r, _ in results]
    assert len(accepted) <= FLOOD - len(refused)
    for r, t in refused:
        assert r.headers["retry-after"] == "2"
        assert r.json()["error"]["code"] == "overloaded"
        assert t < 1.0, t  # answered at once, not after waiting its turn
    for r, _ in accepted:  # the accepted ones were worked on: the slow template is refused, naming the part
        assert r.status_code == 400 and r.json()["error"]["field"] == "text", r.text
    assert max(t for _, t in accepted) < 6, [t for _, t in accepted]  # no queue behind them
    assert max(health) < 1.0, health
    assert elapsed < 15


async def test_a_slow_render_neither_stalls_health_nor_runs_past_its_budget(api_process, settings):
    """Nested loops over the request's data (10,000 x 10,000) used to render on the event loop for seconds."""
    db = make_engine(settings.database_url)
    _, key = create_key(db, "acme")
    db.dispose()
    loops = "{% for i in data.xs %}{% for j in data.xs %}{{ '' }}{% endfor %}{% endfor %}done"
    async with httpx.AsyncClient(base_url=api_process, headers={"Authorization": f"Bearer {key}"},
                                 timeout=30) as client:
        r = await client.put("/v1/templates/loops", json={"channel": "EMAIL", "subject": "s", "text": loops})
        assert r.status_code == 200, r.text  # with no data it renders at once: accepted

        async def send() -> tuple[httpx.Response, float]:
            t = time.monotonic()
            r = await client.post("/v1/messages", json={"channel": "EMAIL", "template_id": "loops",
                                                        "data": {"xs": list(range(10_000))},
                                                        "recipients": [{"address": "a@example.com"}]})
            return r, time.monotonic() - t

        async def health() -> list[float]:
            await asyncio.sleep(0.2)
            times = []
            for _ in range(5):
                t = time.monotonic()
                assert (await client.get("/health")).status_code == 200
                times.append(time.monotonic() - t)
                # what recipients and providers send is never refused for load: a click or a one-click
                # unsubscribe is not sent again (a bad token is a 404, a bad callback a 4xx, never a 503)
                assert (await client.get("/t/c/not-a-token", follow_redirects=False)).status_code == 404
                assert (await client.post("/t/u/not-a-token")).status_code == 404
                assert (await client.post("/feedback/1/smtp", content=b"{}")).status_code not in (500, 503)
                await asyncio.sleep(0.1)
            return times

        (answer, took), health_times = await asyncio.gather(send(), health())
    [result] = answer.json()["results"]
    assert result["status"] == "render_failed" and "longer than 1 s" in result["error"], result
    assert took < 5, took
    assert max(health_times) < 0.5, health_times
