"""`tidings worker --processes N`: N worker processes under one supervisor.

Each child is a plain `tidings worker` (one process, one core): it polls the main task queue and the send
task queue (engine/ops/worker.py), holding at most TIDINGS_WORKER_MAX_COHORTS sends at once, so Temporal's
task queues spread a broadcast's cohorts over the children. The supervisor itself talks to neither
Temporal nor the database:
- it restarts a child that dies (whatever killed it), after 1 s, doubling up to 30 s while the child keeps
  dying within 30 s of its start;
- SIGTERM or SIGINT: it forwards SIGTERM to every child, which drains (activities in flight get
  TIDINGS_SHUTDOWN_TIMEOUT seconds), waits for them, and exits 0 when they all stopped cleanly (exit 0, or
  ended by that SIGTERM while still starting: nothing polled yet), else 1 (a child failed, or had to be
  killed after the timeout and 10 s more);
- on Linux a child gets SIGTERM when the supervisor dies (PR_SET_PDEATHSIG): no orphan keeps polling.

A child's /metrics (TIDINGS_WORKER_METRICS_PORT=P) is on port P + its index (0 .. N-1)."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("tidings.worker")

RESTART_MIN, RESTART_MAX, STABLE_AFTER = 1.0, 30.0, 30.0
INDEX_VAR = "TIDINGS_WORKER_INDEX"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    delay: float = RESTART_MIN  # before the next restart
    due: float = 0.0  # when a dead child is started again
    restarts: int = 0


@dataclass
class Supervisor:
    processes: int
    shutdown_timeout: float
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "tidings.engine.ops.cli", "worker"])
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def child_env(self, index: int) -> dict[str, str]:
        env = {**self.env, INDEX_VAR: str(index)}
        port = int(env.get("TIDINGS_WORKER_METRICS_PORT") or 0)
        if port:
            env["TIDINGS_WORKER_METRICS_PORT"] = str(port + index)
        return env

    def start(self, child: Child) -> None:
        if self.stopping:  # a SIGTERM during start-up: start nothing more
            return
        child.proc = subprocess.Popen(self.command, env=self.child_env(child.index),
                                      preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        child.started = time.monotonic()
        if self.stopping:  # the signal came while this one was being forked: it gets it too
            child.proc.send_signal(signal.SIGTERM)
        log.info("worker %s started (pid %s)", child.index, child.proc.pid)
        print(f"supervisor: worker {child.index} started, pid {child.proc.pid}", flush=True)

    def stop(self, *_) -> None:
        if self.stopping:
            return
        self.stopping = True
        for c in self.children:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.children = [Child(i) for i in range(self.processes)]
        for c in self.children:
            self.start(c)
        while not self.stopping:
            now = time.monotonic()
            for c in self.children:
                if c.proc is not None and c.proc.poll() is not None:
                    self._died(c, now)
                elif c.proc is None and now >= c.due:
                    c.restarts += 1
                    self.start(c)
            time.sleep(0.2)
        return self._drain()

    def _died(self, c: Child, now: float) -> None:
        assert c.proc is not None
        code = c.proc.returncode
        lived = now - c.started
        if lived >= STABLE_AFTER:  # it ran a while: this is not a crash loop
            c.delay = RESTART_MIN
        wait, c.delay = c.delay, min(RESTART_MAX, c.delay * 2)
        c.due = now + wait
        how = f"signal {-code}" if code < 0 else f"exit {code}"
        log.warning("worker %s (pid %s) died (%s) after %.0f s; restarting in %.0f s", c.index, c.proc.pid, how,
                    lived, wait)
        print(f"supervisor: worker {c.index} (pid {c.proc.pid}) died ({how}); restarting in {wait:.0f} s",
              file=sys.stderr, flush=True)
        c.proc = None

    def _drain(self) -> int:
        give_up = time.monotonic() + self.shutdown_timeout + 10
        ok = True
        for c in self.children:
            if c.proc is None:
                continue
            try:
                code = c.proc.wait(max(0.1, give_up - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %s (pid %s) did not stop in time: killed", c.index, c.proc.pid)
                c.proc.kill()
                code = c.proc.wait()
            # -SIGTERM: the signal came before the child installed its handler (while it was starting):
            # it had polled nothing yet, so nothing was cut short
            clean = code in (0, -signal.SIGTERM)
            if not clean:
                print(f"supervisor: worker {c.index} (pid {c.proc.pid}) stopped with "
                      f"{f'signal {-code}' if code < 0 else f'exit {code}'}", file=sys.stderr, flush=True)
            ok = ok and clean
        print("supervisor: every worker stopped", flush=True)
        return 0 if ok else 1


def supervise(processes: int, shutdown_timeout: float) -> int:
    return Supervisor(processes, shutdown_timeout).run()
