"""Signed requests: the ``X-Tidings-Signature`` header that webhooks and event sinks send and generic
channel feedback is checked against: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Tidings-Signature"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """Value of the ``X-Tidings-Signature`` header for ``body``."""
    t = int(timestamp if timestamp is not None else time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """Check an ``X-Tidings-Signature`` header (receiver side).

    True when one ``v1`` value matches HMAC-SHA256(secret, "<t>.<body>") and
    ``t`` is within ``tolerance`` seconds of ``now`` (replay protection).
    ``body`` must be the raw request bytes, not re-serialised JSON.
    """
    if not header:
        return False
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                t = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates:
        return False
    if abs((now if now is not None else time.time()) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, c) for c in candidates)
