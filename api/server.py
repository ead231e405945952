"""The uvicorn server `tidings api` runs."""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import uvicorn


class DrainingServer(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT it drained gracefully ends the process with exit
    code 0. uvicorn re-raises the signal after its graceful shutdown, so the process died of SIGTERM (exit
    -15 / 143) and supervisors reported a failure for an ordinary deploy."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
