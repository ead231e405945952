"""A real HTTP/2 server on 127.0.0.1 (hypercorn, cleartext h2 with prior knowledge) in a thread of its own,
for the APNs tests: the provider API speaks HTTP/2 only, so the server refuses HTTP/1.1 requests."""
from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from hypercorn.asyncio import serve
from hypercorn.config import Config

from tidings.engine.ops.devstack import free_port


@dataclass
class H2Request:
    method: str
    path: str
    http_version: str
    headers: dict[str, str]
    body: bytes
    client_port: int  # the same port across requests: one connection kept

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Http2Server:
    """``responder(request)`` returns ``(status, headers, body)``; body a dict (sent as JSON) or bytes."""

    responder: Callable[[H2Request], tuple[int, dict[str, str], Any]]
    requests: list[H2Request] = field(default_factory=list)
    url: str = ""

    async def _app(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = (await receive())["type"]
                if message == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        req = H2Request(scope["method"], scope["path"], scope["http_version"],
                        {k.decode().lower(): v.decode() for k, v in scope["headers"]}, body, scope["client"][1])
        self.requests.append(req)
        if req.http_version != "2":
            status, headers, payload = 505, {}, {"reason": "HTTP/2 only"}
        else:
            try:
                status, headers, payload = self.responder(req)
            except AssertionError as exc:  # a malformed request: fail loudly in the test, not silently
                status, headers, payload = 599, {}, {"reason": f"test server: {exc}"}
        data = json.dumps(payload).encode() if isinstance(payload, (dict, list)) else payload or b""
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]
                    + [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})

    def start(self) -> "Http2Server":
        port = free_port()
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = config.errorlog = None
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        ready = threading.Event()

        async def main() -> None:
            ready.set()
            await serve(self._app, config, shutdown_trigger=self._stop.wait)

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),), daemon=True)
        self._thread.start()
        ready.wait(5)
        self.url = f"http://127.0.0.1:{port}"
        self._wait_listening(port)
        return self

    @staticmethod
    def _wait_listening(port: int) -> None:
        import socket
        import time

        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("the HTTP/2 test server did not start")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
