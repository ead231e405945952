"""The Pinpoint-compatible API under /pinpoint (docs/pinpoint.md): an unchanged boto3 `pinpoint` client works
against Tidings with `endpoint_url="http://HOST:PORT/pinpoint"` and a key pair from
`tidings keys create --workspace W --pinpoint`. The operations register on import."""
from tidings.api.pinpoint import (  # noqa: F401  (each registers its operations)
    apps, campaigns, channels, endpoints, event_stream, events, jobs, journey_runs, journeys, kpis, messages, segments,
    tags, templates,
)
from tidings.api.pinpoint.dispatch import pinpoint_mount

__all__ = ["pinpoint_mount"]
