"""`tidings validate` is what a journey author runs before committing (and in their CI)."""
import subprocess
import sys
from pathlib import Path

TIDINGS = str(Path(sys.executable).parent / "tidings")
REPO = Path(__file__).resolve().parents[2]


def test_shipped_journeys_validate():
    out = subprocess.run([TIDINGS, "validate", str(REPO / "journeys")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ok  welcome" in out.stdout and "ok  weekly-digest" in out.stdout


def test_every_error_is_printed_with_its_position(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: tidings/v1\nkind: Journey\nid: bad\nname: Bad\nentry:\n  event: {name: signed_up}\n"
        "steps:\n  - id: hello\n    send: {channel: FAX, template: nope}\n    next: ghost\n"
    )
    out = subprocess.run([TIDINGS, "validate", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert f"{tmp_path / 'bad.yaml'}:9:21: unknown channel `FAX`" in lines
    assert any(l.startswith(f"{tmp_path / 'bad.yaml'}:9:36: unknown template `nope`") for l in lines)
    assert any(":10:11:" in l and "ghost" in l for l in lines)
    assert lines[-1] == "3 error(s)"
