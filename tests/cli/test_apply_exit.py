"""`tidings apply --activate` exits 0 every time: it used to abort at interpreter exit (exit 134,
`PyGILState_Release ... finalizing`) in about one run in seven, after printing success, when its Temporal
client was freed during finalization (tidings.engine.platform.temporal.release_clients)."""
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.processes import TIDINGS

REPO = Path(__file__).resolve().parents[2]
RUNS = 15


def test_apply_with_activation_exits_cleanly_every_time(temporal_env, settings, tmp_path):
    folder = tmp_path / "journeys"
    shutil.copytree(REPO / "journeys", folder)
    env = {**os.environ, "TIDINGS_HOME": str(settings.home), "TIDINGS_DATABASE_URL": settings.database_url,
           "TIDINGS_TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
           "TIDINGS_TASK_QUEUE": f"exit-{uuid.uuid4().hex[:8]}"}  # no worker: activation only starts workflows
    for run in range(RUNS):
        out = subprocess.run([TIDINGS, "apply", str(folder), "--workspace", "shop", "--activate"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"run {run + 1}: exit {out.returncode}\n{out.stderr[-2000:]}"
        assert "journey welcome active on v1" in out.stdout
        assert "Fatal Python error" not in out.stderr
