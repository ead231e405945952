"""Settings read from the environment, in one place so every entry point agrees."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidings.engine.platform import egress
from tidings.engine.platform.retry import RetryWindow


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    temporal_address: str
    temporal_namespace: str
    task_queue: str
    # Events work: where recipients reach tracking links, the master key for tracking tokens,
    # and whether this process runs the event-stream delivery loop.
    public_url: str = ""
    secret_key: str = ""
    # Messages failing transiently: how long and how often they are tried again (TIDINGS_DELIVERY_RETRY_*).
    delivery_retry: RetryWindow = RetryWindow()
    stream_worker: bool = True
    stream_poll_seconds: float = 0.25
    # Overload: requests past this many in flight are answered 503 with Retry-After (0: no bound).
    api_max_in_flight: int = 64
    api_retry_after_seconds: int = 1
    # How long SIGTERM waits for work in flight (sends, import jobs, HTTP requests) before stopping anyway.
    shutdown_timeout: float = 30.0
    # Operations (docs/production.md): the bearer token a Prometheus scrape of the API's /metrics sends
    # (unset: /metrics answers 404), and where a worker serves its /metrics (port 0: it does not).
    metrics_token: str = ""
    worker_metrics_port: int = 0
    worker_metrics_host: str = "127.0.0.1"
    # The segment builder's live size is exact up to this many customers, an estimate from a sample above.
    segment_estimate_above: int = 200_000
    # Several workers (docs/production.md): journeys activated with these settings put their send steps on
    # `send_task_queue`, which every worker process polls holding at most `worker_max_cohorts` sends (one
    # cohort's step each) at once, so a broadcast spreads over the processes and each one's memory is bounded.
    send_task_queue: str = ""
    worker_max_cohorts: int = 8

    @property
    def send_queue(self) -> str:
        return self.send_task_queue or f"{self.task_queue}-send"

    def journey_queues(self) -> dict[str, Any]:
        """The task queues a journey is activated with (store.activate's keywords)."""
        return {"task_queue": self.task_queue, "send_queue": self.send_queue}

    @classmethod
    def from_env(cls, **overrides: str) -> "Settings":
        env = {**os.environ, **overrides}
        egress.parse_policy(env.get(egress.ENV_VAR))  # a mistyped allow-list fails start-up, naming the entry
        delivery_retry = RetryWindow.from_env(env)  # so does a mistyped retry window, naming the variable
        home = Path(env.get("TIDINGS_HOME", ".tidings")).absolute()
        database_url = env.get("TIDINGS_DATABASE_URL") or f"sqlite:///{home / 'tidings.db'}"
        return cls(
            home=home,
            database_url=database_url,
            temporal_address=env.get("TIDINGS_TEMPORAL_ADDRESS", "127.0.0.1:7233"),
            temporal_namespace=env.get("TIDINGS_TEMPORAL_NAMESPACE", "default"),
            task_queue=env.get("TIDINGS_TASK_QUEUE", "tidings"),
            public_url=env.get("TIDINGS_PUBLIC_URL", "").rstrip("/"),
            secret_key=env.get("TIDINGS_SECRET_KEY", ""),
            delivery_retry=delivery_retry,
            stream_worker=env.get("TIDINGS_STREAM_WORKER", "1").lower() not in ("0", "false", "no", "off"),
            stream_poll_seconds=float(env.get("TIDINGS_STREAM_POLL_SECONDS", "0.25")),
            api_max_in_flight=int(env.get("TIDINGS_API_MAX_IN_FLIGHT", "64")),
            api_retry_after_seconds=int(env.get("TIDINGS_API_RETRY_AFTER", "1")),
            shutdown_timeout=float(env.get("TIDINGS_SHUTDOWN_TIMEOUT", "30")),
            metrics_token=env.get("TIDINGS_METRICS_TOKEN", ""),
            worker_metrics_port=int(env.get("TIDINGS_WORKER_METRICS_PORT", "0")),
            worker_metrics_host=env.get("TIDINGS_WORKER_METRICS_HOST", "127.0.0.1"),
            segment_estimate_above=int(env.get("TIDINGS_SEGMENT_ESTIMATE_ABOVE", "200000")),
            send_task_queue=env.get("TIDINGS_SEND_TASK_QUEUE", ""),
            worker_max_cohorts=_positive(env, "TIDINGS_WORKER_MAX_COHORTS", 8),
        )


def _positive(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return value
