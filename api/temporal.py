"""The API's Temporal client, connected on first use: the API can start before Temporal does, and
only the journey lifecycle calls need it."""
from __future__ import annotations

import asyncio

from temporalio.client import Client

from tidings.engine.platform.config import Settings
from tidings.engine.platform.errors import TidingsError
from tidings.engine.platform.temporal import connect


class TemporalUnavailable(TidingsError):
    status = 503
    code = "temporal_unavailable"


class TemporalHandle:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await connect(self.settings)
                except Exception as exc:  # the journey call cannot proceed; say where we looked
                    raise TemporalUnavailable(
                        f"cannot reach Temporal at {self.settings.temporal_address}: {exc}") from None
            return self._client
