"""An API process killed during an import: the next start finishes the job or fails it with a reason,
and no upload is left behind (a real `tidings api` subprocess, SIGKILLed)."""
from __future__ import annotations

import glob
import tempfile
import threading
import time

import httpx
import pytest

from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.workspaces.service import create_key
from tests.eventually import eventually
from tests.processes import ApiProcess, tidings_env

ROWS = 150_000


@pytest.fixture
def api_env(tmp_path, database_url):
    db = make_engine(database_url)
    migrate(db)
    _, key = create_key(db, "acme")
    db.dispose()
    env = tidings_env(tmp_path / "home", database_url, TIDINGS_STREAM_WORKER="0")
    return env, {"Authorization": f"Bearer {key}"}, tmp_path


def _imports_folder(tmp_path):
    return sorted(p.name for p in (tmp_path / "home" / "imports").iterdir())


def _big_file(rows: int) -> bytes:
    return ("user_id,plan\n" + "".join(f"u{i},{'pro' if i % 3 else 'free'}\n" for i in range(rows))).encode()


def _start_import(api: ApiProcess, headers, rows: int = ROWS) -> str:
    r = httpx.post(f"{api.url}/v1/segments/import", params={"name": "big", "format": "plain", "id": "big"},
                   content=_big_file(rows), headers=headers, timeout=120)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _job(api: ApiProcess, headers, job_id: str) -> dict:
    return httpx.get(f"{api.url}/v1/import-jobs/{job_id}", headers=headers, timeout=30).json()


def test_an_import_cut_short_by_a_kill_is_imported_again_at_the_next_start(api_env):
    env, headers, tmp_path = api_env
    temp_before = set(glob.glob(f"{tempfile.gettempdir()}/tidings-import-*"))
    api = ApiProcess(env, tmp_path / "api.log").start()
    try:
        job_id = _start_import(api, headers)
        eventually(lambda: _job(api, headers, job_id)["rows_done"] > 0, 120, what="the job making progress")
        assert _job(api, headers, job_id)["status"] == "running"
        api.kill()
        assert f"{job_id}.upload" in _imports_folder(tmp_path)  # kept for the next start

        api.start()
        job = eventually(lambda: (j := _job(api, headers, job_id))["status"] != "running" and j, 300, every=0.5,
                         what="the interrupted job finishing")
        assert job["status"] == "succeeded", job
        assert job["rows_done"] == ROWS and job["segment_id"] == "big"
        size = httpx.get(f"{api.url}/v1/segments/big", headers=headers).json()["size"]
        assert size == ROWS  # imported once: the cut-short transaction wrote nothing
        # the upload is deleted just after the job's transaction commits
        eventually(lambda: _imports_folder(tmp_path) == [], 10, what="the upload being deleted")
        assert set(glob.glob(f"{tempfile.gettempdir()}/tidings-import-*")) == temp_before

        # An export cut short by a kill is an error for its client, never a silently short file.
        with pytest.raises(httpx.HTTPError):
            with httpx.stream("GET", f"{api.url}/v1/segments/big/export", headers=headers, timeout=60) as r:
                assert r.status_code == 200
                for n, _ in enumerate(r.iter_bytes()):
                    if n == 0:
                        api.kill()
        api.start()
        exported = httpx.get(f"{api.url}/v1/segments/big/export", headers=headers, timeout=300)
        assert exported.status_code == 200 and exported.text.count("\n") == ROWS
        assert _imports_folder(tmp_path) == []
    finally:
        api.stop()


def test_a_job_whose_upload_is_lost_is_failed_with_a_reason(api_env):
    env, headers, tmp_path = api_env
    api = ApiProcess(env, tmp_path / "api.log").start()
    try:
        job_id = _start_import(api, headers)
        api.kill()
        (tmp_path / "home" / "imports" / f"{job_id}.upload").unlink()  # e.g. the folder was not on a kept volume
        api.start()
        job = _job(api, headers, job_id)
        assert job["status"] == "failed" and job["finished_at"]
        assert "interrupted" in job["message"] and "upload the file again" in job["message"]
        assert _imports_folder(tmp_path) == []
        assert httpx.get(f"{api.url}/v1/segments/big", headers=headers).status_code == 404
    finally:
        api.stop()


def test_a_synchronous_upload_cut_short_leaves_no_file(api_env):
    env, headers, tmp_path = api_env
    api = ApiProcess(env, tmp_path / "api.log").start()
    sent = threading.Event()

    def slow_body():
        yield b"user_id,plan\n" + b"u1,pro\n" * 1000
        sent.set()
        time.sleep(30)  # the API dies before the body ends
        yield b""

    def post():
        try:
            httpx.post(f"{api.url}/v1/segments/import", params={"name": "small", "format": "plain"},
                       content=slow_body(), headers=headers, timeout=60)
        except httpx.HTTPError:
            pass

    client = threading.Thread(target=post, daemon=True)
    client.start()
    try:
        sent.wait(30)
        eventually(lambda: _imports_folder(tmp_path), 30, what="the upload being written")
        api.kill()
        assert len(_imports_folder(tmp_path)) == 1
        api.start()
        assert _imports_folder(tmp_path) == []
    finally:
        api.stop()
