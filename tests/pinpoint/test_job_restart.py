"""A Pinpoint import job whose API process is killed mid-way (a real `tidings api` subprocess, SIGKILLed while
the job is PROCESSING) is run again by the next start and completes with every row imported exactly once; no
file is left in the imports folder."""
from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from tidings.engine.customers.tables import endpoints, users
from tidings.engine.platform.db import make_engine, migrate, reading
from tidings.engine.workspaces.service import create_key
from tests.eventually import eventually
from tests.pinpoint.conftest import RunningApi, client_for, make_key
from tests.processes import ApiProcess, tidings_env

ROWS = 25_000


@pytest.fixture
def api_env(tmp_path, database_url):
    db = make_engine(database_url)
    migrate(db)
    _, key = create_key(db, "acme")
    db.dispose()
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    env = tidings_env(tmp_path / "home", database_url, TIDINGS_STREAM_WORKER="0", TIDINGS_IMPORT_ROOT=str(allowed))
    return env, {"Authorization": f"Bearer {key}"}, tmp_path


def _pinpoint_csv(rows: int) -> bytes:
    return ("ChannelType,Address,Id,User.UserId,User.UserAttributes.plan\n" + "".join(
        f"EMAIL,u{i}@example.com,ep-{i},u{i},{'pro' if i % 3 else 'free'}\n" for i in range(rows))).encode()


def _imports_folder(tmp_path):
    return sorted(p.name for p in (tmp_path / "home" / "imports").iterdir())


def test_an_import_job_cut_short_by_a_kill_completes_at_the_next_start_with_every_row_once(api_env, database_url):
    env, headers, tmp_path = api_env
    source = tmp_path / "allowed" / "people.csv"
    source.write_bytes(_pinpoint_csv(ROWS))
    api = ApiProcess(env, tmp_path / "api.log").start()
    pinpoint = client_for(RunningApi(api.url, database_url), make_key(database_url, "acme"))

    def job():
        return pinpoint.get_import_job(ApplicationId="acme", JobId=job_id)["ImportJobResponse"]
    try:
        created = pinpoint.create_import_job(ApplicationId="acme", ImportJobRequest={
            "S3Url": source.as_uri(), "Format": "CSV", "RoleArn": "arn:aws:iam::123456789012:role/r",
            "DefineSegment": True, "SegmentName": "everyone", "RegisterEndpoints": True})["ImportJobResponse"]
        job_id = created["Id"]
        assert created["JobStatus"] == "CREATED", created
        eventually(lambda: (j := job())["JobStatus"] == "PROCESSING" and j["TotalProcessed"] > 0, 120,
                   what="the job making progress")
        api.kill()
        assert f"pinpoint-{job_id}.upload" in _imports_folder(tmp_path)  # the dead process's job, unheld now

        api.start()
        done = eventually(lambda: (j := job())["JobStatus"] not in ("CREATED", "PROCESSING") and j, 300,
                          every=0.5, what="the interrupted job finishing")
        assert done["JobStatus"] == "COMPLETED" and done["TotalProcessed"] == ROWS, done
        assert done["Failures"] == [] and done["CompletedPieces"] == 1 and done["FailedPieces"] == 0
        segment_id = done["Definition"]["SegmentId"]
        size = httpx.get(f"{api.url}/v1/segments/{segment_id}", headers=headers, timeout=30).json()["size"]
        assert size == ROWS
        db = make_engine(database_url)
        try:
            with reading(db) as conn:  # once each: the transaction the kill cut short wrote nothing
                assert conn.execute(select(func.count()).select_from(users)).scalar_one() == ROWS
                assert conn.execute(select(func.count()).select_from(endpoints)).scalar_one() == ROWS
        finally:
            db.dispose()
        endpoint = pinpoint.get_endpoint(ApplicationId="acme", EndpointId="ep-7")["EndpointResponse"]
        assert endpoint["Address"] == "u7@example.com" and endpoint["User"]["UserAttributes"] == {"plan": ["pro"]}
        eventually(lambda: _imports_folder(tmp_path) == [], 10, what="the job's file being deleted")
    finally:
        api.stop()
