"""send_with_retry with a real channel (webhook) and a real flaky receiver."""

from __future__ import annotations

import random

from tidings.engine.channels.contract import ChannelType, OutgoingMessage, RetryPolicy, send_with_retry
from tidings.plugins.webhook import WebhookChannel

CFG: dict = {}


def hook(i, url):
    return OutgoingMessage(message_id=f"w{i}", to=url, channel_type=ChannelType.WEBHOOK, payload={"i": i})


async def test_transient_failures_are_retried_with_backoff(http_server):
    calls = {"/flaky": 0}

    def respond(req):
        if req.path == "/flaky":
            calls["/flaky"] += 1
            return (503, "busy") if calls["/flaky"] <= 2 else (200, "ok")
        if req.path == "/gone":
            return 404, "no such hook"
        return 200, "ok"

    server = http_server(respond)
    delays: list[float] = []

    async def fake_sleep(d):  # the clock is the only thing not real here
        delays.append(d)

    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=3.0, jitter=False)
    results = await send_with_retry(
        WebhookChannel(),
        [hook(1, server.url + "/ok"), hook(2, server.url + "/flaky"), hook(3, server.url + "/gone")],
        CFG, policy, sleep=fake_sleep,
    )
    assert [(r.status, r.attempts) for r in results] == [("sent", 1), ("sent", 3), ("failed", 1)]
    assert results[2].permanent
    assert delays == [1.0, 2.0]
    assert [r.path for r in server.requests].count("/gone") == 1, "permanent failures are never retried"
    assert [r.path for r in server.requests].count("/ok") == 1, "sent messages are not sent again"


async def test_attempts_are_bounded(http_server):
    server = http_server(lambda req: (500, "down"))
    delays: list[float] = []

    async def fake_sleep(d):
        delays.append(d)

    [r] = await send_with_retry(WebhookChannel(), [hook(1, server.url)], CFG,
                                RetryPolicy(max_attempts=3, base_delay=10, max_delay=15),
                                sleep=fake_sleep, rng=random.Random(1))
    assert r.status == "failed" and not r.permanent and r.attempts == 3
    assert len(server.requests) == 3
    assert len(delays) == 2 and 0 <= delays[0] <= 10 and 0 <= delays[1] <= 15


def test_backoff_grows_exponentially_up_to_the_cap():
    p = RetryPolicy(base_delay=0.5, max_delay=4, jitter=False)
    assert [p.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4, 4]
    pj = RetryPolicy(base_delay=0.5, max_delay=4)
    rng = random.Random(0)
    samples = [pj.delay(3, rng) for _ in range(200)]
    assert all(0 <= s <= 2.0 for s in samples) and len(set(samples)) > 100
