"""The per-channel rate holds across processes: two API apps share one token bucket through the database."""
from __future__ import annotations

import threading

from litestar.testing import TestClient

from tidings.api.app import create_app
from tests.conftest import Api

RATE = 20.0
N = 50


def test_two_apps_sending_at_once_stay_under_the_configured_rate(api, settings, smtp_sink):
    cfg = {"host": "127.0.0.1", "port": smtp_sink.port, "security": "none", "from_address": "a@acme.example"}
    assert api.put("/v1/channels/smtp", json={"config": cfg, "rate_limit": RATE}).status_code == 200
    body = {"channel": "EMAIL", "content": {"subject": "s", "text": "t"}}
    errors: list[str] = []

    def worker(client, start):
        for i in range(start, N, 4):
            r = Api(client, api.key).post("/v1/messages", json={**body, "recipients": [{"address": f"r{i}@example.com"}]})
            if r.status_code != 200 or r.json()["results"][0]["status"] != "sent":
                errors.append(r.text)

    with TestClient(create_app(settings)) as second:  # another process's worth of API, same database
        threads = [threading.Thread(target=worker, args=(c, s)) for s, c in enumerate([api.client, second] * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    times = sorted(t for t, _, _ in smtp_sink.mails)
    assert len(times) == N
    burst = max(1, int(RATE / 10))
    # At most rate*T + burst messages in any window of T seconds (+1 for delivery jitter at the sink).
    for window in (0.5, 1.0, 2.0):
        worst = max(sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times))
        assert worst <= RATE * window + burst + 1, (window, worst)
    elapsed = times[-1] - times[0]
    assert elapsed >= (N - burst - 1) / RATE * 0.95
    assert elapsed < N / RATE * 2, "the limit paces sends, it does not stall them"
