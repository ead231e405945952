"""An API process SIGKILLed while it delivers an event stream: the next start resumes the stream from its
cursor at once (it takes the dead runner's slot and so its lease), no record is skipped, and the only
records delivered twice are those of the batch in flight (at least once, as documented)."""
from __future__ import annotations

import json
from collections import Counter

import httpx

from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.workspaces.service import create_key
from tests.eventually import eventually
from tests.processes import ApiProcess, tidings_env

EVENTS = 12_000
BATCH = 20


def _lines(path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(x) for x in text[:text.rfind("\n") + 1].splitlines()]


def test_a_stream_cut_short_by_a_kill_resumes_without_skipping(tmp_path, database_url):
    db = make_engine(database_url)
    migrate(db)
    _, key = create_key(db, "acme")
    db.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    out = tmp_path / "streams" / "acme" / "all.ndjson"  # each workspace writes in a folder of its own
    env = tidings_env(tmp_path / "home", database_url, TIDINGS_STREAMS_DIR=str(tmp_path / "streams"))

    quiet = ApiProcess({**env, "TIDINGS_STREAM_WORKER": "0"}, tmp_path / "api.log").start()
    try:
        for start in range(0, EVENTS, 1000):
            r = httpx.post(f"{quiet.url}/v1/events", headers=headers, timeout=60, json={"events": [
                {"user_id": f"u{i % 300}", "name": "view", "attributes": {"n": str(i)}}
                for i in range(start, start + 1000)]})
            assert r.status_code == 202, r.text
        r = httpx.put(f"{quiet.url}/v1/event-streams/all", headers=headers, json={
            "kind": "ndjson", "config": {"path": "all.ndjson"}, "start": "beginning", "batch_size": BATCH})
        assert r.status_code == 201, r.text
    finally:
        quiet.stop()

    api = ApiProcess(env, tmp_path / "api.log").start()
    try:
        eventually(lambda: len(_lines(out)) >= EVENTS // 4, 120, every=0.02, what="a quarter of the stream delivered")
        api.kill()
        at_kill = len(_lines(out))
        assert at_kill < EVENTS, "the stream finished before the kill: make it longer"

        api.start()
        # well within the dead runner's one-minute lease: the new process took its slot over
        eventually(lambda: len({x["id"] for x in _lines(out)}) >= EVENTS, 40, every=0.2, what="the stream resuming")
        stream = httpx.get(f"{api.url}/v1/event-streams/all", headers=headers).json()
    finally:
        api.stop()
    records = _lines(out)
    ids = [x["id"] for x in records]
    assert len(set(ids)) == EVENTS  # nothing skipped
    twice = {i: n for i, n in Counter(ids).items() if n > 1}
    assert len(twice) <= BATCH and all(n == 2 for n in twice.values())  # only the batch in flight
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == sorted(first_seen)  # in order
    assert stream["position"] == max(ids) and stream["failures"] == 0
