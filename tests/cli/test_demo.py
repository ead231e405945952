"""The README's first command: the demo brings the stack up, runs two example journeys, mail lands in the sink."""
import email
import email.policy
import os
import subprocess
import sys
from pathlib import Path

TIDINGS = str(Path(sys.executable).parent / "tidings")


def test_demo_sends_the_example_journeys_mail(tmp_path: Path):
    env = {**os.environ, "TIDINGS_HOME": str(tmp_path)}
    env.pop("TIDINGS_DATABASE_URL", None)
    out = subprocess.run([TIDINGS, "demo"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Activated launch-announcement (v1)" in out.stdout and "Activated welcome (v1)" in out.stdout
    assert "Mail in the local SMTP sink: 67 new (60 announcements + 7 welcome mails expected)" in out.stdout
    assert "Journey launch-announcement: 60 customers entered; 60 completed" in out.stdout
    mails = list((tmp_path / "mail").glob("*.eml"))
    assert len(mails) == 67
    subjects = [email.message_from_bytes(m.read_bytes(), policy=email.policy.default)["Subject"] for m in mails]
    assert sum(s.startswith("Welcome to Example") for s in subjects) == 7
    assert sum(s.startswith("Something new at Example") for s in subjects) == 60
    assert "Traceback" not in out.stderr
