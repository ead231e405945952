"""SIGTERM (what a deploy sends) to `tidings api` and `tidings dev`: work in flight is finished, every child
process stops, and the exit code is 0 (`tidings worker`: tests/journeys/test_worker_shutdown.py)."""
from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from tidings.engine.ops.devstack import Ports
from tests.cli.test_dev_stack import _start as start_dev, _wait_for_banner
from tests.eventually import eventually
from tests.processes import ApiProcess
from tests.segments.test_import_restart import _job, _start_import, api_env  # noqa: F401 (fixture)


def _pids_of_home(home: Path) -> list[int]:
    """Processes started for this TIDINGS_HOME (children inherit it), read from /proc."""
    marker = f"TIDINGS_HOME={home}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes() + b"\0":
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_sigterm_stops_tidings_dev_with_its_temporal_and_worker(tmp_path):
    ports = Ports.free()
    proc = start_dev(tmp_path, ports)
    try:
        _wait_for_banner(proc)
        assert not _port_free(ports.temporal)
        children = [p for p in _pids_of_home(tmp_path) if p != proc.pid]
        assert children  # Temporal at least
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    eventually(lambda: not _pids_of_home(tmp_path), 10, what="every child of tidings dev gone")
    assert _port_free(ports.temporal) and _port_free(ports.api) and _port_free(ports.smtp)


def test_sigterm_to_the_api_finishes_the_import_job_in_flight(api_env):  # noqa: F811
    env, headers, tmp_path = api_env
    env = {**env, "TIDINGS_SHUTDOWN_TIMEOUT": "300"}  # far more than the job needs, even on a loaded box
    api = ApiProcess(env, tmp_path / "api.log").start()
    try:
        job_id = _start_import(api, headers, rows=30_000)
        eventually(lambda: _job(api, headers, job_id)["rows_done"] > 0, 120, every=0.02, what="the job making progress")
        api.proc.send_signal(signal.SIGTERM)
        assert api.proc.wait(330) == 0
    finally:
        api.stop()
    assert _port_free(api.port)
    assert not (tmp_path / "home" / "imports" / f"{job_id}.upload").exists()
    api = ApiProcess({**env, "TIDINGS_SHUTDOWN_TIMEOUT": "5"}, tmp_path / "api.log").start()
    try:
        job = _job(api, headers, job_id)
        assert job["status"] == "succeeded", job  # finished before the exit, not resumed after it
    finally:
        api.stop()
