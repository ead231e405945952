"""Every Prometheus metric Tidings exports, defined once (prometheus-client), and how a process serves them.

The API serves them at /metrics (api/app.py), a worker on `TIDINGS_WORKER_METRICS_PORT` (engine/ops/worker.py).
Labels are bounded and say nothing about a workspace: a route *template* (never a raw path, which carries
ids), a method and a status, a channel *type* (EMAIL, SMS, PUSH...), an outcome, an event-stream sink kind.
No workspace, customer, channel name or message id is ever a label. docs/production.md lists them with
example alert rules.

With several processes sharing one port (uvicorn `--workers`, gunicorn), set `PROMETHEUS_MULTIPROC_DIR`
(prometheus-client's multiprocess mode, an empty folder per service start): each process then writes its
samples there and a scrape of any of them sums them all.
"""
from __future__ import annotations

import os

from temporalio import workflow

# Temporal's workflow sandbox imports this module again for each workflow run (tidings.engine.segments and the
# journey runtime import it, and the workflow modules import their packages). prometheus-client cannot be
# imported there (it subclasses urllib's handlers, which the sandbox forbids) and must be the one real
# module: passed through. The sandbox's copy of this module registers nothing (`_REGISTRY` None), or its
# metrics would collide with the real ones; no workflow code counts anything.
with workflow.unsafe.imports_passed_through():
    from prometheus_client import (
        CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, disable_created_metrics,
        generate_latest, multiprocess, start_http_server,
    )

_REGISTRY = None if workflow.unsafe.in_sandbox() else REGISTRY

# No `*_created` sample beside each series: it doubles a scrape and no alert reads it.
disable_created_metrics()

# Seconds: from a cached read (~1 ms) to a slow provider or a segment over a million customers.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Lags: an entry claimed within its window (tens of ms) to a backlog of minutes.
_LAG = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

HTTP_REQUESTS = Counter(
    "tidings_http_requests", "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"], registry=_REGISTRY)
HTTP_DURATION = Histogram(
    "tidings_http_request_duration_seconds", "Time from a request's arrival to the end of its answer.",
    ["method", "route"], buckets=_SECONDS, registry=_REGISTRY)

SENDS = Counter(
    "tidings_sends", "Messages handed to a channel provider, by channel type and outcome (sent; failed: "
    "permanently or past the retry window; retrying: failed transiently, tried again later; deferred: not "
    "tried, the provider had just failed a whole group).", ["channel", "outcome"], registry=_REGISTRY)
PROVIDER_DURATION = Histogram(
    "tidings_provider_call_duration_seconds", "One call to a channel plugin's send (a group of messages, "
    "its immediate retries included), by channel type.", ["channel"], buckets=_SECONDS, registry=_REGISTRY)
RATE_LIMIT_WAIT = Histogram(
    "tidings_rate_limit_wait_seconds", "How long a chunk of sends waited for its channel's rate limit "
    "(0 when the bucket had tokens).", buckets=(0.0, *_LAG), registry=_REGISTRY)

SEGMENT_EVALUATION = Histogram(
    "tidings_segment_evaluation_seconds", "Segment evaluation: `full` (one segment over every customer) or "
    "`incremental` (the segments of one write, for the customers it changed).", ["kind"], buckets=_SECONDS,
    registry=_REGISTRY)

JOURNEY_ENTRIES_QUEUED = Counter(
    "tidings_journey_entries_queued", "Events queued as entries of an active event-triggered journey.",
    registry=_REGISTRY)
JOURNEY_ADMISSION_LAG = Histogram(
    "tidings_journey_admission_lag_seconds", "From an entry being queued to its admission claiming it "
    "(the count is the entries claimed).", buckets=_LAG, registry=_REGISTRY)

EVENT_STREAM_LAG = Histogram(
    "tidings_event_stream_lag_seconds", "From an event being received to its batch being delivered by an "
    "event stream (the oldest event of the batch), by sink kind.", ["kind"], buckets=_LAG, registry=_REGISTRY)
EVENT_STREAM_DEAD_LETTERS = Counter(
    "tidings_event_stream_dead_letters", "Event-stream batches moved to the dead-letter table after their "
    "last attempt failed, by sink kind.", ["kind"], registry=_REGISTRY)


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The Prometheus text format of every metric of this process (of all of them, in multiprocess mode)."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def serve(port: int, host: str) -> None:
    """Serve /metrics on its own port from a daemon thread (a worker has no HTTP server of its own)."""
    start_http_server(port, addr=host, registry=_registry())
