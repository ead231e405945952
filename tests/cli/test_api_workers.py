"""`tidings api --workers N`: N API processes accept on the one port, each serving the whole API against the
one database; SIGTERM stops them all with exit code 0."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx

from tests.cli.test_shutdown import _pids_of_home, _port_free
from tests.eventually import eventually
from tests.processes import TIDINGS, ApiProcess, tidings_env
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.workspaces.service import create_key


def _api_children(home: Path) -> list[int]:
    """The processes uvicorn spawned to serve (not multiprocessing's resource tracker)."""
    out = []
    for pid in _pids_of_home(home):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def test_two_api_processes_serve_one_port_and_stop_on_sigterm(tmp_path, database_url):
    db = make_engine(database_url)
    migrate(db)
    _, key = create_key(db, "workers")
    db.dispose()
    api = ApiProcess(tidings_env(tmp_path, database_url), tmp_path / "api.log", "--workers", "2").start(timeout=120)
    try:
        eventually(lambda: len(_api_children(tmp_path)) == 2, 60, what="two API processes under the supervisor")
        written = {}
        for i in range(20):  # a new connection each time: the kernel hands each to either process
            r = httpx.put(f"{api.url}/v1/users/u{i}", json={"attributes": {"plan": f"p{i}"}},
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)
            assert r.status_code == 200, r.text
            written[f"u{i}"] = r.json()["attributes"]
        assert written["u7"]["plan"] in ("p7", ["p7"])
        for user_id, attributes in written.items():  # what one process wrote, whichever process reads it
            r = httpx.get(f"{api.url}/v1/users/{user_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
            assert r.status_code == 200 and r.json()["attributes"] == attributes, r.text
        api.proc.send_signal(signal.SIGTERM)
        assert api.proc.wait(60) == 0
    finally:
        api.stop()
    eventually(lambda: not _pids_of_home(tmp_path), 15, what="every API process gone")
    assert _port_free(api.port)


def test_workers_below_one_is_refused_naming_the_option(tmp_path, database_url):
    done = subprocess.run([TIDINGS, "api", "--workers", "0"], env=tidings_env(tmp_path, database_url),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--workers must be at least 1" in done.stderr
