"""Requests signed by botocore's own SigV4 signer at a chosen time, sent with httpx: what a client with a
skewed clock, a wrong secret or a body changed after signing would send."""
from __future__ import annotations

from datetime import UTC, datetime

import httpx
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SIGNING_NAME = "mobiletargeting"


def sign(url: str, method: str, body: bytes, key_id: str, secret: str, when: datetime | None = None,
         region: str = "us-east-1") -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    signer = SigV4Auth(Credentials(key_id, secret), SIGNING_NAME, region)
    stamp = (when or datetime.now(UTC)).strftime(SIGV4_TIMESTAMP)
    request.context["timestamp"] = stamp
    request.headers["X-Amz-Date"] = stamp
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    signer._inject_signature_to_request(request, signature)
    return dict(request.headers.items())


def signed_request(api, key, method: str, path: str, body: bytes, *, secret: str | None = None,
                   when: datetime | None = None, send_body: bytes | None = None) -> httpx.Response:
    url = api.pinpoint_url + path
    headers = sign(url, method, body, key.access_key_id, secret or key.secret, when)
    return httpx.request(method, url, content=body if send_body is None else send_body, headers=headers)
