"""/ready says whether the API can serve: its database answers at the migrations' head and Temporal serves
its namespace. Against a real Temporal dev server this test stops and starts again on the same port."""
from __future__ import annotations

import dataclasses
import subprocess
import time

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from tidings.api.app import create_app
from tidings.engine.ops.devstack import binary, free_port


class DevServer:
    """`temporal server start-dev` on a fixed port, stopped and started again at will."""

    def __init__(self, log_path):
        self.port, self.http_port, self.log_path = free_port(), free_port(), log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [binary("temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port),
                 "--http-port", str(self.http_port), "--headless", "--log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def temporal_server(tmp_path):
    server = DevServer(tmp_path / "temporal.log")
    server.start()
    yield server
    server.stop()


def ready_within(client, status: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        r = client.get("/ready")
        if r.status_code == status or time.monotonic() > deadline:
            assert r.status_code == status, r.text
            return r.json()
        time.sleep(0.25)


def test_ready_follows_temporal_going_away_and_coming_back(settings, temporal_server):
    settings = dataclasses.replace(settings, temporal_address=f"127.0.0.1:{temporal_server.port}",
                                   stream_worker=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = ready_within(client, 200, 60)  # the dev server takes a few seconds to serve
        assert body == {"status": "ready", "not_ready": [],
                        "checks": {"database": "ok", "migrations": "ok", "temporal": "ok"}}

        temporal_server.stop()
        body = ready_within(client, 503, 10)
        assert body["status"] == "not_ready" and body["not_ready"] == ["temporal"]
        assert f"127.0.0.1:{temporal_server.port}" in body["checks"]["temporal"]
        assert body["checks"]["database"] == "ok"
        assert client.get("/health").status_code == 200  # alive all the same

        temporal_server.start()
        assert ready_within(client, 200, 60)["status"] == "ready"


def test_a_schema_behind_the_migrations_is_not_ready_one_ahead_is(settings, temporal_server):
    settings = dataclasses.replace(settings, temporal_address=f"127.0.0.1:{temporal_server.port}",
                                   stream_worker=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        ready_within(client, 200, 60)
        db = client.app.state.db
        with db.begin() as conn:  # as if the last migration had not run
            heads = sorted(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
            conn.execute(text("DELETE FROM alembic_version WHERE version_num = :v"), {"v": heads[-1]})
        body = ready_within(client, 503, 5)
        assert body["not_ready"] == ["migrations"]
        assert heads[-1] in body["checks"]["migrations"].split("expects")[1]
        assert heads[-1] not in body["checks"]["migrations"].split("expects")[0]
        with db.begin() as conn:  # a newer release migrated: this (older) process keeps serving
            conn.execute(text("DELETE FROM alembic_version"))
            conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('9999_from_a_newer_release')"))
        ready_within(client, 200, 5)
        with db.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
            for v in heads:
                conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": v})
        ready_within(client, 200, 5)
