"""`tidings worker` refuses bad settings of its processes before starting anything (the supervisor, its
restarts and SIGTERM forwarding are tested with real processes in tests/faults/test_worker_processes.py)."""
from __future__ import annotations

import subprocess

from tests.processes import TIDINGS, tidings_env


def test_processes_below_one_is_refused_naming_the_option(tmp_path):
    env = tidings_env(tmp_path, f"sqlite:///{tmp_path / 't.db'}")
    r = subprocess.run([TIDINGS, "worker", "--processes", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--processes must be at least 1" in r.stderr, r


def test_a_send_bound_below_one_is_refused_naming_the_variable(tmp_path):
    env = tidings_env(tmp_path, f"sqlite:///{tmp_path / 't.db'}", TIDINGS_WORKER_MAX_COHORTS="0")
    r = subprocess.run([TIDINGS, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "TIDINGS_WORKER_MAX_COHORTS must be a whole number of at least 1" in r.stderr, r
    assert "Traceback" not in r.stderr, r
