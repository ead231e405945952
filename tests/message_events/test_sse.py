"""GET /v1/events/stream over a real server: live Server-Sent Events, resumed with Last-Event-ID."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
import uvicorn

from tidings.api.app import create_app
from tidings.engine.workspaces.service import create_key

from tests.eventually import eventually

from .conftest import free_port


@pytest.fixture
def live(settings):
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, 20, "the server starting")
    _, key = create_key(app.state.db, "acme")
    _, other = create_key(app.state.db, "globex")
    yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {other}"}
    server.should_exit = True
    thread.join(10)


def _read(lines, n: int, timeout: float = 10.0) -> list[tuple[str, dict]]:
    """The next n data messages from an iter_lines() iterator: (id, data)."""
    out, cur = [], {}
    deadline = time.monotonic() + timeout
    for line in lines:
        if time.monotonic() > deadline:
            break
        if not line:
            if "data" in cur:
                out.append((cur.get("id"), json.loads(cur["data"])))
                if len(out) == n:
                    return out
            cur = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        cur[key] = value.lstrip(" ")
    return out


def _post(base, headers, items):
    r = httpx.post(f"{base}/v1/events", json={"events": items}, headers=headers)
    assert r.status_code == 202, r.text


def test_live_stream_resumes_with_last_event_id(live):
    base, headers, other = live
    _post(base, headers, [{"user_id": "a", "name": f"e{i}", "id": f"id{i}"} for i in range(3)])
    with httpx.stream("GET", f"{base}/v1/events/stream", params={"after": 0}, headers=headers, timeout=10) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        got = _read(resp.iter_lines(), 3)
    assert [d["name"] for _, d in got] == ["e0", "e1", "e2"]
    second_id = got[1][0]
    assert second_id == str(got[1][1]["id"])

    with httpx.stream("GET", f"{base}/v1/events/stream", headers={**headers, "Last-Event-ID": second_id},
                      params={"type": ["e*", "later"]}, timeout=10) as resp:
        lines = resp.iter_lines()
        first = _read(lines, 1)
        assert [d["name"] for _, d in first] == ["e2"]
        _post(base, other, [{"user_id": "g", "name": "later"}])  # another workspace: not seen
        _post(base, headers, [{"user_id": "a", "name": "skipped-by-filter"}, {"user_id": "a", "name": "later"}])
        nxt = _read(lines, 1)
    assert [d["name"] for _, d in nxt] == ["later"] and nxt[0][1]["workspace"] == "acme"


def test_stream_starts_now_and_speaks_pinpoint(live):
    base, headers, _ = live
    _post(base, headers, [{"user_id": "a", "name": "before"}])
    with httpx.stream("GET", f"{base}/v1/events/stream", params={"format": "pinpoint"}, headers=headers,
                      timeout=10) as resp:
        _post(base, headers, [{"user_id": "a", "name": "after", "attributes": {"k": "v"}}])
        [(_, rec)] = _read(resp.iter_lines(), 1)
    assert rec["event_type"] == "after" and rec["attributes"] == {"k": "v"} and rec["client"]["client_id"] == "a"


def test_stream_needs_a_key_and_valid_options(live):
    base, headers, _ = live
    assert httpx.get(f"{base}/v1/events/stream").status_code == 401
    assert httpx.get(f"{base}/v1/events/stream", params={"format": "xml"}, headers=headers).status_code == 400
    r = httpx.get(f"{base}/v1/events/stream", headers={**headers, "Last-Event-ID": "abc"})
    assert r.status_code == 400


def test_revoking_the_key_ends_an_open_stream_within_seconds(settings):
    from tidings.engine.workspaces.service import revoke_key

    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        eventually(lambda: server.started, 20, "the server starting")
        _, key = create_key(app.state.db, "acme")
        _, kept = create_key(app.state.db, "acme", label="kept")
        base, headers = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        with httpx.stream("GET", f"{base}/v1/events/stream", headers=headers, timeout=10) as resp, \
                httpx.stream("GET", f"{base}/v1/events/stream", headers={"Authorization": f"Bearer {kept}"},
                             timeout=10) as other:
            lines, other_lines = resp.iter_lines(), other.iter_lines()
            _post(base, headers, [{"user_id": "a", "name": "before"}])
            assert [d["name"] for _, d in _read(lines, 1)] == ["before"]
            assert [d["name"] for _, d in _read(other_lines, 1)] == ["before"]
            revoke_key(app.state.db, key)
            revoked_at = time.monotonic()
            rest = list(lines)  # returns only when the server ends the stream (the client waits up to 10 s)
            ended_after = time.monotonic() - revoked_at
            # meanwhile the workspace's other key keeps its stream
            _post(base, {"Authorization": f"Bearer {kept}"}, [{"user_id": "a", "name": "after"}])
            assert [d["name"] for _, d in _read(other_lines, 1)] == ["after"]
        assert ended_after < 5, ended_after
        assert any("revoked" in line for line in rest)
        assert httpx.get(f"{base}/v1/events/stream", headers=headers).status_code == 401
    finally:
        server.should_exit = True
        thread.join(10)
