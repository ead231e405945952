"""`tidings migrate`: an upgrade's migration step, and `--check` for a deploy to ask before it starts."""
from __future__ import annotations

import subprocess

from tests.processes import TIDINGS, tidings_env


def test_check_says_behind_then_migrate_brings_the_schema_to_the_head(database_url, tmp_path):
    env = tidings_env(tmp_path / "home", database_url)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([TIDINGS, "migrate", *args], env=env, capture_output=True, text=True, timeout=120)

    behind = run("--check")  # an empty database: nothing applied, and --check applies nothing
    assert behind.returncode == 1 and "the schema is at no revision, the code expects" in behind.stderr
    assert run("--check").returncode == 1
    done = run()
    assert done.returncode == 0 and "at the migrations' head" in done.stdout, done.stderr
    assert run("--check").returncode == 0
