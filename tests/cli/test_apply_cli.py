"""`tidings apply`: the folder in git becomes the workspace's state; a second run changes nothing."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

TIDINGS = str(Path(sys.executable).parent / "tidings")
REPO = Path(__file__).resolve().parents[2]


def _apply(settings, path, *extra):
    env = {**os.environ, "TIDINGS_HOME": str(settings.home), "TIDINGS_DATABASE_URL": settings.database_url}
    return subprocess.run([TIDINGS, "apply", str(path), "--workspace", "shop", *extra], env=env,
                          capture_output=True, text=True, timeout=120)


def test_apply_is_idempotent_and_shows_a_diff(settings, tmp_path):
    folder = tmp_path / "journeys"
    shutil.copytree(REPO / "journeys", folder)
    first = _apply(settings, folder)
    assert first.returncode == 0, first.stderr
    assert "+ segment  trial-users  created" in first.stdout
    assert "+ template welcome-email  created" in first.stdout
    assert "+ journey  welcome  created" in first.stdout
    second = _apply(settings, folder)
    assert second.returncode == 0 and "created" not in second.stdout and "updated" not in second.stdout
    assert "= journey  welcome  unchanged" in second.stdout

    welcome = folder / "welcome.yaml"
    welcome.write_text(welcome.read_text().replace("wait: 1d", "wait: 2d"))
    third = _apply(settings, folder)
    assert "~ journey  welcome  updated (v2)" in third.stdout
    assert "-    wait: 1d" in third.stdout and "+    wait: 2d" in third.stdout


def test_a_broken_journey_stops_apply_before_anything_is_written(settings, tmp_path):
    folder = tmp_path / "journeys"
    shutil.copytree(REPO / "journeys", folder)
    (folder / "welcome.yaml").write_text((folder / "welcome.yaml").read_text().replace("welcome-email", "nope"))
    out = _apply(settings, folder)
    assert out.returncode == 1
    assert "unknown template `nope`" in out.stderr and "nothing was applied" in out.stderr
    again = _apply(settings, REPO / "journeys")
    assert "+ segment  all-users  created" in again.stdout  # the failed run wrote nothing


def test_a_broken_template_stops_apply_before_anything_is_written(settings, tmp_path):
    folder = tmp_path / "journeys"
    shutil.copytree(REPO / "journeys", folder)
    templates = folder / "templates.yaml"
    templates.write_text(templates.read_text().replace('subject: "Your week at Example"', 'subject: "Your week {{ at"'))
    out = _apply(settings, folder)
    assert out.returncode == 1
    assert "template `digest-email`" in out.stderr and "subject" in out.stderr and "nothing was applied" in out.stderr
    again = _apply(settings, REPO / "journeys")
    assert "+ template welcome-email  created" in again.stdout  # the failed run wrote nothing
