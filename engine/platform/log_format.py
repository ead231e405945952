"""How every Tidings process logs: text for people (the default), or JSON lines for a log pipeline.

`TIDINGS_LOG_FORMAT=json` writes one JSON object per line (python-json-logger) with `timestamp`, `level`,
`logger`, `message`, the `request_id` of the HTTP request being served (the `X-Request-Id` the API answers
with, api/guard.py) and whatever a line adds (`message_id` and `channel` for a send, `route`, `status` and
`duration_ms` for a request). `TIDINGS_LOG_LEVEL` sets the level: WARNING by default for text, INFO for JSON
(one line per request and per message sent).
"""
from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Mapping

from pythonjsonlogger.json import JsonFormatter

# Set by the API's outermost layer for the request being served; copied into threads by asyncio.to_thread.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("tidings_request_id", default=None)

FORMATS = ("text", "json")


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


def wants_json(env: Mapping[str, str]) -> bool:
    """Whether logs are JSON lines; a format other than text or json stops start-up, naming the variable."""
    fmt = env.get("TIDINGS_LOG_FORMAT", "text").strip().lower() or "text"
    if fmt not in FORMATS:
        raise SystemExit(f"TIDINGS_LOG_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt == "json"


def configure(env: Mapping[str, str]) -> bool:
    """Set up the root logger from the environment; returns whether logs are JSON lines."""
    as_json = wants_json(env)
    level_name = env.get("TIDINGS_LOG_LEVEL", "INFO" if as_json else "WARNING").strip().upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise SystemExit(f"TIDINGS_LOG_LEVEL={level_name!r}: use DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter("{levelname}{name}{message}", style="{", timestamp=True,
                                           rename_fields={"levelname": "level", "name": "logger"}))
        handler.addFilter(_WithRequestId())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return as_json
