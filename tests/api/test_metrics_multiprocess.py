"""Several API processes behind one port (or one scrape target): with PROMETHEUS_MULTIPROC_DIR set, a scrape
of any of them counts what all of them answered (prometheus-client's multiprocess mode)."""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import ApiProcess, tidings_env

TOKEN = "scrape-token-for-tests"


def unauthorized_user_reads(text: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "tidings_http_requests_total" and s.labels == {
                   "method": "GET", "route": "/v1/users/{user_id}", "status": "401"})


def test_a_scrape_of_one_process_counts_every_process(settings, tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = tidings_env(settings.home, settings.database_url, TIDINGS_METRICS_TOKEN=TOKEN, TIDINGS_STREAM_WORKER="0",
                      PROMETHEUS_MULTIPROC_DIR=str(shared))
    first = ApiProcess(env, tmp_path / "first.log").start()
    second = ApiProcess(env, tmp_path / "second.log").start()
    try:
        for api, n in ((first, 2), (second, 3)):
            for i in range(n):
                assert httpx.get(f"{api.url}/v1/users/u{i}").status_code == 401  # no key
        scrapes = [httpx.get(f"{api.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
                   for api in (first, second)]
    finally:
        first.stop()
        second.stop()
    assert [r.status_code for r in scrapes] == [200, 200]
    assert [unauthorized_user_reads(r.text) for r in scrapes] == [5, 5]
