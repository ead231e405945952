"""Tidings commands as real subprocesses, for tests that kill or stop them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tidings.engine.ops.devstack import free_port

TIDINGS = str(Path(sys.executable).parent / "tidings")


def tidings_env(home: Path, database_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "TIDINGS_HOME": str(home), "TIDINGS_DATABASE_URL": database_url, **extra}


class ApiProcess:
    """`tidings api` on a free loopback port; `start()` waits for /health."""

    def __init__(self, env: dict[str, str], log: Path, *options: str):
        self.env, self.log, self.options = env, log, options
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "ApiProcess":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([TIDINGS, "api", "--port", str(self.port), *self.options], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"tidings api exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"tidings api did not answer within {timeout} s")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
